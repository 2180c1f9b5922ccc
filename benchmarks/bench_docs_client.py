"""A user's first try: NNI's documented TaylorPruner script with DPAPPruner swapped in and nothing else.

The script is written the way NNI's documentation uses ``TaylorPruner`` with a
``TorchEvaluator`` (a training function taking ``max_steps`` / ``max_epochs``, a traced
Adam, a small conv ANN trained 20 epochs on scikit-learn's digits); the pruner line becomes
``DPAPPruner(model, config_list, evaluator, epochs=20, steps_per_epoch=len(train_loader))``
with no hyper-parameters, i.e. the library's defaults. For each seed the dense run starts
from the same weights and sees the same batches.

Two sizes are reported: the fraction of the conv/linear weights (all of them, the output
layer and the unpruned first conv included) that are non-zero after ``unwrap_model()``, and
the fraction physical removal keeps (a weight also goes when its input unit is removed).

    python benchmarks/bench_docs_client.py            # 8 seeds, about a minute on 2 cores
"""

from __future__ import annotations

import statistics
from typing import Any

import nni
import torch
from _common import parser, save, setup
from nni.compression import TorchEvaluator
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.data import digits_loaders
from nni_dpap.report import format_table, layer_costs, totals
from nni_dpap.training import evaluate_accuracy

EPOCHS = 20


class SmallANN(nn.Module):
    """16C3-MP2-32C3-MP2-64FC-10FC, ReLU: the size of NNI's quick-start models, for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        self.fc1, self.relu3, self.fc2 = nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc2(self.relu3(self.fc1(torch.flatten(x, 1))))


def training_step(batch: Any, model: nn.Module) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def make_training(train_loader: Any):
    def training(model, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=None):
        model.train()
        total_epochs = max_epochs if max_epochs else EPOCHS
        total_steps = max_steps if max_steps else 1_000_000
        current = 0
        for _ in range(total_epochs):
            for batch in train_loader:
                loss = training_step(batch, model)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                current += 1
                if current >= total_steps:
                    return
            if lr_scheduler is not None:
                lr_scheduler.step()
    return training


def _weights(model: nn.Module) -> tuple[float, float]:
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    nonzero = sum(int(m.weight.count_nonzero()) for m in layers) / sum(m.weight.numel() for m in layers)
    physical = totals(layer_costs(model, torch.rand(2, 1, 8, 8)))["params_fraction"]
    return nonzero, physical


def run(seed: int) -> dict[str, float]:
    out = {}
    for method in ("dense", "dpap"):
        train_loader, test_loader = digits_loaders(64, seed=seed)  # a fresh loader: the same batches for both
        torch.manual_seed(seed)
        model = SmallANN()
        optimizer = nni.trace(torch.optim.Adam)(model.parameters(), lr=1e-3)
        training = make_training(train_loader)
        if method == "dense":
            training(model, optimizer, training_step, None, None, EPOCHS)
        else:
            evaluator = TorchEvaluator(training, optimizer, training_step)
            pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=EPOCHS,
                                steps_per_epoch=len(train_loader))
            pruner.compress()
            pruner.unwrap_model()
        out[f"{method}_accuracy"] = 100 * evaluate_accuracy(model, test_loader)
        out[f"{method}_nonzero"], out[f"{method}_physical"] = _weights(model)
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(8)))
    args = p.parse_args()
    setup(args)
    seeds = args.seeds[:2] if args.quick else args.seeds
    runs = [run(s) for s in seeds]

    def col(key: str, scale: float = 1.0) -> str:
        values = [scale * r[key] for r in runs]
        return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 \
            else f"{values[0]:.2f}"

    delta = [r["dpap_accuracy"] - r["dense_accuracy"] for r in runs]
    rows = [["dense", col("dense_accuracy"), col("dense_nonzero", 100), col("dense_physical", 100), "-"],
            ["DPAP, defaults", col("dpap_accuracy"), col("dpap_nonzero", 100), col("dpap_physical", 100),
             f"{statistics.fmean(delta):+.2f}"]]
    table = format_table(rows, ["model", "test accuracy %", "conv/linear weights non-zero %",
                                "kept by physical removal %", "vs dense"])
    save("docs_client", args, {"epochs": EPOCHS, "seeds": seeds, "runs": runs},
         [(f"NNI-docs client, SmallANN on digits, {EPOCHS} epochs, seeds {seeds}", table)])


if __name__ == "__main__":
    main()
