"""The input stage of a directly encoded spiking net in one kernel: encoder, neuron and 2x2 pooling.

A spiking conv net with direct encoding feeds the same input current to its first neurons at every
time step: ``pool(neuron(DirectEncoder(T)(conv1(image))))``. Run module by module, the encoder writes
``T`` copies of ``conv1``'s output, the neurons read them and write ``T`` spike maps, and the pooling
reads those again: for the paper's MNIST SNN at ``T = 8``, batch 64, that is three passes over
``[512, 15, 28, 28]`` tensors (24 MB each), 3.5-4.4 ms of a 7.4 ms forward once ``conv2`` and ``fc1``
are pruned, and more than the whole pruned part in training. :func:`encode_fire_pool` computes the same
thing with one call of the package's kernel library (:mod:`nni_dpap.snn.fused`): each work item reads
its slice of the static input once, runs the ``T`` steps in registers and writes only the pooled spike
rates; the backward pass recomputes the membrane from the static input instead of saving it and sums
the gradient over the steps (the encoder's backward).

The spikes and the pooled output are bit-identical to the modules' path; ``dL/dx`` (summed over the steps
in another order than autograd's sum over the encoder's copies) and PLIF's ``dL/dw`` (summed per element
over the steps, then over the elements in double, in a fixed order) equal theirs within float rounding.

Where the kernel does not apply, the three modules are simply called in turn, so hooks, NNI's tracer and
``torch.compile`` see the ordinary modules. It applies when: ``x`` is a plain float32/float64 CPU
tensor outside tracing and compilation; ``encoder`` is a :class:`~nni_dpap.snn.DirectEncoder`;
``neuron`` is a multi-step :class:`~nni_dpap.snn.LIFNeuron` / :class:`~nni_dpap.snn.PLIFNeuron` with
the same ``T``, ``backend='fused'``, ``store_v=False`` and :meth:`~nni_dpap.snn.BaseNeuron.fused_supported`
(time masks included); ``pool`` is ``None`` or a 2x2 / stride-2 average pooling of a 4-d input; and none
of the three modules has a hook (DPAP's statistics, spike counters and NNI's wrappers all use hooks, so
they see exactly what the modules compute).
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module

from . import fused
from .encoding import DirectEncoder
from .neurons import BaseNeuron
from .pooling import is_2x2

__all__ = ["encode_fire_pool", "fusable"]


def _hookless(module: nn.Module) -> bool:
    return not (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _no_global_hooks() -> bool:
    return not (_module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks)


def fusable(x: Any, encoder: nn.Module, neuron: nn.Module, pool: nn.Module | None = None) -> bool:
    """Whether :func:`encode_fire_pool` runs the kernel for these arguments (see the module docstring)."""
    if not fused.plain_cpu_tensor(x) or x.dim() < 2:
        return False
    if type(encoder) is not DirectEncoder or not isinstance(neuron, BaseNeuron):
        return False
    if neuron.step_mode != "m" or neuron.backend != "fused" or neuron.store_v or neuron.T != encoder.T:
        return False
    if pool is not None and not (isinstance(pool, nn.AvgPool2d) and is_2x2(pool) and x.dim() == 4
                                 and min(x.shape[-2:]) >= 2):
        return False
    modules = (encoder, neuron) if pool is None else (encoder, neuron, pool)
    if not all(_hookless(m) for m in modules) or not _no_global_hooks():
        return False
    return neuron.fused_supported(x)


class _DirectFire(torch.autograd.Function):
    """Spikes (or their 2x2-pooled rates) of a neuron fed the static input ``x`` at each of ``T`` steps."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, k: Tensor | None, gate: Tensor | None, cfg: fused.FusedConfig, pool: bool,
                lib: ctypes.CDLL) -> Tensor:
        k_value = float(k) if k is not None else float(cfg.tau)  # type: ignore[arg-type]
        y = _forward(lib, x, gate, k_value, k is not None, cfg, pool)
        ctx.save_for_backward(x, gate)
        ctx.cfg, ctx.lib, ctx.k_value, ctx.mul, ctx.pool = cfg, lib, k_value, k is not None, pool
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None, None]:
        x, gate = ctx.saved_tensors
        grad_y = grad_y.to(x.dtype).contiguous()
        cfg, (B, C, S, H, W) = ctx.cfg, _dims(x, ctx.pool)
        grad_x = torch.empty_like(x)
        want_k = ctx.mul and ctx.needs_input_grad[1]
        grad_k = 0.0
        if x.numel():
            grad_k = ctx.lib.nni_dpap_direct_backward(
                fused.DTYPE_CODES[x.dtype], grad_y.data_ptr(), x.data_ptr(), fused._ptr(gate), grad_x.data_ptr(), cfg.T,
                B, C, S, H, W, ctx.k_value, cfg.v_threshold, cfg.v_reset, int(ctx.mul),
                int(cfg.surrogate == "sigmoid"), cfg.alpha, int(cfg.detach_reset), int(want_k),
                fused.threads_for(x.numel() * cfg.T))
        grad_k_tensor = torch.tensor(grad_k, dtype=x.dtype) if want_k else None
        return (grad_x if ctx.needs_input_grad[0] else None), grad_k_tensor, None, None, None, None


def _dims(x: Tensor, pool: bool) -> tuple[int, int, int, int, int]:
    """``(B, C, S, H, W)`` of the kernel's ``[B, C, S]`` view; ``H = W = 0`` without pooling."""
    B, C, S = x.shape[0], x.shape[1], math.prod(x.shape[2:])
    return (B, C, S, x.shape[2], x.shape[3]) if pool else (B, C, S, 0, 0)


def _forward(lib: ctypes.CDLL, x: Tensor, gate: Tensor | None, k: float, mul: bool, cfg: fused.FusedConfig,
             pool: bool) -> Tensor:
    B, C, S, H, W = _dims(x, pool)
    shape = (cfg.T * B, C, H // 2, W // 2) if pool else (cfg.T * B, *x.shape[1:])
    y = x.new_empty(shape)
    if x.numel():
        lib.nni_dpap_direct_forward(fused.DTYPE_CODES[x.dtype], x.data_ptr(), fused._ptr(gate), y.data_ptr(), cfg.T,
                                    B, C, S, H, W, k, cfg.v_threshold, cfg.v_reset, int(mul),
                                    fused.threads_for(x.numel() * cfg.T))
    return y


def encode_fire_pool(x: Tensor, encoder: nn.Module, neuron: nn.Module, pool: nn.Module | None = None) -> Tensor:
    """``pool(neuron(encoder(x)))`` (``neuron(encoder(x))`` without ``pool``), in one kernel where it applies.

    Parameters
    ----------
    x
        The static input current ``[B, C, ...]`` (e.g. the first conv layer's output on the images).
    encoder
        The :class:`~nni_dpap.snn.DirectEncoder` that repeats ``x`` over ``T`` steps.
    neuron
        The multi-step neuron that fires on it.
    pool
        The 2x2 average pooling after the neuron, or ``None``.

    Returns
    -------
    Tensor
        Time-major folded ``[T*B, ...]``, exactly what the modules return (see the module docstring
        for when the kernel is used and how its gradients compare).

    Examples
    --------
    >>> from nni_dpap.snn import AvgPool2d, DirectEncoder, LIFNeuron
    >>> encoder, neuron, pool = DirectEncoder(4), LIFNeuron(4, v_threshold=0.5), AvgPool2d(2)
    >>> x = torch.rand(2, 3, 8, 8)
    >>> torch.allclose(encode_fire_pool(x, encoder, neuron, pool), pool(neuron(encoder(x))))
    True
    """
    lib = fused.library() if fusable(x, encoder, neuron, pool) else None
    if lib is None:
        out = neuron(encoder(x))
        return out if pool is None else pool(out)
    assert isinstance(neuron, BaseNeuron)
    cfg, k = neuron.fused_config(neuron.steps_per_call)
    x = x.contiguous()
    gate = None
    if neuron.time_mask is not None:  # [C, T'] -> [T, C]
        gate = neuron.time_mask[:, :cfg.T].t().to(dtype=x.dtype).contiguous()
    if k is not None:
        k = k.to(x.dtype)  # the neuron multiplies in x's dtype
    with_pool = pool is not None
    if torch.is_grad_enabled() and (x.requires_grad or (k is not None and k.requires_grad)):
        return _DirectFire.apply(x, k, gate, cfg, with_pool, lib)
    k_value = float(k) if k is not None else float(cfg.tau)  # type: ignore[arg-type]
    return _forward(lib, x, gate, k_value, k is not None, cfg, with_pool)
