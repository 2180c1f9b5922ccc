"""Fused multi-step neurons: the Python loop over time steps (``backend='torch'``) vs the fused kernel.

Three measurements, each a forward + backward pass, backends interleaved (loop, fused, loop,
fused, ...) in one process so that both see the same machine load, median of the repeats after
warm-up, fixed torch threads:

* the neurons alone, at the shapes of the three neurons of the paper's MNIST SNN
  (``SpikingConvNet(1, 28, 10, T)``, batch 64), LIF and PLIF;
* that whole network's forward + backward (cross-entropy), LIF and PLIF;
* a whole training step of it (Adam, cross-entropy), LIF.

Next to the times: the largest difference between the two backends' gradients (input gradient
for the neurons, every parameter's gradient for the network) and whether the spikes agree, and
the kernel's one-off build time with an empty cache (in a fresh process) and its load time with
a warm cache. ``--profile`` also prints where the time of a fused training step goes. On a GPU
(``--device cuda``) the fused backend is the Triton kernel (:mod:`nni_dpap.snn.fused_triton`);
the build times above stay the C++ kernel's.

    python benchmarks/bench_neurons.py
    python benchmarks/bench_neurons.py --device cuda
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
from typing import Any, Callable

import torch
import torch.nn.functional as F
from _common import ROOT, interleaved, parser, save, setup
from torch import nn

from nni_dpap.models import SpikingConvNet
from nni_dpap.report import format_table
from nni_dpap.snn import LIFNeuron, PLIFNeuron, fused, fused_triton
from nni_dpap.snn.neurons import BACKENDS, set_backend


def _neuron_case(kind: str, shape: tuple[int, ...], T: int, device: torch.device) -> tuple[dict, dict]:
    cls = PLIFNeuron if kind == "PLIF" else LIFNeuron
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=gen) * 0.6 + 0.3).to(device).requires_grad_()
    grad_out = torch.randn(shape, generator=gen).to(device)
    neurons = {b: cls(T, v_threshold=0.5, backend=b).to(device) for b in BACKENDS}
    outputs = {}

    def run(backend: str) -> Callable[[], None]:
        def fn() -> None:
            x.grad = None
            spikes = neurons[backend](x)
            spikes.backward(grad_out)
            outputs[backend] = (spikes.detach(), x.grad)
        return fn

    return {b: run(b) for b in BACKENDS}, outputs


def bench_neurons(args: Any, device: torch.device, T: int, batch: int) -> tuple[list[list[Any]], dict]:
    shapes = {"sn1 conv 15x28x28": (T * batch, 15, 28, 28), "sn2 conv 40x14x14": (T * batch, 40, 14, 14),
              "sn3 fc 300": (T * batch, 300)}
    rows, data = [], {}
    for kind in ("LIF", "PLIF"):
        for name, shape in shapes.items():
            fns, outputs = _neuron_case(kind, shape, T, device)
            t = interleaved(fns, device, args.warmup, args.repeats)
            (s_ref, g_ref), (s_fused, g_fused) = outputs["torch"], outputs["fused"]
            same = bool(torch.equal(s_ref.bool(), s_fused.bool()))
            diff = (g_ref - g_fused).abs().max().item()
            data[f"{kind} {name}"] = {"torch_ms": t["torch"] * 1e3, "fused_ms": t["fused"] * 1e3,
                                      "speedup": t["torch"] / t["fused"], "spikes_equal": same,
                                      "max_grad_diff": diff}
            rows.append([kind, name, f"{t['torch'] * 1e3:.2f}", f"{t['fused'] * 1e3:.2f}",
                         f"{t['torch'] / t['fused']:.1f}x", "yes" if same else "NO", f"{diff:.1e}"])
            print(f"neuron {kind} {name}: {t['torch'] / t['fused']:.1f}x", flush=True)
    return rows, data


def _net_pair(kind: str, T: int, device: torch.device) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    base = SpikingConvNet(1, 28, 10, T=T, neuron=kind.lower()).to(device)
    models = {}
    for backend in BACKENDS:
        models[backend] = copy.deepcopy(base)
        set_backend(models[backend], backend)
    return models


def bench_network(args: Any, device: torch.device, T: int, batch: int) -> tuple[list[list[Any]], dict]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 1, 28, 28, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    rows, data = [], {}
    for kind in ("LIF", "PLIF"):
        models = _net_pair(kind, T, device)

        def fwd_bwd(model: nn.Module) -> Callable[[], None]:
            def fn() -> None:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
            return fn

        t = interleaved({b: fwd_bwd(m) for b, m in models.items()}, device, args.warmup, args.repeats)
        grads = {b: {n: p.grad for n, p in m.named_parameters()} for b, m in models.items()}
        diff = max((grads["torch"][n] - grads["fused"][n]).abs().max().item() for n in grads["torch"])
        scale = max(g.abs().max().item() for g in grads["torch"].values())
        data[f"{kind} forward+backward"] = {"torch_ms": t["torch"] * 1e3, "fused_ms": t["fused"] * 1e3,
                                            "speedup": t["torch"] / t["fused"], "max_grad_diff": diff,
                                            "max_grad": scale}
        rows.append([f"{kind} forward + backward", f"{t['torch'] * 1e3:.1f}", f"{t['fused'] * 1e3:.1f}",
                     f"{t['torch'] / t['fused']:.2f}x", f"{diff:.1e} (of {scale:.1e})"])
        print(f"network {kind} forward+backward: {t['torch'] / t['fused']:.2f}x", flush=True)
    models = _net_pair("LIF", T, device)
    optims = {b: torch.optim.Adam(m.parameters(), lr=1e-3) for b, m in models.items()}

    def train_step(backend: str) -> Callable[[], None]:
        def fn() -> None:
            optims[backend].zero_grad(set_to_none=True)
            F.cross_entropy(models[backend](x), y).backward()
            optims[backend].step()
        return fn

    t = interleaved({b: train_step(b) for b in BACKENDS}, device, args.warmup, args.repeats)
    data["LIF training step"] = {"torch_ms": t["torch"] * 1e3, "fused_ms": t["fused"] * 1e3,
                                 "speedup": t["torch"] / t["fused"]}
    rows.append(["LIF training step (Adam)", f"{t['torch'] * 1e3:.1f}", f"{t['fused'] * 1e3:.1f}",
                 f"{t['torch'] / t['fused']:.2f}x", "-"])
    print(f"training step: {t['torch'] / t['fused']:.2f}x", flush=True)
    return rows, data


def build_cost() -> dict[str, float]:
    """Seconds to build the kernel with an empty cache, and to load it from a warm one (fresh processes)."""
    code = ("import time; from nni_dpap.snn import fused; s = time.perf_counter(); ok = fused.available(); "
            "print(time.perf_counter() - s if ok else -1.0)")
    result = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NNI_DPAP_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        for label in ("cold_build_s", "warm_load_s"):
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            result[label] = float(proc.stdout.strip().splitlines()[-1])
    return result


def profile_step(device: torch.device, T: int, batch: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    model = _net_pair("LIF", T, device)["fused"]
    x, y = torch.rand(batch, 1, 28, 28, device=device), torch.randint(0, 10, (batch,), device=device)
    for _ in range(3):
        F.cross_entropy(model(x), y).backward()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        F.cross_entropy(model(x), y).backward()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=15))


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--T", type=int, default=8, help="time steps")
    p.add_argument("--batch", type=int, default=64, help="batch size")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds per measurement")
    p.add_argument("--repeats", type=int, default=15, help="timed rounds per measurement (median)")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of a fused step")
    args = p.parse_args()
    if args.quick:
        args.warmup, args.repeats, args.batch = 1, 3, 8
    device = setup(args)
    cost = build_cost()
    kernel = fused_triton if device.type == "cuda" else fused  # (the neurons pick by the tensors' device)
    if not kernel.available():
        raise SystemExit(f"the fused kernel is unavailable here: {kernel.unavailable_reason()}")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"kernel build (empty cache) {cost['cold_build_s']:.1f} s, load (warm cache) {cost['warm_load_s']:.2f} s",
          flush=True)
    neuron_rows, neuron_data = bench_neurons(args, device, args.T, args.batch)
    net_rows, net_data = bench_network(args, device, args.T, args.batch)
    if kernel.unavailable_reason() is not None:  # it failed while running: 'fused' timed the loop
        raise SystemExit(f"the fused kernel failed: {kernel.unavailable_reason()}")
    if args.profile:
        profile_step(device, args.T, args.batch)
    where = f"T = {args.T}, batch {args.batch}, {device_name}, {args.threads} threads"
    tables = [
        (f"neurons alone, forward + backward ({where})",
         format_table(neuron_rows, ["neuron", "shape (per step)", "loop ms", "fused ms", "speedup", "same spikes",
                                    "max |grad diff|"])),
        (f"SpikingConvNet(1, 28, 10, T={args.T}) ({where})",
         format_table(net_rows, ["measurement", "loop ms", "fused ms", "speedup", "max |grad diff|"])),
        ("fused kernel build", format_table([[f"{cost['cold_build_s']:.1f}", f"{cost['warm_load_s']:.2f}"]],
                                            ["build, empty cache (s)", "load, warm cache (s)"])),
    ]
    save("neurons", args, {"T": args.T, "batch": args.batch, "device_name": device_name, "build": cost,
                           "neurons": neuron_data, "network": net_data}, tables)


if __name__ == "__main__":
    main()
