"""Which units survived a physical shrink, and slicing tensors to them.

:class:`KeptIndices` is what :func:`nni_dpap.speedup.speedup_with_indices` reports for
every module it changed; the optimizer surgery (:mod:`nni_dpap.shrink`) and DPAP's
per-layer state (:mod:`nni_dpap._layers`) slice their tensors with it. It lives here,
apart from the speedup, so that per-layer state does not depend on NNI's
``ModelSpeedup``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KeptIndices", "live_units", "slice_to", "cut"]


def live_units(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The output units a physical shrink keeps, from a weight (or its mask) and the bias (or its mask).

    A unit goes when its weights are all zero *and* so is its bias: a unit left with its bias
    alone still emits ``f(bias)`` (a constant, or a spike train for a spiking neuron).
    """
    live = weight.detach().flatten(1).ne(0).any(1)
    if bias is not None and bias.shape == live.shape:
        live = live | bias.detach().ne(0)
    return live


@dataclass(frozen=True)
class KeptIndices:
    """Which output and input units of a module survived a shrink (``None``: all of them)."""

    out: Tensor | None
    inp: Tensor | None


def slice_to(tensor: Tensor, kept: KeptIndices | None, shape: torch.Size | tuple[int, ...]) -> Tensor | None:
    """Slice ``tensor`` (shaped like an old parameter) to ``shape``: kept outputs on dim 0, inputs on dim 1.

    Returns ``None`` when the kept indices do not explain the new shape.
    """
    out = tensor
    for dim, index in ((0, kept.out if kept else None), (1, kept.inp if kept else None)):
        if out.dim() <= dim or out.shape[dim] == shape[dim]:
            continue
        if index is None or index.numel() != shape[dim]:
            return None
        out = out.index_select(dim, index.to(out.device))
    return out if tuple(out.shape) == tuple(shape) else None


def cut(tensor: Tensor, out: Tensor | None, inp: Tensor | None = None, out_dim: int = 0, in_dim: int = 1) -> Tensor:
    """A copy of ``tensor`` keeping ``out`` along ``out_dim`` and ``inp`` along ``in_dim`` (``None``: all)."""
    for dim, index in ((out_dim, out), (in_dim, inp)):
        if index is not None:
            tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor.clone()
