"""Training time: dense vs DPAP (masking only) vs DPAP shrinking the model every epoch.

Same network, seed, epochs and batches; wall-clock of the whole training (DPAP's
statistics, survival updates and, with shrinking, the physical removal included). Two
rounds of the three runs, the order reversed in the second; the faster run of each
method counts (a busy spell of the machine only ever adds time).
The target is shrinking <= 0.6 x dense training time.

    python benchmarks/bench_training_time.py
"""

from __future__ import annotations

import time

import torch
from _common import dpap_train, parser, save, setup, sync, training_function, workloads

from nni_dpap.report import format_table
from nni_dpap.training import classification_step, evaluate_accuracy, seed_everything


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = setup(args)
    rows, data = [], {}
    quick = args.quick
    for name, work in workloads(quick).items():
        train_loader, test_loader = work["loaders"](0)
        warm = work["build"]().to(device)  # warm-up: first calls allocate and load kernels
        training_function(train_loader, device)(warm, torch.optim.Adam(warm.parameters()), classification_step, None,
                                             20, 1)
        times: dict[str, list[float]] = {"dense": [], "masked": [], "shrunk": []}
        for round_ in range(1 if quick else 2):  # whole runs in turns, the order reversed in the second round
            order = ["dense", "masked", "shrunk"] if round_ % 2 == 0 else ["shrunk", "masked", "dense"]
            for method in order:
                if method == "dense":
                    seed_everything(0)
                    dense = work["build"]().to(device)
                    train = training_function(work["loaders"](0)[0], device)
                    sync(device)
                    start = time.perf_counter()
                    train(dense, torch.optim.Adam(dense.parameters(), lr=work["lr"]), classification_step, None,
                          None, work["epochs"])
                    sync(device)
                    times["dense"].append(time.perf_counter() - start)
                elif method == "masked":
                    masked, _, seconds, _ = dpap_train(work, device)
                    times["masked"].append(seconds)
                else:
                    shrunk, _, seconds, pruner = dpap_train(work, device, shrink_every=1)
                    times["shrunk"].append(seconds)
        dense_s, masked_s, shrunk_s = (min(times[k]) for k in ("dense", "masked", "shrunk"))
        dense_acc = evaluate_accuracy(dense.cpu(), test_loader)
        entry = {"epochs": work["epochs"], "runs_s": times, "dense_s": dense_s, "dpap_s": masked_s,
                 "dpap_shrink_s": shrunk_s,
                 "shrinks": pruner.shrinks, "dense_acc": dense_acc,
                 "dpap_acc": evaluate_accuracy(masked.cpu(), test_loader),
                 "dpap_shrink_acc": evaluate_accuracy(shrunk.cpu(), test_loader)}
        data[name] = entry
        rows.append([name, work["epochs"], f"{dense_s:.1f}", f"{masked_s:.1f} ({masked_s / dense_s:.2f}x)",
                     f"{shrunk_s:.1f} ({shrunk_s / dense_s:.2f}x)", pruner.shrinks,
                     f"{dense_acc:.2%} / {entry['dpap_acc']:.2%} / {entry['dpap_shrink_acc']:.2%}"])
        print(f"{name}: dense {dense_s:.1f}s, DPAP {masked_s:.1f}s, DPAP+shrink {shrunk_s:.1f}s", flush=True)
    table = format_table(rows, ["network", "epochs", "dense s", "DPAP s (vs dense)", "DPAP + shrink s (vs dense)",
                                "shrinks", "accuracy dense / DPAP / DPAP+shrink"])
    save("training_time", args, {"results": data}, [(f"training wall-clock, {args.device}, {args.threads} threads",
                                                      table)])


if __name__ == "__main__":
    main()
