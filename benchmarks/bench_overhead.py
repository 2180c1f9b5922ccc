"""Pruner overhead: time per training step with DPAP's hooks on vs plain training.

DPAP runs with its start epoch at the end of the run, so nothing is pruned and the
model is the same as in plain training; the difference is the cost of reading the pre-
and postsynaptic signals, committing the batch statistics and re-applying masks after
each optimizer step. The plain model (same initial weights, its own optimizer) trains
inside DPAP's training function on the same batch just before or after DPAP's model,
the order alternating, so that both see the same state of the machine; the overhead is
the ratio of the median step times after the first 20 steps (warm-up), over 4 epochs.
The ratio of the mean step times is reported too: it includes the steps that fold 16
batches into the BCM sums (``LayerStatistics.flush``) and the epoch ends (survival
update, masks), which the median leaves out. The ratio repeats within a point inside one
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

NO_PRUNING = {"conv_start_epoch": 0.99, "linear_start_epoch": 0.99, "conv_stop_epoch": None,
              "linear_stop_epoch": None}


def paired_steps(work: dict[str, Any], device: torch.device) -> tuple[list[float], list[float]]:
    """Step times of plain training and of DPAP training, taken in turns on the same batches."""
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
    pruner.unwrap_model()
    return plain[20:], hooked[20:]


def _measure(name: str, quick: bool, device_name: str, threads: int) -> tuple[list[float], list[float]]:
    """:func:`paired_steps` of the workload ``name`` in this (fresh) process."""
    device = setup(argparse.Namespace(threads=threads, device=device_name))
    return paired_steps({**workloads(quick)[name], "epochs": 2 if quick else 4}, device)


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
        for _ in range(args.processes):  # one after the other: the processes must not share the cores
            with context.Pool(1) as pool:
                runs.append(pool.apply(_measure, (name, args.quick, args.device, args.threads)))
        plain = [statistics.median(p) for p, _ in runs]
        hooked = [statistics.median(h) for _, h in runs]
        ratios = [h / p - 1 for p, h in zip(plain, hooked)]
        means = [statistics.fmean(h) / statistics.fmean(p) - 1 for p, h in runs]
        overhead, mean_overhead = statistics.median(ratios), statistics.median(means)
        data[name] = {"plain_ms": statistics.median(plain) * 1e3, "dpap_ms": statistics.median(hooked) * 1e3,
                      "overhead": overhead, "mean_overhead": mean_overhead, "overhead_per_process": ratios,
                      "mean_overhead_per_process": means, "steps": len(runs[0][0])}
        spread = " / ".join(f"{100 * r:+.1f}" for r in ratios)
        rows.append([name, f"{statistics.median(plain) * 1e3:.2f}", f"{statistics.median(hooked) * 1e3:.2f}",
                     f"{100 * overhead:+.1f}% ({spread})", f"{100 * mean_overhead:+.1f}%"])
        print(f"{name}: overhead per process {spread} %", flush=True)
    table = format_table(rows, ["network", "plain step ms", "DPAP step ms", "overhead (median; per process)",
                                "overhead (mean)"])
    save("overhead", args, {"results": data}, [(f"time per training step, {args.device}, {args.threads} threads, "
                                                 f"median over {args.processes} processes", table)])


if __name__ == "__main__":
    main()
