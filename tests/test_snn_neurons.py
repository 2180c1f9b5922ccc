from __future__ import annotations

import math

import pytest
import torch

from nni_dpap.errors import ConfigError, ShapeError
from nni_dpap.snn import LIFNeuron, PLIFNeuron, SigmoidSurrogate
from nni_dpap.snn.neurons import BACKENDS

# every multi-step test runs on both backends: the Python loop ('torch') and the fused kernel
backends = pytest.mark.parametrize("backend", BACKENDS)


@backends
def test_lif_membrane_and_spikes_hand_computed(backend):
    # tau = 2, V_th = 1, hard reset to 0. Example 0: x = 1.5, example 1: x = 0.5, T = 3.
    neuron = LIFNeuron(T=3, tau=2.0, store_v=True, backend=backend)
    x = torch.tensor([1.5, 0.5]).repeat(3)  # time-major fold [T*B]
    spikes = neuron(x).view(3, 2)
    h = neuron.h_seq.view(3, 2)
    v = neuron.v_seq.view(3, 2)
    assert spikes[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert spikes[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert torch.allclose(h[:, 0], torch.tensor([0.75, 1.125, 0.75]))
    assert torch.allclose(v[:, 0], torch.tensor([0.75, 0.0, 0.75]))
    assert torch.allclose(h[:, 1], torch.tensor([0.25, 0.375, 0.4375]))
    assert torch.allclose(v[:, 1], h[:, 1])


@backends
def test_v_reset_and_threshold(backend):
    neuron = LIFNeuron(T=2, tau=2.0, v_threshold=0.5, v_reset=-0.25, store_v=True, backend=backend)
    out = neuron(torch.tensor([1.0, 1.0]))
    # h1 = -0.25 + (1 - 0) / 2 = 0.25 < 0.5 -> v1 = 0.25; h2 = 0.25 + (1 - 0.5) / 2 = 0.5 -> spike, v2 = -0.25
    assert out.tolist() == [0.0, 1.0]
    assert torch.allclose(neuron.h_seq, torch.tensor([0.25, 0.5]))
    assert torch.allclose(neuron.v_seq, torch.tensor([0.25, -0.25]))


@backends
def test_surrogate_gradient_through_lif_and_detach_reset(backend):
    # T = 2, constant input c = 2: h1 = 1 (spike), v1 = 0, h2 = 1 (spike); atan alpha=2 -> g'(0) = 1.
    # d s1/dc = 0.5; without detach d v1/dc = -h1 * d s1/dc = -0.5, so d s2/dc = 0.5 * (-0.5) + 0.5 = 0.25.
    for detach, expected in ((False, 0.75), (True, 1.0)):
        c = torch.tensor([2.0], requires_grad=True)
        LIFNeuron(T=2, tau=2.0, detach_reset=detach, backend=backend)(c.repeat(2)).sum().backward()
        assert c.grad.item() == pytest.approx(expected)


@backends
def test_plif_hand_computed_and_learnable_tau(backend):
    neuron = PLIFNeuron(T=2, init_tau=4.0, store_v=True, backend=backend)
    assert neuron.tau == pytest.approx(4.0)
    x = torch.tensor([2.0, 2.0], requires_grad=True)
    neuron(x).sum().backward()
    # 1/tau = 0.25: h1 = 0.5, h2 = 0.5 + (2 - 0.5) * 0.25 = 0.875, no spikes
    assert torch.allclose(neuron.h_seq, torch.tensor([0.5, 0.875]))
    # dh/dw enters through the surrogate gradient of both steps; w must receive a gradient
    assert neuron.w.grad is not None and neuron.w.grad.abs().item() > 0
    with pytest.raises(ConfigError):
        PLIFNeuron(T=2, init_tau=1.0)


@backends
def test_multi_step_state_never_leaks_between_calls(backend):
    neuron = LIFNeuron(T=3, backend=backend)
    x = torch.rand(3 * 4, 5) * 3
    first = neuron(x)
    torch.testing.assert_close(neuron(x), first, rtol=0, atol=1e-6)


@backends
def test_single_step_equals_multi_step_and_reset(backend):
    torch.manual_seed(0)
    x = torch.rand(4, 2, 3, 3) * 2.5  # [T, B, ...]
    multi = LIFNeuron(T=4, backend=backend)(x.flatten(0, 1)).view_as(x)
    single = LIFNeuron(step_mode="s")
    steps = torch.stack([single(x[t]) for t in range(4)])
    torch.testing.assert_close(steps, multi, rtol=0, atol=1e-6)
    assert single.v is not None
    with pytest.raises(ShapeError, match="reset the network between batches"):
        single(torch.rand(5, 3, 3))
    single.reset()
    assert single.v is None
    torch.testing.assert_close(single(x[0]), multi[0], rtol=0, atol=1e-6)


@backends
def test_sigmoid_surrogate_and_bad_arguments(backend):
    neuron = LIFNeuron(T=1, surrogate=SigmoidSurrogate(alpha=4.0), backend=backend)
    x = torch.tensor([2.0], requires_grad=True)
    neuron(x).sum().backward()
    assert x.grad.item() == pytest.approx(0.5 * 4 * 0.25)  # h - 1 = 0 -> sigmoid' = alpha/4, dh/dx = 1/2
    with pytest.raises(ConfigError, match="step_mode"):
        LIFNeuron(T=2, step_mode="x")
    with pytest.raises(ConfigError, match="T must be a positive int"):
        LIFNeuron(T=0)
    with pytest.raises(ConfigError, match="T is not set"):
        LIFNeuron()(torch.zeros(2))
    with pytest.raises(ShapeError, match="time-major folded"):
        LIFNeuron(T=3)(torch.zeros(4, 2))


def test_each_neuron_gets_its_own_surrogate():
    a, b = LIFNeuron(T=1), LIFNeuron(T=1)
    assert a.surrogate is not b.surrogate
    assert "tau=2.0" in repr(a) and "alpha=2.0" in repr(a)
    assert math.isclose(PLIFNeuron(T=1).tau, 2.0)


@backends
def test_time_mask_silences_steps_and_survives_state_dict(backend):
    x = torch.full((3 * 2, 2, 1, 1), 3.0)  # T = 3, B = 2, C = 2: every neuron fires at every step
    neuron = LIFNeuron(T=3, tau=2.0, backend=backend)
    assert neuron(x).view(3, 2, 2).sum() == 12
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # [C, T]
    neuron.set_time_mask(mask)
    out = neuron(x).view(3, 2, 2)
    assert out[:, :, 0].tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]]
    assert out[:, :, 1].tolist() == [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    single = LIFNeuron(step_mode="s")
    single.set_time_mask(mask)
    steps = torch.stack([single(x[:2]) for _ in range(3)])
    torch.testing.assert_close(steps.view(3, 2, 2), out, rtol=0, atol=1e-6)
    fresh = LIFNeuron(T=3, backend=backend)
    fresh.load_state_dict(neuron.state_dict())
    torch.testing.assert_close(fresh.time_mask, mask, rtol=0, atol=1e-6)
    torch.testing.assert_close(fresh(x), neuron(x), rtol=0, atol=1e-6)
    fresh.load_state_dict(LIFNeuron(T=3).state_dict())
    assert fresh.time_mask is None
    with pytest.raises(ShapeError, match="time mask for 2 channels"):
        neuron(torch.ones(3, 5))
