"""The paper's CIFAR-10 networks (Table I): the 6Conv2FC SNN and the DNN "VGG16"."""

from __future__ import annotations

from typing import Literal, Sequence

from torch import Tensor, nn

from ..snn import DirectEncoder, LIFNeuron, MaxPool2d, PLIFNeuron, TimeAverage

__all__ = ["SpikingCifarNet", "VGG", "VGG16_DPAP_CFG", "VGG16_CFG"]


class SpikingCifarNet(nn.Module):
    """SNN 128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-512FC-10FC, every conv followed by BN.

    As in the released CIFAR-10 code: conv (no bias) -> BatchNorm -> PLIF for the convs,
    linear -> LIF for the hidden FC layer; direct encoding over ``T`` steps; the output
    is the time mean of the last layer. ``width`` scales every layer (1.0 = the paper);
    ``encode=False`` takes already-folded event frames ``[T*B, C, H, W]``.
    """

    def __init__(self, in_channels: int = 3, input_size: int = 32, num_classes: int = 10, T: int = 8,
                 width: float = 1.0, neuron: Literal["plif", "lif"] = "plif", encode: bool = True) -> None:
        super().__init__()
        c1, c2, c3, hidden = (max(1, round(c * width)) for c in (128, 256, 512, 512))
        make = (lambda: PLIFNeuron(T)) if neuron == "plif" else (lambda: LIFNeuron(T))
        layers: list[nn.Module] = [DirectEncoder(T) if encode else nn.Identity()]
        previous = in_channels
        for channels in (c1, c1, "M", c2, c2, "M", c3, c3):
            if channels == "M":
                layers.append(MaxPool2d(2))
                continue
            assert isinstance(channels, int)
            layers += [nn.Conv2d(previous, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), make()]
            previous = channels
        self.features = nn.Sequential(*layers)
        side = input_size // 4
        self.fc1 = nn.Linear(c3 * side * side, hidden)
        self.sn_fc = LIFNeuron(T)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.decoder = TimeAverage(T)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).flatten(1)
        return self.decoder(self.fc2(self.sn_fc(self.fc1(x))))


# The released DNN code's "VGG16": 13 conv + BN + ReLU, only two max-pools (8x8x512 for
# 32x32 input) and a 32768-4096-4096 head (165.7 M parameters).
VGG16_DPAP_CFG: tuple[int | str, ...] = (64, 64, 128, 128, "M", 256, 256, 256, 512, "M", 512, 512, 512, 512, 512)
# The usual CIFAR VGG16 (five max-pools, 1x1x512 before the head).
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                    512, 512, 512, "M")


class VGG(nn.Module):
    """VGG with BatchNorm for small images: ``cfg`` convs, then a ``hidden``-``hidden``-classes head.

    Parameters
    ----------
    cfg
        Conv widths and ``"M"`` for 2x2 max-pooling.
    hidden
        Width of the two hidden FC layers (4096 in the paper's variant).
    width
        Multiplier for every conv and FC width (1.0 = as given).
    """

    def __init__(self, cfg: Sequence[int | str] = VGG16_DPAP_CFG, in_channels: int = 3, input_size: int = 32,
                 num_classes: int = 10, hidden: int = 4096, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous, side = in_channels, input_size
        for item in cfg:
            if item == "M":
                layers.append(MaxPool2d(2))
                side //= 2
                continue
            channels = max(1, round(int(item) * width))
            layers += [nn.Conv2d(previous, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            previous = channels
        self.features = nn.Sequential(*layers)
        hidden = max(1, round(hidden * width))
        self.classifier = nn.Sequential(
            nn.Linear(previous * side * side, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
