"""DPAP in an NNI compression pipeline on the digits: pruning fused with QAT (and distillation), to a small int8 model.

For every seed, from the same initial weights and on the same batches:

1. dense float: plain training;
2. DPAP float: ``DPAPPruner.compress()``, then real removal (``nni_dpap.speedup``);
3. DPAP + QAT int8: ``DPAPPruner`` fused with NNI's ``QATQuantizer`` in one training run
   (``QATQuantizer.from_compressor(pruner, ...)``, fake quantization from ``--quant-start`` of
   the run), then real removal and int8 storage (``nni_dpap.quantize.shrink_and_quantize``);
4. with ``--distill``: DPAP fused with NNI's ``DynamicLayerwiseDistiller`` (KL on the class
   scores, temperature 2) from the dense model of step 1 as teacher, float and + QAT int8.

It prints test accuracy, parameters, the model's bytes on disk (``torch.save`` of its
state dict) and the latency of one forward pass over a batch of 64 test images (one CPU
thread; the models of a seed take turns, fastest of 40 rounds), as mean ± std over the seeds.

    python examples/pipeline_digits.py                  # digits SNN, 3 seeds, ~3 minutes on 2 cores
    python examples/pipeline_digits.py --model ann
    python examples/pipeline_digits.py --seeds 0 1 2 3 4 --distill
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
from _digits_common import DIGITS_HPARAMS
from nni.compression import TorchEvaluator
from nni.compression.distillation import DynamicLayerwiseDistiller
from nni.compression.quantization import QATQuantizer
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.data import digits_loaders
from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.quantize import QuantizedLayer, qat_config_list, shrink_and_quantize, state_dict_bytes
from nni_dpap.report import format_table
from nni_dpap.speedup import speedup
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func, seed_everything

MODELS: dict[str, tuple[Callable[[], nn.Module], int, float, str]] = {
    # name: (builder, epochs, Adam learning rate, module whose output is the class scores)
    "snn": (lambda: SpikingConvNet(1, 8, 10, T=4), 60, 3e-3, "decoder"),
    "ann": (lambda: LeNetANN(1, 8, 10), 40, 1e-3, "fc2"),
}


@torch.no_grad()
def latencies_ms(models: dict[str, nn.Module], x: torch.Tensor, rounds: int = 40) -> dict[str, float]:
    """Fastest wall time of one forward pass of each model, in milliseconds.

    The models take turns, one forward pass each per round, so that a busy machine slows
    them alike; the minimum over the rounds is the least disturbed measurement.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model.eval()
        model(x)  # warm-up
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model(x)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(values) for name, values in times.items()}


def _measure(model: nn.Module, test_loader: Any) -> dict[str, Any]:
    int8 = sum(m.weight_int8.numel() for m in model.modules() if isinstance(m, QuantizedLayer))
    return {"accuracy": evaluate_accuracy(model, test_loader),
            "params": sum(p.numel() for p in model.parameters()) + int8,
            "bytes": state_dict_bytes(model), "model": model}


def _dpap_run(args: argparse.Namespace, seed: int, quantize: bool, teacher: nn.Module | None) -> dict[str, Any]:
    """One fused training run (DPAP [+ QAT] [+ distillation]), then real removal [and int8]."""
    build, _, lr, scores = MODELS[args.model]
    train_loader, test_loader = digits_loaders(args.batch_size, seed=seed)
    x = next(iter(test_loader))[0]
    seed_everything(seed)
    model = build()
    train = make_training_func(train_loader, progress=not args.no_progress)
    evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=lr), classification_step)
    epochs, steps = args.epochs, len(train_loader)
    # NNI's pattern: the first compressor, then each next one from_compressor(previous), then the last one's compress
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=epochs,
                        steps_per_epoch=steps, hparams=DIGITS_HPARAMS)
    last: Any = pruner
    if teacher is not None:
        last = DynamicLayerwiseDistiller.from_compressor(
            last, [{"op_names": [scores], "target_names": ["_output_"], "lambda": args.distill_lambda,
                    "apply_method": "kl"}],
            teacher_model=teacher, teacher_predict=lambda batch, t: t(batch[0]), origin_loss_lambda=1.0)
    quantizer = None
    if quantize:
        last = quantizer = QATQuantizer.from_compressor(last, qat_config_list(model),
                                                        quant_start_step=int(args.quant_start * epochs * steps))
    start = time.perf_counter()
    if last is pruner:
        pruner.compress()
    else:
        last.compress(max_steps=epochs * steps, max_epochs=epochs)
    seconds = time.perf_counter() - start
    wrapped_accuracy = evaluate_accuracy(model, test_loader)  # masked (and fake-quantized), as NNI trained it
    masks = pruner.get_masks()
    calibration = quantizer.get_calibration_config() if quantizer is not None else None
    last.unwrap_model()
    if teacher is not None:
        last_distiller = last if quantizer is None else last.fused_compressors[1]
        last_distiller.unwrap_teacher_model()
    zeros = all(bool((getattr(model.get_submodule(n), t)[m == 0] == 0).all()) for n, d in masks.items()
                for t, m in d.items())
    kept = sum(int(m.sum()) for d in masks.values() for t, m in d.items() if t == "weight")
    total = sum(m.numel() for d in masks.values() for t, m in d.items() if t == "weight")
    if calibration is not None:
        shrink_and_quantize(model, x[:2], masks, calibration)
    else:
        speedup(model, x[:2], masks)
    return {**_measure(model, test_loader), "masked_accuracy": wrapped_accuracy, "pruned_are_zero": zeros,
            "prunable_kept": kept / total, "seconds": seconds}


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, dict[str, Any]]:
    build, _, lr, _ = MODELS[args.model]
    train_loader, test_loader = digits_loaders(args.batch_size, seed=seed)
    seed_everything(seed)
    dense = build()
    start = time.perf_counter()
    make_training_func(train_loader, progress=not args.no_progress)(
        dense, torch.optim.Adam(dense.parameters(), lr=lr), classification_step, None, None, args.epochs)
    results = {"dense float": {**_measure(dense, test_loader), "prunable_kept": 1.0,
                               "seconds": time.perf_counter() - start}}
    results["DPAP float"] = _dpap_run(args, seed, quantize=False, teacher=None)
    results["DPAP + QAT int8"] = _dpap_run(args, seed, quantize=True, teacher=None)
    if args.distill:
        teacher = dense.eval()
        results["DPAP + KD float"] = _dpap_run(args, seed, quantize=False, teacher=teacher)
        results["DPAP + KD + QAT int8"] = _dpap_run(args, seed, quantize=True, teacher=teacher)
    models = {name: r.pop("model") for name, r in results.items()}
    for name, value in latencies_ms(models, next(iter(test_loader))[0]).items():
        results[name]["latency_ms"] = value
    return results


def _mean_std(values: list[float], fmt: str) -> str:
    mean = statistics.fmean(values)
    spread = fmt.replace("+", "").format(statistics.stdev(values)) if len(values) > 1 else ""
    return f"{fmt.format(mean)} ± {spread}" if spread else fmt.format(mean)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="snn", help="digits SNN or ANN (default snn)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 60 SNN, 40 ANN)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch size")
    parser.add_argument("--quant-start", type=float, default=0.5,
                        help="fraction of the run after which fake quantization starts (default 0.5)")
    parser.add_argument("--distill", action="store_true", help="also fuse NNI's distiller (dense teacher)")
    parser.add_argument("--distill-lambda", type=float, default=1.0, help="weight of the distillation loss")
    parser.add_argument("--json", default=None, help="write every run's numbers to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args()
    args.epochs = args.epochs or MODELS[args.model][1]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(args, seed))
        print(f"seed {seed}: " + ", ".join(f"{k} {r['accuracy']:.2%}" for k, r in runs[-1].items()), flush=True)
    rows = []
    dense_bytes = statistics.fmean(r["dense float"]["bytes"] for r in runs)
    for name in runs[0]:
        def col(key: str) -> list[float]:
            return [float(r[name][key]) for r in runs]
        rows.append([name, _mean_std([100 * v for v in col("accuracy")], "{:.2f}%"),
                     _mean_std([100 * v for v in col("prunable_kept")], "{:.1f}%"), _mean_std(col("params"), "{:,.0f}"),
                     f"{_mean_std(col('bytes'), '{:,.0f}')} ({dense_bytes / statistics.fmean(col('bytes')):.1f}x)",
                     _mean_std(col("latency_ms"), "{:.2f}"), _mean_std(col("seconds"), "{:.0f}")])
    print(f"\n{args.model.upper()} on the digits (360 test images), {args.epochs} epochs, QAT from "
          f"{args.quant_start:.0%} of the run, mean ± std over seeds {args.seeds}\n")
    print(format_table(rows, ["model", "test accuracy", "prunable weights kept", "parameters",
                              "bytes on disk (x smaller than dense)", "latency ms / 64 images", "train s"]))
    for name in [n for n in runs[0] if n not in ("dense float", "DPAP float")]:
        diffs = [100 * (r[name]["accuracy"] - r["DPAP float"]["accuracy"]) for r in runs]
        print(f"{name} - DPAP float, paired by seed: {_mean_std(diffs, '{:+.2f}')} points")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "runs": runs}, fh, indent=2)


if __name__ == "__main__":
    main()
