from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from nni_dpap.data import load_data, make_loaders
from nni_dpap.errors import DataError
from nni_dpap.data.events import (
    EVENT_DTYPE, events_to_frames, read_aedat2, read_nmnist_bin, write_aedat2, write_nmnist_bin,
)


def _events(n: int, size: int, seed: int, t_max: int = 300_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.empty(n, dtype=EVENT_DTYPE)
    ev["x"], ev["y"] = rng.integers(0, size, n), rng.integers(0, size, n)
    ev["p"], ev["t"] = rng.integers(0, 2, n), np.sort(rng.integers(0, t_max, n))
    return ev


def test_nmnist_bin_format_hand_decoded(tmp_path):
    path = tmp_path / "a.bin"
    # x = 3, y = 7, ON, t = 0x012345 -> bytes 03 07 81 23 45
    path.write_bytes(bytes([3, 7, 0x81, 0x23, 0x45, 33, 0, 0x00, 0x00, 0x10]))
    ev = read_nmnist_bin(path)
    assert ev["x"].tolist() == [3, 33] and ev["y"].tolist() == [7, 0]
    assert ev["p"].tolist() == [1, 0] and ev["t"].tolist() == [0x012345, 16]
    original = _events(500, 34, 0)
    write_nmnist_bin(tmp_path / "b.bin", original)
    assert np.array_equal(read_nmnist_bin(tmp_path / "b.bin"), original)
    (tmp_path / "bad.bin").write_bytes(b"1234")
    with pytest.raises(DataError, match="multiple of 5"):
        read_nmnist_bin(tmp_path / "bad.bin")


def test_aedat2_round_trip_and_header(tmp_path):
    original = _events(300, 128, 1)
    write_aedat2(tmp_path / "x.aedat", original)
    assert (tmp_path / "x.aedat").read_bytes().startswith(b"#!AER-DAT2.0")
    assert np.array_equal(read_aedat2(tmp_path / "x.aedat"), original)


def test_events_to_frames_counts():
    ev = np.zeros(4, dtype=EVENT_DTYPE)
    ev["x"], ev["y"], ev["p"], ev["t"] = [0, 1, 1, 5], [0, 0, 0, 2], [1, 0, 0, 1], [0, 50, 99, 100]
    frames = events_to_frames(ev, (4, 3), T=2)  # sensor 4 wide, 3 high: x = 5 is dropped
    assert frames.shape == (2, 2, 3, 4)
    assert frames[0, 1, 0, 0] == 1 and frames[0, 0, 0, 1] == 0 and frames[1, 0, 0, 1] == 2
    assert frames.sum() == 3


def test_nmnist_loader_on_real_format_files(tmp_path):
    for split, n in (("Train", 2), ("Test", 1)):
        for digit in range(3):
            for i in range(n):
                write_nmnist_bin(tmp_path / "NMNIST" / split / str(digit) / f"{i:05d}.bin", _events(200, 34, digit + i))
    data = load_data("nmnist", tmp_path, T=5)
    assert (len(data.train), len(data.test), data.input_shape, data.time_steps) == (6, 3, (2, 34, 34), 5)
    frames, label = data.test[2]
    assert frames.shape == (5, 2, 34, 34) and label == 2 and frames.sum() == 200
    train_loader, _ = make_loaders(data, batch_size=4)
    x, y = next(iter(train_loader))
    assert x.shape == (5 * 4, 2, 34, 34) and y.shape == (4,)  # folded time-major


def test_dvs_gesture_and_cifar10_dvs_loaders(tmp_path):
    for split in ("ibmGestureTrain", "ibmGestureTest"):
        for user, label in ((1, 0), (2, 10)):
            ev = _events(100, 128, label)
            array = np.stack([ev["x"], ev["y"], ev["p"], ev["t"] / 1000.0], 1)  # tonic stores t in ms
            folder = tmp_path / "DVSGesture" / split / f"user{user:02d}_fluorescent"
            folder.mkdir(parents=True)
            np.save(folder / f"{label}.npy", array)
    gesture = load_data("dvs_gesture", tmp_path, T=4)
    assert gesture.num_classes == 11 and len(gesture.train) == 2 and gesture.train[1][1] == 10
    assert gesture.train[0][0].sum() == 100
    for name in ("airplane", "truck"):
        for i in range(4):
            write_aedat2(tmp_path / "CIFAR10DVS" / name / f"cifar10_{name}_{i}.aedat", _events(50, 128, i))
    dvs = load_data("cifar10_dvs", tmp_path, T=3, test_fraction=0.25)
    assert len(dvs.train) == 6 and len(dvs.test) == 2 and dvs.input_shape == (2, 128, 128)
    assert dvs.test[0][0].shape == (3, 2, 128, 128) and dvs.test[0][0].sum() == 50


def test_missing_files_and_missing_extra(tmp_path):
    with pytest.raises(DataError, match=r"NMNIST/Train.*<digit>"):
        load_data("nmnist", tmp_path)
    with pytest.raises(DataError, match="data_dir"):
        load_data("dvs_gesture")
    if importlib.util.find_spec("tonic") is None:  # the CI installs no extra: downloading names it
        with pytest.raises(DataError, match=r"pip install nni-dpap\[events\]"):
            load_data("nmnist", tmp_path, download=True)


def test_spiking_net_on_event_frames(tmp_path):
    from nni_dpap.models import get_model

    for digit in range(2):
        for split in ("Train", "Test"):
            write_nmnist_bin(tmp_path / "NMNIST" / split / str(digit) / "0.bin", _events(100, 34, digit))
    data = load_data("nmnist", tmp_path, T=3)
    model = get_model("snn_mnist", data.input_shape, data.num_classes, T=3, encode=False)
    x, y = next(iter(make_loaders(data, batch_size=2)[0]))
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert torch.isfinite(model.conv1.weight.grad).all()
