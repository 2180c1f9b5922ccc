"""Quality against peers: DPAP vs NNI's pruners vs the dense model, same epochs, same seeds.

For the digits SNN (15C3-AP2-40C3-AP2-300FC-10FC, T = 4, 60 epochs) and the digits ANN
(20C5-MP2-50C5-MP2-500FC-10FC, 40 epochs), over seeds 0, 1, 2:

* dense training;
* DPAP, ``braincog`` and ``paper`` presets (the library's defaults for the run);
* NNI's ``TaylorPruner`` (train half the epochs, collect Taylor scores for one epoch,
  prune, fine-tune the rest), ``L1NormPruner`` + fine-tuning (half dense, prune,
  half fine-tune) and ``MovementPruner`` (pruning throughout), each set to the sparsity
  DPAP (braincog) reached on that seed, layer by layer, weight by weight.

Every method trains for the same number of epochs from the same initial weights and
sees the same batches in the same order (a fresh loader per method, same seed). The
baselines' "sparsity" is taken from DPAP's weight masks; ``bench_frontier.py`` is the
fairer comparison (sizes counted as physical removal keeps them, 5 seeds, several
operating points) and supersedes this table for accuracy at equal size.
Columns: test accuracy (held-out split, after the last epoch), prunable parameters kept,
FLOPs kept, energy relative to the dense model (SNN; counted synaptic operations), and
the first epoch at which the test accuracy reaches the dense run's best (the paper's
convergence measure).

    python benchmarks/bench_quality.py            # ~15 min on 2 CPU cores
"""

from __future__ import annotations

import statistics
from typing import Any

import nni
import torch
from _common import mean_std, parser, save, setup
from nni.compression import TorchEvaluator
from nni.compression.pruning import L1NormPruner, MovementPruner, TaylorPruner

from nni_dpap import DPAPPruner
from nni_dpap.data import digits_loaders
from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.report import activity_costs, format_table, layer_costs, totals
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func, seed_everything

NETS: dict[str, dict[str, Any]] = {
    "SNN": {"build": lambda: SpikingConvNet(1, 8, 10, T=4), "epochs": 60, "lr": 3e-3},
    "ANN": {"build": lambda: LeNetANN(1, 8, 10), "epochs": 40, "lr": 1e-3},
}
PRUNED = ("conv1", "conv2", "fc1")
METHODS = ("dense", "DPAP braincog", "DPAP paper", "NNI Taylor", "NNI L1 + fine-tune", "NNI Movement")


def _adam(model: torch.nn.Module, lr: float, traced: bool = True) -> torch.optim.Optimizer:
    cls = nni.trace(torch.optim.Adam) if traced else torch.optim.Adam
    return cls(model.parameters(), lr=lr)


def _apply_nni_masks(model: torch.nn.Module, masks: dict[str, dict[str, torch.Tensor]]) -> None:
    with torch.no_grad():
        for name, targets in masks.items():
            for target, mask in targets.items():
                if mask is not None:
                    getattr(model.get_submodule(name), target).mul_(mask)


def _baseline_config(model: torch.nn.Module, sparsity: dict[str, float]) -> list[dict[str, Any]]:
    """Per-layer, weight-level sparsity (NNI granularity of 1 along every dim)."""
    return [{"op_names": [name], "target_names": ["weight"], "sparse_ratio": round(sparsity[name], 4),
             "granularity": [1] * model.get_submodule(name).weight.dim()} for name in PRUNED if sparsity[name] > 0]


def run_method(method: str, net: dict[str, Any], seed: int, device: torch.device, sparsity: dict[str, float] | None,
               loaders: tuple[Any, Any], epochs: int) -> tuple[torch.nn.Module, list[float], dict[str, float] | None]:
    train_loader, test_loader = loaders
    seed_everything(seed)
    model = net["build"]().to(device)
    accuracies: list[float] = []

    def record(m: torch.nn.Module, epoch: int) -> None:
        accuracies.append(evaluate_accuracy(m, test_loader))

    train = make_training_func(train_loader, progress=False, on_epoch_end=record)
    steps = len(train_loader)
    lr = net["lr"]
    if method == "dense":
        train(model, _adam(model, lr, traced=False), classification_step, None, None, epochs)
        return model, accuracies, None
    if method.startswith("DPAP"):
        preset = "paper" if method.endswith("paper") else "braincog"
        evaluator = TorchEvaluator(train, _adam(model, lr), classification_step)
        pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=epochs,
                            steps_per_epoch=steps, preset=preset)
        model, masks = pruner.compress()
        pruner.unwrap_model()
        # a layer DPAP leaves alone (the first conv, by default) has no mask: sparsity 0
        reached = {n: 1.0 - float(masks[n]["weight"].mean()) if n in masks else 0.0 for n in PRUNED}
        return model, accuracies, reached
    assert sparsity is not None
    config = _baseline_config(model, sparsity)
    half = epochs // 2
    if method == "NNI Movement":
        evaluator = TorchEvaluator(train, _adam(model, lr), classification_step)
        pruner = MovementPruner(model, config, evaluator, warmup_step=steps,
                                cooldown_begin_step=int(0.75 * epochs * steps))
        _, masks = pruner.compress(epochs * steps, epochs)
    else:
        train(model, _adam(model, lr, traced=False), classification_step, None, None, half)
        if method == "NNI Taylor":
            evaluator = TorchEvaluator(train, _adam(model, lr), classification_step)
            pruner = TaylorPruner(model, config, evaluator, training_steps=steps)
            _, masks = pruner.compress()
            remaining = epochs - half - 1
        else:
            pruner = L1NormPruner(model, config)
            _, masks = pruner.compress()
            remaining = epochs - half
        # fine-tune with the masks applied in every forward (NNI's wrappers stay in place)
        train(model, _adam(model, lr, traced=False), classification_step, None, None, remaining)
    masks = pruner.get_masks()
    pruner.unwrap_model()
    _apply_nni_masks(model, masks)
    return model, accuracies, None


def _energy(model: torch.nn.Module, x: torch.Tensor) -> float:
    return sum(c.energy_pj for c in activity_costs(model, x).values())


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = setup(args)
    seeds = [0] if args.quick else [0, 1, 2]
    rows: dict[str, list[list[str]]] = {}
    data: dict[str, Any] = {"seeds": seeds, "nets": {}}
    for net_name, net in NETS.items():
        epochs = 3 if args.quick else net["epochs"]
        results: dict[str, dict[str, list[float]]] = {m: {"acc": [], "params": [], "flops": [], "energy": [],
                                                          "converge": []} for m in METHODS}
        for seed in seeds:
            loaders = digits_loaders(64, seed=seed)
            x = next(iter(loaders[1]))[0].to(device)
            dense_model: torch.nn.Module | None = None
            dense_best = 1.0
            sparsity: dict[str, float] | None = None
            for method in METHODS:
                # a fresh loader per method, same seed: every method sees the same batches in the same order
                loaders = digits_loaders(64, seed=seed)
                model, accuracies, reached = run_method(method, net, seed, device, sparsity, loaders, epochs)
                if reached is not None and method == "DPAP braincog":
                    sparsity = reached
                if method == "dense":
                    dense_model, dense_best = model, max(accuracies)
                assert dense_model is not None
                model.eval()
                costs, dense_costs = layer_costs(model, x[:2]), layer_costs(dense_model, x[:2])
                result = results[method]
                result["acc"].append(evaluate_accuracy(model, loaders[1]))
                kept = totals(costs, PRUNED)["params_kept"]
                result["params"].append(kept / totals(dense_costs, PRUNED)["params_total"])
                result["flops"].append(totals(costs)["macs_kept"] / totals(dense_costs)["macs_total"])
                if net_name == "SNN":
                    result["energy"].append(_energy(model, x) / _energy(dense_model, x))
                first = next((i + 1 for i, a in enumerate(accuracies) if a >= dense_best), None)
                result["converge"].append(float(first) if first is not None else float("nan"))
                print(f"{net_name} seed {seed} {method}: accuracy {result['acc'][-1]:.2%}, "
                      f"params kept {result['params'][-1]:.1%}", flush=True)
        table_rows = []
        for method, result in results.items():
            reached = [c for c in result["converge"] if c == c]
            count = f"({len(reached)}/{len(seeds)})"
            converge = f"{statistics.fmean(reached):.1f} {count}" if reached else f"never {count}"
            table_rows.append([method, mean_std(result["acc"], 100, unit="%"), mean_std(result["params"], 100, 1, "%"),
                               mean_std(result["flops"], 100, 1, "%"),
                               mean_std(result["energy"], 100, 1, "%") if result["energy"] else "-", converge])
        headers = ["method", "test accuracy", "prunable params kept", "FLOPs kept", "energy vs dense",
                   "epochs to dense best"]
        rows[net_name] = table_rows
        data["nets"][net_name] = {"epochs": epochs, "results": results}
        data["nets"][net_name]["table"] = [dict(zip(headers, r)) for r in table_rows]
    tables = [(f"digits {name}: {data['nets'][name]['epochs']} epochs, seeds {seeds}",
               format_table(r, ["method", "test accuracy", "prunable params kept", "FLOPs kept", "energy vs dense",
                                "epochs to dense best"])) for name, r in rows.items()]
    save("quality", args, data, tables)


if __name__ == "__main__":
    main()
