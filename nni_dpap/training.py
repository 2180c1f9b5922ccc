"""Plain training helpers written the way NNI's ``TorchEvaluator`` expects them.

:func:`make_training_func` returns a ``training_func(model, optimizers, training_step,
lr_schedulers, max_steps, max_epochs)`` that respects ``max_steps`` / ``max_epochs``
(so DPAP, NNI's pruners and plain dense training share one loop), steps the LR
scheduler once per epoch and shows a tqdm progress bar.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["classification_step", "make_training_func", "evaluate_accuracy", "seed_everything"]

_logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and Python's ``random`` for a reproducible run."""
    import random

    random.seed(seed)
    torch.manual_seed(seed)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def classification_step(batch: tuple[Tensor, Tensor], model: nn.Module) -> Tensor:
    """Cross-entropy loss of one ``(inputs, labels)`` batch (moved to the model's device)."""
    x, y = _to(batch, _device(model))
    return F.cross_entropy(model(x), y)


def make_training_func(
    train_loader: Iterable[Any],
    default_epochs: int = 10,
    progress: bool = True,
    on_epoch_end: Callable[[nn.Module, int], None] | None = None,
    on_train_start: Callable[[nn.Module, torch.optim.Optimizer, list[Any]], None] | None = None,
) -> Callable[..., None]:
    """Build an NNI-style training function over ``train_loader``.

    Parameters
    ----------
    train_loader
        Batches of ``(inputs, labels)``.
    default_epochs
        Epochs to train when the caller passes neither ``max_steps`` nor ``max_epochs``.
    progress
        Show a tqdm bar over the optimizer steps.
    on_epoch_end
        Called as ``on_epoch_end(model, epoch)`` after every epoch (e.g. to evaluate);
        ``epoch`` counts the epochs of this call from 0.
    on_train_start
        Called as ``on_train_start(model, optimizer, schedulers)`` before the first step
        (e.g. to restore their state when resuming).
    """

    def training_func(
        model: nn.Module,
        optimizers: torch.optim.Optimizer | list[torch.optim.Optimizer],
        training_step: Callable[[Any, nn.Module], Any],
        lr_schedulers: Any | None = None,
        max_steps: int | None = None,
        max_epochs: int | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        optimizer = optimizers[0] if isinstance(optimizers, (list, tuple)) else optimizers
        schedulers: list[Any] = list(lr_schedulers) if isinstance(lr_schedulers, (list, tuple)) else (
            [lr_schedulers] if lr_schedulers is not None else [])
        per_epoch = len(train_loader)  # type: ignore[arg-type]
        epochs = max_epochs if max_epochs is not None else (
            -(-max_steps // per_epoch) if max_steps is not None else default_epochs)
        total = min(max_steps, epochs * per_epoch) if max_steps is not None else epochs * per_epoch
        if on_train_start is not None:
            on_train_start(model, optimizer, schedulers)
        step = 0
        # disable=None: tqdm stays silent off a terminal (``make demo > log`` gets no 100 KB line of bar updates)
        bar = tqdm(total=total, desc="train", unit="step", disable=None if progress else True, leave=False)
        try:
            for epoch in range(epochs):
                model.train()
                for index, batch in enumerate(train_loader):
                    out = training_step(batch, model)
                    loss = out if isinstance(out, Tensor) else (out["loss"] if isinstance(out, dict) else out[0])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    step += 1
                    bar.update(1)
                    if not bar.disable and step % 20 == 0:  # reading the loss waits for the device: not every step
                        bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}", refresh=False)
                    if max_steps is not None and step >= max_steps and index + 1 < per_epoch:
                        return  # stopped inside an epoch: no epoch-end work
                for scheduler in schedulers:
                    scheduler.step()
                if on_epoch_end is not None:
                    on_epoch_end(model, epoch)
                if max_steps is not None and step >= max_steps:
                    return
        finally:
            bar.close()

    return training_func


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy of ``model`` on ``loader`` (eval mode; the mode is restored)."""
    was_training = model.training
    model.eval()
    device = _device(model)
    correct = total = 0
    try:
        for batch in loader:
            x, y = _to(batch, device)
            correct += int((model(x).argmax(-1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    return correct / max(total, 1)
