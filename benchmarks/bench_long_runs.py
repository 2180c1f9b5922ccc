"""The library's defaults over long runs: one calibration for 10 to 300 epochs, both presets, no collapse.

The defaults are relative to the planned number of epochs (``nni_dpap.policy.defaults``): start, stop
and fade of pruning are fractions of the run, ``beta`` grows with it. The frontier checks them at 15,
40 and 60 epochs; this script trains the digits SNN and the digits ANN of ``bench_frontier.py`` for
100, 200 and 300 epochs with ``DPAPPruner(..., epochs=E)`` and nothing else, the ``braincog`` preset
(the library's default) and the ``paper`` preset, next to the dense run of the same seed (same initial
weights, same batches in the same order: ``bench_frontier.Seed``). Accuracy is the mean of the last 5
epochs on the held-out split; "removed" counts the prunable parameters as the frontier does.

Records go to ``results/long_runs.jsonl`` as they are made (an interrupted run resumes), then
``long_runs.json`` and ``long_runs.md``.

    python benchmarks/bench_long_runs.py                 # both nets, 3 seeds (about 40 minutes on one core)
    python benchmarks/bench_long_runs.py --nets digits_ann --epochs 300 --seeds 0
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from _common import RecordLog, parser, save, setup
from bench_frontier import NETS, Seed, _record

from nni_dpap.report import format_table

PRESETS = ("braincog", "paper")


def run_all(name: str, epochs: int, seed: int, quick: bool, have: set[tuple[Any, ...]],
            write: Callable[[dict[str, Any]], None]) -> None:
    """The dense run and one DPAP run per preset of ``name`` for ``epochs`` and ``seed`` that ``have`` lacks."""
    if all((name, epochs, seed, method) in have for method in ("dense", *(f"dpap_{p}" for p in PRESETS))):
        return
    run = Seed(name, dataclasses.replace(NETS[name], epochs=epochs), seed, torch.device("cpu"), False)
    if quick:
        run.epochs = NETS[name].quick_epochs
    start = time.perf_counter()
    model, accuracies, _ = run.dense()
    best = max(accuracies)
    if (name, epochs, seed, "dense") not in have:
        write({**_record(name, "dense", "-", seed, model, accuracies, run, best, time.perf_counter() - start),
               "epochs_planned": epochs})
    for preset in PRESETS:
        if (name, epochs, seed, f"dpap_{preset}") not in have:
            start = time.perf_counter()
            model, accuracies = run.dpap({}, preset)  # the library's defaults for the run's epochs
            write({**_record(name, f"dpap_{preset}", preset, seed, model, accuracies, run, best,
                             time.perf_counter() - start), "epochs_planned": epochs})


def summarize(records: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """One row per (net, epochs, method): removed and accuracy, and the paired difference to dense."""
    dense = {(r["net"], r["epochs_planned"], r["seed"]): r["accuracy"] for r in records if r["method"] == "dense"}
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["net"], r["epochs_planned"], r["method"]), []).append(r)

    def stat(values: list[float]) -> str:
        return f"{statistics.fmean(values):+.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 \
            else f"{values[0]:+.2f}"

    rows, out = [], []
    for (net, epochs, method), rs in sorted(groups.items()):
        removed = [100 * r["params_removed"] for r in rs]
        accuracy = [r["accuracy"] for r in rs]
        delta = [r["accuracy"] - dense[(net, epochs, r["seed"])] for r in rs if (net, epochs, r["seed"]) in dense]
        out.append({"net": net, "epochs": epochs, "method": method, "seeds": len(rs),
                    "params_removed_mean": statistics.fmean(removed) / 100, "accuracy_mean": statistics.fmean(accuracy),
                    "vs_dense_mean": statistics.fmean(delta) if delta else None})
        rows.append([net, epochs, method, len(rs), f"{statistics.fmean(removed):.1f} ({min(removed):.1f}-"
                     f"{max(removed):.1f})", f"{statistics.fmean(accuracy):.2f}", stat(delta) if delta else "-"])
    table = format_table(rows, ["net", "epochs", "method", "seeds", "params removed % (range)",
                                "accuracy % (last 5)", "vs dense (same seed)"])
    return table, out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=["digits_snn", "digits_ann"], choices=["digits_snn", "digits_ann"])
    p.add_argument("--epochs", nargs="+", type=int, default=[100, 200, 300])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--summary-only", action="store_true", help="only summarise the records in long_runs.jsonl")
    args = p.parse_args()
    setup(args)
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    name = "long_runs_quick" if args.quick else "long_runs"
    log = RecordLog(results / f"{name}.jsonl")
    records = log.records
    have = {(r["net"], r["epochs_planned"], r["seed"], r["method"]) for r in records}

    def write(record: dict[str, Any]) -> None:
        have.add((record["net"], record["epochs_planned"], record["seed"], record["method"]))
        log.write(record, f"{record['net']} {record['epochs_planned']} epochs seed {record['seed']} "
                          f"{record['method']}: removed {100 * record['params_removed']:.1f}%, accuracy "
                          f"{record['accuracy']:.2f}%, {record['seconds']:.0f} s")

    for net in args.nets if not args.summary_only else []:
        for epochs in args.epochs:
            for seed in args.seeds[:1] if args.quick else args.seeds:
                run_all(net, epochs, seed, args.quick, have, write)
    wanted = [r for r in records if r["net"] in args.nets]
    table, summary = summarize(wanted)
    save(name, args, {"summary": summary, "presets": list(PRESETS)},
         [("the library's defaults over long runs (DPAPPruner(..., epochs=E), nothing else)", table)])


if __name__ == "__main__":
    main()
