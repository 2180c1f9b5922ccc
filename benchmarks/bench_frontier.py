"""The accuracy-size frontier: DPAP at several operating points vs NNI's pruners set to the same size, fairly.

For every net and seed:

* **dense**: trained for E epochs; its state after E/2 epochs is kept.
* **DPAP** at each operating point (``POINTS``): trained with DPAP from the same initial
  weights for the same E epochs. The library's default ranking (``unit_order='movement'``: DPAP's
  importance values handed out in the order of Movement's score) at every point, and the paper's
  ranking (``unit_order='dpap'``) at the same point as ``paper_order_<point>``.
* at every point where DPAP removes >= 70% of the prunable parameters, NNI's pruners set
  to *the same removed-parameter count, layer by layer*: ``L1NormPruner`` + fine-tuning
  and ``TaylorPruner`` continue from the dense state after E/2 epochs (L1: prune, then
  fine-tune E/2 epochs; Taylor: collect Taylor scores for one epoch of training, prune,
  fine-tune the rest), ``MovementPruner`` trains from the same initial weights for E
  epochs (warm-up one epoch, sparsity reached at 3/4 of the run). These three prune
  single weights (the most flexible granularity; NNI's own default for these three pruners
  is whole output channels, ``granularity="out_channel"``), so they are matched on fine-grained
  masks against DPAP's channels, neurons and synapses.
* the same points with DPAP's own, structured granularity (NNI's default for these pruners):
  ``l1_channel`` (L1NormPruner on whole output channels / neurons + fine-tuning), ``taylor_channel`` (TaylorPruner,
  Molchanov et al.'s channel criterion) and ``movement_channel`` (MovementPruner with one
  score per output unit, trained from the initial weights on the same schedule), each
  layer keeping as many weights as DPAP's layer, by whole units (the layer's inputs shrink
  with its upstream layer's units).
* the same points with DPAP's own mix of granularities: ``l1_mixed``, ``taylor_mixed`` and
  ``movement_mixed`` remove whole output channels in the conv layers (as DPAP does) and single
  weights in the FC layers (where DPAP removes synapses and neurons): like for like in
  structure as well as size.

Every run sees the same batches in the same order: epoch ``e`` of seed ``s`` is the
permutation drawn from a generator seeded with ``(s, e)``, whichever run asks for it.
A weight counts as removed when it is zero or its input or output unit is removed (a
unit is removed when its weights and bias are all zero: ``nni_dpap.report.layer_costs``),
the same way for every method; the prunable
parameters are the weights and biases of every conv/linear layer but the output layer
(the first conv included, even where DPAP's default does not prune it). Accuracy is the
held-out test accuracy, both at the final epoch and averaged over the last 5 epochs;
"epochs to dense" is the first epoch at which a run reaches the best accuracy of the
dense run of its seed (the paper's convergence measure).

Records go to ``results/frontier.jsonl`` as they are made (an interrupted run resumes
where it stopped), then ``frontier.json``, ``frontier.md`` and ``frontier.png``.

    python benchmarks/bench_frontier.py                      # all nets, 10 seeds (about 8.5 hours on 2 cores)
    python benchmarks/bench_frontier.py --seeds 0 1 2 3 4    # 5 seeds (about 4.3 hours)
    python benchmarks/bench_frontier.py --nets digits_snn --seeds 0 1
    python benchmarks/bench_frontier.py --core --results-dir benchmarks/results/core   # the issue's frontier

``--core`` is the frontier the quality issue asks for: the library's ranking at every point (no
``paper_order_*``), the three NNI baselines it names (``l1_finetune``, ``taylor``, ``movement``, single
weights), seeds 0-4 (about 75 minutes on one core; ``make bench-core``). ``--points`` and ``--baselines``
choose by name. Resuming refuses a dense record that this code no longer reproduces (see ``check_dense_reproduced``).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import nni
import torch
from _common import RecordLog, parser, save, setup
from nni.compression import TorchEvaluator
from nni.compression.pruning import L1NormPruner, MovementPruner, TaylorPruner
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.data import load_data
from nni_dpap.graph import upstream_layers
from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.report import format_table, layer_costs, totals
from nni_dpap.training import classification_step, evaluate_accuracy

MATCH_FROM = 0.70  # baselines are matched where DPAP removes at least this much
#: NNI's pruners matched to DPAP: single weights (``l1_finetune``, ``taylor``, ``movement``), whole output
#: units, NNI's default (``l1_channel``: L1NormPruner + fine-tuning, ``taylor_channel``: TaylorPruner,
#: ``movement_channel``: MovementPruner with one learned score per output unit), and DPAP's own mix
#: (``*_mixed``: conv layers by whole channels, FC layers by single weights)
BASELINES = ("l1_finetune", "taylor", "movement", "l1_channel", "taylor_channel", "movement_channel",
             "l1_mixed", "taylor_mixed", "movement_mixed")
#: ``--core``: the quality issue's frontier (its three baselines, 5 seeds, the library's ranking only)
CORE_BASELINES = ("l1_finetune", "taylor", "movement")
CORE_SEEDS = (0, 1, 2, 3, 4)


def granularity_of(method: str) -> str:
    """A baseline's granularity from its name: ``'channel'``, ``'mixed'`` or single weights (``'weight'``)."""
    suffix = method.rpartition("_")[2]
    return suffix if suffix in ("channel", "mixed") else "weight"


@dataclass(frozen=True)
class Net:
    build: Callable[[], nn.Module]
    data: str
    epochs: int
    lr: float
    points: dict[str, dict[str, Any]]  # DPAP operating points: hparams over the library defaults
    batch: int = 64
    quick_epochs: int = 3
    exclude: tuple[str, ...] = field(default_factory=tuple)
    match: tuple[str, ...] | None = None  # points where the baselines are matched (None: every point >= 70%)


_ALL_GROUPS = ["conv_channels", "conv_kernels", "linear_neurons", "linear_synapses"]
#: The paper's ranking (``unit_order='dpap'``: every unit keeps its own importance) over a point's hparams.
PAPER_ORDER = {"unit_order": "dpap"}


def _with_paper_order(points: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``points`` and, for each, ``paper_order_<point>`` (``paper_order`` for ``default``) with the paper's ranking."""
    paper = {("paper_order" if name == "default" else f"paper_order_{name}"): {**hparams, **PAPER_ORDER}
             for name, hparams in points.items()}
    return {**points, **paper}


#: DPAP's operating points, as hparams over the library defaults (``nni_dpap.policy.defaults``), whose
#: ``unit_order='movement'`` hands DPAP's importance values out in the order of Movement's score
POINTS: dict[str, dict[str, Any]] = _with_paper_order({
    "default": {},
    "syn_p95": {"linear_synapse_percentiles": [None, 95.0]},
    "p95_alive": {"linear_synapse_percentiles": [None, 95.0], "alive_normalization": _ALL_GROUPS},
    "p95_synapses_only": {"linear_synapse_percentiles": [None, 95.0], "alive_normalization": _ALL_GROUPS,
                          "prune_linear_neurons": False, "conv_eps": 1.2},
})

#: The ANN's points: its calibration already keeps FC neurons and uses conv eps 1.2, so ``p95_alive`` and
#: ``p95_synapses_only`` would be ``syn_p95`` again; beyond it the FC synapses' eps or the conv eps rise.
ANN_POINTS: dict[str, dict[str, Any]] = _with_paper_order({
    "default": {},
    "syn_p95": POINTS["syn_p95"],
    "fc_eps2.5": {"linear_eps": 2.5},
    "syn_p95_conv_eps1.5": {"linear_synapse_percentiles": [None, 95.0], "conv_eps": 1.5},
})

NETS: dict[str, Net] = {
    "mnist5k_snn": Net(lambda: SpikingConvNet(1, 28, 10, T=4), "mnist5k", 15, 3e-3, POINTS,
                       match=("default", "p95_alive", "paper_order", "paper_order_p95_alive")),
    "digits_snn": Net(lambda: SpikingConvNet(1, 8, 10, T=4), "digits", 60, 3e-3, POINTS),
    "digits_ann": Net(lambda: LeNetANN(1, 8, 10), "digits", 40, 1e-3, ANN_POINTS),
}


# ---------------------------------------------------------------------------------------
# data in a fixed order per (seed, epoch)
# ---------------------------------------------------------------------------------------
class Batches:
    """The training batches of epoch ``e`` of seed ``s``: the same for every run that asks."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, seed: int, device: torch.device) -> None:
        self.x, self.y, self.batch, self.seed, self.device = x, y, batch, seed, device
        self.steps = math.ceil(len(x) / batch)

    def epoch(self, e: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed * 10_007 + e))
        return [(self.x[i].to(self.device), self.y[i].to(self.device))
                for i in order.split(self.batch)]


def training_function(batches: Batches, first_epoch: int, record: Callable[[nn.Module], None]) -> Callable[..., None]:
    """An NNI-style training function over epochs ``first_epoch, first_epoch + 1, ...`` of ``batches``."""
    def train(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None, *a, **k):
        optimizer = optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers
        epochs = max_epochs if max_epochs is not None else -(-max_steps // batches.steps)
        steps = 0
        for e in range(first_epoch, first_epoch + epochs):
            model.train()
            for batch in batches.epoch(e):
                loss = training_step(batch, model)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
            record(model)
            if max_steps is not None and steps >= max_steps:
                return
    return train


# ---------------------------------------------------------------------------------------
# one seed of one net
# ---------------------------------------------------------------------------------------
def _adam(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return nni.trace(torch.optim.Adam)(model.parameters(), lr=lr)


def _continued_adam(model: nn.Module, lr: float, snapshot: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam over the (NNI-wrapped) parameters of ``model``, carrying on the dense run's moments.

    NNI's wrappers replace the parameters (``conv.weight`` becomes ``conv._nni_wrapper.weight``); the state is
    matched by name.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    index_of = {name: i for i, name in enumerate(snapshot["names"])}
    for name, param in model.named_parameters():
        i = index_of.get(name.replace("._nni_wrapper", ""))
        state = snapshot["optimizer"]["state"].get(i) if i is not None else None
        if state is not None:
            optimizer.state[param] = {k: v.clone() if torch.is_tensor(v) else v for k, v in state.items()}
    return optimizer


def _weight_entry(model: nn.Module, name: str, target: dict[str, dict[str, int]]) -> dict[str, Any] | None:
    """NNI's config entry masking single weights of ``name``: the fraction of its weights DPAP removed."""
    ratio = target[name]["weights_removed"] / target[name]["weights"]
    if ratio <= 0:
        return None
    return {"op_names": [name], "target_names": ["weight"], "sparse_ratio": round(ratio, 6),
            "granularity": [1] * model.get_submodule(name).weight.dim()}


def _prunable(model: nn.Module) -> list[str]:
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[:-1]  # the output layer is never pruned


def _size(model: nn.Module, example: torch.Tensor, layers: list[str]) -> tuple[float, dict[str, dict[str, int]]]:
    costs = layer_costs(model, example)
    per_layer = {n: {"weights_removed": int(model.get_submodule(n).weight.numel()) - (
        costs[n].params_kept - (costs[n].units_kept if model.get_submodule(n).bias is not None else 0)),
        "weights": int(model.get_submodule(n).weight.numel())} for n in layers}
    return 1.0 - totals(costs, layers)["params_fraction"], per_layer


class Seed:
    """Runs of one net and one seed, all from the same initial weights and batch order."""

    def __init__(self, name: str, net: Net, seed: int, device: torch.device, quick: bool) -> None:
        self.name, self.net, self.seed, self.device = name, net, seed, device
        self.epochs = net.quick_epochs if quick else net.epochs
        data = load_data(net.data)
        x, y = data.train.tensors  # type: ignore[attr-defined]
        self.batches = Batches(x, y, net.batch, seed, device)
        test_x, test_y = data.test.tensors  # type: ignore[attr-defined]
        self.test = [(test_x[i:i + 256].to(device), test_y[i:i + 256].to(device)) for i in range(0, len(test_x), 256)]
        self.example = test_x[:2].to(device)
        torch.manual_seed(seed)
        self.initial = net.build().to(device).state_dict()
        self.layers = _prunable(self._model())
        self.upstream = upstream_layers(self._model())

    def _model(self) -> nn.Module:
        model = self.net.build().to(self.device)
        model.load_state_dict(self.initial)
        return model

    def _recorder(self, accuracies: list[float]) -> Callable[[nn.Module], None]:
        return lambda model: accuracies.append(evaluate_accuracy(model, self.test))

    def dense(self) -> tuple[nn.Module, list[float], dict[str, Any]]:
        model, accuracies = self._model(), []
        optimizer = torch.optim.Adam(model.parameters(), lr=self.net.lr)
        half = self.epochs // 2
        training_function(self.batches, 0, self._recorder(accuracies))(model, optimizer, classification_step, None,
                                                                          None, half)
        snapshot = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict()),
                    "names": [n for n, _ in model.named_parameters()]}
        training_function(self.batches, half, self._recorder(accuracies))(model, optimizer, classification_step, None,
                                                                             None, self.epochs - half)
        return model, accuracies, snapshot

    def dpap(self, hparams: dict[str, Any], preset: str = "braincog") -> tuple[nn.Module, list[float]]:
        model, accuracies = self._model(), []
        evaluator = TorchEvaluator(training_function(self.batches, 0, self._recorder(accuracies)),
                                   _adam(model, self.net.lr), classification_step)
        config = [{"op_types": ["Conv2d", "Linear"], **({"exclude_op_names": list(self.net.exclude)}
                                                          if self.net.exclude else {})}]
        pruner = DPAPPruner(model, config, evaluator, epochs=self.epochs, steps_per_epoch=self.batches.steps,
                            preset=preset, hparams=hparams)  # over the library's defaults for these epochs
        model, _ = pruner.compress()
        pruner.unwrap_model()
        return model, accuracies

    def _config(self, target: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
        """Weight-level masks removing, layer by layer, as many weights as the DPAP run removed."""
        model = self._model()
        return [entry for name in self.layers if (entry := _weight_entry(model, name, target)) is not None]

    def _config_for(self, target: dict[str, dict[str, int]], granularity: str) -> list[dict[str, Any]]:
        """The baselines' config list for ``granularity`` ``'weight'``, ``'channel'`` or ``'mixed'``."""
        if granularity == "weight":
            return self._config(target)
        return self._channel_config(target, fine_linear=granularity == "mixed")

    def _channel_config(self, target: dict[str, dict[str, int]], fine_linear: bool = False) -> list[dict[str, Any]]:
        """Whole output units (channels / neurons) removed so that each layer keeps as many weights as DPAP's.

        Layer by layer in forward order: a unit of a layer holds ``kernel x inputs kept`` weights, the
        inputs kept being the units its upstream layer keeps; the number of units kept is the one whose
        weights come closest to what the DPAP run kept in that layer (at least one).

        ``fine_linear`` (DPAP's own mix): FC layers are matched on single weights instead. Their
        weights fed by removed channels count as removed already; Movement's scores of those weights
        stop moving and are masked first, so its ratio is DPAP's fraction of the whole layer; L1 and
        Taylor, which score every weight at once before those channels fall silent, get the same
        ratio here and :meth:`_fed_only` makes their FC masks exact.
        """
        model, kept, config = self._model(), {}, []
        for name in self.layers:
            weight = model.get_submodule(name).weight
            source = self.upstream.get(name)
            inputs = 1.0 if source not in kept else kept[source] / model.get_submodule(source).weight.shape[0]
            units, removed = weight.shape[0], target[name]["weights_removed"]
            if fine_linear and weight.dim() == 2:
                kept[name] = units
                if (entry := _weight_entry(model, name, target)) is not None:
                    config.append(entry)
                continue
            kept[name] = min(units, max(1, round((weight.numel() - removed) / (weight[0].numel() * inputs))))
            if kept[name] < units:  # NNI floors ratio x units: +0.5 removes exactly units - kept
                config.append({"op_names": [name], "sparse_ratio": (units - kept[name] + 0.5) / units,
                               "granularity": "out_channel"})
        return config

    def _fed_only(self, pruner: Any, target: dict[str, dict[str, int]], granularity: str) -> None:
        """With DPAP's mix, each FC layer's mask removes the pruner's lowest-scored weights among those still fed.

        L1 and Taylor score every weight at once; the weights fed by the channels they remove in the same
        step count as removed anyway, so NNI's ratio over the whole layer would remove more or fewer
        than DPAP did, depending on how the two overlap. Here the mask keeps the pruner's criterion and
        removes exactly DPAP's count: the unfed weights, then the lowest-scored fed ones.
        """
        if granularity != "mixed":
            return
        generate = pruner._generate_sparsity

        def fed_only(metrics: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
            masks = generate(metrics)
            for name, targets in masks.items():
                mask = targets.get("weight")
                if mask is None or mask.dim() != 2:
                    continue
                source = self.upstream.get(name)
                fed = torch.ones(mask.shape[1], dtype=torch.bool, device=mask.device)
                if source in masks and "weight" in masks[source]:
                    alive = masks[source]["weight"].flatten(1).any(1)  # the source's output channels kept
                    fed = alive.repeat_interleave(mask.shape[1] // alive.numel())
                fed = fed.expand_as(mask)
                need = target[name]["weights_removed"] - int((~fed).sum())
                score = torch.where(fed, metrics[name]["weight"].expand_as(mask).float(), torch.inf).flatten()
                keep = fed.flatten().clone()
                if need > 0:
                    keep[score.topk(need, largest=False).indices] = False
                targets["weight"] = keep.view_as(mask).to(mask.dtype)
            return masks
        pruner._generate_sparsity = fed_only

    def _finish(self, pruner: Any, model: nn.Module) -> nn.Module:
        masks = pruner.get_masks()
        pruner.unwrap_model()
        with torch.no_grad():
            for name, targets in masks.items():
                for target, mask in targets.items():
                    if mask is not None:
                        getattr(model.get_submodule(name), target).mul_(mask)
        return model

    def l1_finetune(self, snapshot: dict[str, Any], target: dict[str, dict[str, int]],
                    granularity: str = "weight") -> tuple[nn.Module, list]:
        model, accuracies = self._model(), []
        model.load_state_dict(snapshot["model"])
        half = self.epochs // 2
        pruner = L1NormPruner(model, self._config_for(target, granularity))
        self._fed_only(pruner, target, granularity)
        pruner.compress()
        optimizer = _continued_adam(model, self.net.lr, snapshot)  # the dense run's optimizer goes on
        training_function(self.batches, half, self._recorder(accuracies))(model, optimizer, classification_step, None,
                                                                             None, self.epochs - half)
        return self._finish(pruner, model), accuracies

    def taylor(self, snapshot: dict[str, Any], target: dict[str, dict[str, int]],
               granularity: str = "weight") -> tuple[nn.Module, list]:
        model, accuracies = self._model(), []
        model.load_state_dict(snapshot["model"])
        half = self.epochs // 2
        # NNI rebuilds a traced optimizer when it binds the model: the scoring epoch starts a fresh Adam
        evaluator = TorchEvaluator(training_function(self.batches, half, self._recorder(accuracies)),
                                   _adam(model, self.net.lr), classification_step)
        config = self._config_for(target, granularity)
        pruner = TaylorPruner(model, config, evaluator, training_steps=self.batches.steps)
        self._fed_only(pruner, target, granularity)
        pruner.compress()  # one epoch of training collecting Taylor scores, then prune
        fine_tune = _continued_adam(model, self.net.lr, snapshot)
        training_function(self.batches, half + 1, self._recorder(accuracies))(
            model, fine_tune, classification_step, None, None, self.epochs - half - 1)
        return self._finish(pruner, model), accuracies

    def movement(self, target: dict[str, dict[str, int]], granularity: str = "weight") -> tuple[nn.Module,
                                                                                                 list[float]]:
        model, accuracies = self._model(), []
        evaluator = TorchEvaluator(training_function(self.batches, 0, self._recorder(accuracies)),
                                   _adam(model, self.net.lr), classification_step)
        steps = self.batches.steps
        config = self._config_for(target, granularity)
        pruner = MovementPruner(model, config, evaluator, warmup_step=steps,
                                cooldown_begin_step=max(int(0.75 * self.epochs * steps), steps + 1))
        pruner.compress(self.epochs * steps, self.epochs)
        return self._finish(pruner, model), accuracies


def _record(name: str, method: str, point: str, seed: int, model: nn.Module, accuracies: list[float],
            run: Seed, dense_best: float, seconds: float) -> dict[str, Any]:
    removed, per_layer = _size(model, run.example, run.layers)
    reached = next((i + 1 for i, a in enumerate(accuracies) if a >= dense_best - 1e-9), None)
    return {"net": name, "method": method, "point": point, "seed": seed, "params_removed": removed,
            "accuracy": 100 * statistics.fmean(accuracies[-5:]), "accuracy_final": 100 * accuracies[-1],
            "accuracy_last5": 100 * statistics.fmean(accuracies[-5:]), "epochs": len(accuracies),
            "epochs_to_dense": reached, "layers": per_layer, "seconds": seconds,
            "accuracy_curve": accuracies}


def selected_points(net: Net, names: list[str] | None, paper_order: bool = True) -> dict[str, dict[str, Any]]:
    """``net``'s operating points named in ``names`` (all when ``None``), without ``paper_order*`` if not wanted."""
    return {point: hparams for point, hparams in net.points.items()
            if (names is None or point in names) and (paper_order or not point.startswith("paper_order"))}


def check_dense_reproduced(name: str, seed: int, recorded: list[float], rerun: list[float]) -> None:
    """Refuse to pair new baselines with a dense record that this code no longer reproduces.

    L1 and Taylor continue the dense run of their seed, which is redone when they need it; if it no
    longer gives the recorded accuracy curve, the records were made with other code (e.g. other float
    rounding in the spiking kernels) and a new baseline would be paired with a dense run it never saw.
    """
    if len(recorded) != len(rerun):
        how = f"{len(recorded)} epochs recorded, {len(rerun)} run"
    elif any(abs(a - b) > 1e-9 for a, b in zip(recorded, rerun)):
        how = f"accuracy curves differ by up to {100 * max(abs(a - b) for a, b in zip(recorded, rerun)):.2f} points"
    else:
        return
    raise SystemExit(f"{name} seed {seed}: the dense run no longer reproduces its record in frontier.jsonl ({how}): "
                     "the records were made with other code. Run into a fresh --results-dir, or delete this net's "
                     "records and run again")


def run_seed(name: str, net: Net, seed: int, device: torch.device, quick: bool, records: list[dict[str, Any]],
             write: Callable[[dict[str, Any]], None], points: dict[str, dict[str, Any]] | None = None,
             baselines: tuple[str, ...] = BASELINES) -> None:
    """Every run of ``net`` for ``seed`` that ``records`` lacks (the dense run is redone when a baseline needs it).

    ``points`` (default: all of ``net.points``) are the DPAP operating points to run, ``baselines`` the
    NNI baselines matched to each of them.
    """
    run = Seed(name, net, seed, device, quick)
    have = {(r["method"], r["point"]): r for r in records if r["net"] == name and r["seed"] == seed}
    dense: tuple[nn.Module, list[float], dict[str, Any]] | None = None

    def dense_run() -> tuple[nn.Module, list[float], dict[str, Any]]:
        nonlocal dense
        if dense is None:
            start = time.perf_counter()
            dense = run.dense()
            if ("dense", "-") not in have:
                have[("dense", "-")] = _record(name, "dense", "-", seed, dense[0], dense[1], run, max(dense[1]),
                                               time.perf_counter() - start)
                write(have[("dense", "-")])
            else:
                check_dense_reproduced(name, seed, have[("dense", "-")]["accuracy_curve"], dense[1])
        return dense

    if ("dense", "-") not in have:
        dense_run()
    dense_best = max(have[("dense", "-")]["accuracy_curve"])
    for point, hparams in (net.points if points is None else points).items():
        record = have.get((f"dpap_{point}", point))
        if record is None:
            start = time.perf_counter()
            model, accuracies = run.dpap(hparams)
            record = _record(name, f"dpap_{point}", point, seed, model, accuracies, run, dense_best,
                             time.perf_counter() - start)
            write(record)
        if not quick and (record["params_removed"] < MATCH_FROM or (net.match is not None and point not in net.match)):
            continue
        target = record["layers"]
        for method in baselines:
            if (method, point) in have:
                continue
            granularity = granularity_of(method)
            if method.startswith("movement"):  # from the initial weights, like DPAP
                start = time.perf_counter()
                model, accuracies = run.movement(target, granularity)
            else:  # L1 and Taylor continue the dense run: its first half is theirs
                _, dense_acc, snapshot = dense_run()
                start = time.perf_counter()
                prune = run.l1_finetune if method.startswith("l1_") else run.taylor
                model, accuracies = prune(snapshot, target, granularity)
                accuracies = dense_acc[:run.epochs // 2] + accuracies
            write(_record(name, method, point, seed, model, accuracies, run, dense_best, time.perf_counter() - start))


# ---------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------
def _mean_std(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _paired(records: list[dict[str, Any]], dense_of: dict[int, float]) -> str:
    """Mean ± std of the accuracy minus the dense run's of the same seed."""
    diffs = [r["accuracy"] - dense_of[r["seed"]] for r in records if r["seed"] in dense_of]
    if not diffs:
        return "-"
    if len(diffs) == 1:
        return f"{diffs[0]:+.2f}"
    return f"{statistics.fmean(diffs):+.2f} ± {statistics.stdev(diffs):.2f}"


def summarize(records: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    tables, summary = [], {}
    for net in dict.fromkeys(r["net"] for r in records):
        rows, groups = [], {}
        for r in records:
            if r["net"] == net:
                groups.setdefault((r["point"], r["method"]), []).append(r)
        dense_of = {r["seed"]: r["accuracy"] for r in groups.get(("-", "dense"), [])}
        for (point, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "-", kv[0][0],
                                                                           not kv[0][1].startswith("dpap"))):
            acc = [r["accuracy"] for r in rs]
            reached = [r["epochs_to_dense"] for r in rs if r["epochs_to_dense"] is not None]
            rows.append([point, method, len(rs), _mean_std([100 * r["params_removed"] for r in rs], 1),
                         _mean_std(acc), _mean_std([r["accuracy_final"] for r in rs]),
                         _paired(rs, dense_of),
                         f"{statistics.fmean(reached):.1f} ({len(reached)}/{len(rs)})" if reached
                         else f"never (0/{len(rs)})"])
            summary.setdefault(net, {})[f"{point}/{method}"] = {
                "params_removed_mean": statistics.fmean(r["params_removed"] for r in rs),
                "accuracy_mean": statistics.fmean(acc), "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                "seeds": len(rs)}
        tables.append((f"{net}", format_table(rows, [
            "point", "method", "seeds", "params removed %", "accuracy % (last 5)", "accuracy % (final)",
            "vs dense (same seed)", "epochs to dense best"])))
    return tables, summary


TOLERANCE = 0.1  # the quality issue's target: DPAP >= each baseline within 0.1 point (mean of the last 5 epochs)


def target_check(records: list[dict[str, Any]], tolerance: float = TOLERANCE,
                 confidence: float = 0.95) -> tuple[str, list[dict[str, Any]]]:
    """DPAP minus each matched baseline, paired by seed, against the target ``>= -tolerance``.

    For every point where baselines were matched to a DPAP setting: the mean and std of the paired
    difference (last-5 accuracy), the seeds where DPAP is within ``tolerance`` or ahead, and the two-sided
    Student-t interval of the mean (SciPy). Verdict: ``met`` (mean >= -tolerance), ``behind`` (the whole
    interval below -tolerance: more seeds would not change it) or ``behind, within noise`` (the mean
    misses, the interval reaches the target).

    Returns
    -------
    tuple[str, list[dict]]
        The Markdown table and its rows as records.
    """
    from scipy import stats

    rows, out = [], []
    for net in dict.fromkeys(r["net"] for r in records):
        by: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for r in records:
            if r["net"] == net:
                by.setdefault((r["method"], r["point"]), {})[r["seed"]] = r
        for (method, point), dpap in by.items():
            if not method.startswith("dpap_"):
                continue
            for baseline in BASELINES:
                base = by.get((baseline, point))
                seeds = sorted(set(dpap) & set(base or {}))
                if not base or not seeds:
                    continue
                diffs = [dpap[s]["accuracy"] - base[s]["accuracy"] for s in seeds]
                mean = statistics.fmean(diffs)
                std = statistics.stdev(diffs) if len(diffs) > 1 else None  # (one seed: no spread, no interval)
                half = None if std is None else \
                    float(stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * std / math.sqrt(len(diffs))
                verdict = "met" if mean >= -tolerance else (
                    "behind" if half is not None and mean + half < -tolerance else "behind, within noise")
                record = {"net": net, "point": point, "baseline": baseline, "seeds": len(seeds),
                          "params_removed": statistics.fmean(dpap[s]["params_removed"] for s in seeds),
                          "difference_mean": mean, "difference_std": std,
                          "interval": None if half is None else [mean - half, mean + half],
                          "seeds_level_or_ahead": sum(d >= -tolerance for d in diffs), "verdict": verdict}
                out.append(record)
                rows.append([net, point, f"{100 * record['params_removed']:.1f}", baseline, len(seeds),
                             f"{mean:+.2f}" if std is None else f"{mean:+.2f} ± {std:.2f}",
                             "-" if half is None else f"[{mean - half:+.2f}, {mean + half:+.2f}]",
                             f"{record['seeds_level_or_ahead']}/{len(seeds)}", verdict])
    table = format_table(rows, ["net", "point", "DPAP removed %", "baseline", "seeds", "DPAP - baseline",
                                f"{100 * confidence:.0f}% interval", f"seeds within {tolerance}", "target"])
    counts = []
    for family, pairs in (("the library's ranking (unit_order='movement')",
                           [r for r in out if not r["point"].startswith("paper_order")]),
                          ("the paper's ranking (paper_order*, unit_order='dpap')",
                           [r for r in out if r["point"].startswith("paper_order")])):
        if pairs:
            counts.append(f"with {family}: met at {sum(r['verdict'] == 'met' for r in pairs)} of {len(pairs)} "
                          f"matched (point, baseline) pairs, behind beyond the {100 * confidence:.0f}% interval at "
                          f"{sum(r['verdict'] == 'behind' for r in pairs)}")
    note = f"DPAP >= baseline - {tolerance} (mean of the paired last-5 differences): " + "; ".join(counts) + "."
    return f"{note}\n\n{table}", out


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(r["net"] for r in records))
    fig, axes = plt.subplots(1, len(nets), figsize=(5.5 * len(nets), 4.2), squeeze=False)
    markers = {"dpap": ("o", "C0"), "dpap_paper": ("o", "C0"), "l1_finetune": ("s", "C1"), "taylor": ("^", "C2"),
               "movement": ("v", "C3"),
               "l1_channel": ("D", "C4"), "taylor_channel": ("P", "C5"), "movement_channel": ("X", "C6"),
               "l1_mixed": ("<", "C7"), "taylor_mixed": (">", "C8"), "movement_mixed": ("h", "C9"),
               "dense": ("*", "k")}
    for ax, net in zip(axes[0], nets):
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in records:
            if r["net"] == net:
                groups.setdefault((r["method"], r["point"]), []).append(r)
        labelled = set()
        dense = groups.pop(("dense", "-"), [])
        if dense:  # the dense model as a line with its spread over seeds
            mean = statistics.fmean(r["accuracy"] for r in dense)
            spread = statistics.stdev(r["accuracy"] for r in dense) if len(dense) > 1 else 0.0
            ax.axhline(mean, color="k", lw=1, label=f"dense ({len(dense)} seeds)")
            ax.axhspan(mean - spread, mean + spread, color="k", alpha=0.08)
        removed = [100 * r["params_removed"] for rs in groups.values() for r in rs]
        if removed:
            ax.set_xlim(max(0.0, min(removed) - 3), min(100.0, max(removed) + 2))
        # the y axis spans the DPAP points and 3 points below them; a collapsed baseline is drawn on the
        # lower edge with its mean written next to it (else it squeezes every other point into one line)
        dpap_means = [statistics.fmean(r["accuracy"] for r in rs)
                      for (m, _), rs in groups.items() if m.startswith("dpap")]
        floor = min(dpap_means, default=0.0) - 3.0
        collapsed = 0
        for (method, point), rs in groups.items():
            paper = point.startswith("paper_order")  # DPAP's own ranking and the baselines matched to it: faint
            family = ("dpap_paper" if paper else "dpap") if method.startswith("dpap") else method
            marker, colour = markers[family]
            alpha = 0.35 if paper and family != "dpap_paper" else 1.0
            face = "white" if family == "dpap_paper" else colour  # DPAP's own ranking: hollow
            x = [100 * r["params_removed"] for r in rs]
            y = [r["accuracy"] for r in rs]
            names = {"dpap": "DPAP (default ranking)", "dpap_paper": "DPAP, the paper's ranking (baselines: faint)"}
            label = None if family in labelled or alpha < 1 else names.get(family, family)
            if alpha == 1.0:
                labelled.add(family)
            if statistics.fmean(y) < floor:
                ax.plot(statistics.fmean(x), floor + 0.15, marker=marker, color=colour, mfc=face, ls="none",
                        label=label, alpha=alpha)
                ax.annotate(f"{statistics.fmean(y):.1f}", (statistics.fmean(x), floor + 0.15), color=colour, fontsize=7,
                            xytext=(5, 2 + 9 * collapsed), textcoords="offset points")
                collapsed += 1
                continue
            ax.errorbar(statistics.fmean(x), statistics.fmean(y), yerr=statistics.stdev(y) if len(y) > 1 else 0,
                        xerr=statistics.stdev(x) if len(x) > 1 else 0, fmt=marker, color=colour, mfc=face,
                        capsize=3, label=label, alpha=alpha)
        if dpap_means:
            ax.set_ylim(bottom=floor)
        ax.set_title(net)
        ax.set_xlabel("prunable parameters removed (%)")
        ax.set_ylabel("test accuracy, mean of last 5 epochs (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0-9 (0-4 with --core)")
    p.add_argument("--points", nargs="+", default=None, metavar="POINT",
                   help="DPAP's operating points to run (default: every point of each net; with --core, those of "
                        "the library's ranking)")
    p.add_argument("--baselines", nargs="+", default=None, choices=list(BASELINES),
                   help="NNI baselines matched to each point (default: all nine; three with --core)")
    p.add_argument("--core", action="store_true",
                   help="the quality issue's frontier: the library's ranking only, L1 + FT, Taylor and Movement "
                        "on single weights, seeds 0-4")
    p.add_argument("--summary-only", action="store_true",
                   help="only summarise the records already in frontier.jsonl (after an interrupted run)")
    args = p.parse_args()
    known = {point for net in args.nets for point in NETS[net].points}
    if args.points is not None and (unknown := sorted(set(args.points) - known)):
        p.error(f"--points: {unknown} are not operating points of {args.nets}; choose from {sorted(known)}")
    seeds = args.seeds if args.seeds is not None else list(CORE_SEEDS if args.core else range(10))
    baselines = tuple(args.baselines) if args.baselines is not None else (CORE_BASELINES if args.core else BASELINES)
    device = setup(args)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    log = RecordLog(results / ("frontier_quick.jsonl" if args.quick else "frontier.jsonl"))
    records = log.records

    def write(record: dict[str, Any]) -> None:
        log.write(record, f"{record['net']} seed {record['seed']} {record['method']} ({record['point']}): removed "
                  f"{100 * record['params_removed']:.1f}%, accuracy {record['accuracy']:.2f}% (final "
                  f"{record['accuracy_final']:.2f}%), {record['seconds']:.0f} s")

    for name in args.nets if not args.summary_only else []:
        points = selected_points(NETS[name], args.points, paper_order=not args.core or args.points is not None)
        for seed in seeds:
            run_seed(name, NETS[name], seed, device, args.quick, records, write, points, baselines)
    wanted = [r for r in records if r["net"] in args.nets]
    tables, summary = summarize(wanted)
    target_table, target = target_check(wanted)
    tables.append((f"the target: DPAP >= each baseline within {TOLERANCE} point", target_table))
    name = "frontier_quick" if args.quick else "frontier"
    plot(wanted, results / f"{name}.png")
    save(name, args, {"summary": summary, "target": target, "points": {n: NETS[n].points for n in args.nets},
                      "epochs": {n: NETS[n].epochs for n in args.nets}}, tables)
    (results / f"{name}.json").rename(results / f"{name}_summary.json")
    keys = ("net", "method", "point", "seed", "params_removed", "accuracy", "accuracy_final", "accuracy_last5",
            "epochs_to_dense")
    (results / f"{name}.json").write_text(json.dumps([{k: r[k] for k in keys} for r in wanted], indent=1))


if __name__ == "__main__":
    main()
