"""Pruner overhead: time per training step with DPAP's hooks on vs plain training.

DPAP trains 6 epochs with its pruning window opening at the fourth and an initial survival
value no unit can use up (``beta = 1e9``): nothing is pruned, so the model is the same as
in plain training, but epochs 4-6 do all the work of a real run's window (every epoch end
computes the importance and updates every survival value) and epochs 1-3 that of the
epochs before it (the epoch end only checks the statistics). The difference is the cost of
reading the pre- and postsynaptic signals, committing the batch statistics, the survival
updates and re-applying masks after each optimizer step. (After the window DPAP records
nothing: that part of a run costs what plain training costs.) The plain model (same initial
weights, its own optimizer) trains inside DPAP's training function on the same batch just
before or after DPAP's model, the order alternating, so that both see the same state of the
machine; the overhead is the ratio of the median step times after the first 20 steps
(warm-up). The ratio of the mean step times is reported too, before and in the window: it
includes the steps that fold 16 batches into the BCM sums (``LayerStatistics.flush``) and
the epoch ends, which the median leaves out. The ratio repeats within a point inside one
process but moves by a few points between processes on this machine, so each network is
measured in ``--processes`` fresh processes (3), one after the other, and the median of
their ratios is reported with each one. Target: <= 10%.

    python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import statistics
import time
from typing import Any

import nni
import torch
from _common import parser, save, setup, sync, workloads
from nni.compression import TorchEvaluator

from nni_dpap import DPAPPruner
from nni_dpap.report import format_table
from nni_dpap.training import classification_step, seed_everything

EPOCHS = 6
#: The window opens at the fourth of the 6 epochs, with a survival value no unit can use up: nothing is pruned.
NO_PRUNING = {"conv_start_epoch": 0.5, "linear_start_epoch": 0.5, "conv_stop_epoch": None,
              "linear_stop_epoch": None, "conv_beta": 1e9, "linear_beta": 1e9}
WARMUP = 20


def paired_steps(work: dict[str, Any], device: torch.device) -> tuple[list[float], list[float], int]:
    """Step times of plain training and of DPAP training, taken in turns on the same batches, and the number
    of steps per epoch."""
    train_loader, _ = work["loaders"](0)
    seed_everything(0)
    model = work["build"]().to(device)
    plain_model = copy.deepcopy(model)
    plain_optimizer = torch.optim.Adam(plain_model.parameters(), lr=work["lr"])
    plain, hooked = [], []

    def timed(step: Any, times: list[float]) -> None:
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)

    def training(model, optimizer, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for epoch in range(max_epochs or 1):
            model.train()
            for i, (x, y) in enumerate(train_loader):
                x, y = x.to(device), y.to(device)

                def dpap_step() -> None:
                    loss = training_step((x, y), model)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()

                def plain_step() -> None:
                    loss = classification_step((x, y), plain_model)
                    plain_optimizer.zero_grad()
                    loss.backward()
                    plain_optimizer.step()

                pairs = [(plain_step, plain), (dpap_step, hooked)]
                for step, times in (pairs if (epoch + i) % 2 == 0 else pairs[::-1]):
                    timed(step, times)

    evaluator = TorchEvaluator(training, nni.trace(torch.optim.Adam)(model.parameters(), lr=work["lr"]),
                               classification_step, dummy_input=torch.rand(2, *work["input"], device=device))
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=work["epochs"],
                        steps_per_epoch=len(train_loader), hparams=NO_PRUNING)
    pruner.compress()
    assert pruner.dpap_config.conv.start_epoch == EPOCHS // 2 and all(  # the window opened and nothing was pruned
        bool(layer.neuron_mask.all()) for layer in pruner.layer_states.values())
    pruner.unwrap_model()
    return plain, hooked, len(train_loader)


def _measure(name: str, quick: bool, device_name: str, threads: int) -> tuple[list[float], list[float], int]:
    """:func:`paired_steps` of the workload ``name`` in this (fresh) process."""
    device = setup(argparse.Namespace(threads=threads, device=device_name))
    return paired_steps({**workloads(quick)[name], "epochs": EPOCHS}, device)


def _ratios(plain: list[float], hooked: list[float], steps: int) -> tuple[float, float, float]:
    """DPAP over plain: median step after the warm-up, mean step before the window and in it."""
    window = steps * EPOCHS // 2
    return (statistics.median(hooked[WARMUP:]) / statistics.median(plain[WARMUP:]) - 1,
            statistics.fmean(hooked[WARMUP:window]) / statistics.fmean(plain[WARMUP:window]) - 1,
            statistics.fmean(hooked[window:]) / statistics.fmean(plain[window:]) - 1)


def main() -> None:
    cli = parser(__doc__.splitlines()[0])
    cli.add_argument("--processes", type=int, default=3,
                     help="fresh processes per network; the ratio moves by a few points between processes")
    args = cli.parse_args()
    setup(args)
    rows, data = [], {}
    context = multiprocessing.get_context("spawn")
    for name in workloads(args.quick):
        runs = []
        for _ in range(1 if args.quick else args.processes):  # one after the other: they must not share the cores
            with context.Pool(1) as pool:
                runs.append(pool.apply(_measure, (name, args.quick, args.device, args.threads)))
        plain = [statistics.median(p[WARMUP:]) for p, _, _ in runs]
        hooked = [statistics.median(h[WARMUP:]) for _, h, _ in runs]
        ratios, before, inside = zip(*(_ratios(*run) for run in runs))
        overhead, mean_before, mean_inside = map(statistics.median, (ratios, before, inside))
        data[name] = {"plain_ms": statistics.median(plain) * 1e3, "dpap_ms": statistics.median(hooked) * 1e3,
                      "overhead": overhead, "mean_overhead_before_window": mean_before,
                      "mean_overhead_in_window": mean_inside, "overhead_per_process": ratios,
                      "mean_overhead_before_window_per_process": before,
                      "mean_overhead_in_window_per_process": inside, "steps": len(runs[0][0])}
        spread = " / ".join(f"{100 * r:+.1f}" for r in ratios)
        rows.append([name, f"{statistics.median(plain) * 1e3:.2f}", f"{statistics.median(hooked) * 1e3:.2f}",
                     f"{100 * overhead:+.1f}% ({spread})", f"{100 * mean_before:+.1f}%", f"{100 * mean_inside:+.1f}%"])
        print(f"{name}: overhead per process {spread} %", flush=True)
    table = format_table(rows, ["network", "plain step ms", "DPAP step ms", "overhead (median; per process)",
                                "overhead (mean), before the window", "overhead (mean), in the window"])
    save("overhead", args, {"results": data}, [(f"time per training step, {args.device}, {args.threads} threads, "
                                                 f"median over {len(runs)} processes", table)])


if __name__ == "__main__":
    main()
