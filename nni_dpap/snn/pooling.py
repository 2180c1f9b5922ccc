"""2x2 average and max pooling on the CPU without ATen's slow generic kernels.

Spiking conv nets pool every time step: the paper's MNIST SNN at ``T = 8``, batch 64, pools a
``[512, 15, 28, 28]`` spike tensor after its first layer. ATen's CPU ``avg_pool2d`` for NCHW tensors
computes every window's bounds and divisor per output element and does not vectorise: on 2 cores it
took 8-11 ms forward and 14 ms backward for that tensor, more than the convolutions of the pruned model
(``benchmarks/bench_speedup.py`` profile). For the common case, a 2x2 window with stride 2 and no
padding, :class:`AvgPool2d` runs a plain loop from the package's kernel library
(:mod:`nni_dpap.snn.fused`, same build and cache) that sums each window in ATen's order and divides by
4, so outputs and gradients are bit-identical to :func:`torch.nn.functional.avg_pool2d`; it is 3-10x
faster forward and 5-10x backward on 2 cores.

:class:`MaxPool2d` does the same for 2x2 max pooling (the CIFAR SNN, VGG and the LeNet ANN): ATen's
CPU ``max_pool2d`` took 3.1 ms for a ``[256, 32, 16, 16]`` tensor and 93 ms for the full-width CIFAR
SNN's ``[512, 128, 32, 32]`` on 2 cores. The kernel picks the maximum as ATen does (the window scanned
row by row, a greater or NaN element replacing it, so ties go to the first), keeps its window position
in one byte per output, and backward writes the gradient there: outputs and gradients are ATen's.

Anything else (fewer than :data:`MIN_ELEMENTS` elements, another window, padding, ``ceil_mode``,
``divisor_override``, dilation, ``return_indices``, a GPU tensor, a dtype other than float32/float64,
a non-contiguous or channels-last tensor, tracing, ``torch.compile``, or no kernel library) runs torch's
pooling unchanged, so the modules are drop-in replacements and NNI's speedup, DPAP's graph tracer and
``torch.compile`` see an ordinary pooling.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from . import fused

__all__ = ["AvgPool2d", "MaxPool2d", "MIN_ELEMENTS", "avg_pool2x2", "is_2x2", "max_pool2x2"]


#: Inputs smaller than this run torch's pooling: its call costs a few microseconds less, which is all there is to
#: win on a few thousand elements (the LeNet ANN at batch 1: +15 us a forward with the kernel). Same results.
MIN_ELEMENTS = 1 << 14


def _planes(shape: torch.Size) -> tuple[int, int, int]:
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def _avg_forward(lib: Any, x: Tensor) -> Tensor:
    P, H, W = _planes(x.shape)
    y = x.new_empty((*x.shape[:-2], H // 2, W // 2))
    if P:
        lib.nni_dpap_avg_pool2x2_forward(fused.DTYPE_CODES[x.dtype], x.data_ptr(), y.data_ptr(), P, H, W,
                                         fused.threads_for(x.numel()))
    return y


def _needs_graph(x: Tensor) -> bool:
    """Whether autograd must record the call (else the kernel runs without a Function: ~10 us less a call)."""
    return torch.is_grad_enabled() and x.requires_grad


class _AvgPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, lib: Any) -> Tensor:
        ctx.shape, ctx.lib = x.shape, lib
        return _avg_forward(lib, x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor, None]:
        grad_y = grad_y.contiguous()
        grad_x = grad_y.new_empty(ctx.shape)
        P, H, W = _planes(ctx.shape)
        if P:  # H, W >= 2 (avg_pool2x2): every element of grad_x is written
            ctx.lib.nni_dpap_avg_pool2x2_backward(fused.DTYPE_CODES[grad_y.dtype], grad_y.data_ptr(),
                                                  grad_x.data_ptr(), P, H, W, fused.threads_for(grad_x.numel()))
        return grad_x, None


def is_2x2(pool: nn.AvgPool2d | nn.MaxPool2d) -> bool:
    """Whether ``pool`` is a 2x2 window with stride 2, no padding and floor mode, with the default divisor
    (average) or no dilation and no indices returned (max): the case the kernels compute."""
    def pair(v: Any) -> tuple[Any, ...]:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    if not (pair(pool.kernel_size) == (2, 2) and pair(pool.stride) == (2, 2) and pair(pool.padding) == (0, 0)
            and not pool.ceil_mode):
        return False
    if isinstance(pool, nn.MaxPool2d):
        return pair(pool.dilation) == (1, 1) and not pool.return_indices
    return pool.divisor_override is None


def _library_for(x: Tensor) -> Any:
    """The kernel library if it can pool ``x`` (see the module docstring), else ``None``."""
    if (not fused.plain_cpu_tensor(x) or x.numel() < MIN_ELEMENTS or x.dim() not in (3, 4) or not x.is_contiguous()
            or min(x.shape[-2:]) < 2):  # (a plain tensor first: tracers' proxies cannot be compared)
        return None  # (a window larger than the input: ATen raises the error that explains it)
    return fused.library()


def avg_pool2x2(x: Tensor) -> Tensor | None:
    """``avg_pool2d(x, 2)`` of a contiguous ``[N, C, H, W]`` or ``[C, H, W]`` float CPU tensor with the kernel.

    Returns ``None`` where the kernel does not apply (see the module docstring) or cannot be built;
    the caller then runs :func:`torch.nn.functional.avg_pool2d`.
    """
    lib = _library_for(x)
    if lib is None:
        return None
    return _AvgPool2x2.apply(x, lib) if _needs_graph(x) else _avg_forward(lib, x)


class AvgPool2d(nn.AvgPool2d):
    """:class:`torch.nn.AvgPool2d` whose 2x2 / stride-2 case runs the package's CPU kernel.

    Same arguments, same results (bit for bit) and same gradients as :class:`torch.nn.AvgPool2d`;
    see the module docstring for when the kernel is used.

    Examples
    --------
    >>> pool = AvgPool2d(2)
    >>> pool(torch.arange(16.0).view(1, 1, 4, 4))
    tensor([[[[ 2.5000,  4.5000],
              [10.5000, 12.5000]]]])
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's parameter name
        if is_2x2(self):
            out = avg_pool2x2(input)
            if out is not None:
                return out
        return super().forward(input)


def _max_forward(lib: Any, x: Tensor) -> tuple[Tensor, Tensor]:
    P, H, W = _planes(x.shape)
    y = x.new_empty((*x.shape[:-2], H // 2, W // 2))
    arg = torch.empty(y.shape, dtype=torch.uint8)  # window position of each maximum (0..3)
    if P:
        lib.nni_dpap_max_pool2x2_forward(fused.DTYPE_CODES[x.dtype], x.data_ptr(), y.data_ptr(), arg.data_ptr(),
                                         P, H, W, fused.threads_for(x.numel()))
    return y, arg


class _MaxPool2x2(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, lib: Any) -> Tensor:
        y, arg = _max_forward(lib, x)
        ctx.save_for_backward(arg)
        ctx.shape, ctx.lib = x.shape, lib
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_y: Tensor) -> tuple[Tensor, None]:
        (arg,) = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        grad_x = grad_y.new_empty(ctx.shape)
        P, H, W = _planes(ctx.shape)
        if P:
            ctx.lib.nni_dpap_max_pool2x2_backward(fused.DTYPE_CODES[grad_y.dtype], grad_y.data_ptr(), arg.data_ptr(),
                                                  grad_x.data_ptr(), P, H, W, fused.threads_for(grad_x.numel()))
        return grad_x, None


def max_pool2x2(x: Tensor) -> Tensor | None:
    """``max_pool2d(x, 2)`` with the kernel, or ``None`` where it does not apply (see :func:`avg_pool2x2`)."""
    lib = _library_for(x)
    if lib is None:
        return None
    return _MaxPool2x2.apply(x, lib) if _needs_graph(x) else _max_forward(lib, x)[0]


class MaxPool2d(nn.MaxPool2d):
    """:class:`torch.nn.MaxPool2d` whose 2x2 / stride-2 case runs the package's CPU kernel.

    Same arguments, results and gradients as :class:`torch.nn.MaxPool2d` (see the module docstring).

    Examples
    --------
    >>> MaxPool2d(2)(torch.arange(16.0).view(1, 1, 4, 4))
    tensor([[[[ 5.,  7.],
              [13., 15.]]]])
    """

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - torch's parameter name
        if is_2x2(self):
            out = max_pool2x2(input)
            if out is not None:
                return out
        return super().forward(input)
