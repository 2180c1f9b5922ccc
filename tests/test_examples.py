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
        [sys.executable, str(ROOT / "examples" / script), "--epochs", "2", "--seeds", "0", "--no-progress",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "prunable params kept" in proc.stdout and "channels/neurons kept" in proc.stdout
    result = json.loads(out.read_text())
    assert result["epochs"] == 2 and len(result["runs"]) == 1
    run = result["runs"][0]
    assert 0.0 < run["prunable_params_fraction"] <= 1.0 and 0.0 <= run["dpap_accuracy"] <= 1.0
    assert run["layers"]["fc2"]["pruned"] is False
