"""Spatio-temporal DPAP on event data: the paper's N-MNIST SNN on the offline event digits.

scikit-learn's digits are seen by a simulated event camera moving in three saccades
and saved as N-MNIST ``.bin`` files (``nni_dpap.data.event_digits``; the same loader reads
real N-MNIST with ``--data nmnist --data-dir DIR``). Three runs from the same initial
weights, same batches, same epochs: dense, DPAP in space only, DPAP in space and time.
Prints accuracy, weight sparsity, time sparsity and energy against the dense SNN:
measured (synaptic operations counted on the test set, accumulates 0.9 pJ,
multiply-accumulates 4.6 pJ) and the paper's (1 - rho_w)(1 - rho_t).

    python examples/events_snn.py --epochs 20 --T 4
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import nni
import torch
from nni.compression import TorchEvaluator

from nni_dpap import DPAPPruner
from nni_dpap.data import load_data, make_loaders
from nni_dpap.models import get_model
from nni_dpap.report import activity_costs, format_table, layer_costs, totals
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func, seed_everything


def hparams(epochs: int) -> dict:
    beta = round(10.0 * min(1.0, epochs / 60), 3)  # see the README: short runs start with less survival
    return {"relative_schedule": True, "conv_eta": 0.2, "linear_eta": 0.2, "time_eta": 0.2,
            "conv_start_epoch": 0.0, "linear_start_epoch": 0.0, "time_start_epoch": 0.2,
            "conv_eps": 0.6, "linear_eps": 2.0, "time_eps": 1.6, "time_bonus": 1.0,
            "conv_beta": beta, "linear_beta": beta, "time_beta": beta}


def energy(model: torch.nn.Module, frames: list[torch.Tensor], T: int) -> float:
    """Energy in pJ per sample over the test set, from counted operations."""
    total, samples = 0.0, 0
    for x in frames:
        batch = x.shape[0] // T
        total += sum(c.energy_pj for c in activity_costs(model, x, samples=batch).values()) * batch
        samples += batch
    return total / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of every run")
    parser.add_argument("--T", type=int, default=4, help="frames (time steps) per sample")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the shuffling")
    parser.add_argument("--data", default="event_digits", help="event_digits (offline) or nmnist")
    parser.add_argument("--data-dir", default=None, help="folder of the data (event_digits: where to generate)")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--log-level", default="WARNING", help="logging level")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    data = load_data(args.data, args.data_dir, T=args.T)
    train_loader, test_loader = make_loaders(data, args.batch_size, args.seed)
    test_frames = [x for x, _ in test_loader]
    example = test_frames[0]
    rows, results = [], {}
    dense_energy = None
    for mode in ("dense", "DPAP space", "DPAP space + time"):
        seed_everything(args.seed)
        model = get_model("snn_mnist", data.input_shape, data.num_classes, T=args.T, encode=False)
        train = make_training_func(train_loader, progress=not args.no_progress)
        start = time.perf_counter()
        time_sparsity = 0.0
        if mode == "dense":
            train(model, torch.optim.Adam(model.parameters(), lr=args.lr), classification_step, None, None,
                  args.epochs)
            prunable = [n for n in layer_costs(model, example) if n != "fc2"]
        else:
            evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=args.lr),
                                       classification_step)
            pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=args.epochs,
                                steps_per_epoch=len(train_loader), hparams=hparams(args.epochs),
                                temporal=mode.endswith("time"))
            model, _ = pruner.compress()
            pruner.unwrap_model()
            prunable = list(pruner.layers)
            time_sparsity = pruner.time_sparsity()
        seconds = time.perf_counter() - start
        accuracy = evaluate_accuracy(model, test_loader)
        weight_sparsity = 1.0 - totals(layer_costs(model, example), prunable)["params_fraction"]
        measured = energy(model, test_frames, args.T)
        dense_energy = dense_energy or measured
        paper = (1 - weight_sparsity) * (1 - time_sparsity)
        results[mode] = {"accuracy": accuracy, "weight_sparsity": weight_sparsity, "time_sparsity": time_sparsity,
                         "energy_pj_per_sample": measured, "energy_ratio": measured / dense_energy,
                         "paper_energy_ratio": paper, "seconds": seconds}
        rows.append([mode, f"{accuracy:.2%}", f"{weight_sparsity:.2%}", f"{time_sparsity:.2%}",
                     f"{measured / dense_energy:.2%}", f"{paper:.2%}", f"{seconds:.0f}"])
        print(f"{mode}: accuracy {accuracy:.2%}", flush=True)
    print(f"\nSNN 15C3-AP2-40C3-AP2-300FC-10FC on {args.data} ({len(data.test)} held-out samples), T = {args.T}, "
          f"{args.epochs} epochs, seed {args.seed}\n")
    print(format_table(rows, ["run", "accuracy", "weight sparsity", "time sparsity", "energy (measured)",
                              "energy (paper)", "train s"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "results": results}, fh, indent=2)


if __name__ == "__main__":
    main()
