"""model.pt: written once, read safely; report and speedup of a saved model never replace a file."""

from __future__ import annotations

import pytest
import torch

from nni_dpap.artifacts import load_artifact, report_artifact, speedup_artifact, write_new
from nni_dpap.errors import CheckpointError, ConfigError
from nni_dpap.run import prune, resolve_settings


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("artifact") / "run"
    prune(resolve_settings({"model": "snn_mnist", "data": "digits", "T": 2, "epochs": 2, "no_progress": True,
                            "logdir": str(logdir), "hparams": {"conv_beta": 1.0, "linear_beta": 1.0,
                                                               "linear_eps": 2.5}}))
    return logdir / "model.pt"


def test_load_report_and_speedup(model_file, tmp_path):
    model, artifact = load_artifact(model_file)
    assert not model.training and artifact["prunable"] == ["conv1", "conv2", "fc1"]
    structure, _ = report_artifact(model_file)
    assert 0 < structure["params_kept"] < 1 and structure["layers"]["fc1"]["spiking_input"]
    result = speedup_artifact(model_file, tmp_path / "small.pth")
    assert result["params_after"] < result["params_before"] and result["difference"] < 1e-5
    assert torch.load(tmp_path / "small.pth", weights_only=False).fc1.out_features == int(
        structure["layers"]["fc1"]["units"].split("/")[0])


def test_nothing_is_replaced(model_file, tmp_path):
    before = model_file.read_bytes()
    with pytest.raises(ConfigError, match="is the model file itself"):
        speedup_artifact(model_file, model_file)
    (tmp_path / "taken.pth").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        speedup_artifact(model_file, tmp_path / "taken.pth")
    assert model_file.read_bytes() == before and (tmp_path / "taken.pth").read_text() == "mine"
    with pytest.raises(ConfigError, match="already exists"):
        write_new(tmp_path / "taken.pth", lambda tmp: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.pth"]  # no temporary file left


def test_unreadable_models(tmp_path):
    with pytest.raises(CheckpointError, match="no model file"):
        load_artifact(tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_artifact(tmp_path)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a model.pt written by 'nni-dpap prune'"):
        load_artifact(tmp_path / "other.pt")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module (what speedup writes)
    with pytest.raises(CheckpointError, match="not a readable nni-dpap model file"):
        load_artifact(tmp_path / "module.pth")
