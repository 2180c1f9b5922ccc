from __future__ import annotations

import pytest
import torch

from nni_dpap.plasticity import (
    activation_trace, bcm_plasticity, developmental_value, minmax, reduce_spatial, sliding_threshold,
    sliding_thresholds, spike_trace, spike_trace_sequence, timestep_importance,
)

from helpers import assert_close


def test_spike_trace_eq1_hand_computed():
    # one neuron, spikes 1, 0, 1 with tau = 0.5: S = 1, 0.5, 1.25
    spikes = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1)
    assert spike_trace_sequence(spikes, 0.5).flatten().tolist() == [1.0, 0.5, 1.25]
    assert spike_trace(spikes, 0.5).item() == 1.25


def test_spike_trace_batched_and_chunked():
    torch.manual_seed(0)
    spikes = (torch.rand(5, 4, 3) > 0.5).float()  # [T, B, N]
    full = spike_trace_sequence(spikes, 0.5)
    expected = torch.zeros(4, 3)
    for t in range(5):
        expected = 0.5 * expected + spikes[t]
        assert torch.allclose(full[t], expected)
    # processing in chunks with an initial trace gives the same result
    head = spike_trace(spikes[:2], 0.5)
    assert torch.allclose(spike_trace(spikes[2:], 0.5, initial=head), full[-1])


def test_spike_trace_eq2_conv_sums_over_hw():
    # [T=2, B=1, C=2, 2x2]; channel 0 fires at 3 positions at t=0 and 1 at t=1
    spikes = torch.zeros(2, 1, 2, 2, 2)
    spikes[0, 0, 0].view(-1)[:3] = 1
    spikes[1, 0, 0, 1, 1] = 1
    spikes[1, 0, 1] = 1
    trace = spike_trace(spikes, 0.5)
    assert trace.tolist() == [[0.5 * 3 + 1, 4.0]]


def test_activation_trace_eq12_eq13():
    fc = torch.tensor([[0.0, 2.0], [1.0, 0.5]])
    torch.testing.assert_close(activation_trace(fc), fc)
    conv = torch.arange(8.0).view(1, 2, 2, 2)  # channel sums 0+1+2+3, 4+5+6+7
    assert activation_trace(conv).tolist() == [[6.0, 22.0]]
    assert reduce_spatial(torch.ones(2, 3, 4, 5)).tolist() == [[20.0] * 3] * 2


def test_bcm_eq3_hand_computed():
    pre = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # [B=2, N_in=2]
    post = torch.tensor([[2.0], [0.5]])  # [B=2, N_out=1]
    theta = torch.tensor([1.0])
    # sample 0: 2 * (2 - 1) = 2 -> [2, 4]; sample 1: 0.5 * (0.5 - 1) = -0.25 -> [0, -0.25]
    assert bcm_plasticity(pre, post, theta).tolist() == [[2.0, 3.75]]
    # with theta = 0 (first batch) BCM = pre * post^2
    assert bcm_plasticity(pre, post, torch.zeros(1)).tolist() == [[4.0, 8.25]]


def test_sliding_threshold_eqs4_5_is_running_mean():
    posts = [torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[5.0, 2.0], [5.0, 2.0]])]
    theta = torch.zeros(2)
    theta = sliding_threshold(theta, posts[0], 1)
    assert theta.tolist() == [2.0, 0.0]
    theta = sliding_threshold(theta, posts[1], 2)
    assert theta.tolist() == [3.5, 1.0]
    with pytest.raises(ValueError):
        sliding_threshold(theta, posts[0], 0)


def test_sliding_thresholds_equal_one_update_per_batch():
    gen = torch.Generator().manual_seed(0)
    means = torch.rand(7, 3, generator=gen) * 4
    for start, num in ((torch.zeros(3), 0), (torch.tensor([1.0, 2.0, 0.5]), 11)):
        expected, theta = [], start
        for k in range(7):
            theta = sliding_threshold(theta, means[k : k + 1], num + k + 1)
            expected.append(theta)
        assert_close(sliding_thresholds(start, means, num), torch.stack(expected))
    with pytest.raises(ValueError):
        sliding_thresholds(torch.zeros(3), means, -1)


def test_developmental_value_eq7():
    bcm = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]])
    trace = torch.tensor([2.0, 4.0, 1.0])
    assert developmental_value(bcm, trace).tolist() == [6.0, -2.0, 0.0]
    # pruned synapse (1, 1) has no spine
    conn = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    assert developmental_value(bcm, trace, conn).tolist() == [6.0, -4.0, 0.0]
    # released code: each factor min-max normalised: spine sums [3, -0.5, 0] -> [1, 0, 1/7]; trace -> [1/3, 1, 0]
    d = developmental_value(bcm, trace, normalize_factors=True)
    assert torch.allclose(d, torch.tensor([1 / 3, 0.0, 0.0]))


def test_timestep_importance_eq8():
    pre = torch.tensor([[[1.0, 1.0]], [[0.5, 2.0]]])  # [T=2, B=1, N_in=2] traces
    post = torch.tensor([[[1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]])  # [T=2, B=1, N_out=3]
    assert timestep_importance(pre, post).tolist() == [[2.0, 0.0, 2.0], [0.0, 2.5, 2.5]]
    conn = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert timestep_importance(pre, post, conn).tolist() == [[1.0, 0.0, 2.0], [0.0, 2.0, 2.5]]
    # batch dimension is summed
    assert timestep_importance(pre.repeat(1, 3, 1), post.repeat(1, 3, 1)).tolist() == [[6.0, 0.0, 6.0], [0.0, 7.5, 7.5]]


def test_minmax_constant_range():
    assert minmax(torch.tensor([2.0, 2.0])).tolist() == [0.5, 0.5]
    assert minmax(torch.tensor([1.0, 3.0, 2.0])).tolist() == [0.0, 1.0, 0.5]
