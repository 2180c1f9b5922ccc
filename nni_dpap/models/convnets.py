"""The paper's small convolutional networks (Table I), for any input size.

* :class:`SpikingConvNet`: SNN ``15C3-AP2-40C3-AP2-300FC-10FC`` (MNIST, N-MNIST, DVS-Gesture).
* :class:`LeNetANN`: ANN ``20C5-MP2-50C5-MP2-500FC-10FC`` (MNIST).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from ..snn import AvgPool2d, DirectEncoder, LIFNeuron, MaxPool2d, PLIFNeuron, TimeAverage
from ..snn.direct import encode_fire_pool
from ..snn.neurons import BaseNeuron

__all__ = ["SpikingConvNet", "LeNetANN"]


def _neuron(kind: Literal["lif", "plif"], T: int, v_threshold: float) -> BaseNeuron:
    cls = PLIFNeuron if kind == "plif" else LIFNeuron
    return cls(T, v_threshold=v_threshold)


class SpikingConvNet(nn.Module):
    """SNN 15C3-AP2-40C3-AP2-300FC-10FC with direct encoding over ``T`` steps.

    ``conv -> LIF -> avg-pool`` twice, then ``fc1 -> LIF -> fc2``; the output is the
    mean over time of ``fc2``'s (analog) output, i.e. the class scores fed to a
    cross-entropy loss. The firing threshold is 0.5, as in the released MNIST code
    (with 1.0 the deeper layers start silent and training takes several epochs to start).
    Input ``[B, C, H, W]`` (static images, encoded inside) or, with ``encode=False``,
    already-folded frames ``[T*B, C, H, W]`` (event data).

    Parameters
    ----------
    in_channels, input_size, num_classes
        Input shape ``(in_channels, input_size, input_size)`` and number of classes.
    T
        Number of time steps.
    widths
        Channels of the two convs and units of the hidden FC layer.
    neuron
        ``'lif'`` or ``'plif'``.
    encode
        Repeat a static input over ``T`` steps (direct encoding).
    v_threshold
        Firing threshold of every neuron.
    """

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int = 28,
        num_classes: int = 10,
        T: int = 4,
        widths: tuple[int, int, int] = (15, 40, 300),
        neuron: Literal["lif", "plif"] = "lif",
        encode: bool = True,
        v_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        c1, c2, hidden = widths
        self.T = T
        self.encoder = DirectEncoder(T) if encode else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.sn1 = _neuron(neuron, T, v_threshold)
        self.pool1 = AvgPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.sn2 = _neuron(neuron, T, v_threshold)
        self.pool2 = AvgPool2d(2)
        self.flatten = nn.Flatten()
        side = input_size // 4
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.sn3 = _neuron(neuron, T, v_threshold)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.decoder = TimeAverage(T)

    def forward(self, x: Tensor) -> Tensor:
        # conv1 before the encoder: direct encoding repeats the image, so conv1's output is the same at every
        # step; computing it once per image instead of T times is the same result (a conv treats samples
        # independently) and T times less work, backward too (the gradients of the T copies are summed).
        # Encoder, sn1 and pool1 then run as one kernel where they can (nni_dpap.snn.direct: the modules
        # are called instead under hooks, tracing, on GPU, ...).
        x = encode_fire_pool(self.conv1(x), self.encoder, self.sn1, self.pool1)
        x = self.pool2(self.sn2(self.conv2(x)))
        x = self.sn3(self.fc1(self.flatten(x)))
        return self.decoder(self.fc2(x))


class LeNetANN(nn.Module):
    """ANN 20C5-MP2-50C5-MP2-500FC-10FC (the paper's DNN MNIST network), ReLU activations."""

    def __init__(
        self,
        in_channels: int = 1,
        input_size: int = 28,
        num_classes: int = 10,
        widths: tuple[int, int, int] = (20, 50, 500),
    ) -> None:
        super().__init__()
        c1, c2, hidden = widths
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=2)
        self.relu2 = nn.ReLU()
        self.pool2 = MaxPool2d(2)
        side = input_size // 4
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        x = self.relu3(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)
