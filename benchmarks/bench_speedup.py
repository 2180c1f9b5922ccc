"""Physical speedup: latency of the dense model vs the model shrunk by ``speedup``, next to the MAC ratio.

Two parts, each timing the dense and the shrunk model in turns (median over rounds, fixed
torch threads, eval mode and no grad for inference):

* **Fixed removal** (the speed issue's cases): the paper's MNIST SNN at T = 8 with 70% of
  ``conv2``'s channels and 80% of ``fc1``'s neurons removed (the smallest-L1 ones), and the
  CIFAR SNN (``SpikingCifarNet``) at width 0.25 on 16x16 inputs, T = 4, with 60% of every
  conv after the first and of ``fc1`` removed. Inference at batch 1 and 64 and a training
  step (forward, backward, Adam) at batch 64; the shrunk model also with the neurons'
  Python loop (``backend='torch'``) for comparison. Target: latency ratio >= 0.8 x the
  MAC ratio.
* **DPAP-trained**: each speed workload trained with DPAP (the library's defaults), then
  shrunk; inference at batch 1 and 64.

The MAC ratio counts every multiply-accumulate of the conv and linear layers (per time
step and sample) of the dense model over those of the shrunk model; pruned synapses
inside a kept layer are zeros that dense kernels still multiply, so they count as kept.
Neurons, pooling and normalisation are not counted: they are why latency ratios stay
below the MAC ratio.

    python benchmarks/bench_speedup.py
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.nn.functional as F
from _common import dpap_train, interleaved, parser, save, setup, workloads
from torch import nn

from nni_dpap.models import SpikingCifarNet, SpikingConvNet
from nni_dpap.report import format_table, layer_costs, totals
from nni_dpap.snn.neurons import set_backend
from nni_dpap.speedup import speedup


def _dense_macs(model: nn.Module, x: torch.Tensor) -> int:
    costs = layer_costs(model, x)
    return int(sum(c.macs_total for c in costs.values()))


def smallest_l1_masks(model: nn.Module, remove: dict[str, float]) -> dict[str, dict[str, torch.Tensor]]:
    """Masks removing the fraction ``remove[name]`` of each layer's output units with the smallest L1 norm."""
    modules = dict(model.named_modules())
    masks = {}
    for name, fraction in remove.items():
        weight = modules[name].weight.detach()
        norms = weight.abs().flatten(1).sum(1)
        drop = norms.argsort()[: int(round(fraction * weight.shape[0]))]
        keep = torch.ones(weight.shape[0])
        keep[drop] = 0.0
        masks[name] = {"weight": keep.view(-1, *[1] * (weight.dim() - 1)).expand_as(weight).clone()}
        if getattr(modules[name], "bias", None) is not None:
            masks[name]["bias"] = keep.clone()
    return masks


def fixed_cases(quick: bool) -> dict[str, dict[str, Any]]:
    """The speed issue's fixed-removal networks."""
    cifar_convs = ["features.4", "features.8", "features.11", "features.15", "features.18"]
    return {
        "MNIST SNN T=8 (paper)": {
            "build": lambda: SpikingConvNet(1, 28, 10, T=2 if quick else 8), "input": (1, 28, 28),
            "remove": {"conv2": 0.7, "fc1": 0.8}},
        "CIFAR SNN w0.25 16x16 T=4": {
            "build": lambda: SpikingCifarNet(3, 16, 10, T=2 if quick else 4, width=0.25), "input": (3, 16, 16),
            "remove": {**{name: 0.6 for name in cifar_convs}, "fc1": 0.6}},
    }


def _inference(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def fn() -> None:
        with torch.no_grad():
            model(x)
    return fn


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def fn() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return fn


def bench_fixed(args: Any, device: torch.device) -> tuple[list[list[Any]], dict[str, Any]]:
    warmup, repeats = (1, 3) if args.quick else (5, 30)
    rows, data = [], {}
    for name, case in fixed_cases(args.quick).items():
        torch.manual_seed(0)
        dense = case["build"]().to(device)
        shrunk = copy.deepcopy(dense)
        probe = torch.rand(2, *case["input"], device=device)
        speedup(shrunk, probe, smallest_l1_masks(shrunk, case["remove"]))
        loop = copy.deepcopy(shrunk)
        set_backend(loop, "torch")
        mac_ratio = _dense_macs(dense, probe) / _dense_macs(shrunk, probe)
        entry: dict[str, Any] = {"mac_ratio": mac_ratio, "removed": case["remove"]}
        gen = torch.Generator().manual_seed(1)
        for label, batch, train in (("inference", 1, False), ("inference", 64, False), ("training step", 64, True)):
            x = torch.rand(batch, *case["input"], generator=gen).to(device)
            y = torch.randint(0, 10, (batch,), generator=gen).to(device)
            models = {"dense": dense, "shrunk": shrunk, "shrunk_loop": loop}
            for model in models.values():
                model.train(train)
            fns = {k: (_train_step(m, x, y) if train else _inference(m, x)) for k, m in models.items()}
            t = interleaved(fns, device, warmup, repeats)
            ratio = t["dense"] / t["shrunk"]
            entry[f"{label} batch{batch}"] = {**{f"{k}_ms": v * 1e3 for k, v in t.items()}, "latency_ratio": ratio,
                                              "ratio_over_mac": ratio / mac_ratio}
            rows.append([name, label, batch, f"{t['dense'] * 1e3:.2f}", f"{t['shrunk'] * 1e3:.2f}",
                         f"{t['shrunk_loop'] * 1e3:.2f}", f"{ratio:.2f}x", f"{mac_ratio:.2f}x",
                         f"{ratio / mac_ratio:.2f}"])
            print(f"{name} {label} batch {batch}: {ratio:.2f}x at {mac_ratio:.2f}x fewer MACs", flush=True)
        data[name] = entry
    return rows, data


def bench_trained(args: Any, device: torch.device) -> tuple[list[list[Any]], dict[str, Any]]:
    warmup, repeats = (1, 3) if args.quick else (10, 50)
    rows, data = [], {}
    for name, work in workloads(args.quick).items():
        model, masks, _, _ = dpap_train(work, device)
        dense = work["build"]().to(device).eval()
        model.eval()
        probe = torch.rand(2, *work["input"], device=device)
        sparse_kept = totals(layer_costs(model, probe))["macs_kept"] / _dense_macs(dense, probe)
        speedup(model, probe, masks)
        mac_ratio = _dense_macs(dense, probe) / _dense_macs(model, probe)
        entry: dict[str, Any] = {"mac_ratio": mac_ratio, "sparse_macs_kept": sparse_kept}
        for batch in (1, 64):
            x = torch.rand(batch, *work["input"], device=device)
            t = interleaved({"dense": _inference(dense, x), "shrunk": _inference(model, x)}, device, warmup,
                            repeats)
            ratio = t["dense"] / t["shrunk"]
            entry[f"batch{batch}"] = {"dense_ms": t["dense"] * 1e3, "pruned_ms": t["shrunk"] * 1e3,
                                      "latency_ratio": ratio}
            rows.append([name, batch, f"{t['dense'] * 1e3:.3f}", f"{t['shrunk'] * 1e3:.3f}", f"{ratio:.2f}x",
                         f"{mac_ratio:.2f}x", f"{ratio / mac_ratio:.2f}"])
        data[name] = entry
        print(f"{name}: MAC ratio {mac_ratio:.2f}x", flush=True)
    return rows, data


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = setup(args)
    fixed_rows, fixed = bench_fixed(args, device)
    trained_rows, trained = bench_trained(args, device)
    where = f"{args.device}, {args.threads} threads"
    tables = [
        (f"fixed removal: dense vs shrunk ({where})",
         format_table(fixed_rows, ["network", "measurement", "batch", "dense ms", "shrunk ms",
                                   "shrunk, loop neurons ms",
                                   "latency ratio", "MAC ratio", "latency / MAC ratio"])),
        (f"DPAP-trained and shrunk: inference latency ({where})",
         format_table(trained_rows, ["network", "batch", "dense ms", "shrunk ms", "latency ratio", "MAC ratio",
                                     "latency / MAC ratio"])),
    ]
    save("speedup", args, {"fixed": fixed, "results": trained}, tables)


if __name__ == "__main__":
    main()
