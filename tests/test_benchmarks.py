"""The benchmark scripts run (quick mode, into a temporary folder) and write their result files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("script,name", [("bench_quality.py", "quality"), ("bench_speedup.py", "speedup"),
                                         ("bench_training_time.py", "training_time"),
                                         ("bench_overhead.py", "overhead")])
def test_benchmark_script_quick_run(tmp_path, script, name):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["meta"]["quick"] is True and data["meta"]["benchmark"] == name
    assert (tmp_path / f"{name}.md").read_text().count("|") > 10
