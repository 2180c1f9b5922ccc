from __future__ import annotations

import pytest
import torch

from helpers import assert_close
from nni_dpap.errors import ConfigError, ShapeError
from nni_dpap.metrics import LayerStatistics


def _batch(seed: int, T: int = 3, B: int = 4, n_in: int = 5, n_out: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n_in, generator=g) > 0.5).float(), (torch.rand(T, B, n_out, generator=g) > 0.6).float()


def test_observe_accumulates_eq3_to_eq7_hand_computed():
    """Two batches, T = 2, one sample, 2 presynaptic and 2 postsynaptic units, tau = 0.5.

    Traces (Eq. 1, S^T = 0.5 S^(T-1) + o^T):
      batch 1: pre spikes (1,0),(1,1) -> S_pre = (1.5, 1);   post (1,0),(0,1) -> S_post = (0.5, 1)
      batch 2: pre spikes (0,1),(0,0) -> S_pre = (0, 0.5);   post (1,1),(1,0) -> S_post = (1.5, 0.5)
    BCM (Eq. 3) with theta = 0 for the first batch: S_post^2 x S_pre = [[0.25*1.5, 0.25*1], [1.5, 1]]
      = [[0.375, 0.25], [1.5, 1]]
    theta (Eqs. 4-5) after batch 1: (0.5, 1); batch 2: S_post (S_post - theta) = (1.5, -0.25)
      -> [[0, 0.75], [0, -0.125]]; theta after batch 2 = (1, 0.75)
    Window sums (Eq. 6): BCM = [[0.375, 1.0], [1.5, 0.875]]; post trace = (2, 1.5)
    D (Eq. 7, raw product): spine sums (1.375, 2.375) x trace (2, 1.5) = (2.75, 3.5625)
    """
    stats = LayerStatistics(2, 2, tau=0.5)
    stats.observe(torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]]), torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]]))
    stats.observe(torch.tensor([[[0.0, 1.0]], [[0.0, 0.0]]]), torch.tensor([[[1.0, 1.0]], [[1.0, 0.0]]]))
    torch.testing.assert_close(stats.bcm, torch.tensor([[0.375, 1.0], [1.5, 0.875]]))
    torch.testing.assert_close(stats.theta, torch.tensor([1.0, 0.75]))
    torch.testing.assert_close(stats.trace, torch.tensor([2.0, 1.5]))
    importance = stats.importance()
    torch.testing.assert_close(importance["neuron"], torch.tensor([2.75, 3.5625]))
    torch.testing.assert_close(importance["synapse"], stats.bcm)
    assert stats.num_batches == 2


def test_chunked_commit_equals_whole_sequence():
    pre, post = _batch(0)
    whole, chunked = LayerStatistics(3, 5, temporal=True), LayerStatistics(3, 5, temporal=True)
    whole.observe(pre, post)
    for t in range(3):  # single-step model: one call per time step
        chunked.add_pre(pre[t])  # rows of one step
        chunked.add_post(post[t:t + 1])
    assert chunked.pending and chunked.commit() and not chunked.pending
    for key in ("bcm", "trace", "theta", "time"):
        assert torch.allclose(getattr(whole, key), getattr(chunked, key))


def test_static_input_before_the_direct_encoder_counts_at_every_step():
    # SpikingConvNet runs conv1 once per image and repeats its output: the layer sees B rows for T steps
    pre, post = _batch(2)
    static = pre[0]  # [B, n_in], the same input at every step
    repeated, once = LayerStatistics(3, 5), LayerStatistics(3, 5)
    repeated.observe(static.expand(3, *static.shape), post)
    once.add_pre(static)
    once.add_post(post)
    assert once.commit()
    for key in ("bcm", "trace", "theta"):
        assert_close(getattr(once, key), getattr(repeated, key))
    once.add_pre(static[:3])  # neither B nor T*B rows: still an error
    once.add_post(post)
    with pytest.raises(ShapeError, match="disagree"):
        once.commit()


def test_incomplete_batch_is_dropped_and_shapes_checked():
    stats = LayerStatistics(3, 5)
    pre, post = _batch(1)
    stats.add_pre(pre)
    assert stats.commit() is False and stats.num_batches == 0
    with pytest.raises(ShapeError, match="units"):
        stats.add_post(torch.zeros(1, 2, 4))
    stats.add_pre(pre)
    stats.add_post(post[:2])
    with pytest.raises(ShapeError, match="disagree"):
        stats.commit()


def test_epoch_vs_cumulative_window_and_state_dict():
    pre, post = _batch(2)
    epoch, cumulative = LayerStatistics(3, 5, accumulation="epoch"), LayerStatistics(3, 5, accumulation="cumulative")
    for stats in (epoch, cumulative):
        stats.observe(pre, post)
        stats.end_epoch()
    assert epoch.bcm.abs().sum() == 0 and epoch.trace.sum() == 0
    assert cumulative.trace.sum() > 0
    torch.testing.assert_close(epoch.theta, cumulative.theta)  # theta is always cumulative
    clone = LayerStatistics(3, 5, accumulation="cumulative")
    clone.load_state_dict(cumulative.state_dict())
    torch.testing.assert_close(clone.bcm, cumulative.bcm)
    assert clone.num_batches == 1
    with pytest.raises(ConfigError, match="does not match"):
        LayerStatistics(4, 5).load_state_dict(cumulative.state_dict())


def test_batched_flush_equals_one_update_per_batch():
    """Deferred BCM updates (one matrix product per ``flush_every`` batches) give the per-batch sums."""
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(3, b, 5, generator=gen), (torch.rand(3, b, 4, generator=gen) > 0.5).float())
               for b in [8] * 20 + [3]]  # 21 batches, the last one smaller
    stats = {}
    for every in (1, 16):
        s = LayerStatistics(4, 5)
        s.flush_every = every
        for pre, post in batches:
            s.observe(pre, post)
        stats[every] = s
    per_batch, deferred = stats[1], stats[16]
    assert deferred._waiting  # 5 batches still wait ...
    assert deferred.num_batches == 21 and not deferred._waiting  # ... until the statistics are read
    # sums of ~50 in float32 added in another order: relative tolerance
    torch.testing.assert_close(deferred.bcm, per_batch.bcm, rtol=1e-6, atol=1e-5)
    assert_close(deferred.theta, per_batch.theta)
    assert_close(deferred.trace, per_batch.trace)
    assert float(per_batch.bcm.abs().sum()) > 0


def test_waiting_batches_keep_their_own_copy_of_the_signals():
    """A batch waiting for the flush is not changed when the model later reuses its input buffer in place."""
    pre, post = torch.rand(1, 4, 5), torch.rand(1, 4, 3)  # T = 1: an ANN's input and activation
    reference = LayerStatistics(3, 5)
    reference.observe(pre.clone(), post.clone())
    stats = LayerStatistics(3, 5)
    stats.observe(pre, post)
    pre.zero_()  # e.g. a data pipeline refilling the same tensor for the next batch
    post.zero_()
    assert_close(stats.bcm, reference.bcm)
    assert_close(stats.trace, reference.trace)
    assert float(reference.trace.sum()) > 0


def test_waiting_batches_hold_only_their_traces_and_may_differ_in_T():
    """A committed batch waits for the flush as its traces ``[B, N]`` (T times less than its signals), read at
    the commit: the layer's input changed in place afterwards, or batches of another T in the same flush, change
    nothing against one update per batch."""
    batches = [_batch(s, T=3) for s in range(3)] + [_batch(s, T=2) for s in range(3, 5)]
    per_batch, waiting = LayerStatistics(3, 5), LayerStatistics(3, 5)
    per_batch.flush_every = 1
    for pre, post in batches:
        per_batch.observe(pre, post)
        rows = pre.reshape(-1, 5).clone()
        waiting.add_pre(rows)
        waiting.add_post(post)
        assert waiting.commit()
        rows.zero_()  # e.g. an input buffer reused in place after the commit
    assert [tuple(t.shape) for t in waiting._waiting[0]] == [(4, 5), (4, 3)] and len(waiting._waiting) == 5
    for key in ("bcm", "trace", "theta"):
        assert_close(getattr(waiting, key), getattr(per_batch, key))
    assert float(per_batch.bcm.abs().sum()) > 0
