from __future__ import annotations

import torch

from nni_dpap.data import digits_datasets, digits_loaders


def test_digits_split_is_fixed_stratified_and_normalised():
    train, test = digits_datasets()
    assert len(train) == 1437 and len(test) == 360
    x, y = test.tensors
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.bincount(y, minlength=10).min() >= 35  # every class in the held-out split
    again = digits_datasets()[1].tensors[1]
    assert torch.equal(again, y)


def test_loaders_are_seeded():
    first = next(iter(digits_loaders(32, seed=3)[0]))[1]
    second = next(iter(digits_loaders(32, seed=3)[0]))[1]
    assert torch.equal(first, second) and len(first) == 32


def test_split_does_not_depend_on_the_shuffling_seed():
    a = digits_loaders(32, seed=1)[1].dataset.tensors[1]
    b = digits_loaders(32, seed=2)[1].dataset.tensors[1]
    assert torch.equal(a, b)
