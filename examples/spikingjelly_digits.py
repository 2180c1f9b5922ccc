"""DPAP on a SpikingJelly CSNN, unchanged: conv-BN-LIF blocks in multi-step mode, on the digits.

Needs the extra: ``pip install nni-dpap[spikingjelly]`` (``make test`` installs it).
Trains the dense CSNN and the DPAP CSNN from the same weights for the same epochs,
shrinks the pruned one with ``nni_dpap.speedup`` and prints accuracy, parameters and
synaptic operations of dense, masked and shrunk models.

    python examples/spikingjelly_digits.py --epochs 30
"""

from __future__ import annotations

import argparse
import time

import nni
import torch
from nni.compression import TorchEvaluator
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.adapters import require
from nni_dpap.data import digits_loaders
from nni_dpap.report import activity_costs, format_table
from nni_dpap import auto_reset
from nni_dpap.speedup import speedup
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func, seed_everything

require("spikingjelly")
from spikingjelly.activation_based import functional, layer, neuron, surrogate  # noqa: E402


class CSNN(nn.Module):
    """Two conv-BN-LIF-pool blocks and a LIF hidden layer, SpikingJelly layers in multi-step mode."""

    def __init__(self, T: int = 4, channels: int = 16) -> None:
        super().__init__()
        self.T = T
        lif = lambda: neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), detach_reset=True)  # noqa: E731
        self.net = nn.Sequential(
            layer.Conv2d(1, channels, 3, padding=1, bias=False), layer.BatchNorm2d(channels), lif(), layer.MaxPool2d(2),
            layer.Conv2d(channels, 2 * channels, 3, padding=1, bias=False), layer.BatchNorm2d(2 * channels), lif(),
            layer.MaxPool2d(2), layer.Flatten(), layer.Linear(2 * channels * 4, 128), lif(), layer.Linear(128, 10),
        )
        functional.set_step_mode(self, "m")
        auto_reset(self)  # SpikingJelly keeps the membrane between calls: reset it at every forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.net[0].step_mode == "s":  # one time step (speedup propagates masks this way)
            return self.net(x)
        return self.net(x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)).mean(0)


def sops(model: nn.Module, x: torch.Tensor) -> float:
    functional.reset_net(model)
    return sum(c.ops for c in activity_costs(model, x).values() if c.spiking_input)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    train_loader, test_loader = digits_loaders(64, seed=args.seed)
    train = make_training_func(train_loader, progress=not args.no_progress)
    x = next(iter(test_loader))[0][:128]
    beta = round(10.0 * min(1.0, max(args.epochs, 15) / 60), 3)
    hparams = {"relative_schedule": True, "conv_eta": 0.2, "linear_eta": 0.2, "conv_start_epoch": 0.0,
               "linear_start_epoch": 0.0, "conv_eps": 0.6, "linear_eps": 2.0, "conv_beta": beta, "linear_beta": beta}

    seed_everything(args.seed)
    dense = CSNN(args.T)
    start = time.perf_counter()
    train(dense, torch.optim.Adam(dense.parameters(), lr=args.lr), classification_step, None, None, args.epochs)
    dense_time = time.perf_counter() - start

    seed_everything(args.seed)
    model = CSNN(args.T)
    evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=args.lr),
                               classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=args.epochs,
                        steps_per_epoch=len(train_loader), hparams=hparams)
    start = time.perf_counter()
    model, masks = pruner.compress()
    pruner.unwrap_model()
    dpap_time = time.perf_counter() - start

    rows = []
    for name, net, seconds in (("dense", dense, dense_time), ("DPAP (masked)", model, dpap_time)):
        net.eval()
        params = sum(p.numel() for p in net.parameters())
        rows.append([name, f"{evaluate_accuracy(net, test_loader):.2%}", f"{params:,}", f"{sops(net, x):,.0f}",
                     f"{seconds:.0f}"])
    functional.reset_net(model)
    with torch.no_grad():
        counts = [0.0]
        hooks = [m.register_forward_hook(lambda m, a, out: counts.__setitem__(0, counts[0] + float(out.sum())))
                 for m in model.modules() if isinstance(m, neuron.BaseNode)]
        model(x)
        masked_spikes = counts[0]
        speedup(model, x[:4], masks)
        counts[0] = 0.0
        functional.reset_net(model)
        model(x)
        for hook in hooks:
            hook.remove()
    rows.append(["DPAP (shrunk)", f"{evaluate_accuracy(model, test_loader):.2%}",
                 f"{sum(p.numel() for p in model.parameters()):,}", f"{sops(model, x):,.0f}", "-"])
    print(f"\nSpikingJelly CSNN on the digits test split (360 images), T = {args.T}, {args.epochs} epochs, "
          f"seed {args.seed}; spikes of the masked vs shrunk model on {len(x)} test images: "
          f"{masked_spikes:,.0f} vs {counts[0]:,.0f}\n")
    print(format_table(rows, ["model", "test accuracy", "parameters", "synaptic ops / image", "train s"]))


if __name__ == "__main__":
    main()
