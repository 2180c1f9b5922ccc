"""The nni-dpap command: prune (TensorBoard, checkpoints, resume), report, speedup."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nni_dpap.cli import main

BASE = ["prune", "--model", "snn_mnist", "--data", "digits", "--T", "2", "--epochs", "4", "--no-progress",
        "--hparams", '{"conv_beta": 1.5, "linear_beta": 1.5}']


def _run(args: list[str]) -> int:
    return main(["--log-level", "WARNING", *args])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("cli") / "x"
    assert _run([*BASE, "--logdir", str(logdir)]) == 0
    return logdir


def test_prune_writes_run_folder_and_tensorboard(finished_run):
    for name in ("config.json", "model.pt", "metrics.json", "checkpoint.pt"):
        assert (finished_run / name).is_file(), name
    config = json.loads((finished_run / "config.json").read_text())
    assert config["model"] == "snn_mnist" and config["epochs"] == 4 and config["T"] == 2
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0.5 < metrics["accuracy"] <= 1 and 0 < metrics["params_kept"] < 0.9 and len(metrics["history"]) == 4
    events = EventAccumulator(str(finished_run), size_guidance={"histograms": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "test/accuracy", "dpap/kept_units/fc1", "dpap/kept_weights/conv2",
                "snn/firing_rate/sn1", "cost/params_kept", "cost/flops_kept", "cost/energy_ratio"):
        assert tag in scalars, tag
    assert "dpap/survival_units/fc1" in events.Tags()["histograms"]
    accuracy = [e.value for e in events.Scalars("test/accuracy")]
    assert len(accuracy) == 4 and accuracy[-1] == pytest.approx(metrics["history"][-1]["accuracy"])
    assert events.Scalars("cost/params_kept")[-1].value == pytest.approx(metrics["params_kept"])
    assert any(tag.startswith("structure") for tag in events.Tags()["tensors"])


def test_resume_after_interruption_gives_the_same_result(finished_run, tmp_path):
    logdir = tmp_path / "resumed"
    assert _run([*BASE, "--logdir", str(logdir), "--stop-after", "2"]) == 0
    assert not (logdir / "metrics.json").exists()
    saved = torch.load(logdir / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 2
    assert _run(["prune", "--config", str(logdir / "config.json"), "--resume", "--stop-after", "100"]) == 0
    full = json.loads((finished_run / "metrics.json").read_text())
    resumed = json.loads((logdir / "metrics.json").read_text())
    for key in ("accuracy", "params_kept", "flops_kept", "energy_ratio"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    assert [h["accuracy"] for h in resumed["history"]] == pytest.approx([h["accuracy"] for h in full["history"]])
    masks_full = torch.load(finished_run / "model.pt", weights_only=True)["masks"]
    masks_resumed = torch.load(logdir / "model.pt", weights_only=True)["masks"]
    for module, targets in masks_full.items():
        for target, mask in targets.items():
            assert torch.equal(masks_resumed[module][target], mask), (module, target)


def test_checkpoints_are_protected(finished_run, tmp_path, capsys):
    checkpoint = finished_run / "checkpoint.pt"
    before = checkpoint.read_bytes()
    assert _run([*BASE, "--logdir", str(finished_run)]) == 2
    assert "already exists: pass --resume" in capsys.readouterr().err
    assert _run([*BASE, "--logdir", str(finished_run), "--resume", "--lr", "0.01"]) == 2
    assert "belongs to another run (lr: checkpoint 0.003 vs this run 0.01)" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before  # a failed run never overwrites it
    corrupt = tmp_path / "corrupt" / "checkpoint.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(before[: len(before) // 2])
    assert _run([*BASE, "--logdir", str(corrupt.parent), "--resume"]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert corrupt.read_bytes() == before[: len(before) // 2]


def test_report_and_speedup(finished_run, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert _run(["report", str(finished_run / "model.pt"), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "synaptic ops/sample" in out and "fc1" in out
    structure = json.loads(report.read_text())
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert structure["params_kept"] == pytest.approx(metrics["params_kept"])
    assert structure["layers"]["conv1"]["spiking_input"] is False and structure["layers"]["fc1"]["spiking_input"]
    shrunk = tmp_path / "shrunk.pth"
    assert _run(["speedup", str(finished_run / "model.pt"), "--output", str(shrunk)]) == 0
    out = capsys.readouterr().out
    difference = float(out.split("max output difference ")[1].split(";")[0])
    assert difference < 1e-5
    model = torch.load(shrunk, weights_only=False)
    kept = int(structure["layers"]["fc1"]["units"].split("/")[0])
    assert model.fc1.out_features == kept


def test_bad_input(tmp_path, capsys):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"model": "snn_mnist", "epoch": 3}))
    assert _run(["prune", "--config", str(bad)]) == 2
    assert "unknown keys ['epoch']" in capsys.readouterr().err
    assert _run(["prune", "--model", "lenet5", "--logdir", str(tmp_path / "a")]) == 2
    assert "unknown model 'lenet5'" in capsys.readouterr().err
    assert _run(["prune", "--data", "cifar10", "--logdir", str(tmp_path / "b")]) == 2
    assert "data_dir" in capsys.readouterr().err
    assert _run(["report", str(tmp_path / "nothing.pt")]) == 2
    assert "no model file" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--lr", "-1"], "lr must be a number > 0, got -1.0"),
    (["--weight-decay", "-1"], "weight_decay must be a number >= 0"),
    (["--num-workers", "-1"], "num_workers must be an int >= 0"),
    (["--device", "gpu"], "device must be 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
    (["--hparams", '{"conv_beta": -1}'], r"beta \(initial survival\) must be a number > 0"),
    (["--hparams", '{"strict_positive": "false"}'], "strict_positive must be true or false"),
])
def test_bad_values_are_one_clear_line(args, message, tmp_path, capsys):
    assert _run(["prune", "--logdir", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing was written


@pytest.mark.parametrize(("args", "message"), [
    (["--hparams", "[0.8]"], "must be a JSON object"),
    (["--hparams", "{conv_eps: 1}"], "not valid JSON"),
    (["--lr", "fast"], "invalid float value"),
])
def test_bad_flags_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run(["prune", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_bad_config_value_and_logdir_that_is_a_file(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"lr": "fast"}))
    assert _run(["prune", "--config", str(config)]) == 2
    assert "lr must be a number > 0, got 'fast'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _run(["prune", "--logdir", str(tmp_path / "file")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_finished_runs_and_artifacts_are_never_overwritten(finished_run, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    assert _run([*BASE, "--logdir", str(finished_run), "--checkpoint", str(tmp_path / "elsewhere.pt")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _run([*BASE, "--logdir", str(finished_run), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    model = finished_run / "model.pt"
    assert _run(["speedup", str(model), "--output", str(model)]) == 2
    assert "is the model file itself" in capsys.readouterr().err
    assert _run(["report", str(model), "--json", str(finished_run / "metrics.json")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert _run(["report", str(finished_run / "config.json")]) == 2
    assert "not a readable nni-dpap model file" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()} == before
    assert not (tmp_path / "elsewhere.pt").exists()


def test_console_script_help():
    proc = subprocess.run([str(Path(sys.executable).parent / "nni-dpap"), "prune", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0
    for flag in ("--model", "--data", "--data-dir", "--epochs", "--preset", "--T", "--batch-size", "--lr", "--device",
                 "--seed", "--logdir", "--checkpoint", "--config", "--resume"):
        assert flag in proc.stdout


def test_prune_on_event_data(tmp_path):
    import numpy as np

    from nni_dpap.data.events import EVENT_DTYPE, write_nmnist_bin

    rng = np.random.default_rng(0)
    for split, n in (("Train", 4), ("Test", 2)):
        for digit in range(10):
            for i in range(n):
                ev = np.empty(150, dtype=EVENT_DTYPE)
                ev["x"], ev["y"] = rng.integers(0, 34, 150), rng.integers(0, 34, 150)
                ev["p"], ev["t"] = rng.integers(0, 2, 150), np.sort(rng.integers(0, 100_000, 150))
                write_nmnist_bin(tmp_path / "data" / "NMNIST" / split / str(digit) / f"{i}.bin", ev)
    logdir = tmp_path / "run"
    assert _run(["prune", "--model", "snn_mnist", "--data", "nmnist", "--data-dir", str(tmp_path / "data"),
                 "--T", "3", "--epochs", "2", "--batch-size", "8", "--logdir", str(logdir), "--no-progress"]) == 0
    metrics = json.loads((logdir / "metrics.json").read_text())
    assert metrics["layers"]["conv1"]["spiking_input"] is False and metrics["layers"]["fc1"]["spiking_input"]
    assert _run(["speedup", str(logdir / "model.pt"), "--output", str(tmp_path / "s.pth")]) == 0


def test_freed_memory_flag_reaches_the_settings():
    from nni_dpap.cli import build_parser

    assert "keep_freed_memory" not in vars(build_parser().parse_args(["prune"]))  # the library default: kept
    assert vars(build_parser().parse_args(["prune", "--return-freed-memory"]))["keep_freed_memory"] is False
