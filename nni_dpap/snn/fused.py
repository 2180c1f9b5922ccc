"""Fused multi-step LIF / PLIF neurons: one C++ loop for all time steps, forward and backward.

What it computes
----------------
Exactly what :meth:`nni_dpap.snn.neurons.BaseNeuron._multi_step` computes with the Python loop over
time steps, for :class:`~nni_dpap.snn.LIFNeuron` (``H = V + (X - (V - V_reset)) / tau``) and
:class:`~nni_dpap.snn.PLIFNeuron` (``H = V + (X - (V - V_reset)) * sigmoid(w)``): Heaviside firing at
``V_threshold`` with the atan or sigmoid surrogate gradient (any ``alpha``), the hard reset (with or
without ``detach_reset``, any ``V_reset``) and the ``[C, T]`` time mask, in a
:class:`torch.autograd.Function` whose backward pass is one fused loop too (backpropagation through
time, with ``dL/dw`` for PLIF). The loop makes ``~10 T`` elementwise torch calls in forward and as many
autograd nodes in backward, each reading and writing the whole tensor; the kernel reads ``X`` once and
writes the spikes and ``H`` (saved for backward) once; backward reads ``H`` and ``dL/dS``, writes ``dL/dX``.

Design
------
The kernel, ``_lif_kernel.cpp`` next to this module (package data; it also holds the 2x2 pooling of
:mod:`~nni_dpap.snn.pooling` and the input stage of :mod:`~nni_dpap.snn.direct`), plain C++17 with a C ABI
and **no torch headers**, is compiled on first use with the system's C++ compiler (``$CXX``, else
``c++``/``g++``/``clang++``) into a shared library cached under ``$NNI_DPAP_CACHE_DIR`` (default
``~/.cache/nni_dpap``; ``$NNI_DPAP_CXXFLAGS`` adds compiler flags, e.g. ``-O1`` for a 3x faster build of a
slower kernel), keyed by a hash of the source, flags, compiler and CPU (built with ``-march=native``:
AVX2 made the forward 6-15x faster than baseline x86-64 code), and called through :mod:`ctypes` (which
releases the GIL). Every (sample, chunk of 512 features) is an independent work item whose membrane stays
in a stack array while the ``T`` loop runs over it, so the data streams through once and the inner loop
vectorises (``-fno-trapping-math`` lets GCC vectorise the firing decision and the reset instead of
branching on every spike: LIF forward, T = 4, 3M random inputs, 1 thread, 35 -> 1.2 ms; it changes no
value); work items are spread over torch's intra-op threads with OpenMP (the library links
``libgomp.so.1``, which resolves to the copy torch has already loaded, so both share one thread pool). The
arithmetic mirrors the Python code operation by operation and is compiled with ``-ffp-contract=off``, so
``H`` and the spikes are bit-identical to the loop's; gradients agree to float rounding (the loop's
autograd sums a few terms in another order; ``dL/dw`` is summed over the steps per element, then over the
elements in float64, in a fixed order, so it is deterministic).

Why this backend (measured on 2 CPU cores, the paper's MNIST SNN at T = 8, batch 64; see
``benchmarks/bench_neurons.py`` and its results):

* **C++ via ctypes (chosen).** Cold compile ~3 s once per machine (cached; no recompilation for new shapes,
  T, flags or dtypes, which are runtime arguments), no ninja, no Python or torch headers, nothing to install.
* ``cpp_extension.load_inline``: same speed; torch headers and pybind11 (~40-60 s cold compile), ninja.
* ``torch.compile`` (inductor) of the loop: good kernels, but 10-30 s to compile per T, neuron, surrogate, dtype.
* TorchScript: no fusion on CPU (NNC is off by default there), so it only trims Python overhead.

Where the kernel does not apply, :class:`~nni_dpap.snn.neurons.BaseNeuron` silently runs the Python
loop instead (see :meth:`~nni_dpap.snn.neurons.BaseNeuron.fused_supported`): CPU tensors not float32/64
(CUDA ones go to :mod:`~nni_dpap.snn.fused_triton`), subclasses overriding charge/fire/reset, other
surrogates or ``spiking=False``, per-channel PLIF ``w``, tracing and ``torch.compile``. If the kernel cannot
be built (no compiler, a compile or load error) the loop is used on the CPU and one warning is logged.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.resources
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._fused_autograd import FusedKernels, fused_lif

_logger = logging.getLogger(__name__)

__all__ = ["FusedConfig", "available", "library", "lif_multi_step", "plain_cpu_tensor", "unavailable_reason"]

_KERNEL = "_lif_kernel.cpp"  # in this package
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math")
_OPENMP = "-fopenmp"
# Built for the CPU that runs it: AVX2/AVX-512 where there is one (several times faster than SSE2; no FMA
# contraction, no vectorised libm: the same bits). The cache key includes the CPU's feature flags, so a
# shared cache never loads a library for the wrong CPU; without -march=native the portable one is built.
_NATIVE = "-march=native"
_ABI_VERSION = 4
DTYPE_CODES = {torch.float32: 0, torch.float64: 1}
_MIN_PARALLEL = 1 << 15  # elements per step below which one thread is faster than waking the others


@dataclass(frozen=True)
class FusedConfig:
    """Everything the kernel needs besides the tensors.

    Parameters
    ----------
    T
        Time steps folded into dim 0.
    v_threshold, v_reset, detach_reset
        As in :class:`~nni_dpap.snn.neurons.BaseNeuron`.
    surrogate
        ``'atan'`` or ``'sigmoid'``.
    alpha
        Surrogate sharpness.
    tau
        LIF time constant (``H = V + (X - (V - V_reset)) / tau``); ``None`` for PLIF, whose decay
        ``sigmoid(w)`` is a tensor argument of :func:`lif_multi_step`.
    """

    T: int
    v_threshold: float
    v_reset: float
    detach_reset: bool
    surrogate: str
    alpha: float
    tau: float | None = None


# -- building and loading the library ----------------------------------------------------------------
class _State:
    """The library once loaded, or why it could not be (per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lib: ctypes.CDLL | None = None
        self.failure: str | None = None


_STATE = _State()


@functools.cache
def _source() -> str:
    """The kernel's C++ source (raises :class:`OSError` if the package was installed without it)."""
    return importlib.resources.files(__name__.rpartition(".")[0]).joinpath(_KERNEL).read_text(encoding="utf-8")


def _compiler() -> list[str] | None:
    env = os.environ.get("CXX")
    if env:
        return shlex.split(env)
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _user_flags() -> list[str]:
    """``$NNI_DPAP_CXXFLAGS``, passed after ours (the last flag wins: ``-O1`` over ``-O3``)."""
    return shlex.split(os.environ.get("NNI_DPAP_CXXFLAGS", ""))


def _cache_dir() -> Path:
    root = os.environ.get("NNI_DPAP_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "nni_dpap")
    return Path(root) / "kernels"


def _writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".probe-")
        probe.close()
        return path
    except OSError:
        return Path(tempfile.mkdtemp(prefix="nni_dpap_kernels-"))


def _compile(cxx: list[str], directory: Path, stem: str) -> Path:
    """Compile the kernel into ``directory`` (with OpenMP if the compiler has it); returns the library."""
    target = directory / f"{stem}.so"
    unique = f"{stem}.{os.getpid()}.{threading.get_ident()}"  # processes may build the same kernel at once
    source, tmp = directory / f"{unique}.cpp", directory / f"{unique}.tmp"
    source.write_text(_source(), encoding="utf-8")
    error = ""
    try:
        for extra in ((_NATIVE, _OPENMP), (_OPENMP,), (_NATIVE,), ()):
            cmd = [*cxx, *_FLAGS, *extra, *_user_flags(), "-o", str(tmp), str(source)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                os.replace(tmp, target)  # atomic
                if _OPENMP not in extra:
                    _logger.debug("fused neuron kernel built without OpenMP (single-threaded)")
                return target
            lines = proc.stderr.strip().splitlines()
            error = lines[-1] if lines else f"exit code {proc.returncode}"
    finally:
        source.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    raise RuntimeError(f"{shlex.join(cxx)} failed: {error}")


def _build() -> ctypes.CDLL:
    """Compile (or reuse the cached) shared library and load it."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set $CXX or install g++/clang++)")
    stem = _stem(cxx)
    directory = _writable_dir(_cache_dir())
    target = directory / f"{stem}.so"
    if target.exists():
        try:
            return _load(target)
        except (OSError, RuntimeError, AttributeError) as exc:  # a corrupt or foreign file: build it again
            _logger.debug("rebuilding the cached kernel %s (%s)", target, exc)
    return _load(_compile(cxx, directory, stem))


def _stem(cxx: list[str]) -> str:
    """File name (without suffix) of the library: changes with the source, flags, compiler and platform."""
    key = hashlib.sha256("\0".join([_source(), *_FLAGS, *_user_flags(), _NATIVE, *cxx, platform.machine(),
                                    sys.platform, _cpu_features()]).encode())
    return f"lif_{key.hexdigest()[:16]}"


def _cpu_features() -> str:
    """The CPU's model and feature flags (Linux), so that ``-march=native`` libraries are per CPU kind."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line.strip() for line in lines if line.split(":", 1)[0].strip() in wanted}))


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    _declare(lib)
    if lib.nni_dpap_lif_abi_version() != _ABI_VERSION:
        raise RuntimeError(f"stale kernel library {path}")
    return lib


def _declare(lib: ctypes.CDLL) -> None:
    ptr, i64, f64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    pool, max_pool = ([i32, ptr, ptr, i64, i64, i64, i32], i32), ([i32, ptr, ptr, ptr, i64, i64, i64, i32], i32)
    signatures = {  # name: (argument types, result type)
        "nni_dpap_lif_forward": ([i32, ptr, ptr, ptr, ptr, i64, i64, i64, f64, f64, f64, i32, i32], i32),
        "nni_dpap_lif_backward": ([i32, ptr, ptr, ptr, ptr, ptr, i64, i64, i64, f64, f64, f64, i32, i32, f64, i32, i32,
                                   i32], f64),
        "nni_dpap_avg_pool2x2_forward": pool, "nni_dpap_avg_pool2x2_backward": pool,  # .pooling
        "nni_dpap_max_pool2x2_forward": max_pool, "nni_dpap_max_pool2x2_backward": max_pool,
        "nni_dpap_direct_forward": ([i32, ptr, ptr, ptr, *[i64] * 6, f64, f64, f64, i32, i32], i32),  # .direct
        "nni_dpap_direct_backward": ([i32, ptr, ptr, ptr, ptr, *[i64] * 6, f64, f64, f64, i32, i32, f64, i32, i32,
                                      i32], f64),
        "nni_dpap_lif_abi_version": ([], i32),
    }
    for name, (argtypes, restype) in signatures.items():
        getattr(lib, name).argtypes, getattr(lib, name).restype = argtypes, restype


def library() -> ctypes.CDLL | None:
    """The kernel library (neurons and :mod:`~nni_dpap.snn.pooling`); ``None`` if it cannot be built (logged once)."""
    state = _STATE
    if state.lib is not None or state.failure is not None:
        return state.lib
    with state.lock:
        if state.lib is None and state.failure is None:
            try:
                state.lib = _build()
            except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as exc:
                state.failure = f"{type(exc).__name__}: {exc}"
                _logger.warning("fused LIF/PLIF kernel unavailable (%s); multi-step neurons use the Python loop "
                                "over time steps and 2x2 average pooling uses PyTorch's instead", state.failure)
    return state.lib


def available() -> bool:
    """Whether the fused kernel can be used (builds it on the first call)."""
    return library() is not None


def unavailable_reason() -> str | None:
    """Why the kernel could not be built, or ``None`` (it works, or was not tried yet)."""
    return _STATE.failure


# -- autograd ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Geometry:
    T: int
    B: int  # samples (1 without a time mask: the whole step is one row)
    L: int  # features per row


def _geometry(x: Tensor, T: int, gated: bool) -> _Geometry:
    per_step = x.numel() // T
    if not gated:
        return _Geometry(T, 1, per_step)
    B = x.shape[0] // T
    return _Geometry(T, B, per_step // B if B else 0)


def _expand_gate(mask: Tensor, x: Tensor, T: int) -> Tensor:
    """``[C, T']`` time mask -> ``[T, L]`` gate over the per-sample features of ``x`` (channel is dim 1)."""
    inner = 1
    for size in x.shape[2:]:
        inner *= size
    gate = mask[:, :T].t().to(device=x.device, dtype=x.dtype)  # [T, C]
    return gate.unsqueeze(-1).expand(T, gate.shape[1], inner).reshape(T, -1).contiguous()


def plain_cpu_tensor(x: Any) -> bool:
    """Whether the kernels can read ``x``: a plain float32/float64 CPU tensor, outside tracing and compilation."""
    return (type(x) is Tensor and x.device.type == "cpu" and x.dtype in DTYPE_CODES and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling())


def threads_for(per_step: int) -> int:
    """OpenMP threads for a kernel call touching ``per_step`` elements at a time."""
    return torch.get_num_threads() if per_step >= _MIN_PARALLEL else 1


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _forward(lib: ctypes.CDLL, x: Tensor, gate: Tensor | None, k: Tensor | None, cfg: FusedConfig,
             write_h: bool) -> tuple[Tensor, Tensor | None]:
    geo = _geometry(x, cfg.T, gate is not None)
    s = torch.empty_like(x, memory_format=torch.contiguous_format)
    h = torch.empty_like(s) if write_h else None
    if x.numel():
        lib.nni_dpap_lif_forward(DTYPE_CODES[x.dtype], _ptr(x), _ptr(gate), _ptr(s), _ptr(h), geo.T, geo.B, geo.L,
                                 _decay(k, cfg), cfg.v_threshold, cfg.v_reset, int(k is not None),
                                 threads_for(geo.B * geo.L))
    return s, h


def _backward(lib: ctypes.CDLL, grad_s: Tensor, h: Tensor, x: Tensor | None, gate: Tensor | None, k: Tensor | None,
              cfg: FusedConfig) -> tuple[Tensor, Tensor | None]:
    geo = _geometry(h, cfg.T, gate is not None)
    grad_x = torch.empty_like(h)
    grad_k = 0.0
    if h.numel():
        grad_k = lib.nni_dpap_lif_backward(
            DTYPE_CODES[h.dtype], _ptr(grad_s), _ptr(h), _ptr(x), _ptr(gate), _ptr(grad_x), geo.T, geo.B, geo.L,
            _decay(k, cfg), cfg.v_threshold, cfg.v_reset, int(k is not None), int(cfg.surrogate == "sigmoid"),
            cfg.alpha, int(cfg.detach_reset), int(x is not None), threads_for(geo.B * geo.L))
    return grad_x, (torch.tensor(grad_k, dtype=h.dtype) if x is not None else None)


def _decay(k: Tensor | None, cfg: FusedConfig) -> float:
    """The kernel's decay argument: PLIF's ``k``, or LIF's ``tau`` (the kernel divides by it)."""
    return float(k) if k is not None else float(cfg.tau)  # type: ignore[arg-type]


def lif_multi_step(x: Tensor, cfg: FusedConfig, k: Tensor | None = None, time_mask: Tensor | None = None,
                   need_h: bool = False) -> tuple[Tensor, Tensor | None] | None:
    """Run a multi-step LIF (``k=None``, decay ``1 / cfg.tau``) or PLIF (decay ``k = sigmoid(w)``) neuron.

    Parameters
    ----------
    x
        Input current, time-major folded ``[T*B, ...]``, float32 or float64, on the CPU; with a
        ``time_mask`` its dim 1 is the channel.
    cfg
        Neuron settings.
    k
        PLIF's decay ``sigmoid(w)``: a 0-dim tensor, differentiable (``dL/dk`` flows back to ``w``).
    time_mask
        ``[C, T']`` (``T' >= T``) spike gate, or ``None``.
    need_h
        Also return ``H`` (the membrane before firing, folded like ``x``, detached).

    Returns
    -------
    tuple or None
        ``(spikes, H or None)``; ``None`` if the kernel is unavailable (the caller runs the loop).
    """
    lib = library()
    if lib is None:
        return None
    x = x.contiguous()
    gate = None if time_mask is None else _expand_gate(time_mask, x, cfg.T)
    if k is not None:
        k = k.to(x.dtype)  # the loop multiplies in x's dtype
    if torch.is_grad_enabled() and (x.requires_grad or (k is not None and k.requires_grad)):
        s, h = fused_lif(x, k, gate, FusedKernels.bind(_forward, _backward, lib, cfg=cfg))
        return s, (h if need_h else None)
    return _forward(lib, x, gate, k, cfg, write_h=need_h)
