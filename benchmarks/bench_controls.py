"""Controls for DPAP's choice of units: its own schedule replayed with other choices (random, |w|).

DPAP decides two things at every epoch end: *how many* units (channels, neurons, synapses) each
layer keeps -- the survival rule of Eqs. (9)-(11) with its adaptive per-layer bar -- and *which*
ones -- the developmental importance (spike traces, dendritic spines, BCM). A control run keeps
the first and replaces the second: a DPAP run with the library's defaults records, for every
layer and epoch, how many output units and how many live synapses it kept; the control trains
from the same initial weights on the same batches (``bench_frontier.Seed``) and, at the same
epoch ends, keeps exactly as many, chosen by another score:

* ``random``: uniformly at random among the alive ones (a fixed generator per seed);
* ``magnitude``: the largest ``|w|`` (units: the L1 norm of their incoming weights; conv kernel
  slices: summed);
* ``importance``: DPAP's own importance, the top units each epoch (checks the replay itself:
  it should land where DPAP does);

optionally in one layer or one kind of unit only (``random@fc1``, ``random@fc1.neurons``,
``random@fc1.synapses``), the other layers and kinds following DPAP's rule. A synapse counts
as live when its input still carries a signal (a synapse fed by a removed unit is gone in the
size count too). If a control ends with fewer weights than DPAP (a synapse kept earlier can
lose its input later), ``params_removed`` says so: the table compares the accuracies at the
sizes each run reached.

The replay patches ``nni_dpap._layers.LayerState.update`` for the duration of a run (a control
experiment, not a library feature). Records go to ``results/controls.jsonl`` as they are made
(a stopped run resumes), then ``controls.json`` and ``controls.md``.

    python benchmarks/bench_controls.py          # digits SNN (10 seeds), mnist5k SNN (5 seeds): about 50 minutes
    python benchmarks/bench_controls.py --nets digits_snn --seeds 0 1 --controls random magnitude
    python benchmarks/bench_controls.py --nets mnist5k_snn --controls magnitude@fc1.neurons magnitude@fc1.synapses \
        magnitude@conv2                        # |w| in one layer or kind (make bench runs it): about 15 minutes
"""

from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from _common import RecordLog, parser, save, setup
from bench_frontier import NETS, Seed, _size
from torch import Tensor

from nni_dpap._layers import LayerState
from nni_dpap.report import format_table

#: seeds per net when ``--seeds`` is not given (the digits test split is small: one image is 0.28 points)
SEEDS = {"digits_snn": list(range(10)), "mnist5k_snn": list(range(5)), "digits_ann": list(range(10))}
CONTROLS = ("importance", "random", "magnitude", "random@conv2", "random@fc1", "random@fc1.neurons",
            "random@fc1.synapses")
_Log = dict[tuple[str, int], tuple[int, int]]  # (layer, epoch) -> (units kept, live synapses kept)


def _live_inputs(importance: dict[str, Tensor]) -> Tensor:
    """Inputs that carried a signal this epoch: a removed upstream unit leaves its column of BCM at 0."""
    return importance["synapse"].abs().sum(0) > 0


def _top(candidates: Tensor, score: Tensor, n: int) -> Tensor:
    """The ``n`` candidates with the highest score, as a mask."""
    ranked = torch.where(candidates, score.to(candidates.device).float(), -torch.inf).flatten()
    keep = torch.zeros(candidates.numel(), dtype=torch.bool, device=candidates.device)
    keep[ranked.topk(n).indices] = True
    return keep.view_as(candidates)


def _scores(layer: LayerState, choice: str, importance: dict[str, Tensor],
            generator: torch.Generator) -> tuple[Callable[[], Tensor], Callable[[], Tensor]]:
    """Scores of the layer's units and synapses under ``choice``."""
    strength = layer.weight.detach().abs()
    if strength.dim() > 2:
        strength = strength.flatten(2).sum(-1)  # a conv kernel slice's synapse: its summed |w|
    if choice == "random":
        return (lambda: torch.rand(strength.shape[0], generator=generator),
                lambda: torch.rand(strength.shape, generator=generator))
    if choice == "magnitude":
        return lambda: strength.sum(1), lambda: strength
    if choice == "importance":
        return lambda: importance["neuron"], lambda: importance["synapse"]
    raise SystemExit(f"unknown control {choice!r}: use random, magnitude or importance[@layer[.neurons|.synapses]]")


@contextlib.contextmanager
def _patched(update: Callable[..., None]) -> Iterator[None]:
    original = LayerState.update
    LayerState.update = update  # type: ignore[method-assign]
    try:
        yield
    finally:
        LayerState.update = original  # type: ignore[method-assign]


def recording(log: _Log) -> contextlib.AbstractContextManager[None]:
    """DPAP's own update, writing down what each layer keeps at every epoch end."""
    original = LayerState.update

    def update(layer: LayerState, importance: dict[str, Tensor], epoch: int, keep_at_least: int) -> None:
        original(layer, importance, epoch, keep_at_least)
        units = layer.neuron_mask
        synapses = layer.synapse_mask & units[:, None] & _live_inputs(importance)
        log[(layer.link.name, epoch)] = (int(units.sum()), int(synapses.sum()))
    return _patched(update)


def replaying(log: _Log, control: str, generator: torch.Generator) -> contextlib.AbstractContextManager[None]:
    """The recorded counts, the units chosen by ``control`` (``choice[@layer[.kind]]``)."""
    original = LayerState.update
    choice, _, where = control.partition("@")
    only_layer, _, only_kind = where.partition(".")

    def update(layer: LayerState, importance: dict[str, Tensor], epoch: int, keep_at_least: int) -> None:
        if (layer.link.name, epoch) not in log or (only_layer and only_layer != layer.link.name):
            return original(layer, importance, epoch, keep_at_least)
        units_kept, synapses_kept = log[(layer.link.name, epoch)]
        unit_score, synapse_score = _scores(layer, choice, importance, generator)
        if layer.neurons is not None:
            if only_kind in ("", "neurons"):
                alive = layer.neuron_mask
                if int(alive.sum()) > units_kept:
                    layer.neurons.mask = layer.neurons.mask & _top(alive, unit_score(), units_kept)
            else:
                layer.neurons.step(importance["neuron"], epoch, keep_at_least, layer.removed_units)
        if layer.synapses is not None:
            if only_kind in ("", "synapses"):
                alive = layer.synapse_mask & _live_inputs(importance) & layer.neuron_mask[:, None]
                if int(alive.sum()) > synapses_kept:
                    layer.synapses.mask = _top(alive, synapse_score(), synapses_kept)
            else:  # DPAP's own synapse rule
                layer.update_synapses(importance["synapse"], epoch, keep_at_least)
    return _patched(update)


def _record(net: str, method: str, seed: int, model: torch.nn.Module, accuracies: list[float],
            run: Seed, seconds: float) -> dict[str, Any]:
    removed, layers = _size(model, run.example, run.layers)
    return {"net": net, "method": method, "seed": seed, "params_removed": removed,
            "accuracy": 100 * statistics.fmean(accuracies[-5:]), "accuracy_final": 100 * accuracies[-1],
            "layers": layers, "seconds": seconds}


def run_seed(net: str, seed: int, controls: list[str], device: torch.device, quick: bool,
             have: set[tuple[str, str, int]], write: Callable[[dict[str, Any]], None]) -> None:
    run = Seed(net, NETS[net], seed, device, quick)
    todo = [c for c in ["dense", "dpap", *controls] if (net, c, seed) not in have]
    if not todo:
        return
    start = time.perf_counter()
    if "dense" in todo:
        model, accuracies, _ = run.dense()
        write(_record(net, "dense", seed, model, accuracies, run, time.perf_counter() - start))
    log: _Log = {}
    start = time.perf_counter()
    with recording(log):  # (re-run when only controls are missing: the replay needs the counts)
        model, accuracies = run.dpap({})
    if "dpap" in todo:
        write(_record(net, "dpap", seed, model, accuracies, run, time.perf_counter() - start))
    for control in controls:
        if control in todo:
            start = time.perf_counter()
            with replaying(log, control, torch.Generator().manual_seed(1000 + seed)):
                model, accuracies = run.dpap({})
            write(_record(net, control, seed, model, accuracies, run, time.perf_counter() - start))


def summarize(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    tables = []
    for net in dict.fromkeys(r["net"] for r in records):
        by = {(r["method"], r["seed"]): r for r in records if r["net"] == net}
        rows = []
        for method in dict.fromkeys(r["method"] for r in records if r["net"] == net):
            seeds = [s for (m, s) in by if m == method and ("dense", s) in by and ("dpap", s) in by]
            if not seeds:
                continue
            runs = [by[(method, s)] for s in seeds]
            vs_dense = [by[(method, s)]["accuracy"] - by[("dense", s)]["accuracy"] for s in seeds]
            vs_dpap = [by[(method, s)]["accuracy"] - by[("dpap", s)]["accuracy"] for s in seeds]
            final = [by[(method, s)]["accuracy_final"] - by[("dense", s)]["accuracy_final"] for s in seeds]
            rows.append([method, len(seeds), _mean_std([100 * r["params_removed"] for r in runs], 1, ""),
                         _mean_std(vs_dense), _mean_std(final),
                         "-" if method in ("dense", "dpap") else
                         f"{_mean_std(vs_dpap)} ({sum(v > 0 for v in vs_dpap)}/{len(seeds)})"])
        tables.append((net, format_table(rows, ["choice of units", "seeds", "params removed %",
                                                "vs dense (last 5)", "vs dense (final)",
                                                "vs DPAP, same seed (seeds ahead)"])))
    return tables


def _mean_std(values: list[float], digits: int = 2, sign: str = "+") -> str:
    if len(values) < 2:
        return f"{values[0]:{sign}.{digits}f}" if values else "-"
    return f"{statistics.fmean(values):{sign}.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--nets", nargs="+", choices=sorted(NETS), help="default: digits_snn and mnist5k_snn "
                     "(--quick: digits_snn)")
    cli.add_argument("--seeds", nargs="+", type=int,
                     help="default: 10 for the digits nets, 5 for mnist5k (--quick: seed 0)")
    cli.add_argument("--controls", nargs="+", default=list(CONTROLS))
    cli.add_argument("--fresh", action="store_true", help="ignore the records of an earlier run")
    args = cli.parse_args()
    device = setup(args)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    log = RecordLog(results / ("controls_quick.jsonl" if args.quick else "controls.jsonl"), fresh=args.fresh)
    records = log.records

    def write(record: dict[str, Any]) -> None:
        log.write(record, f"{record['net']} seed {record['seed']} {record['method']}: "
                          f"{100 * record['params_removed']:.1f}% removed, {record['accuracy']:.2f}%")

    for net in args.nets or (["digits_snn"] if args.quick else ["digits_snn", "mnist5k_snn"]):
        for seed in args.seeds if args.seeds is not None else [0] if args.quick else SEEDS[net]:
            have = {(r["net"], r["method"], r["seed"]) for r in records}
            run_seed(net, seed, args.controls, device, args.quick, have, write)
    save("controls", args, {"records": records}, summarize(records))


if __name__ == "__main__":
    main()
