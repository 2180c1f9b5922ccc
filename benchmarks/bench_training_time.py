"""Training time: dense vs DPAP (masking only) vs DPAP shrinking the model every epoch.

Same network, seed, epochs and batches; wall-clock of the whole training (DPAP's
statistics, survival updates and, with shrinking, the physical removal included). Three
rounds of the three runs, the order reversed every other round; the fastest run of each
method counts (a busy spell of the machine only ever adds time).
The target is shrinking <= 0.6 x dense training time. Where the time goes: the epochs of the
shrinking run against the dense run's same epochs (each epoch's fastest time over the rounds),
split at the run's pruning start and stop (before pruning the net is dense; after the stop its
structure is final).

    python benchmarks/bench_training_time.py
"""

from __future__ import annotations

import time

import torch
from _common import dpap_train, parser, save, setup, sync, training_function, workloads

from nni_dpap.report import format_table
from nni_dpap.training import classification_step, evaluate_accuracy, seed_everything


def phase_ratios(shrunk: list[float], dense: list[float], start: int, stop: int | None) -> list[float | None]:
    """Time of the shrinking run / the dense run's over the epochs before, during and after the pruning window.

    ``start`` and ``stop`` are the window's first and first-after epochs; ``None`` for a phase
    without epochs (a very short run, or pruning that never stops).
    """
    epochs = len(dense)
    stop = epochs if stop is None else min(stop, epochs)
    return [sum(shrunk[a:b]) / sum(dense[a:b]) if b > a else None for a, b in ((0, start), (start, stop),
                                                                                  (stop, epochs))]


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
        epochs_s: dict[str, list[list[float]]] = {"dense": [], "shrunk": []}  # per run, per epoch
        for round_ in range(1 if quick else 3):  # whole runs in turns, the order reversed every other round
            order = ["dense", "masked", "shrunk"] if round_ % 2 == 0 else ["shrunk", "masked", "dense"]
            for method in order:
                if method == "dense":
                    seed_everything(0)
                    dense = work["build"]().to(device)
                    epochs_s["dense"].append([])
                    train = training_function(work["loaders"](0)[0], device, epochs_s["dense"][-1])
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
                    epochs_s["shrunk"].append([])
                    shrunk, _, seconds, pruner = dpap_train(work, device, shrink_every=1,
                                                            epoch_seconds=epochs_s["shrunk"][-1])
                    times["shrunk"].append(seconds)
        dense_s, masked_s, shrunk_s = (min(times[k]) for k in ("dense", "masked", "shrunk"))
        # each epoch's fastest time over the rounds (as for the totals: a busy spell only ever adds time)
        fastest = {k: [min(run[e] for run in runs) for e in range(len(runs[0]))] for k, runs in epochs_s.items()}
        window = pruner.dpap_config.conv  # (the library's defaults: the same window for FC layers)
        phases = phase_ratios(fastest["shrunk"], fastest["dense"], int(window.start_epoch),
                              None if window.stop_epoch is None else int(window.stop_epoch))
        dense_acc = evaluate_accuracy(dense.cpu(), test_loader)
        entry = {"epochs": work["epochs"], "runs_s": times, "dense_s": dense_s, "dpap_s": masked_s,
                 "dpap_shrink_s": shrunk_s,
                 "shrinks": pruner.shrinks, "dense_acc": dense_acc, "epoch_s": fastest,
                 "phase_ratios_before_during_after_pruning": phases,
                 "dpap_acc": evaluate_accuracy(masked.cpu(), test_loader),
                 "dpap_shrink_acc": evaluate_accuracy(shrunk.cpu(), test_loader)}
        data[name] = entry
        rows.append([name, work["epochs"], f"{dense_s:.1f}", f"{masked_s:.1f} ({masked_s / dense_s:.2f}x)",
                     f"{shrunk_s:.1f} ({shrunk_s / dense_s:.2f}x)",
                     " / ".join("-" if r is None else f"{r:.2f}x" for r in phases),
                     pruner.shrinks,
                     f"{dense_acc:.2%} / {entry['dpap_acc']:.2%} / {entry['dpap_shrink_acc']:.2%}"])
        print(f"{name}: dense {dense_s:.1f}s, DPAP {masked_s:.1f}s, DPAP+shrink {shrunk_s:.1f}s", flush=True)
    table = format_table(rows, ["network", "epochs", "dense s", "DPAP s (vs dense)", "DPAP + shrink s (vs dense)",
                                "shrink vs dense: before / during / after pruning", "shrinks",
                                "accuracy dense / DPAP / DPAP+shrink"])
    save("training_time", args, {"results": data}, [(f"training wall-clock, {args.device}, {args.threads} threads",
                                                      table)])


if __name__ == "__main__":
    main()
