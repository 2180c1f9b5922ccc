"""Pruner overhead: time per training step with DPAP's hooks on vs plain training.

DPAP runs with its start epoch at the end of the run, so nothing is pruned and the
model is the same as in plain training; the difference is the cost of reading the pre-
and postsynaptic signals, committing the batch statistics and re-applying masks after
each optimizer step. Median over all steps after the first 20 (warm-up). Target: <= 10%.

    python benchmarks/bench_overhead.py
"""

from __future__ import annotations

import statistics

import torch
from _common import dpap_train, parser, save, setup, timed_training, workloads

from nni_dpap.report import format_table
from nni_dpap.training import classification_step, seed_everything


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = setup(args)
    rows, data = [], {}
    for name, work in workloads(args.quick).items():
        work = {**work, "epochs": 2 if args.quick else 5}
        train_loader, _ = work["loaders"](0)
        plain_times: list[float] = []
        seed_everything(0)
        model = work["build"]().to(device)
        timed_training(train_loader, device, plain_times)(
            model, torch.optim.Adam(model.parameters(), lr=work["lr"]), classification_step, None, None,
            work["epochs"])
        hooked_times: list[float] = []
        dpap_train(work, device, hparams={"conv_start_epoch": 0.99, "linear_start_epoch": 0.99,
                                            "conv_stop_epoch": None, "linear_stop_epoch": None},
                   step_times=hooked_times)
        plain = statistics.median(plain_times[20:])
        hooked = statistics.median(hooked_times[20:])
        data[name] = {"plain_ms": plain * 1e3, "dpap_ms": hooked * 1e3, "overhead": hooked / plain - 1,
                      "steps": len(plain_times)}
        rows.append([name, f"{plain * 1e3:.2f}", f"{hooked * 1e3:.2f}", f"{100 * (hooked / plain - 1):+.1f}%"])
        print(f"{name}: plain {plain * 1e3:.2f} ms, DPAP {hooked * 1e3:.2f} ms", flush=True)
    table = format_table(rows, ["network", "plain step ms", "DPAP step ms", "overhead"])
    save("overhead", args, {"results": data}, [(f"time per training step, {args.device}, {args.threads} threads",
                                                 table)])


if __name__ == "__main__":
    main()
