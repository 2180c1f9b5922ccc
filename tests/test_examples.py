"""The example scripts run end to end (a couple of epochs, one seed) and write their JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["digits_snn.py", "digits_ann.py"])
def test_example_runs_and_reports(script, tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--epochs", "5", "--seeds", "0", "--no-progress",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prunable params kept" in proc.stdout and "channels/neurons kept" in proc.stdout
    result = json.loads(out.read_text())
    assert result["epochs"] == 5 and len(result["runs"]) == 1
    run = result["runs"][0]
    assert 0.0 < run["prunable_params_fraction"] <= 1.0
    assert run["dense_accuracy"] > 0.8 and run["dpap_accuracy"] > 0.8  # five epochs already learn the digits
    assert run["layers"]["fc2"]["pruned"] is False


def _events_example(tmp_path, *extra: str) -> dict:
    out = tmp_path / "events.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "events_snn.py"), "--data-dir", str(tmp_path / "ev"),
         "--no-progress", "--json", str(out), *extra],
        capture_output=True, text=True, timeout=1800, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "time sparsity" in proc.stdout and "energy (measured)" in proc.stdout
    return json.loads(out.read_text())["results"]


def test_events_example_runs(tmp_path):
    results = _events_example(tmp_path, "--epochs", "2")
    assert set(results) == {"dense", "DPAP space", "DPAP space + time"}
    assert results["dense"]["energy_ratio"] == 1.0 and results["DPAP space"]["time_sparsity"] == 0.0


@pytest.mark.slow
def test_events_example_meets_its_targets(tmp_path):
    """The README's run (seed 0): >= 10% of (unit, step) pairs silenced at no energy cost, accuracy within 1.5
    points of the space-only run and 3 points of dense (the README gives seeds 0-2)."""
    results = _events_example(tmp_path)
    st, space, dense = results["DPAP space + time"], results["DPAP space"], results["dense"]
    assert st["time_sparsity"] >= 0.10
    assert st["energy_ratio"] <= space["energy_ratio"] + 0.01
    assert st["accuracy"] >= space["accuracy"] - 0.015
    assert st["accuracy"] >= dense["accuracy"] - 0.03


def test_spikingjelly_example_runs():
    pytest.importorskip("spikingjelly", reason="needs the spikingjelly extra")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "spikingjelly_digits.py"), "--epochs", "2",
                           "--no-progress"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DPAP (shrunk)" in proc.stdout and "synaptic ops / image" in proc.stdout
    masked, shrunk = proc.stdout.split("spikes of the masked vs shrunk model on 128 test images: ")[1].split()[0:3:2]
    assert masked == shrunk
