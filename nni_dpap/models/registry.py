"""The paper's model zoo (Table I), built by name, with the released per-experiment DPAP settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from .cifar import VGG, VGG16_CFG, VGG16_DPAP_CFG, SpikingCifarNet
from .convnets import LeNetANN, SpikingConvNet
from .spiking_resnet import SpikingResNet18

__all__ = ["ModelSpec", "MODELS", "get_model", "model_spec"]

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class ModelSpec:
    """A zoo entry: how to build it and how the authors pruned it.

    Attributes
    ----------
    build
        ``build(input_shape, num_classes, T, **kwargs) -> nn.Module``.
    input_shape, num_classes, T
        Defaults (``T`` is ``None`` for ANNs).
    hparams
        DPAP overrides of the ``braincog`` preset from the released code for this
        experiment (``../shared/dpap-spec.md`` table 2.1).
    exclude
        Layers the released code never pruned.
    """

    name: str
    description: str
    spiking: bool
    build: Callable[..., nn.Module]
    input_shape: Shape
    num_classes: int
    T: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()


def _resnet50(input_shape: Shape, num_classes: int, T: int | None, **kwargs: Any) -> nn.Module:
    import torchvision

    model = torchvision.models.resnet50(num_classes=num_classes, **kwargs)
    if input_shape[0] != 3:
        model.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
    return model


_MNIST_SNN = {"conv_eps": 0.35, "conv_bonus": 5.0, "conv_eta": 10.0, "conv_start_epoch": 0, "conv_beta": 5.0,
              "linear_eps": 0.625, "linear_bonus": 2.0, "linear_eta": 10.0, "linear_start_epoch": 0,
              "linear_beta": 5.0, "percentiles": (0.1, 99.9)}
_CIFAR_SNN: dict[str, Any] = {}  # the braincog preset is this experiment
_MNIST_DNN = {"conv_eps": 0.525, "conv_eta": 10.0, "linear_eps": 0.75, "linear_eta": 12.0}
_VGG = {"conv_eps": 0.6, "conv_eta": 13.0, "linear_eps": 0.8, "linear_eta": 15.0}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("snn_mnist", "SNN 15C3-AP2-40C3-AP2-300FC-10FC (MNIST, N-MNIST, DVS-Gesture)", True,
                  lambda s, k, T, **kw: SpikingConvNet(s[0], s[1], k, T, **kw), (1, 28, 28), 10, 20,
                  _MNIST_SNN, ("conv1",)),
        ModelSpec("snn_cifar", "SNN 128C3-128C3-MP2-256C3-256C3-MP2-512C3-512C3-512FC-10FC with BN (CIFAR-10)", True,
                  lambda s, k, T, **kw: SpikingCifarNet(s[0], s[1], k, T, **kw), (3, 32, 32), 10, 8, _CIFAR_SNN),
        ModelSpec("spiking_resnet18", "spiking ResNet-18 (ImageNet SNN)", True,
                  lambda s, k, T, **kw: SpikingResNet18(s[0], k, T, small_input=s[1] <= 64, **kw),
                  (3, 224, 224), 1000, 4),
        ModelSpec("ann_lenet", "ANN 20C5-MP2-50C5-MP2-500FC-10FC (MNIST)", False,
                  lambda s, k, T, **kw: LeNetANN(s[0], s[1], k, **kw), (1, 28, 28), 10, None, _MNIST_DNN,
                  ("conv1",)),
        ModelSpec("vgg16", "the paper's VGG16-BN for CIFAR-10: 13 conv, 2 max-pools, 32768-4096-4096-10", False,
                  lambda s, k, T, **kw: VGG(VGG16_DPAP_CFG, s[0], s[1], k, **kw), (3, 32, 32), 10, None, _VGG),
        ModelSpec("vgg16_cifar", "the usual CIFAR VGG16-BN: 13 conv, 5 max-pools, 512-512-10 head", False,
                  lambda s, k, T, **kw: VGG(VGG16_CFG, s[0], s[1], k, hidden=512, **kw), (3, 32, 32), 10, None,
                  _VGG),
        ModelSpec("resnet50", "torchvision ResNet-50 (ImageNet DNN)", False, _resnet50, (3, 224, 224), 1000),
    )
}


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; :class:`ConfigError` lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def get_model(name: str, input_shape: Shape | None = None, num_classes: int | None = None, T: int | None = None,
              **kwargs: Any) -> nn.Module:
    """Build a zoo model by name.

    Parameters
    ----------
    name
        One of :data:`MODELS` (``snn_mnist``, ``snn_cifar``, ``spiking_resnet18``, ``ann_lenet``,
        ``vgg16``, ``vgg16_cifar``, ``resnet50``).
    input_shape
        ``(channels, height, width)``; defaults to the paper's data set.
    num_classes, T
        Output classes and SNN time steps (``T`` is ignored for ANNs).
    **kwargs
        Passed to the model class (e.g. ``width=0.25``).
    """
    spec = model_spec(name)
    shape = tuple(input_shape) if input_shape is not None else spec.input_shape
    if len(shape) != 3 or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ConfigError(f"input_shape must be (channels, height, width) of positive ints, got {input_shape!r}")
    if spec.spiking and T is not None and (not isinstance(T, int) or T < 1):
        raise ConfigError(f"T must be a positive int, got {T!r}")
    return spec.build(shape, num_classes or spec.num_classes, (T or spec.T) if spec.spiking else None, **kwargs)
