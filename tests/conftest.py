"""Shared fixtures: tiny SNN / ANN, digits loaders and an NNI evaluator factory."""

from __future__ import annotations

from typing import Callable

import nni
import pytest
import torch
from nni.compression import TorchEvaluator
from torch import nn

from nni_dpap.data import digits_loaders
from nni_dpap.snn import DirectEncoder, LIFNeuron, TimeAverage
from nni_dpap.training import classification_step, make_training_func


class TinySNN(nn.Module):
    """conv -> BN -> LIF -> pool -> fc -> LIF -> fc (output) on 8x8 digits."""

    def __init__(self, T: int = 2) -> None:
        super().__init__()
        self.encoder = DirectEncoder(T)
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.sn1 = LIFNeuron(T)
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.sn2 = LIFNeuron(T)
        self.fc2 = nn.Linear(32, 10)
        self.decoder = TimeAverage(T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.sn1(self.bn(self.conv(self.encoder(x)))))
        return self.decoder(self.fc2(self.sn2(self.fc1(self.flatten(x)))))


class TinyANN(nn.Module):
    """conv -> ReLU -> pool -> fc -> ReLU -> fc (output) on 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.relu1(self.conv(x)))
        return self.fc2(self.relu2(self.fc1(torch.flatten(x, 1))))


@pytest.fixture
def digits():
    """(train_loader, test_loader) over scikit-learn's digits, batch 64, seed 0.

    Built anew for every test, so that a test sees the same batches whatever ran before it.
    """
    return digits_loaders(batch_size=64, seed=0)


@pytest.fixture
def make_evaluator(digits) -> Callable[[nn.Module], TorchEvaluator]:
    def build(model: nn.Module, lr: float = 3e-3) -> TorchEvaluator:
        train = make_training_func(digits[0], progress=False)
        optimizer = nni.trace(torch.optim.Adam)(model.parameters(), lr=lr)
        return TorchEvaluator(train, optimizer, classification_step)

    return build


@pytest.fixture
def tiny_snn() -> TinySNN:
    torch.manual_seed(0)
    return TinySNN()


@pytest.fixture
def tiny_ann() -> TinyANN:
    torch.manual_seed(0)
    return TinyANN()
