"""Checkpoints: written atomically, read safely, refused when they belong to another run."""

from __future__ import annotations

import pytest
import torch

from nni_dpap.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from nni_dpap.errors import CheckpointError

PAYLOAD = {"identity": {"model": "snn_mnist", "lr": 0.003}, "epoch": 2, "model": {"w": torch.ones(2)}, "pruner": {}}


def test_round_trip_and_identity(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, PAYLOAD)
    loaded = load_checkpoint(path, {"model": "snn_mnist", "lr": 0.003})
    assert loaded["format"] == FORMAT and loaded["epoch"] == 2
    torch.testing.assert_close(loaded["model"]["w"], torch.ones(2))
    with pytest.raises(CheckpointError, match=r"belongs to another run \(lr: checkpoint 0.003 vs this run 0.01\)"):
        load_checkpoint(path, {"model": "snn_mnist", "lr": 0.01})
    assert [p.name for p in path.parent.iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, PAYLOAD)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {**PAYLOAD, "epoch": Unpicklable()})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_unreadable_foreign_incomplete(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "none.pt")
    save_checkpoint(tmp_path / "good.pt", PAYLOAD)
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint .* truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"format": "something/else"}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not an nni-dpap checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    save_checkpoint(tmp_path / "partial.pt", {"epoch": 1})
    with pytest.raises(CheckpointError, match=r"incomplete: it lacks \['identity', 'model', 'pruner'\]"):
        load_checkpoint(tmp_path / "partial.pt")
