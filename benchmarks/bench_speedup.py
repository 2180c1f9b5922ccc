"""Physical speedup: inference latency of the dense model vs the DPAP model shrunk by ``speedup``.

For each network, DPAP prunes it while it trains (the demo settings), ``nni_dpap.speedup``
removes the pruned units, and the latency of the dense and the shrunk model is measured
at batch 1 and batch 64 (eval mode, no grad, 10 warm-up calls, median of 50, fixed torch
threads). Next to it: the FLOPs ratio of the dense model to the shrunk model, counting
every weight of the shrunk (dense) layers, which is the physical limit of the latency
ratio (pruned synapses inside a layer are zeros that dense kernels still multiply).

    python benchmarks/bench_speedup.py
"""

from __future__ import annotations

import torch
from _common import dpap_train, median_time, parser, save, setup, workloads

from nni_dpap.report import format_table, layer_costs, totals
from nni_dpap.speedup import speedup


def _dense_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    costs = layer_costs(model, x)
    return int(sum(c.macs_total for c in costs.values()))


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    device = setup(args)
    rows, data = [], {}
    for name, work in workloads(args.quick).items():
        model, masks, _, _ = dpap_train(work, device)
        dense = work["build"]().to(device).eval()
        model.eval()
        probe = torch.rand(2, *work["input"], device=device)
        sparse_kept = totals(layer_costs(model, probe))["macs_kept"] / _dense_macs(dense, probe)
        speedup(model, probe, masks)
        flops_ratio = _dense_macs(dense, probe) / _dense_macs(model, probe)
        entry = {"flops_ratio": flops_ratio, "sparse_flops_kept": sparse_kept}
        for batch in (1, 64):
            x = torch.rand(batch, *work["input"], device=device)
            with torch.no_grad():
                t_dense = median_time(lambda: dense(x), device)
                t_pruned = median_time(lambda: model(x), device)
            entry[f"batch{batch}"] = {"dense_ms": t_dense * 1e3, "pruned_ms": t_pruned * 1e3,
                                      "latency_ratio": t_dense / t_pruned}
            rows.append([name, batch, f"{t_dense * 1e3:.3f}", f"{t_pruned * 1e3:.3f}", f"{t_dense / t_pruned:.2f}x",
                         f"{flops_ratio:.2f}x", f"{t_dense / t_pruned / flops_ratio:.2f}"])
        data[name] = entry
        print(f"{name}: FLOPs ratio {flops_ratio:.2f}x", flush=True)
    table = format_table(rows, ["network", "batch", "dense ms", "shrunk ms", "latency ratio", "FLOPs ratio",
                                "latency / FLOPs ratio"])
    save("speedup", args, {"results": data}, [(f"inference latency, {args.device}, {args.threads} threads", table)])


if __name__ == "__main__":
    main()
