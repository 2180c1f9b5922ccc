"""The paper's networks (Table I), built by name with :func:`get_model`."""

from __future__ import annotations

from .cifar import VGG, SpikingCifarNet
from .convnets import LeNetANN, SpikingConvNet
from .registry import MODELS, ModelSpec, get_model, model_spec
from .spiking_resnet import SpikingBasicBlock, SpikingResNet18

__all__ = ["SpikingConvNet", "LeNetANN", "SpikingCifarNet", "VGG", "SpikingResNet18", "SpikingBasicBlock",
           "MODELS", "ModelSpec", "get_model", "model_spec"]
