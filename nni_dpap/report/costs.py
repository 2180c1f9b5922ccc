"""What a pruned network costs: kept units, parameters and multiply-accumulates per layer.

Counts are structural and read from the weights themselves, so they work on any
unwrapped model, pruned by DPAP or by anything else: an output unit is alive if its
weight row has a non-zero entry; an input unit is alive if the unit of the layer
feeding it (found in the torch.fx graph, through neurons, BN, pooling and flatten)
is alive. A weight counts if it is non-zero and both its units are alive, which is
what physical removal (``ModelSpeedup``) plus sparse storage would keep. MACs are
per sample and, for spiking nets, per time step (the ratio to the dense model does
not depend on T).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..graph import upstream_layers
from ..slicing import live_units

__all__ = ["LayerCost", "layer_costs", "totals", "format_table"]


@dataclass(frozen=True)
class LayerCost:
    """Kept and total units, parameters (weights + biases) and MACs of one layer."""

    name: str
    units_kept: int
    units_total: int
    params_kept: int
    params_total: int
    macs_kept: int
    macs_total: int


def _live_inputs(weight: Tensor, groups: int, in_live: Tensor) -> Tensor:
    """Boolean ``weight``-shaped tensor: the input unit of every weight entry is alive."""
    n_out, per_group = weight.shape[0], weight.shape[1]
    if groups == 1:
        live = in_live
        return live.view(1, -1, *([1] * (weight.dim() - 2))).expand(weight.shape)
    out_group = torch.arange(n_out, device=weight.device) // (n_out // groups)
    index = out_group[:, None] * per_group + torch.arange(per_group, device=weight.device)[None, :]
    live = in_live[index]
    return live.view(n_out, per_group, *([1] * (weight.dim() - 2))).expand(weight.shape)


@torch.no_grad()
def layer_costs(
    model: nn.Module,
    example_input: Any,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
) -> dict[str, LayerCost]:
    """Per conv / linear layer costs of ``model`` on ``example_input`` (run once, in eval mode).

    Parameters
    ----------
    model
        An unwrapped model (call ``pruner.unwrap_model()`` first).
    example_input
        One input batch (tensor or tuple of tensors) used to measure output sizes.
    leaf_modules
        Extra leaf modules for the torch.fx trace.
    """
    upstream = upstream_layers(model, leaf_modules)
    modules = dict(model.named_modules())
    positions: dict[str, int] = {}
    handles = []
    for name in upstream:
        def record(module: nn.Module, args: Any, output: Tensor, name: str = name) -> None:
            if isinstance(module, nn.Linear):
                positions[name] = 1  # one output vector per sample and time step
                return
            if output.dim() == module.weight.dim() + 1:  # type: ignore[operator]  # [T, N, C, ...] of a multi-step conv
                output = output.flatten(0, 1)
            positions[name] = output[0, 0].numel()
        handles.append(modules[name].register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        model(*example_input) if isinstance(example_input, tuple) else model(example_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    live_out: dict[str, Tensor] = {}
    for name in upstream:
        bias = getattr(modules[name], "bias", None)
        live_out[name] = live_units(modules[name].weight, bias if isinstance(bias, Tensor) else None)

    costs: dict[str, LayerCost] = {}
    for name, source in upstream.items():
        module = modules[name]
        weight = module.weight.detach()
        n_in = weight.shape[1] * getattr(module, "groups", 1)
        in_live = torch.ones(n_in, dtype=torch.bool, device=weight.device)
        if source is not None:
            src = live_out[source]
            if src.numel() == n_in:
                in_live = src
            elif n_in % src.numel() == 0:
                in_live = src.repeat_interleave(n_in // src.numel())
        effective = weight.ne(0) & live_out[name].view(-1, *([1] * (weight.dim() - 1))) \
            & _live_inputs(weight, getattr(module, "groups", 1), in_live)
        bias = getattr(module, "bias", None)
        bias_kept = int(live_out[name].sum()) if bias is not None else 0
        bias_total = bias.numel() if bias is not None else 0
        pos = positions.get(name, 0)
        costs[name] = LayerCost(
            name=name,
            units_kept=int(live_out[name].sum()),
            units_total=weight.shape[0],
            params_kept=int(effective.sum()) + bias_kept,
            params_total=weight.numel() + bias_total,
            macs_kept=int(effective.sum()) * pos,
            macs_total=weight.numel() * pos,
        )
    return costs


def totals(costs: Mapping[str, LayerCost], layers: Iterable[str] | None = None) -> dict[str, float]:
    """Sum of kept / total parameters and MACs over ``layers`` (default: all), with fractions."""
    chosen = [costs[n] for n in (layers if layers is not None else costs)]
    out: dict[str, float] = {
        "params_kept": sum(c.params_kept for c in chosen),
        "params_total": sum(c.params_total for c in chosen),
        "macs_kept": sum(c.macs_kept for c in chosen),
        "macs_total": sum(c.macs_total for c in chosen),
    }
    out["params_fraction"] = out["params_kept"] / max(out["params_total"], 1)
    out["macs_fraction"] = out["macs_kept"] / max(out["macs_total"], 1)
    return out


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table with right-aligned columns (Markdown-compatible)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"]
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells[1:]]
    return "\n".join(lines)
