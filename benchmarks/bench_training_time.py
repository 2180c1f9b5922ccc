"""Training time: dense vs DPAP (masking only) vs DPAP shrinking the model every epoch.

Same network, seed, epochs and batches; wall-clock of the whole training (DPAP's
statistics, survival updates and, with shrinking, the physical removal included).
The target is shrinking <= 0.6 x dense training time.

    python benchmarks/bench_training_time.py
"""

from __future__ import annotations

import time

import torch
from _common import dpap_train, parser, save, setup, sync, timed_training, workloads

from nni_dpap.report import format_table
from nni_dpap.training import classification_step, evaluate_accuracy, seed_everything


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = setup(args)
    rows, data = [], {}
    for name, work in workloads(args.quick).items():
        train_loader, test_loader = work["loaders"](0)
        warm = work["build"]().to(device)  # warm-up: first calls allocate and load kernels
        timed_training(train_loader, device)(warm, torch.optim.Adam(warm.parameters()), classification_step, None,
                                             20, 1)
        seed_everything(0)
        dense = work["build"]().to(device)
        train = timed_training(train_loader, device)
        sync(device)
        start = time.perf_counter()
        train(dense, torch.optim.Adam(dense.parameters(), lr=work["lr"]), classification_step, None, None,
              work["epochs"])
        sync(device)
        dense_s = time.perf_counter() - start
        dense_acc = evaluate_accuracy(dense.cpu(), test_loader)
        masked, _, masked_s, _ = dpap_train(work, device)
        shrunk, _, shrunk_s, pruner = dpap_train(work, device, shrink_every=1)
        entry = {"epochs": work["epochs"], "dense_s": dense_s, "dpap_s": masked_s, "dpap_shrink_s": shrunk_s,
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
