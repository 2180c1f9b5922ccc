from __future__ import annotations

import pytest
import torch

from nni_dpap.models import LeNetANN, SpikingConvNet


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 2)])
def test_spiking_convnet_shapes_and_backward(size, channels):
    model = SpikingConvNet(channels, size, 10, T=3)
    x = torch.rand(4, channels, size, size)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert model.fc1.in_features == 40 * (size // 4) ** 2


def test_spiking_convnet_on_event_frames_and_plif():
    model = SpikingConvNet(2, 32, 11, T=5, neuron="plif", encode=False)
    frames = torch.rand(5 * 2, 2, 32, 32)  # already folded [T*B, C, H, W]
    assert model(frames).shape == (2, 11)


def test_lenet_ann():
    model = LeNetANN(1, 28, 10)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model.fc1.in_features == 50 * 7 * 7
