"""Spiking ResNet-18 (the paper's ImageNet SNN), in the folded time layout ``[T*B, ...]``."""

from __future__ import annotations

from torch import Tensor, nn

from ..snn import DirectEncoder, LIFNeuron, TimeAverage
from ..snn.direct import encode_fire_pool

__all__ = ["SpikingBasicBlock", "SpikingResNet18"]


class SpikingBasicBlock(nn.Module):
    """conv-BN-LIF-conv-BN, plus the (projected) shortcut, then LIF."""

    def __init__(self, in_channels: int, channels: int, stride: int, T: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.sn1 = LIFNeuron(T)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))
        self.sn2 = LIFNeuron(T)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        return self.sn2(out + self.downsample(x))


class SpikingResNet18(nn.Module):
    """ResNet-18 with LIF neurons and direct encoding over ``T`` steps.

    ``small_input=True`` (CIFAR-size images) uses a 3x3 stem without max-pooling; otherwise
    the ImageNet 7x7/2 stem and max-pool. ``width`` scales all channels; ``encode=False``
    takes already-folded event frames ``[T*B, C, H, W]``.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, T: int = 4, small_input: bool = False,
                 width: float = 1.0, encode: bool = True) -> None:
        super().__init__()
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.encoder: nn.Module = DirectEncoder(T) if encode else nn.Identity()
        if small_input:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
            self.pool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
            self.pool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.sn1 = LIFNeuron(T)
        blocks: list[nn.Module] = []
        previous = widths[0]
        for stage, channels in enumerate(widths):
            for index in range(2):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(SpikingBasicBlock(previous, channels, stride, T))
                previous = channels
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(previous, num_classes)
        self.decoder = TimeAverage(T)

    def forward(self, x: Tensor) -> Tensor:
        # The stem before the encoder: the image is the same at every step, so conv1 and bn1 give the same
        # output at every step; once per image is T times less work (backward too). BatchNorm's batch
        # statistics over T copies are those of one (mean and biased variance; its backward sums the copies'
        # gradients the same way); only the running variance's unbiased factor n / (n - 1) sees n = B*H*W
        # instead of T*B*H*W (a relative 1/n). The encoder and sn1 then run as one kernel where they can.
        x = self.pool(encode_fire_pool(self.bn1(self.conv1(x)), self.encoder, self.sn1))
        x = self.avgpool(self.layers(x)).flatten(1)
        return self.decoder(self.fc(x))
