"""One run as a user starts it: settings checked, files protected, divergence stopped."""

from __future__ import annotations

import json

import pytest

from nni_dpap.errors import CheckpointError, ConfigError, TrainingError
from nni_dpap.policy.defaults import default_hparams
from nni_dpap.run import DEFAULTS, Run, dpap_settings, prune, resolve_settings

QUICK = {"model": "snn_mnist", "data": "digits", "T": 2, "epochs": 2, "no_progress": True,
         "hparams": {"conv_beta": 2.0, "linear_beta": 2.0}}


def test_settings_precedence_and_defaults(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 7, "lr": 0.01}))
    settings = resolve_settings({"lr": 0.02, "logdir": str(tmp_path / "run")}, path)
    assert (settings["epochs"], settings["lr"], settings["batch_size"]) == (7, 0.02, DEFAULTS["batch_size"])
    assert settings["checkpoint"] == str(tmp_path / "run" / "checkpoint.pt")
    hparams, config_list = dpap_settings(settings)
    assert hparams == default_hparams(7) and config_list == [{"op_types": ["Conv2d", "Linear"]}]
    paper, config_list = dpap_settings({**settings, "paper_settings": True, "hparams": {"conv_eps": 0.5}})
    assert paper["conv_eps"] == 0.5 and paper["linear_eps"] == 0.625 and config_list[0]["exclude_op_names"] == [
        "conv1"]


@pytest.mark.parametrize(("given", "message"), [
    ({"lr": -1.0}, "lr must be a number > 0, got -1.0"),
    ({"lr": "fast"}, "lr must be a number > 0, got 'fast'"),
    ({"weight_decay": -1.0}, "weight_decay must be a number >= 0"),
    ({"num_workers": -1}, "num_workers must be an int >= 0"),
    ({"epochs": 0}, "epochs must be a positive int"),
    ({"hparams": [0.8]}, "hparams must be a JSON object"),
    ({"hparams": {"relative_schedule": "false"}}, "relative_schedule must be true or false"),
    ({"hparams": {"linear_beta": -2.0}}, r"beta \(initial survival\) must be a number > 0"),
    ({"hparams": {"conv_epsilon": 1.0}}, "unknown DPAP hyper-parameter 'conv_epsilon'"),
    ({"device": "gpu"}, "device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    ({"speedup": "yes"}, "speedup must be true or false"),
    ({"keep_freed_memory": "yes"}, "keep_freed_memory must be true or false"),
    ({"model": "lenet5"}, "unknown model 'lenet5'; choose one of"),
    ({"data": "bogus"}, "unknown data set 'bogus'; choose one of"),
    ({"stop_after": 0}, "stop_after must be a positive int"),
    ({"epoch": 3}, r"unknown settings \['epoch'\]"),
])
def test_bad_settings(given, message):
    with pytest.raises(ConfigError, match=message):
        resolve_settings(given)


def test_bad_settings_file(tmp_path):
    path = tmp_path / "config.json"
    for text, message in (("{", "cannot read the settings file"), ("[1]", "must hold a JSON object"),
                          ('{"lr": "fast"}', "lr must be a number > 0")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            resolve_settings(None, path)


def test_files_of_another_run_are_never_touched(tmp_path):
    logdir = tmp_path / "run"
    metrics = prune(resolve_settings({**QUICK, "logdir": str(logdir)}))
    assert 0 < metrics["params_kept"] <= 1
    before = {p.name: p.read_bytes() for p in logdir.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="already holds a run"):  # another checkpoint, same folder
        prune(resolve_settings({**QUICK, "logdir": str(logdir), "checkpoint": str(tmp_path / "elsewhere.pt")}))
    with pytest.raises(CheckpointError, match="finished run .* nothing to resume"):
        prune(resolve_settings({**QUICK, "logdir": str(logdir), "resume": True}))
    assert {p.name: p.read_bytes() for p in logdir.iterdir() if p.is_file()} == before
    assert not (tmp_path / "elsewhere.pt").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        prune(resolve_settings({**QUICK, "logdir": str(tmp_path / "file")}))


def test_diverging_run_keeps_the_last_good_checkpoint(tmp_path):
    class Diverging(Run):
        def _training_step(self, batch, model):
            loss = super()._training_step(batch, model)
            return loss * float("nan") if self.pruner.current_epoch >= 1 else loss

    logdir = tmp_path / "run"
    run = Diverging(resolve_settings({**QUICK, "epochs": 3, "logdir": str(logdir)}))
    with pytest.raises(TrainingError, match="at epoch 1"):
        run.execute()
    import torch

    assert torch.load(logdir / "checkpoint.pt", weights_only=True)["epoch"] == 1  # epoch 0 kept, not overwritten
    assert not (logdir / "model.pt").exists() and not (logdir / "metrics.json").exists()
