"""Fused multi-step LIF / PLIF neurons on the GPU: Triton kernels, forward and backward.

The GPU counterpart of :mod:`nni_dpap.snn.fused` (same computation, same :class:`FusedConfig`, the
same autograd contract): :class:`~nni_dpap.snn.neurons.BaseNeuron` runs it for CUDA tensors with
``backend='fused'``. The loop over time steps makes ``~10 T`` elementwise kernel launches forward
and as many autograd nodes backward, each reading and writing the whole tensor; here one launch reads
``X`` once and writes the spikes and ``H`` once, and one launch runs backpropagation through time.

Why Triton: it ships with PyTorch's CUDA wheels and compiles at run time with its own ``ptxas``, so
nothing beyond ``pip install torch`` is needed (a CUDA C++ extension needs ``nvcc`` and the toolkit).
The kernels are :mod:`nni_dpap.snn._triton_lif`; their arithmetic follows the C++ kernel's operation
by operation (in float32 for float32 / float16 / bfloat16 tensors, in float64 for float64), so spikes
and ``H`` equal the Python loop's and gradients agree to float rounding (``tests/test_fused_triton.py``
runs them in Triton's CPU interpreter against the loop: no GPU was available to this project when it
was written; ``benchmarks/bench_neurons.py --device cuda`` times them where there is one).

If Triton cannot be imported or a kernel fails to compile or launch, one warning is logged and the
neurons run the Python loop for the rest of the process.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ._fused_autograd import FusedKernels, fused_lif
from .fused import FusedConfig, _expand_gate

_logger = logging.getLogger(__name__)

__all__ = ["available", "lif_multi_step", "supports", "unavailable_reason"]

_BLOCK = 1024  # elements per program
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kernels: ModuleType | None = None
        self.failure: str | None = None
        self.probed: set[torch.device] = set()  # devices where both kernels compiled and ran


_STATE = _State()


def _interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``, for tests)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def supports(x: Any) -> bool:
    """Whether the Triton kernels can read ``x``: a plain floating-point CUDA tensor (a CPU one in
    Triton's interpreter), outside tracing and ``torch.compile``. Availability is checked separately."""
    return (type(x) is Tensor and x.dtype in _DTYPES and (x.device.type == "cuda" or _interpreting())
            and not torch.jit.is_tracing() and not torch.jit.is_scripting() and not torch.compiler.is_compiling())


def _fail(reason: str) -> None:
    _STATE.failure = reason
    _STATE.kernels = None
    _logger.warning("fused LIF/PLIF Triton kernel unavailable (%s); multi-step neurons on the GPU use the Python "
                    "loop over time steps", reason)


def kernels() -> ModuleType | None:
    """The kernel module (imports Triton on the first call); ``None`` if it cannot be used (logged once)."""
    state = _STATE
    if state.kernels is not None or state.failure is not None:
        return state.kernels
    with state.lock:
        if state.kernels is None and state.failure is None:
            try:
                # (import_module consults sys.modules: the tests re-import it for Triton's interpreter)
                state.kernels = importlib.import_module(f"{__package__}._triton_lif")
            except Exception as exc:  # ImportError, or a Triton that does not load on this system
                _fail(f"{type(exc).__name__}: {exc}")
    return state.kernels


def available() -> bool:
    """Whether Triton can be imported (the kernels compile on their first launch)."""
    return kernels() is not None


def unavailable_reason() -> str | None:
    """Why the kernels cannot be used, or ``None`` (they work, or were not tried yet)."""
    return _STATE.failure


def _grid(n: int) -> tuple[int]:
    return ((n + _BLOCK - 1) // _BLOCK,)


def _forward(lib: ModuleType, x: Tensor, gate: Tensor | None, k: Tensor | None, cfg: FusedConfig,
             write_h: bool) -> tuple[Tensor, Tensor | None]:
    n, L = x.numel() // cfg.T, (gate.shape[1] if gate is not None else 1)
    s = torch.empty_like(x, memory_format=torch.contiguous_format)
    h = torch.empty_like(s) if write_h else None
    if x.numel():
        lib.lif_forward[_grid(n)](x, _or(gate, x), s, _or(h, s), _or(k, x), cfg.T, n, L, _tau(cfg), cfg.v_threshold,
                                  cfg.v_reset, MUL=k is not None, GATE=gate is not None, WRITE_H=write_h,
                                  F64=x.dtype == torch.float64, BLOCK=_BLOCK)
    return s, h


def _backward(lib: ModuleType, grad_s: Tensor, h: Tensor, x: Tensor | None, gate: Tensor | None, k: Tensor | None,
              cfg: FusedConfig) -> tuple[Tensor, Tensor | None]:
    n, L = h.numel() // cfg.T, (gate.shape[1] if gate is not None else 1)
    grad_x = torch.empty_like(h)
    grid = _grid(n)
    partial = torch.empty(n if x is not None else 1, dtype=h.dtype, device=h.device)  # dL/dk per element
    if h.numel():
        lib.lif_backward[grid](grad_s, h, _or(x, h), _or(gate, h), grad_x, partial, _or(k, h), cfg.T, n, L, _tau(cfg),
                               cfg.v_threshold, cfg.v_reset, cfg.alpha, MUL=k is not None, GATE=gate is not None,
                               SIGMOID=cfg.surrogate == "sigmoid", DETACH=cfg.detach_reset, GRAD_K=x is not None,
                               F64=h.dtype == torch.float64, BLOCK=_BLOCK)
    # summed in float64 on the device (no host round trip), like the C++ kernel
    return grad_x, (partial.sum(dtype=torch.float64).to(h.dtype) if x is not None else None)


def _or(t: Tensor | None, dummy: Tensor) -> Tensor:
    """``t``, or a tensor standing in for an argument the kernel does not read (a constexpr switches it off)."""
    return t if t is not None else dummy


def _tau(cfg: FusedConfig) -> float:
    return float(cfg.tau) if cfg.tau is not None else 1.0  # (PLIF reads its decay from k)


def _probe(lib: ModuleType, device: torch.device) -> None:
    """Compile and launch both kernels once on a small input (raises where Triton cannot run here)."""
    cfg = FusedConfig(T=2, v_threshold=1.0, v_reset=0.0, detach_reset=False, surrogate="atan", alpha=2.0, tau=2.0)
    x = torch.ones(2, 4, device=device, requires_grad=True)
    s, _ = fused_lif(x, None, None, FusedKernels.bind(_forward, _backward, lib, cfg=cfg))
    s.sum().backward()


def lif_multi_step(x: Tensor, cfg: FusedConfig, k: Tensor | None = None, time_mask: Tensor | None = None,
                   need_h: bool = False) -> tuple[Tensor, Tensor | None] | None:
    """Run a multi-step LIF (``k=None``) or PLIF (decay ``k = sigmoid(w)``) neuron with the Triton kernels.

    Same parameters and result as :func:`nni_dpap.snn.fused.lif_multi_step`, for tensors that
    :func:`supports` accepts; ``None`` if the kernels cannot be used (the caller runs the loop).
    """
    lib = kernels()
    if lib is None:
        return None
    x = x.contiguous()
    gate = None if time_mask is None else _expand_gate(time_mask, x, cfg.T)
    if k is not None:
        k = k.to(x.dtype).reshape(1)  # the loop multiplies in x's dtype
    try:
        if x.device not in _STATE.probed:
            with torch.inference_mode(False), torch.enable_grad():  # (the first call may come from evaluation)
                _probe(lib, x.device)
            _STATE.probed.add(x.device)
        if torch.is_grad_enabled() and (x.requires_grad or (k is not None and k.requires_grad)):
            s, h = fused_lif(x, k, gate, FusedKernels.bind(_forward, _backward, lib, cfg=cfg))
            return s, (h if need_h else None)
        return _forward(lib, x, gate, k, cfg, write_h=need_h)
    except Exception as exc:  # a compile or launch failure (an unsupported GPU, no ptxas, ...): the loop from now on
        _fail(f"{type(exc).__name__}: {exc}")
        return None
