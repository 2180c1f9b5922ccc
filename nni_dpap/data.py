"""Data sets. The embedded default is scikit-learn's handwritten digits (8x8, 10 classes),
real data that ships inside an installed package, so demos and tests run offline."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["digits_datasets", "digits_loaders"]


def digits_datasets(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 1,797 digits as ``[N, 1, 8, 8]`` float tensors in ``[0, 1]``.

    The split is stratified and fixed by ``seed`` before any training, so the test
    split is a true held-out set (1,437 train / 360 test images by default).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    return (
        TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
        TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)),
    )


def digits_loaders(
    batch_size: int = 64, test_fraction: float = 0.2, seed: int = 0, split_seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders over :func:`digits_datasets`.

    ``split_seed`` fixes the train/test split; ``seed`` only drives the shuffling of
    the training batches, so runs with different seeds share one held-out split.
    """
    train, test = digits_datasets(test_fraction, split_seed)
    generator = torch.Generator().manual_seed(seed)
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator),
        DataLoader(test, batch_size=256, shuffle=False),
    )
