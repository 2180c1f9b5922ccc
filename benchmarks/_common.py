"""Shared helpers of the benchmarks: arguments, timing, result files."""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from nni_dpap.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "examples"))  # the digits examples' shared settings


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for every measurement)")
    p.add_argument("--quick", action="store_true", help="a few epochs only (a smoke run; results not meaningful)")
    p.add_argument("--results-dir", default=str(RESULTS), help="where to write <name>.json and <name>.md")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Fixed threads, and freed CPU memory kept in the process for every method alike (page faults otherwise
    dominated the SNNs' step times and their spread, ``nni_dpap.allocator``)."""
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here")
    return torch.device(args.device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], Any]], device: torch.device, warmup: int,
                repeats: int) -> dict[str, float]:
    """Median seconds of each ``fn``, the functions taking turns after ``warmup`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}{unit}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}{unit}"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def save(name: str, args: argparse.Namespace, data: dict[str, Any], tables: Sequence[tuple[str, str]]) -> None:
    """Write ``results/<name>.json`` and ``results/<name>.md`` and print the tables."""
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": name, "date": datetime.datetime.now().isoformat(timespec="seconds"), "commit": commit(),
            "torch": torch.__version__, "device": args.device, "threads": args.threads, "quick": args.quick,
            "freed_memory_kept": keep_freed_memory(),
            "cpu": _cpu_name()}
    (results / f"{name}.json").write_text(json.dumps({"meta": meta, **data}, indent=2, default=str))
    quick = " — QUICK RUN" if args.quick else ""
    lines = [f"# {name}", "", f"commit {meta['commit']}, {meta['date']}, torch {meta['torch']}, device "
             f"{meta['device']} ({meta['cpu']}), {meta['threads']} threads{quick}", ""]
    for title, table in tables:
        lines += [f"## {title}", "", table, ""]
        print(f"\n{title}\n\n{table}")
    (results / f"{name}.md").write_text("\n".join(lines))
    print(f"\nwrote {results / name}.json and .md")


class RecordLog:
    """A resumable benchmark's records: one JSON line each in ``path``, appended as they are made.

    ``records`` holds what an earlier, interrupted run wrote (nothing with ``fresh``, which empties the file).
    """

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        if fresh:
            path.write_text("")
        self.records: list[dict[str, Any]] = \
            [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def write(self, record: dict[str, Any], message: str) -> None:
        """Keep ``record``, append it to the file and print ``message``."""
        self.records.append(record)
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(message, flush=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def workloads(quick: bool) -> dict[str, dict[str, Any]]:
    """The networks the speed benchmarks measure: the digits nets and the MNIST SNN at its true size."""
    from nni_dpap.data import digits_loaders, load_data, make_loaders
    from nni_dpap.models import LeNetANN, SpikingConvNet

    mnist = load_data("mnist5k")
    return {
        "digits SNN": {"build": lambda: SpikingConvNet(1, 8, 10, T=4), "epochs": 3 if quick else 60, "lr": 3e-3,
                       "loaders": lambda seed: digits_loaders(64, seed=seed), "input": (1, 8, 8)},
        "digits ANN": {"build": lambda: LeNetANN(1, 8, 10), "epochs": 3 if quick else 40, "lr": 1e-3,
                       "loaders": lambda seed: digits_loaders(64, seed=seed), "input": (1, 8, 8)},
        "MNIST-5k SNN (28x28)": {"build": lambda: SpikingConvNet(1, 28, 10, T=4), "epochs": 2 if quick else 20,
                                 "lr": 1e-3, "loaders": lambda seed: make_loaders(mnist, 64, seed),
                                 "input": (1, 28, 28)},
    }


def dpap_train(work: dict[str, Any], device: torch.device, seed: int = 0, shrink_every: int | None = None,
               hparams: dict[str, Any] | None = None, epoch_seconds: list[float] | None = None):
    """Train ``work``'s model with DPAP (the demo settings); returns (model, masks, seconds, pruner).

    ``epoch_seconds`` (a list) receives the wall-clock of every epoch's training loop.
    """
    import nni
    from nni.compression import TorchEvaluator

    from nni_dpap import DPAPPruner
    from nni_dpap.training import classification_step, seed_everything

    train_loader, _ = work["loaders"](seed)
    seed_everything(seed)
    model = work["build"]().to(device)
    train = training_function(train_loader, device, epoch_seconds)
    evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=work["lr"]),
                               classification_step, dummy_input=torch.rand(2, *work["input"], device=device))
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=work["epochs"],
                        steps_per_epoch=len(train_loader), hparams=hparams, shrink_every=shrink_every)
    sync(device)
    start = time.perf_counter()
    model, masks = pruner.compress()
    sync(device)
    seconds = time.perf_counter() - start
    pruner.unwrap_model()
    return model, masks, seconds, pruner


def training_function(loader: Any, device: torch.device, epoch_seconds: list[float] | None = None):
    """An NNI-style training function over ``loader``, moving batches to ``device``.

    ``epoch_seconds`` (a list) receives the wall-clock of every epoch's loop (DPAP's epoch-end work, which
    NNI's hooks run at the last batch, included).
    """
    def training(model, optimizer, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        steps = 0
        for _ in range(max_epochs or 1):
            model.train()
            start = time.perf_counter()
            for x, y in loader:
                x, y = x.to(device), y.to(device)
                loss = training_step((x, y), model)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps += 1
                if max_steps is not None and steps >= max_steps:
                    break
            if epoch_seconds is not None:
                sync(device)
                epoch_seconds.append(time.perf_counter() - start)
            if max_steps is not None and steps >= max_steps:
                return
    return training
