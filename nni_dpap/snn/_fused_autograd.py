"""The autograd Function of the fused LIF/PLIF kernels, shared by the C++ (CPU) and Triton (CUDA) backends.

Each backend supplies two callables over its own kernels, bound to the neuron's settings, with the
same contract:

* ``forward(x, gate, k, write_h=...) -> (spikes, H or None)``
* ``backward(grad_s, h, x, gate, k) -> (dL/dx, dL/dk or None)``; ``x`` is ``None`` when ``dL/dk`` is
  not needed (LIF, or a PLIF decay that does not require grad), and ``dL/dk`` is then ``None``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor

__all__ = ["FusedKernels", "fused_lif"]


class FusedKernels(NamedTuple):
    """A backend's forward and backward launchers (see the module docstring)."""

    forward: Callable[..., tuple[Tensor, Tensor | None]]
    backward: Callable[[Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None], tuple[Tensor, Tensor | None]]

    @classmethod
    def bind(cls, forward: Callable[..., Any], backward: Callable[..., Any], *args: Any, **kwargs: Any) -> FusedKernels:
        """``forward`` and ``backward`` with their leading arguments (library, settings) bound."""
        return cls(functools.partial(forward, *args, **kwargs), functools.partial(backward, *args, **kwargs))


class _FusedLIF(torch.autograd.Function):
    """Spikes (and, non-differentiable, ``H``) of a multi-step LIF/PLIF neuron; fused backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, k: Tensor | None, gate: Tensor | None,
                kernels: FusedKernels) -> tuple[Tensor, Tensor]:
        s, h = kernels.forward(x, gate, k, write_h=True)
        assert h is not None
        ctx.mark_non_differentiable(h)  # and not materialised: autograd would fill a zero tensor of x's size for it
        ctx.set_materialize_grads(False)
        grad_k = k is not None and ctx.needs_input_grad[1]
        ctx.save_for_backward(h, x if grad_k else None, gate, k)
        ctx.kernels = kernels
        return s, h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_s: Tensor, grad_h: Tensor | None) -> tuple[Tensor | None, Tensor | None, None, None]:
        h, x, gate, k = ctx.saved_tensors
        grad_s = grad_s.to(h.dtype).contiguous()
        grad_x, grad_k = ctx.kernels.backward(grad_s, h, x, gate, k)
        grad_k = None if grad_k is None else grad_k.reshape(k.shape)
        return (grad_x if ctx.needs_input_grad[0] else None), grad_k, None, None


def fused_lif(x: Tensor, k: Tensor | None, gate: Tensor | None, kernels: FusedKernels) -> tuple[Tensor, Tensor]:
    """``(spikes, H)`` through :class:`_FusedLIF`: differentiable in ``x`` and ``k``."""
    return _FusedLIF.apply(x, k, gate, kernels)
