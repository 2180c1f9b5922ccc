"""Shared driver of the digits examples: dense vs DPAP, same seed, same epochs, one table."""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any, Callable

import nni
import torch
from nni.compression import TorchEvaluator
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.data import digits_loaders
from nni_dpap.report import format_table, layer_costs, totals
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func, seed_everything


def parse_args(description: str, defaults: dict[str, Any]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=defaults["epochs"], help="training epochs (dense and DPAP)")
    parser.add_argument("--lr", type=float, default=defaults["lr"], help="Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, the init and the shuffling")
    parser.add_argument("--preset", default="braincog", choices=["braincog", "paper"], help="DPAP rule preset")
    parser.add_argument("--hparams", type=json.loads, default=defaults["hparams"],
                        help="JSON object of DPAP overrides, e.g. '{\"conv_eps\": 0.8}'")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--log-level", default="WARNING", help="logging level (INFO shows DPAP's epochs)")
    for name, (kind, value, text) in defaults.get("extra", {}).items():
        parser.add_argument(f"--{name}", type=kind, default=value, help=text)
    return parser.parse_args()


def run(args: argparse.Namespace, build: Callable[[], nn.Module], title: str) -> dict[str, Any]:
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    train_loader, test_loader = digits_loaders(args.batch_size, seed=args.seed)
    train = make_training_func(train_loader, progress=not args.no_progress)
    example = next(iter(test_loader))[0][:8]

    # dense baseline
    seed_everything(args.seed)
    dense = build()
    start = time.perf_counter()
    optimizer = torch.optim.Adam(dense.parameters(), lr=args.lr)
    train(dense, optimizer, classification_step, None, None, args.epochs)
    dense_time = time.perf_counter() - start
    dense_acc = evaluate_accuracy(dense, test_loader)

    # DPAP: same seed, same initial weights, same number of epochs
    seed_everything(args.seed)
    model = build()
    optimizer = nni.trace(torch.optim.Adam)(model.parameters(), lr=args.lr)
    evaluator = TorchEvaluator(train, optimizer, classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=args.epochs,
                        steps_per_epoch=len(train_loader), preset=args.preset, hparams=args.hparams)
    start = time.perf_counter()
    model, masks = pruner.compress()
    pruner.unwrap_model()
    dpap_time = time.perf_counter() - start
    dpap_acc = evaluate_accuracy(model, test_loader)

    prunable = list(pruner.layers)
    dense_costs, dpap_costs = layer_costs(dense, example), layer_costs(model, example)
    d_tot, p_tot = totals(dense_costs, prunable), totals(dpap_costs, prunable)
    d_all, p_all = totals(dense_costs), totals(dpap_costs)
    result = {
        "title": title,
        "epochs": args.epochs,
        "seed": args.seed,
        "preset": args.preset,
        "hparams": args.hparams,
        "dense": {"accuracy": dense_acc, "seconds": dense_time},
        "dpap": {
            "accuracy": dpap_acc,
            "seconds": dpap_time,
            "prunable_params_kept": p_tot["params_fraction"],
            "flops_kept": p_all["macs_kept"] / d_all["macs_total"],
            "layers": {n: {"units": f"{c.units_kept}/{c.units_total}", "params_kept": c.params_kept,
                           "params_total": c.params_total} for n, c in dpap_costs.items()},
        },
    }
    rows = [
        ["dense", f"{dense_acc:.2%}", f"{d_tot['params_kept']:,.0f} (100%)", "100%", f"{dense_time:.1f}"],
        [f"DPAP ({args.preset})", f"{dpap_acc:.2%}",
         f"{p_tot['params_kept']:,.0f} ({p_tot['params_fraction']:.1%})",
         f"{result['dpap']['flops_kept']:.1%}", f"{dpap_time:.1f}"],
    ]
    print(f"\n{title}: digits test split ({len(test_loader.dataset)} images), {args.epochs} epochs, seed {args.seed}\n")
    print(format_table(rows, ["model", "test accuracy", "prunable params kept", "FLOPs kept", "train s"]))
    layer_rows = [
        [n, "yes" if n in prunable else "no (output)", f"{c.units_kept}/{c.units_total}",
         f"{c.params_kept:,}/{c.params_total:,}", f"{c.params_kept / c.params_total:.1%}"]
        for n, c in dpap_costs.items()
    ]
    print()
    print(format_table(layer_rows, ["layer", "pruned", "channels/neurons kept", "params kept", "fraction"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result
