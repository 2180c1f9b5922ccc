"""Per-layer DPAP statistics across batches and epochs, turned into per-unit importance.

The pruner's hooks hand every call's pre- and postsynaptic signals to a
:class:`LayerStatistics`, already reduced to units (conv maps summed over ``H x W``):
the presynaptic input as rows ``[rows, N_in]`` (one per time step and sample,
time-major), the postsynaptic spikes or activations as ``[t, B, N_out]``. A batch is
*committed* once all of its time steps are in; its presynaptic rows are then laid out
as ``[T, B, N_in]`` with the ``T`` and ``B`` of the postsynaptic signal, and the
traces (Eqs. 1-2), BCM plasticity with its sliding threshold (Eqs. 3-5), the
postsynaptic trace sum and, for temporal pruning, the
time-step importance (Eq. 8) are accumulated. :meth:`LayerStatistics.importance`
returns the epoch's importance of synapses (Eq. 6) and neurons (Eq. 7).
Pure torch, no NNI.
"""

from __future__ import annotations

from typing import Callable, Generic, Literal, Mapping, TypeVar

import torch
from torch import Tensor

from .errors import ConfigError, ShapeError
from .plasticity import (
    bcm_plasticity,
    developmental_value,
    sliding_thresholds,
    spike_trace,
    spike_trace_sequence,
    timestep_importance,
)

__all__ = ["LayerStatistics", "window_importance"]


def window_importance(window: Mapping[str, Tensor], connectivity: Tensor | None = None,
                      normalize_factors: bool = False, extra_zeros: int = 0) -> dict[str, Tensor]:
    """Importance of one accumulation window (``{'bcm', 'trace'[, 'time']}`` sums).

    ``'synapse'``: BCM (Eq. 6); ``'neuron'``: D (Eq. 7) over the synapses in
    ``connectivity``; ``'time'``: Eq. (8) as ``[N_out, T]``.
    """
    out = {
        "synapse": window["bcm"].clone(),
        "neuron": developmental_value(window["bcm"], window["trace"], connectivity, normalize_factors, extra_zeros),
    }
    if window.get("time") is not None:
        out["time"] = window["time"].t().clone()
    return out


_V = TypeVar("_V")


class _Flushed(Generic[_V]):
    """A statistic of :class:`LayerStatistics` kept in ``_<name>``: reading or replacing it flushes first."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = f"_{name}"

    def __get__(self, stats: LayerStatistics, owner: type | None = None) -> _V:
        stats.flush()
        value: _V = getattr(stats, self.attr)
        return value

    def __set__(self, stats: LayerStatistics, value: _V) -> None:
        stats.flush()
        setattr(stats, self.attr, value)


class LayerStatistics:
    """Accumulated DPAP statistics of one prunable layer.

    Parameters
    ----------
    n_out, n_in
        Number of postsynaptic units (output channels / neurons) and presynaptic
        units (input channels / features).
    tau
        Decay of the spiking trace.
    accumulation
        ``'epoch'``: :meth:`end_epoch` clears the sums (Eq. 6); ``'cumulative'``: they
        keep growing. The sliding threshold is always cumulative (Eq. 5).
    temporal
        Also accumulate the time-step importance of Eq. (8).
    """

    def __init__(
        self,
        n_out: int,
        n_in: int,
        tau: float = 0.5,
        accumulation: Literal["epoch", "cumulative"] = "epoch",
        temporal: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.n_out, self.n_in = n_out, n_in
        self.tau = tau
        self.accumulation = accumulation
        self.temporal = temporal
        self._theta = torch.zeros(n_out, device=device)
        self._num_batches = 0
        self._bcm = torch.zeros(n_out, n_in, device=device)
        self._trace = torch.zeros(n_out, device=device)
        self.time: Tensor | None = None
        self._pre: list[Tensor] = []
        self._post: list[Tensor] = []
        self._waiting: list[tuple[Tensor, Tensor]] = []  # (pre, post) traces [B, N] of batches not yet in BCM
        # maps this process's batch mean of the post trace to the one the threshold should follow
        # (the mean over data-parallel ranks, see nni_dpap.distributed); identity by default
        self.batch_mean: Callable[[Tensor], Tensor] = lambda mean: mean

    #: Batches whose traces wait for one batched BCM update (:meth:`flush`): the same sums as one update per
    #: batch, in one matrix product instead of ``flush_every`` small ones (the hooks' cost on small nets).
    flush_every = 16

    #: The accumulated statistics; reading or replacing one first folds the waiting batches in.
    bcm = _Flushed[Tensor]()  # BCM plasticity summed over the window, [N_out, N_in] (Eq. 3)
    theta = _Flushed[Tensor]()  # BCM sliding threshold of each postsynaptic unit, [N_out] (Eqs. 4-5)
    trace = _Flushed[Tensor]()  # postsynaptic trace summed over the window's samples, [N_out]
    num_batches = _Flushed[int]()  # batches observed since training began (the Num of Eq. 5)

    # -- feeding -----------------------------------------------------------------------
    def add_pre(self, chunk: Tensor) -> None:
        """Presynaptic signal of one call, ``[rows, n_in]`` (rows = time steps x samples, time-major)."""
        if chunk.shape[-1] != self.n_in:
            raise ShapeError(f"presynaptic signal has {chunk.shape[-1]} units, expected {self.n_in}")
        self._pre.append(chunk.detach().float())

    def add_post(self, chunk: Tensor) -> None:
        """Postsynaptic signal (spikes or activations) of one call, ``[t, B, n_out]``."""
        if chunk.shape[-1] != self.n_out:
            raise ShapeError(f"postsynaptic signal has {chunk.shape[-1]} units, expected {self.n_out}")
        self._post.append(chunk.detach().float())

    @property
    def pending(self) -> bool:
        return bool(self._pre or self._post)

    def discard_pending(self) -> None:
        self._pre.clear()
        self._post.clear()

    def commit(self) -> bool:
        """Fold the pending calls of one batch into the statistics.

        Returns ``False`` (and drops them) if the batch is incomplete, e.g. a forward
        pass that raised before the neuron was reached.
        """
        if not self._pre or not self._post:
            self.discard_pending()
            return False
        # one chunk per batch in multi-step mode: no copy here, the traces below are fresh tensors
        pre = self._pre[0] if len(self._pre) == 1 else torch.cat(self._pre, 0)
        post = self._post[0] if len(self._post) == 1 else torch.cat(self._post, 0)
        self.discard_pending()
        steps, batch = post.shape[:2]
        if pre.shape[0] == batch and steps > 1:  # a static input (a layer before the direct encoder): every step
            pre = pre.unsqueeze(0).expand(steps, batch, self.n_in)
        elif pre.shape[0] != steps * batch:
            raise ShapeError(
                f"pre- and postsynaptic signals of one batch disagree: {pre.shape[0]} input rows for {steps} time "
                f"steps x {batch} samples; the neuron's T does not match the layer input"
            )
        self._observe(pre.reshape(steps, batch, self.n_in), post)
        return True

    def observe(self, pre: Tensor, post: Tensor) -> None:
        """Accumulate one batch of sequences ``pre [T, B, n_in]``, ``post [T, B, n_out]``.

        Only the batch's traces wait for :meth:`flush` (fresh tensors): the caller may reuse its tensors.
        """
        self._observe(pre.detach(), post.detach())

    def _observe(self, pre: Tensor, post: Tensor) -> None:
        """:meth:`observe` of detached signals."""
        # the batch's traces (Eqs. 1-2), [B, N]: T times less to keep than the signals, and fresh tensors (a
        # signal may be a view of the layer's input); BCM and the thresholds wait for the flush
        self._waiting.append((spike_trace(pre, self.tau), spike_trace(post, self.tau)))
        if len(self._waiting) >= self.flush_every:
            self.flush()
        if self.temporal:
            pre_traces = spike_trace_sequence(pre, self.tau)  # [T, B, n_in], Eq. (8)
            contribution = timestep_importance(pre_traces, post)
            if self.time is None or self.time.shape != contribution.shape:
                if self.time is not None:
                    raise ShapeError(
                        f"number of time steps changed from {self.time.shape[0]} to {contribution.shape[0]}"
                    )
                self.time = torch.zeros_like(contribution)
            self.time += contribution

    def flush(self) -> None:
        """Fold the waiting batches into BCM, the sliding threshold and the trace sum, in one matrix product.

        Batch ``k`` is gated by the threshold before its own update, as one update per batch would.
        """
        if not self._waiting:
            return
        pres, posts = zip(*self._waiting)
        self._waiting = []
        sizes = [p.shape[0] for p in posts]
        pre_rows, post_rows = torch.cat(pres), torch.cat(posts)  # traces [sum B, N_in], [sum B, N_out]
        uniform = len(set(sizes)) == 1
        if uniform:
            batch_means = post_rows.view(len(sizes), sizes[0], -1).mean(1)
        else:
            batch_means = torch.stack([rows.mean(0) for rows in torch.split(post_rows, sizes)])
        thetas = sliding_thresholds(self._theta, self.batch_mean(batch_means), self._num_batches)  # Eq. (5)
        gates = torch.cat([self._theta[None], thetas[:-1]])  # the threshold in force at each batch
        repeats = sizes[0] if uniform else torch.tensor(sizes, device=gates.device)
        self._bcm += bcm_plasticity(pre_rows, post_rows, gates.repeat_interleave(repeats, dim=0))
        self._theta, self._num_batches = thetas[-1].clone(), self._num_batches + len(sizes)
        self._trace += post_rows.sum(0)

    # -- reading -----------------------------------------------------------------------
    def window(self, reduce: Callable[[Tensor], Tensor] = lambda t: t.clone()) -> dict[str, Tensor]:
        """The sums of this window (``'bcm'``, ``'trace'`` and ``'time'`` ``[T, N_out]``), each through ``reduce``
        (e.g. a sum over data-parallel ranks)."""
        out = {"bcm": reduce(self.bcm), "trace": reduce(self.trace)}
        if self.time is not None:
            out["time"] = reduce(self.time)
        return out

    def importance(
        self, connectivity: Tensor | None = None, normalize_factors: bool = False, extra_zeros: int = 0
    ) -> dict[str, Tensor]:
        """Importance of this window: ``'synapse'`` (BCM, Eq. 6), ``'neuron'`` (D, Eq. 7), ``'time'`` (Eq. 8,
        ``[N_out, T]``)."""
        return window_importance(self.window(), connectivity, normalize_factors, extra_zeros)

    def select(self, out: Tensor | None, inp: Tensor | None = None) -> None:
        """Keep only the postsynaptic units ``out`` and presynaptic units ``inp`` (after a physical shrink)."""
        if out is not None:
            out = out.to(self.theta.device)
            self.theta, self.trace = self.theta[out].clone(), self.trace[out].clone()
            self.bcm = self.bcm[out].clone()
            if self.time is not None:
                self.time = self.time[:, out].clone()
            self.n_out = int(out.numel())
        if inp is not None:
            self.bcm = self.bcm[:, inp.to(self.bcm.device)].clone()
            self.n_in = int(inp.numel())

    def end_epoch(self) -> None:
        """Start a new accumulation window (a no-op for cumulative accumulation)."""
        if self.accumulation == "epoch":
            self.bcm.zero_()
            self.trace.zero_()
            if self.time is not None:
                self.time.zero_()

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor | int | None]:
        return {
            "theta": self.theta.clone(),
            "num_batches": self.num_batches,
            "bcm": self.bcm.clone(),
            "trace": self.trace.clone(),
            "time": None if self.time is None else self.time.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Tensor | int | None]) -> None:
        expected = {"theta": (self.n_out,), "bcm": (self.n_out, self.n_in), "trace": (self.n_out,)}
        for key, shape in expected.items():
            value = state.get(key)
            if not isinstance(value, Tensor) or tuple(value.shape) != shape:
                raise ConfigError(
                    f"statistics {key!r} missing or of the wrong shape (expected {shape}): "
                    "the checkpoint does not match this model"
                )
        device = self.theta.device
        self.theta = state["theta"].to(device).float().clone()  # type: ignore[union-attr]
        self.bcm = state["bcm"].to(device).float().clone()  # type: ignore[union-attr]
        self.trace = state["trace"].to(device).float().clone()  # type: ignore[union-attr]
        self.num_batches = int(state.get("num_batches", 0))  # type: ignore[arg-type]
        time = state.get("time")
        self.time = time.to(device).float().clone() if isinstance(time, Tensor) else None
