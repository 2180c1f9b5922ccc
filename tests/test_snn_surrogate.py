from __future__ import annotations

import math

import pytest
import torch

from nni_dpap.errors import ConfigError
from nni_dpap.snn import ATanSurrogate, SigmoidSurrogate, get_surrogate


def _grad(surrogate, x):
    x = torch.tensor(x, requires_grad=True)
    surrogate(x).sum().backward()
    return x.grad


def test_forward_is_heaviside_with_h0_equal_1():
    x = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 2.0])
    for surrogate in (ATanSurrogate(), SigmoidSurrogate()):
        assert surrogate(x).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_atan_gradient_hand_computed():
    # alpha/2 / (1 + (pi/2 * alpha * x)^2), alpha = 2
    grad = _grad(ATanSurrogate(alpha=2.0), [0.0, 0.5, -1.0])
    expected = [1.0, 1.0 / (1.0 + (math.pi / 2) ** 2), 1.0 / (1.0 + math.pi**2)]
    assert torch.allclose(grad, torch.tensor(expected), atol=1e-6)


def test_sigmoid_gradient_hand_computed():
    # alpha * s * (1 - s), s = sigmoid(alpha x), alpha = 4
    grad = _grad(SigmoidSurrogate(alpha=4.0), [0.0, 0.5])
    s = 1.0 / (1.0 + math.exp(-2.0))
    assert torch.allclose(grad, torch.tensor([1.0, 4.0 * s * (1.0 - s)]), atol=1e-6)


@pytest.mark.parametrize("cls", [ATanSurrogate, SigmoidSurrogate])
def test_gradient_matches_derivative_of_primitive(cls):
    surrogate = cls(alpha=3.0)
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    surrogate.primitive(x).sum().backward()
    assert torch.allclose(x.grad, surrogate.derivative(x.detach()), atol=1e-9)
    assert torch.allclose(_grad(surrogate, x.detach().float().tolist()), surrogate.derivative(x.detach()).float(), atol=1e-6)


def test_non_spiking_mode_returns_primitive():
    surrogate = ATanSurrogate(alpha=2.0, spiking=False)
    assert surrogate(torch.tensor(0.0)).item() == pytest.approx(0.5)


def test_get_surrogate_and_errors():
    assert isinstance(get_surrogate("ATan"), ATanSurrogate)
    assert get_surrogate("sigmoid", alpha=2.0).alpha == 2.0
    with pytest.raises(ConfigError, match="unknown surrogate 'rect'"):
        get_surrogate("rect")
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        ATanSurrogate(alpha=0.0)
