"""NNI HPO over DPAP's hyper-parameters: search-space checks, real 2-trial experiments, clean stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from nni_dpap.errors import ConfigError, DataError
from nni_dpap.hpo import _loopback_node_options, load_search_space, objective, run_experiment

ROOT = Path(__file__).resolve().parents[1]


def _nni_processes(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if marker in cmdline and ("nni_node" in cmdline or "nni_dpap.hpo trial" in cmdline):
            found.append(proc)
    return found


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # NNI writes ~/nni-experiments whatever the config says
    return tmp_path


def test_shipped_search_spaces_load():
    for name in ("dpap_snn.json", "dpap_ann.json"):
        space = load_search_space(ROOT / "search_spaces" / name)
        assert "conv_eps" in space and "linear_eps" in space


@pytest.mark.parametrize("content,message", [
    ("{not json", "not valid JSON"),
    ("{}", "non-empty JSON object"),
    ('{"conv_epsilon": {"_type": "uniform", "_value": [0.1, 1]}}', "unknown DPAP hyper-parameters \\['conv_epsilon'\\]"),
    ('{"conv_eps": {"_type": "gaussian", "_value": [0.1, 1]}}', "must be {'_type'"),
    ('{"conv_eps": {"_type": "uniform", "_value": [1.0, 0.5]}}', "is empty"),
    ('{"conv_eps": {"_type": "uniform", "_value": ["a", 1]}}', "finite numbers"),
    ('{"conv_eta": {"_type": "uniform", "_value": [0.0, 0.5]}}', "DPAP rejects the values"),
    ('{"conv_eps": {"_type": "loguniform", "_value": [0.0, 1.0]}}', "positive bounds"),
])
def test_invalid_search_spaces_are_rejected(tmp_path, content, message):
    path = tmp_path / "space.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_search_space(path)


def test_objective_trades_accuracy_for_sparsity():
    assert objective({"accuracy": 0.9, "params_kept": 0.3}, 0.1) == pytest.approx(0.97)
    assert objective({"accuracy": 0.9, "params_kept": 0.3}, 0.0) == pytest.approx(0.9)


def test_two_trial_experiment_offline(home):
    out = home / "hpo"
    rows = run_experiment(ROOT / "search_spaces" / "dpap_snn.json", trials=2, epochs=2, T=2, output=out,
                          tuner="Random")
    assert len(rows) == 2 and all(r["status"] == "SUCCEEDED" for r in rows)
    for row in rows:
        assert set(row) >= {"accuracy", "sparsity", "energy_ratio", "flops_kept", "default", "parameters"}
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["sparsity"] <= 1
        assert row["default"] == pytest.approx(row["accuracy"] + 0.1 * row["sparsity"])
        assert "conv_eps" in row["parameters"]
        assert list((out / "trials" / row["trial"]).glob("events.out.tfevents.*"))  # one TensorBoard root
    assert rows[0]["default"] >= rows[1]["default"]
    exported = json.loads((out / "results.json").read_text())
    assert [r["trial"] for r in exported] == [r["trial"] for r in rows]
    assert (out / "results.csv").read_text().count("SUCCEEDED") == 2
    time.sleep(1)
    assert not _nni_processes(str(out)), "NNI processes left running"


def test_failing_trials_are_reported_without_killing_the_experiment(home, tmp_path):
    out = home / "failing"
    space = tmp_path / "negative.json"  # unbounded: not checked up front; every proposal is a negative eps
    space.write_text('{"conv_eps": {"_type": "normal", "_value": [-5.0, 0.01]}}')
    rows = run_experiment(space, trials=2, epochs=1, model="ann_lenet", output=out)
    assert [r["status"] for r in rows] == ["FAILED", "FAILED"] and all("default" not in r for r in rows)
    assert not _nni_processes(str(out))


def test_bad_settings_and_missing_data_fail_before_any_trial(home):
    space = ROOT / "search_spaces" / "dpap_snn.json"
    with pytest.raises(ConfigError, match="unknown data set 'bogus'"):
        run_experiment(space, trials=1, data="bogus", output=home / "never")
    with pytest.raises(DataError, match="data_dir"):
        run_experiment(space, trials=1, model="ann_lenet", data="mnist", output=home / "never")
    with pytest.raises(ConfigError, match="epochs must be a positive int"):
        run_experiment(space, trials=1, epochs=0, output=home / "never")
    assert not (home / "never").exists()


def test_unknown_hyper_parameter_is_rejected_before_any_trial(home, tmp_path):
    space = tmp_path / "bad.json"
    space.write_text('{"eps": {"_type": "uniform", "_value": [0.1, 1.0]}}')
    with pytest.raises(ConfigError, match="unknown DPAP hyper-parameters"):
        run_experiment(space, trials=1, output=home / "never")
    assert not (home / "never" / "nni-experiments").exists()
    with pytest.raises(ConfigError, match="unknown tuner"):
        run_experiment(ROOT / "search_spaces" / "dpap_snn.json", tuner="GP", output=home / "never")


def test_web_ui_servers_listen_on_loopback_only():
    import nni_node

    node = Path(nni_node.__file__).parent / "node"  # the node binary NNI's manager runs on
    env = dict(os.environ, NODE_OPTIONS=_loopback_node_options())
    proc = subprocess.Popen([str(node), "-e", "require('http').createServer().listen(0); setTimeout(() => {}, 20000)"],
                            env=env)
    try:
        listening = []
        for _ in range(50):
            listening = [c for c in psutil.Process(proc.pid).net_connections(kind="tcp") if c.status == "LISTEN"]
            if listening:
                break
            time.sleep(0.1)
        assert listening and all(c.laddr.ip == "127.0.0.1" for c in listening)
    finally:
        proc.kill()
        proc.wait()


def test_ctrl_c_stops_the_experiment_cleanly(home):
    out = home / "interrupted"
    command = [str(Path(sys.executable).parent / "nni-dpap"), "hpo", str(ROOT / "search_spaces" / "dpap_snn.json"),
               "--trials", "3", "--epochs", "40", "--T", "2", "--output", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, HOME=str(home)))
    try:
        for line in proc.stdout:
            if "web UI at http://127.0.0.1:" in line:
                break
        deadline = time.time() + 60
        while not _nni_processes(str(out)) or not any("nni_dpap.hpo trial" in " ".join(p.cmdline())
                                                      for p in _nni_processes(str(out))):
            assert time.time() < deadline, "no trial started"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)  # stopping NNI's manager and a trial mid-epoch took over 180 s on 2 loaded cores
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.time() + 20
    while _nni_processes(str(out)) and time.time() < deadline:
        time.sleep(0.5)
    assert not _nni_processes(str(out)), "NNI manager or trials left after Ctrl-C"
