"""Shared driver of the digits examples: dense vs DPAP, same seeds, same epochs, one table.

For every seed the dense model and the DPAP model start from the same initial
weights, see the same batches in the same order and train for the same number of
epochs; accuracy is measured once, after the last epoch, on the held-out test split.
The test split has 360 images (one image = 0.28 points), so results are reported
as mean and spread over several seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from typing import Any, Callable

import nni
import torch
from nni.compression import TorchEvaluator
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.allocator import keep_freed_memory
from nni_dpap.data import digits_loaders
from nni_dpap.report import format_table, layer_costs, totals
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func, seed_everything


def parse_args(description: str, defaults: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=defaults["epochs"], help="training epochs (dense and DPAP)")
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the initial weights and the shuffling (the split is fixed)")
    parser.add_argument("--preset", default="braincog", choices=["braincog", "paper"], help="DPAP rule preset")
    parser.add_argument("--hparams", type=json.loads, default=None,
                        help="JSON object of overrides of the library's defaults, e.g. '{\"conv_eps\": 0.8}'")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--log-level", default="WARNING", help="logging level (INFO shows DPAP's epochs)")
    for name, (kind, value, text) in defaults.get("extra", {}).items():
        parser.add_argument(f"--{name}", type=kind, default=value, help=text)
    return parser.parse_args()


def _run_seed(args: argparse.Namespace, build: Callable[[], nn.Module], seed: int) -> dict[str, Any]:
    train_loader, test_loader = digits_loaders(args.batch_size, seed=seed)
    train = make_training_func(train_loader, progress=not args.no_progress)
    example = next(iter(test_loader))[0][:8]

    # one step first, untimed: a spiking net's fused kernel is compiled on first use (once per machine, ~40 s)
    # and torch sets up its autograd and thread pools on the first backward; the runs' times are training time
    build()(example).sum().backward()
    seed_everything(seed)
    dense = build()
    start = time.perf_counter()
    train(dense, torch.optim.Adam(dense.parameters(), lr=args.lr), classification_step, None, None, args.epochs)
    dense_time = time.perf_counter() - start

    # a fresh loader with the same seed: DPAP sees the same batches in the same order as the dense run
    train_loader, _ = digits_loaders(args.batch_size, seed=seed)
    train = make_training_func(train_loader, progress=not args.no_progress)
    seed_everything(seed)
    model = build()
    evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=args.lr), classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=args.epochs,
                        steps_per_epoch=len(train_loader), preset=args.preset, hparams=args.hparams)
    start = time.perf_counter()
    model, _ = pruner.compress()
    pruner.unwrap_model()
    dpap_time = time.perf_counter() - start

    # every conv/linear layer but the output: the first conv counts although DPAP leaves it alone by default
    prunable = [n for n in layer_costs(dense, example) if n not in pruner.output_layers]
    dense_costs, dpap_costs = layer_costs(dense, example), layer_costs(model, example)
    return {
        "seed": seed,
        "dense_accuracy": evaluate_accuracy(dense, test_loader),
        "dpap_accuracy": evaluate_accuracy(model, test_loader),
        "dense_seconds": dense_time,
        "dpap_seconds": dpap_time,
        "prunable_params_total": totals(dense_costs, prunable)["params_total"],
        "prunable_params_kept": totals(dpap_costs, prunable)["params_kept"],
        "prunable_params_fraction": totals(dpap_costs, prunable)["params_fraction"],
        "flops_fraction": totals(dpap_costs)["macs_kept"] / totals(dense_costs)["macs_total"],
        "layers": {n: {"pruned": n in pruner.layers, "output": n in pruner.output_layers, "units_kept": c.units_kept,
                       "units_total": c.units_total, "params_kept": c.params_kept, "params_total": c.params_total}
                   for n, c in dpap_costs.items()},
    }


def _mean_spread(values: list[float], percent: bool = True) -> str:
    scale, unit = (100.0, "%") if percent else (1.0, "")
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.2f}{unit}"
    return f"{mean:.2f} ± {statistics.stdev(values) * scale:.2f}{unit}"


def run(args: argparse.Namespace, build: Callable[[], nn.Module], title: str) -> dict[str, Any]:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()  # no page faults on every batch (glibc); dense and DPAP alike
    runs = []
    for seed in args.seeds:
        runs.append(_run_seed(args, build, seed))
        r = runs[-1]
        print(f"seed {seed}: dense {r['dense_accuracy']:.2%}, DPAP {r['dpap_accuracy']:.2%} keeping "
              f"{r['prunable_params_fraction']:.1%} of the prunable parameters", flush=True)

    def col(key: str) -> list[float]:
        return [float(r[key]) for r in runs]

    summary = {
        "title": title, "epochs": args.epochs, "seeds": args.seeds, "preset": args.preset, "hparams": args.hparams,
        "dense_accuracy_mean": statistics.fmean(col("dense_accuracy")),
        "dpap_accuracy_mean": statistics.fmean(col("dpap_accuracy")),
        "prunable_params_fraction_mean": statistics.fmean(col("prunable_params_fraction")),
        "flops_fraction_mean": statistics.fmean(col("flops_fraction")),
        "runs": runs,
    }
    n_seeds = len(runs)
    total = runs[0]["prunable_params_total"]
    rows = [
        ["dense", _mean_spread(col("dense_accuracy")), f"{total:,.0f} (100%)", "100%",
         _mean_spread(col("dense_seconds"), percent=False)],
        [f"DPAP ({args.preset})", _mean_spread(col("dpap_accuracy")),
         f"{statistics.fmean(col('prunable_params_kept')):,.0f} ({_mean_spread(col('prunable_params_fraction'))})",
         _mean_spread(col("flops_fraction")), _mean_spread(col("dpap_seconds"), percent=False)],
    ]
    print(f"\n{title} on the digits test split (360 held-out images), {args.epochs} epochs, "
          f"mean ± std over {n_seeds} seed{'s' if n_seeds > 1 else ''} {args.seeds}\n")
    print(format_table(rows, ["model", "test accuracy", "prunable params kept", "FLOPs kept", "train s"]))
    layer_rows = []
    for name, first in runs[0]["layers"].items():
        units = [r["layers"][name]["units_kept"] for r in runs]
        fractions = [r["layers"][name]["params_kept"] / r["layers"][name]["params_total"] for r in runs]
        role = "yes" if first["pruned"] else "no (output)" if first["output"] else "no (first conv)"
        layer_rows.append([name, role,
                           f"{statistics.fmean(units):.1f}/{first['units_total']}", _mean_spread(fractions)])
    print()
    print(format_table(layer_rows, ["layer", "pruned", "channels/neurons kept", "params kept"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    return summary
