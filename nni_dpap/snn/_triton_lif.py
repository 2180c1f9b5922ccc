"""Triton kernels of the fused multi-step LIF / PLIF neuron (GPU), forward and backward.

The same computation as ``_lif_kernel.cpp`` (see :mod:`nni_dpap.snn.fused` for what it computes),
written for Triton: every program owns ``BLOCK`` elements of one time step's ``N = B * L`` features,
keeps their membrane (forward) or ``dL/dV`` (backward) in registers and runs the ``T`` loop over
them. Importing this module imports :mod:`triton`; :mod:`nni_dpap.snn.fused_triton` does so lazily.
With ``TRITON_INTERPRET=1`` set before the import, Triton runs these kernels on CPU tensors with
NumPy (how the test suite checks them on machines without a GPU). They call no function of Triton's
standard library that is itself ``@triton.jit`` (``tl.zeros``, ``tl.sum``, ...): those are compiled or
interpreted according to the environment when ``triton`` is first imported, so avoiding them lets the
tests interpret these kernels in a process that imported Triton before.

Arithmetic: in float32 for float32 / float16 / bfloat16 tensors (loads are upcast, stores cast
back), in float64 for float64 tensors. The scalar settings are passed as float64 (a Python float
would be passed as float32) and rounded to the working precision in the kernel, as the loop and
the C++ kernel round them.
"""

from __future__ import annotations

import triton
import triton.language as tl

_PI = tl.constexpr(3.14159265358979323846)  # == Python's math.pi (a kernel reads only constexpr globals)


@triton.jit
def _charge(v, x, k, vr, MUL: tl.constexpr):
    if MUL:
        return v + (x - (v - vr)) * k  # PLIFNeuron.neuronal_charge
    return v + (x - (v - vr)) / k  # LIFNeuron.neuronal_charge


@triton.jit
def _decay(k_ptr, k, BLOCK: tl.constexpr, dtype: tl.constexpr, MUL: tl.constexpr):
    """PLIF's ``sigmoid(w)``, read on the device (no host round trip), or LIF's ``tau``."""
    if MUL:
        return tl.full([BLOCK], 0.0, dtype) + tl.load(k_ptr).to(dtype)
    return tl.full([BLOCK], k, dtype)


@triton.jit
def _fire(h, vth, g, GATE: tl.constexpr):
    s = tl.where(h - vth >= 0, 1.0, 0.0).to(h.dtype)  # _HeavisideSpike.forward(h - v_threshold)
    if GATE:
        s = s * g  # BaseNeuron._gate
    return s


@triton.jit
def _gate_at(gate_ptr, t, j, L, m, dtype, GATE: tl.constexpr):
    """The ``[T, L]`` gate of step ``t`` at the elements ``j`` (1 without a gate)."""
    if GATE:
        return tl.load(gate_ptr + t * L + j % L, mask=m, other=1.0).to(dtype)
    return tl.full(j.shape, 1.0, dtype)


@triton.jit
def lif_forward(x_ptr, gate_ptr, s_ptr, h_ptr, k_ptr, T, N: tl.int64, L, k: tl.float64, vth: tl.float64,
                vr: tl.float64, MUL: tl.constexpr, GATE: tl.constexpr, WRITE_H: tl.constexpr, F64: tl.constexpr,
                BLOCK: tl.constexpr):
    dtype = tl.float64 if F64 else tl.float32
    j = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # 64-bit offsets (and N): any size
    m = j < N
    k_, vth_, vr_ = _decay(k_ptr, k, BLOCK, dtype, MUL), tl.full([BLOCK], vth, dtype), tl.full([BLOCK], vr, dtype)
    v = vr_
    for t in range(T):
        x = tl.load(x_ptr + t * N + j, mask=m, other=0.0).to(dtype)
        h = _charge(v, x, k_, vr_, MUL)
        s = _fire(h, vth_, _gate_at(gate_ptr, t, j, L, m, dtype, GATE), GATE)
        if WRITE_H:
            tl.store(h_ptr + t * N + j, h.to(h_ptr.dtype.element_ty), mask=m)
        tl.store(s_ptr + t * N + j, s.to(s_ptr.dtype.element_ty), mask=m)
        v = h * (1.0 - s) + vr_ * s  # BaseNeuron.neuronal_reset


@triton.jit
def lif_backward(gs_ptr, h_ptr, x_ptr, gate_ptr, gx_ptr, gk_ptr, k_ptr, T, N: tl.int64, L, k: tl.float64,
                 vth: tl.float64, vr: tl.float64, alpha: tl.float64, MUL: tl.constexpr, GATE: tl.constexpr,
                 SIGMOID: tl.constexpr, DETACH: tl.constexpr, GRAD_K: tl.constexpr, F64: tl.constexpr,
                 BLOCK: tl.constexpr):
    dtype = tl.float64 if F64 else tl.float32
    pid = tl.program_id(0)
    j = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = j < N
    k_, vth_, vr_ = _decay(k_ptr, k, BLOCK, dtype, MUL), tl.full([BLOCK], vth, dtype), tl.full([BLOCK], vr, dtype)
    alpha_ = tl.full([BLOCK], alpha, dtype)
    gv = tl.full([BLOCK], 0.0, dtype)  # dL/dV[t], flowing backwards in time
    acc_k = tl.full([BLOCK], 0.0, dtype)  # dL/dk per element, summed over the steps
    for i in range(T):
        t = T - 1 - i
        h = tl.load(h_ptr + t * N + j, mask=m, other=0.0).to(dtype)
        gt = _gate_at(gate_ptr, t, j, L, m, dtype, GATE)
        s = _fire(h, vth_, gt, GATE)
        gs = tl.load(gs_ptr + t * N + j, mask=m, other=0.0).to(dtype)  # dL/dS[t]
        if not DETACH:
            gs = gs + (gv * vr_ - gv * h)  # plus the reset's share
        graw = gs * gt if GATE else gs
        z = h - vth_
        if SIGMOID:  # SigmoidSurrogate.derivative: alpha * sig * (1 - sig)
            sig = 1.0 / (1.0 + tl.exp(-(alpha_ * z)))
            sg = alpha_ * sig * (1.0 - sig)
        else:  # ATanSurrogate.derivative: (alpha / 2) / (1 + (pi / 2 * alpha * z)^2)
            y = (alpha_ * (_PI / 2)) * z
            sg = 1.0 / (1.0 + y * y) * (alpha_ / 2)
        gh = gv * (1.0 - s) + graw * sg
        if GRAD_K:  # dH/dk = X - (V[t-1] - V_reset), V[t-1] recomputed from H[t-1] (V_reset before step 0)
            tp = tl.where(t > 0, t - 1, 0)
            hp = tl.load(h_ptr + tp * N + j, mask=m, other=0.0).to(dtype)
            sp = _fire(hp, vth_, _gate_at(gate_ptr, tp, j, L, m, dtype, GATE), GATE)
            vp = tl.where(t > 0, hp * (1.0 - sp) + vr_ * sp, vr_)
            x = tl.load(x_ptr + t * N + j, mask=m, other=0.0).to(dtype)
            acc_k = acc_k + gh * (x - (vp - vr_))
        ga = gh * k_ if MUL else gh / k_  # dL/dX[t]
        tl.store(gx_ptr + t * N + j, ga.to(gx_ptr.dtype.element_ty), mask=m)
        gv = gh - ga  # dL/dV[t-1] = gh * (1 - k)
    if GRAD_K:  # summed by the caller, in float64
        tl.store(gk_ptr + j, acc_k, mask=m)
