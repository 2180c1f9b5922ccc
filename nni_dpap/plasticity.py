"""DPAP's biologically inspired signals, as pure tensor functions.

Nothing here keeps state or imports NNI: tensors in, tensors out, no autograd.
Shapes use ``T`` time steps, ``B`` samples, ``N_in``/``N_out`` pre-/post-synaptic
units. A *unit* is an FC neuron or a conv channel; conv maps are reduced to their
channels by summing over ``H x W`` (paper Eq. 2 / Eq. 13: a channel is one neuron
population). Equation numbers refer to Han et al., "Developmental Plasticity-Inspired
Adaptive Pruning for Deep Spiking and Artificial Neural Networks", TPAMI 2024.

Scale note: the released code divides the spike trace by ``T``. Every quantity
built from traces is later normalised per layer (Eq. 9), and BCM's sliding
threshold has the scale of the trace itself, so that factor changes nothing and is
not reproduced.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = [
    "reduce_spatial",
    "spike_trace_sequence",
    "spike_trace",
    "activation_trace",
    "bcm_plasticity",
    "sliding_threshold",
    "sliding_thresholds",
    "developmental_value",
    "timestep_importance",
    "minmax",
]


def reduce_spatial(x: Tensor, channel_dim: int = 1) -> Tensor:
    """Sum every dim after ``channel_dim``: ``[..., C, H, W] -> [..., C]`` (Eq. 2 / 13)."""
    if x.dim() <= channel_dim + 1:
        return x
    return x.sum(tuple(range(channel_dim + 1, x.dim())))  # (one kernel: this runs in the hooks on every batch)


@torch.no_grad()
def spike_trace_sequence(x: Tensor, tau: float = 0.5, initial: Tensor | None = None) -> Tensor:
    """Spiking trace at every step, Eq. (1) for FC / Eq. (2) for conv.

    ``S^t = tau * S^(t-1) + o^t`` with ``S^0 = initial`` (zeros by default); conv
    maps are summed over ``H x W`` (valid before the recursion by linearity).

    Parameters
    ----------
    x
        Spikes (or any presynaptic signal) ``[T, B, C, *spatial]``.
    tau
        Multiplicative decay of the trace (paper: 0.5).
    initial
        Trace before the first step, ``[B, C]``; lets a sequence be processed in chunks.

    Returns
    -------
    Tensor
        ``[T, B, C]``: ``S^1 ... S^T``.
    """
    x = reduce_spatial(x, channel_dim=2).float()
    trace = torch.zeros_like(x[0]) if initial is None else initial.float()
    out = torch.empty_like(x)
    for t in range(x.shape[0]):
        trace = tau * trace + x[t]
        out[t] = trace
    return out


@torch.no_grad()
def spike_trace(x: Tensor, tau: float = 0.5, initial: Tensor | None = None) -> Tensor:
    """Final spiking trace ``S^T`` over T steps, Eq. (1) / (2): ``[T, B, C, *spatial] -> [B, C]``.

    Computed in closed form, ``S^T = tau^T S^0 + sum_t tau^(T-t) o^t``, one weighted sum.
    """
    x = reduce_spatial(x, channel_dim=2).float()
    steps = x.shape[0]
    if steps == 1 and initial is None:
        return x[0].clone()  # (a copy: x may be the layer's own input, and traces are kept for later)
    # (one matrix-vector product: tensordot's Python wrapper costs as much as the arithmetic here, per batch)
    trace = (_decay_weights(steps, tau, x.dtype, x.device) @ x.reshape(steps, -1)).view(x.shape[1:])
    if initial is not None:
        trace = trace + tau ** steps * initial.float()
    return trace


@functools.lru_cache(maxsize=64)
def _decay_weights(steps: int, tau: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[tau^(T-1), ..., tau, 1]``, built once per (T, tau, dtype, device): this runs on every batch (read only)."""
    return tau ** torch.arange(steps - 1, -1, -1, dtype=dtype, device=device)


@torch.no_grad()
def activation_trace(a: Tensor) -> Tensor:
    """ANN activation trace, Eq. (12) FC / Eq. (13) conv: ``[B, C, *spatial] -> [B, C]``.

    ``a`` is the output of the activation (e.g. ``ReLU(W x + b)``); conv maps are summed
    over the channel's ``H x W`` positions.
    """
    return reduce_spatial(a).float()


@torch.no_grad()
def bcm_plasticity(pre: Tensor, post: Tensor, theta: Tensor) -> Tensor:
    """Trace-based BCM plasticity of one batch, Eq. (3), summed over its samples.

    ``BCM_ij = sum_b S_pre,j[b] * S_post,i[b] * (S_post,i[b] - theta_i)``: positive
    (LTP) where the postsynaptic trace exceeds its sliding threshold, negative (LTD)
    below it.

    Parameters
    ----------
    pre
        Presynaptic traces ``[B, N_in]``.
    post
        Postsynaptic traces ``[B, N_out]``.
    theta
        Sliding thresholds ``[N_out]`` (before this batch's update, see
        :func:`sliding_threshold`), or one row per sample ``[B, N_out]`` when the
        rows come from several batches, each with its own threshold.

    Returns
    -------
    Tensor
        ``[N_out, N_in]``; for a conv layer one entry per kernel slice (out, in).
    """
    gate = post * (post - theta)
    return gate.t() @ pre.float()


@torch.no_grad()
def sliding_threshold(theta: Tensor, post: Tensor, num: int) -> Tensor:
    """BCM sliding threshold, Eqs. (4)-(5): running mean of the postsynaptic trace.

    ``theta <- (theta * (Num - 1) + S_post) / Num`` with ``Num`` the number of batches
    since training began (never reset), ``S_post`` the batch mean ``[N_out]``. One
    threshold per neuron (the released code keeps one per batch slot, a quirk that
    depends on sample order; nni-dpap follows the paper here).
    """
    if num < 1:
        raise ValueError(f"num counts batches from 1, got {num}")
    return theta + (post.float().mean(0) - theta) / num


@torch.no_grad()
def sliding_thresholds(theta: Tensor, means: Tensor, num: int) -> Tensor:
    """The sliding threshold after each of ``K`` batches, Eqs. (4)-(5) applied ``K`` times at once.

    The threshold is the running mean of the batch means, so after batch ``k`` it is
    ``(theta * num + sum_{j <= k} means_j) / (num + k)``: one cumulative sum instead of
    ``K`` calls of :func:`sliding_threshold` (equal up to float rounding).

    Parameters
    ----------
    theta
        Threshold before the first of the batches ``[N_out]``.
    means
        Batch means of the postsynaptic trace ``[K, N_out]``.
    num
        Batches already averaged into ``theta`` (0 at the start of training).

    Returns
    -------
    Tensor
        ``[K, N_out]``: row ``k`` is the threshold after batch ``k``.
    """
    if num < 0:
        raise ValueError(f"num counts the batches already seen, got {num}")
    counts = torch.arange(num + 1, num + means.shape[0] + 1, dtype=torch.float32, device=means.device)
    return (theta.float() * num + means.float().cumsum(0)) / counts[:, None]


def minmax(x: Tensor, extra_zeros: int = 0) -> Tensor:
    """``(x - min) / (max - min)`` over all entries (plus ``extra_zeros`` zeros); 0.5 if the range is 0."""
    lo, hi = x.min(), x.max()
    if extra_zeros:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    if not bool(hi > lo):
        return torch.full_like(x, 0.5, dtype=torch.float32)
    return (x - lo) / (hi - lo)


@torch.no_grad()
def developmental_value(
    bcm: Tensor,
    trace: Tensor,
    connectivity: Tensor | None = None,
    normalize_factors: bool = False,
    extra_zeros: int = 0,
) -> Tensor:
    """Dendritic-spine importance of a neuron / channel, Eq. (7).

    ``D_i = (sum_b S_post,i) * (sum_j BCM_ij)``: how active the neuron was times how
    much its remaining dendritic spines (incoming synapses) were potentiated.

    Parameters
    ----------
    bcm
        Accumulated BCM plasticity ``[N_out, N_in]`` (Eq. 6).
    trace
        Accumulated postsynaptic trace ``[N_out]``.
    connectivity
        0/1 ``[N_out, N_in]``: synapses that still exist (pruned synapses have no spine
        and do not count) and, for grouped convs, the synapses the group structure allows.
    normalize_factors
        Min-max normalise both factors over the layer before multiplying (the released
        code); ``False`` multiplies the raw sums (the paper).
    extra_zeros
        Neurons removed physically from the layer; they count as zeros in the min-max
        scale, as they do while only masked.

    Returns
    -------
    Tensor
        ``[N_out]``.
    """
    if connectivity is not None:
        bcm = bcm * connectivity
    spine = bcm.sum(1)
    if normalize_factors:
        return minmax(spine, extra_zeros) * minmax(trace, extra_zeros)
    return spine * trace


@torch.no_grad()
def timestep_importance(pre_traces: Tensor, post_spikes: Tensor, connectivity: Tensor | None = None) -> Tensor:
    """Importance of each (neuron, time step) pair, Eq. (8), summed over the batch.

    ``Time^t_i = sum_j S_pre,j^(0~t) * o_post,i^t``: the presynaptic drive accumulated
    up to step ``t`` that a spike of neuron ``i`` at ``t`` responded to.

    Parameters
    ----------
    pre_traces
        Presynaptic traces at every step ``[T, B, N_in]`` (:func:`spike_trace_sequence`).
    post_spikes
        Postsynaptic spikes ``[T, B, N_out]`` (conv: summed over ``H x W``).
    connectivity
        Optional 0/1 ``[N_out, N_in]``: sum only over synapses that exist.

    Returns
    -------
    Tensor
        ``[T, N_out]``.
    """
    pre = pre_traces.float()
    post = post_spikes.float()
    if connectivity is None:
        drive = pre.sum(-1, keepdim=True)  # [T, B, 1]
    else:
        drive = pre @ connectivity.float().t()  # [T, B, N_out]
    return (drive * post).sum(1)
