"""A data set's train and test parts, and the loaders over them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .._validate import check_int

__all__ = ["DataSplit", "make_loaders", "fold_event_batch", "take_samples"]


@dataclass
class DataSplit:
    """A data set's train and test parts with what a model needs to know about them.

    ``time_steps`` is set for event data: each sample is ``[T, 2, H, W]`` and batches are
    folded to ``[T*B, 2, H, W]`` by :func:`fold_event_batch`.
    """

    name: str
    train: Dataset
    test: Dataset
    input_shape: tuple[int, int, int]
    num_classes: int
    time_steps: int | None = None


def fold_event_batch(batch: list[tuple[torch.Tensor, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate ``[T, C, H, W]`` samples into the time-major fold ``[T*B, C, H, W]``."""
    frames = torch.stack([item[0] for item in batch], 1)  # [T, B, C, H, W]
    labels = torch.as_tensor([int(item[1]) for item in batch])
    return frames.flatten(0, 1), labels


def make_loaders(data: DataSplit, batch_size: int = 64, seed: int = 0, num_workers: int = 0,
                 **kwargs: Any) -> tuple[DataLoader, DataLoader]:
    """Seeded, shuffled training loader and a test loader."""
    check_int("batch_size", batch_size)
    check_int("num_workers", num_workers, minimum=0)
    generator = torch.Generator().manual_seed(seed)
    collate = fold_event_batch if data.time_steps is not None else None
    test_batch = max(batch_size, 256) if data.time_steps is None else batch_size
    return (DataLoader(data.train, batch_size=batch_size, shuffle=True, generator=generator,
                       num_workers=num_workers, collate_fn=collate, **kwargs),
            DataLoader(data.test, batch_size=test_batch, shuffle=False, num_workers=num_workers, collate_fn=collate))


def take_samples(batch: torch.Tensor, n: int, time_steps: int | None = None) -> torch.Tensor:
    """The first ``n`` samples of a batch; a folded event batch ``[T*B, ...]`` keeps all ``T`` steps of each."""
    if time_steps is None:
        return batch[:n]
    return batch.unflatten(0, (time_steps, -1))[:, :n].flatten(0, 1)
