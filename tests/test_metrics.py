from __future__ import annotations

import pytest
import torch

from nni_dpap.errors import ConfigError, ShapeError
from nni_dpap.metrics import LayerStatistics
from nni_dpap.plasticity import bcm_plasticity, developmental_value, spike_trace


def _batch(seed: int, T: int = 3, B: int = 4, n_in: int = 5, n_out: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n_in, generator=g) > 0.5).float(), (torch.rand(T, B, n_out, generator=g) > 0.6).float()


def test_observe_accumulates_eq3_to_eq7():
    stats = LayerStatistics(3, 5, tau=0.5)
    theta = torch.zeros(3)
    bcm = torch.zeros(3, 5)
    trace = torch.zeros(3)
    for i in range(3):
        pre, post = _batch(i)
        stats.observe(pre, post)
        p, q = spike_trace(post, 0.5), spike_trace(pre, 0.5)
        bcm += bcm_plasticity(q, p, theta)
        theta = theta + (p.mean(0) - theta) / (i + 1)
        trace += p.sum(0)
    assert torch.allclose(stats.bcm, bcm) and torch.allclose(stats.theta, theta) and torch.allclose(stats.trace, trace)
    imp = stats.importance()
    assert torch.allclose(imp["neuron"], developmental_value(bcm, trace))
    assert torch.allclose(imp["synapse"], bcm)
    assert stats.num_batches == 3


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
    assert torch.equal(epoch.theta, cumulative.theta)  # theta is always cumulative
    clone = LayerStatistics(3, 5, accumulation="cumulative")
    clone.load_state_dict(cumulative.state_dict())
    assert torch.equal(clone.bcm, cumulative.bcm) and clone.num_batches == 1
    with pytest.raises(ConfigError, match="does not match"):
        LayerStatistics(4, 5).load_state_dict(cumulative.state_dict())
