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
update, masks), which the median leaves out. Target: <= 10%.

    python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import copy
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


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = setup(args)
    rows, data = [], {}
    for name, work in workloads(args.quick).items():
        plain_times, hooked_times = paired_steps({**work, "epochs": 2 if args.quick else 4}, device)
        plain = statistics.median(plain_times)
        hooked = statistics.median(hooked_times)
        mean_overhead = statistics.fmean(hooked_times) / statistics.fmean(plain_times) - 1
        data[name] = {"plain_ms": plain * 1e3, "dpap_ms": hooked * 1e3, "overhead": hooked / plain - 1,
                      "mean_overhead": mean_overhead, "steps": len(plain_times)}
        rows.append([name, f"{plain * 1e3:.2f}", f"{hooked * 1e3:.2f}", f"{100 * (hooked / plain - 1):+.1f}%",
                     f"{100 * mean_overhead:+.1f}%"])
        print(f"{name}: plain {plain * 1e3:.2f} ms, DPAP {hooked * 1e3:.2f} ms", flush=True)
    table = format_table(rows, ["network", "plain step ms", "DPAP step ms", "overhead (median)",
                                "overhead (mean)"])
    save("overhead", args, {"results": data}, [(f"time per training step, {args.device}, {args.threads} threads",
                                                 table)])


if __name__ == "__main__":
    main()
