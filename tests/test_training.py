from __future__ import annotations

import torch
from torch import nn

from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func


def _count_steps(**kwargs) -> int:
    loader = [(torch.rand(4, 3), torch.randint(0, 2, (4,))) for _ in range(5)]
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]  # type: ignore[method-assign]
    epochs = []
    train = make_training_func(loader, default_epochs=2, progress=False, on_epoch_end=lambda m, e: epochs.append(e))
    train(model, optimizer, classification_step, **kwargs)
    return len(steps)


def test_training_func_respects_max_steps_and_epochs():
    assert _count_steps() == 10  # default 2 epochs of 5 batches
    assert _count_steps(max_epochs=3) == 15
    assert _count_steps(max_steps=7) == 7
    assert _count_steps(max_steps=7, max_epochs=1) == 5


def test_evaluate_accuracy_restores_mode():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    model.train()
    data = [(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))]
    assert evaluate_accuracy(model, data) == 2 / 3 and model.training
