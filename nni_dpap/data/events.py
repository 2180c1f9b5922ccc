"""Event-camera data: file formats, binning into frames, and the readers of the neuromorphic data sets.

Events are NumPy structured arrays with fields ``x``, ``y``, ``p`` (polarity 0/1) and
``t`` (microseconds). Readers and writers of the on-disk formats are here so that
nothing but NumPy is needed to read the data; downloading uses ``tonic`` (the
``events`` extra).

=================  =====================================================================
data set           on disk (under ``--data-dir``)
=================  =====================================================================
``nmnist``         ``NMNIST/{Train,Test}/<digit>/<id>.bin``: 5 bytes per event, x, y
                   (8 bits each), polarity bit and 23-bit timestamp (Orchard et al. 2015)
``dvs_gesture``    ``DVSGesture/{ibmGestureTrain,ibmGestureTest}/user<NN>_<lighting>/
                   <label>.npy``: columns x, y, p, t in ms (tonic's release of the data)
``cifar10_dvs``    ``CIFAR10DVS/<class>/<id>.aedat``: AEDAT 2.0 (``#`` header lines, then
                   big-endian 32-bit address and 32-bit timestamp per event) as released by
                   Li et al. 2017; ``.aedat4`` too with the ``events`` extra
=================  =====================================================================
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError

__all__ = [
    "EVENT_DTYPE", "read_nmnist_bin", "write_nmnist_bin", "read_aedat2", "write_aedat2", "events_to_frames",
    "EventFrames", "EVENT_READERS", "tonic_download",
]

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("p", np.int8), ("t", np.int64)])
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _structured(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray) -> np.ndarray:
    events = np.empty(len(t), dtype=EVENT_DTYPE)
    events["x"], events["y"], events["p"], events["t"] = x, y, p, t
    return events


def read_nmnist_bin(path: str | Path) -> np.ndarray:
    """Read an N-MNIST ``.bin`` file: 40 bits per event (x, y, polarity bit, 23-bit timestamp, big-endian)."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % 5:
        raise DataError(f"{path} is not an N-MNIST .bin file: its size ({raw.size} bytes) is not a multiple of 5")
    raw = raw.reshape(-1, 5).astype(np.int64)
    t = ((raw[:, 2] & 0x7F) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    return _structured(raw[:, 0], raw[:, 1], raw[:, 2] >> 7, t)


def write_nmnist_bin(path: str | Path, events: np.ndarray) -> None:
    """Write events in the N-MNIST ``.bin`` format (x, y < 256, timestamps < 2**23 us)."""
    x, y, p, t = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p", "t"))
    if (x.max(initial=0) > 255 or y.max(initial=0) > 255 or t.max(initial=0) >= 1 << 23
            or x.min(initial=0) < 0 or y.min(initial=0) < 0 or t.min(initial=0) < 0):
        raise ValueError("N-MNIST .bin holds 0 <= x, y < 256 and 0 <= t < 2**23 microseconds")
    raw = np.stack([x, y, (p.clip(0, 1) << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], 1).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    raw.tofile(path)


# AEDAT 2.0 address of a DVS event as written by jAER for the DAVIS-type sensors of CIFAR10-DVS:
# bit 31 = 0 for DVS events, y in bits 22-30, x in bits 12-21, polarity in bit 11.
_AEDAT_Y, _AEDAT_X, _AEDAT_P = (0x7FC00000, 22), (0x003FF000, 12), (0x800, 11)


def read_aedat2(path: str | Path) -> np.ndarray:
    """Read DVS events from an AEDAT 2.0 file (``#`` header lines, big-endian address / timestamp pairs)."""
    data = Path(path).read_bytes()
    start = 0
    while data.startswith(b"#", start):
        end = data.find(b"\n", start)
        if end < 0:
            raise DataError(f"{path}: unterminated AEDAT header")
        start = end + 1
    body = data[start:]
    if len(body) % 8:
        raise DataError(f"{path} is not an AEDAT 2.0 file: {len(body)} bytes of events is not a multiple of 8")
    words = np.frombuffer(body, dtype=">u4").reshape(-1, 2).astype(np.int64)
    address, t = words[:, 0], words[:, 1]
    dvs = (address >> 31) == 0
    address, t = address[dvs], t[dvs]
    return _structured((address & _AEDAT_X[0]) >> _AEDAT_X[1], (address & _AEDAT_Y[0]) >> _AEDAT_Y[1],
                       (address & _AEDAT_P[0]) >> _AEDAT_P[1], t)


def write_aedat2(path: str | Path, events: np.ndarray) -> None:
    """Write DVS events as an AEDAT 2.0 file (the inverse of :func:`read_aedat2`)."""
    x, y, p, t = (np.asarray(events[k], dtype=np.int64) for k in ("x", "y", "p", "t"))
    address = (y << _AEDAT_Y[1]) | (x << _AEDAT_X[1]) | (p.clip(0, 1) << _AEDAT_P[1])
    body = np.stack([address, t], 1).astype(">u4").tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"#!AER-DAT2.0\r\n# written by nni-dpap\r\n" + body)


def _read_dvs_gesture_npy(path: str | Path) -> np.ndarray:
    array = np.load(path)
    if array.ndim != 2 or array.shape[1] != 4:
        raise DataError(f"{path} is not a DVS-Gesture event array (expected N x 4: x, y, p, t in ms)")
    return _structured(array[:, 0], array[:, 1], array[:, 2], np.round(array[:, 3] * 1000).astype(np.int64))


def _read_aedat4(path: str | Path) -> np.ndarray:
    if importlib.util.find_spec("tonic") is None or importlib.util.find_spec("aedat") is None:
        raise DataError(f"{path} is AEDAT 4; reading it needs the events extra: pip install nni-dpap[events]")
    from tonic.io import read_aedat4

    raw = read_aedat4(str(path))
    names = raw.dtype.names
    return _structured(raw[names[1]], raw[names[2]], raw[names[3]].astype(np.int8), raw[names[0]])


def events_to_frames(events: np.ndarray, sensor_size: tuple[int, int], T: int) -> torch.Tensor:
    """Bin events into ``T`` frames of equal duration: ``[T, 2, H, W]`` event counts.

    Channel 0 counts OFF events (``p = 0``), channel 1 ON events; ``sensor_size`` is
    ``(width, height)``; events outside the sensor are dropped.
    """
    width, height = sensor_size
    frames = np.zeros((T, 2, height, width), dtype=np.float32)
    keep = (events["x"] >= 0) & (events["x"] < width) & (events["y"] >= 0) & (events["y"] < height)
    events = events[keep]
    if len(events):
        t = events["t"].astype(np.float64)
        span = t.max() - t.min()
        index = np.zeros(len(t), dtype=np.int64) if span == 0 else \
            np.minimum(((t - t.min()) / span * T).astype(np.int64), T - 1)
        np.add.at(frames, (index, events["p"].clip(0, 1), events["y"], events["x"]), 1.0)
    return torch.from_numpy(frames)


class EventFrames(Dataset):
    """Event files and labels, read and binned into ``[T, 2, H, W]`` frames on access.

    ``cache=True`` keeps the frames in memory after the first read (small data sets).
    """

    def __init__(self, files: list[Path], labels: list[int], reader: Callable[[Path], np.ndarray],
                 sensor_size: tuple[int, int], T: int, cache: bool = False) -> None:
        self.files, self.labels, self.reader = files, labels, reader
        self.sensor_size, self.T = sensor_size, T
        self._cache: dict[int, torch.Tensor] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self._cache is not None and index in self._cache:
            return self._cache[index], self.labels[index]
        frames = events_to_frames(self.reader(self.files[index]), self.sensor_size, self.T)
        if self._cache is not None:
            self._cache[index] = frames
        return frames, self.labels[index]


def tonic_download(name: str, root: Path) -> None:
    if importlib.util.find_spec("tonic") is None:
        raise DataError(f"downloading {name} needs the events extra: pip install nni-dpap[events]")
    import tonic.datasets as td

    cls = {"nmnist": td.NMNIST, "dvs_gesture": td.DVSGesture, "cifar10_dvs": td.CIFAR10DVS}[name]
    if name == "cifar10_dvs":
        cls(str(root))
    else:
        cls(str(root), train=True)
        cls(str(root), train=False)


def _train_test(folders: tuple[Path, Path], pattern: str, label: Callable[[Path], int],
                reader: Callable[[Path], np.ndarray], sensor: tuple[int, int], T: int, cache: bool,
                missing: str) -> tuple[EventFrames, EventFrames]:
    """The train and test folders of a data set with an official split, one file per sample."""
    parts = []
    for folder in folders:
        files = sorted(folder.glob(pattern))
        if not files:
            raise DataError(missing.format(folder=folder))
        parts.append(EventFrames(files, [label(f) for f in files], reader, sensor, T, cache))
    return parts[0], parts[1]


def nmnist(root: Path, T: int, cache: bool = False) -> tuple[EventFrames, EventFrames]:
    return _train_test((root / "NMNIST" / "Train", root / "NMNIST" / "Test"), "[0-9]/*.bin",
                       lambda f: int(f.parent.name), read_nmnist_bin, (34, 34), T, cache,
                       "N-MNIST is not in {folder}: put the .bin files in {folder}/<digit>/ (Train and Test), "
                       "or pass --download (needs the events extra and internet)")


def dvs_gesture(root: Path, T: int) -> tuple[EventFrames, EventFrames]:
    base = root / "DVSGesture"
    return _train_test((base / "ibmGestureTrain", base / "ibmGestureTest"), "user*/*.npy", lambda f: int(f.stem),
                       _read_dvs_gesture_npy, (128, 128), T, False,
                       "DVS-Gesture is not in {folder}: put user<NN>_<lighting>/<label>.npy files there (tonic's "
                       "layout), or pass --download (needs the events extra and internet)")


def cifar10_dvs(root: Path, T: int, test_fraction: float, seed: int) -> tuple[EventFrames, EventFrames]:
    from sklearn.model_selection import train_test_split

    folder = root / "CIFAR10DVS"
    files, labels = [], []
    for label, name in enumerate(CIFAR10_DVS_CLASSES):
        found = sorted((folder / name).glob("*.aedat")) + sorted((folder / name).glob("*.aedat4"))
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"CIFAR10-DVS is not in {folder}: put the .aedat files in {folder}/<class>/ for the classes "
                        f"{list(CIFAR10_DVS_CLASSES)}, or pass --download (needs the events extra and internet)")

    def reader(path: Path) -> np.ndarray:
        return _read_aedat4(path) if path.suffix == ".aedat4" else read_aedat2(path)

    index = np.arange(len(files))
    stratify = labels if min(np.bincount(labels)) >= 2 else None
    train_idx, test_idx = train_test_split(index, test_size=test_fraction, random_state=seed, stratify=stratify)
    make = lambda idx: EventFrames([files[i] for i in idx], [labels[i] for i in idx], reader, (128, 128), T)
    return make(sorted(train_idx)), make(sorted(test_idx))


# name -> (reader of the train and test frames, input shape, classes)
EVENT_READERS: dict[str, tuple[Callable[..., tuple[EventFrames, EventFrames]], tuple[int, int, int], int]] = {
    "nmnist": (lambda root, T, fraction, seed: nmnist(root, T), (2, 34, 34), 10),
    "dvs_gesture": (lambda root, T, fraction, seed: dvs_gesture(root, T), (2, 128, 128), 11),
    "cifar10_dvs": (cifar10_dvs, (2, 128, 128), 10),
}
