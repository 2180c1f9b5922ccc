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
                                         ("bench_overhead.py", "overhead"), ("bench_neurons.py", "neurons"),
                                         ("bench_docs_client.py", "docs_client"), ("bench_controls.py", "controls"),
                                         ("bench_long_runs.py", "long_runs_quick")])
def test_benchmark_script_quick_run(tmp_path, script, name):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["meta"]["quick"] is True and data["meta"]["benchmark"] == name
    if name == "training_time":  # every epoch of the fastest dense and shrinking runs is timed
        for entry in data["results"].values():
            assert len(entry["epoch_s"]["dense"]) == len(entry["epoch_s"]["shrunk"]) == entry["epochs"]
            assert len(entry["phase_ratios_before_during_after_pruning"]) == 3
    assert (tmp_path / f"{name}.md").read_text().count("|") > 10


def test_training_time_phases_split_at_the_pruning_window():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from bench_training_time import phase_ratios
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    dense = [1.0] * 20
    shrunk = [1.0] * 4 + [0.5] * 11 + [0.25] * 5  # pruning from epoch 4 to 15
    assert phase_ratios(shrunk, dense, 4, 15) == pytest.approx([1.0, 0.5, 0.25], abs=1e-9)
    assert phase_ratios(shrunk, [2.0] * 20, 4, 15) == pytest.approx([0.5, 0.25, 0.125], abs=1e-9)
    assert phase_ratios([2.0, 1.0], [1.0, 1.0], 0, 2) == [None, 1.5, None]  # 2 epochs: all inside the window
    assert phase_ratios([2.0, 1.0], [1.0, 1.0], 1, None) == [2.0, 1.0, None]  # pruning never stops


@pytest.mark.slow
def test_frontier_quick_run(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_frontier.py"), "--quick", "--nets",
                           "digits_ann", "--seeds", "0", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads((tmp_path / "frontier_quick.json").read_text())
    methods = {r["method"] for r in records}
    assert {"dense", "dpap_default", "l1_finetune", "taylor", "movement", "l1_channel", "taylor_channel",
            "movement_channel", "l1_mixed", "taylor_mixed", "movement_mixed"} <= methods
    for record in records:
        assert set(record) >= {"net", "method", "point", "seed", "params_removed", "accuracy"}
        assert record["net"] == "digits_ann" and 0.0 <= record["params_removed"] < 1.0
    for point in {r["point"] for r in records if r["method"] == "l1_finetune"}:  # matched layer by layer
        dpap = next(r for r in records if r["method"] == f"dpap_{point}")
        l1 = next(r for r in records if r["method"] == "l1_finetune" and r["point"] == point)
        assert abs(dpap["params_removed"] - l1["params_removed"]) < 0.01
        for method in ("l1_channel", "taylor_channel", "movement_channel", "l1_mixed", "taylor_mixed",
                       "movement_mixed"):  # whole units: as close as unit sizes allow
            channel = next(r for r in records if r["method"] == method and r["point"] == point)
            assert abs(dpap["params_removed"] - channel["params_removed"]) < 0.03
    assert (tmp_path / "frontier_quick.png").stat().st_size > 10_000


def test_controls_replay_dpap_counts_with_other_units():
    """bench_controls: a replay keeps, at every epoch end, as many units and live synapses as the recorded DPAP run,
    chosen otherwise (random here: not DPAP's units)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_controls as controls
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from nni_dpap._layers import LayerState

    run = controls.Seed("digits_snn", controls.NETS["digits_snn"], 0, torch.device("cpu"), quick=True)
    fast = {"conv_start_epoch": 0.0, "linear_start_epoch": 0.0, "conv_stop_epoch": None, "linear_stop_epoch": None,
            "conv_beta": 0.3, "linear_beta": 0.3}  # 3 epochs, pruning from the first epoch end
    log: dict = {}
    with controls.recording(log):
        dpap, _ = run.dpap(fast)
    assert len(log) == 6 and log[("fc1", 2)][0] < 300 and log[("conv2", 2)][0] < 40  # 2 layers x 3 epochs, pruned

    seen: dict = {}
    with controls.replaying(log, "random", torch.Generator().manual_seed(0)):
        replay = LayerState.update

        def spy(layer, importance, epoch, keep_at_least):
            replay(layer, importance, epoch, keep_at_least)
            units = layer.neuron_mask
            live = controls._live_inputs(importance)
            seen[(layer.link.name, epoch)] = (int(units.sum()), int((layer.synapse_mask & units[:, None] & live).sum()))
        LayerState.update = spy
        try:
            random, _ = run.dpap(fast)
        finally:
            LayerState.update = replay
    assert seen.keys() == log.keys()
    assert all(seen[key][0] == log[key][0] for key in log)  # as many units at every epoch end
    # as many live synapses, unless fewer were left (a synapse kept earlier can lose its input to a removed channel)
    assert all(seen[key][1] <= log[key][1] for key in log)
    assert sum(s for _, s in seen.values()) >= 0.95 * sum(s for _, s in log.values())
    assert bool(((random.fc1.weight != 0) != (dpap.fc1.weight != 0)).any())  # other synapses
    assert bool((random.conv2.weight.flatten(1).any(1) != dpap.conv2.weight.flatten(1).any(1)).any())  # channels


def test_frontier_mixed_granularity_matches_dpaps_structure():
    """bench_frontier's ``*_mixed`` baselines: conv layers by whole output channels, FC layers by single weights,
    each layer removing DPAP's count."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_frontier as frontier
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    run = frontier.Seed("digits_snn", frontier.NETS["digits_snn"], 0, torch.device("cpu"), quick=True)
    assert run.layers == ["conv1", "conv2", "fc1"]
    target = {"conv1": {"weights": 135, "weights_removed": 0},
              "conv2": {"weights": 5400, "weights_removed": 2700},  # 20 of 40 channels
              "fc1": {"weights": 48000, "weights_removed": 43200}}
    config = {entry["op_names"][0]: entry for entry in run._config_for(target, "mixed")}
    assert set(config) == {"conv2", "fc1"}
    assert config["conv2"]["granularity"] == "out_channel"
    assert int(config["conv2"]["sparse_ratio"] * 40) == 20  # NNI floors ratio x units
    assert config["fc1"]["granularity"] == [1, 1] and abs(config["fc1"]["sparse_ratio"] - 0.9) < 1e-6
    channel = {entry["op_names"][0]: entry for entry in run._config_for(target, "channel")}
    assert channel["fc1"]["granularity"] == "out_channel" and channel["conv2"] == config["conv2"]
    assert {e["op_names"][0]: e for e in run._config_for(target, "weight")}["conv2"]["granularity"] == [1, 1, 1, 1]
    assert [frontier.granularity_of(m) for m in frontier.BASELINES] == ["weight"] * 3 + ["channel"] * 3 + ["mixed"] * 3


def _frontier():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_frontier
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return bench_frontier


def _fake_runs(monkeypatch, frontier, dense_curve=(0.5, 0.5, 0.5, 0.5)):
    """``Seed`` and ``_record`` replaced: run_seed's choices are recorded, nothing is trained."""

    class FakeSeed:
        epochs = 4

        def __init__(self, *args, **kwargs):
            pass

        def dense(self):
            return None, list(dense_curve), {}

        def dpap(self, hparams):
            return None, [0.5] * 4

        def movement(self, target, granularity):
            assert granularity == "weight"
            return None, [0.5] * 4

        l1_finetune = taylor = lambda self, snapshot, target, granularity: (None, [0.5] * 2)

    monkeypatch.setattr(frontier, "Seed", FakeSeed)
    monkeypatch.setattr(frontier, "_record", lambda net_name, method, point, seed, model, accuracies, run, best,
                        seconds: {"net": net_name, "method": method, "point": point, "seed": seed,
                                  "params_removed": 0.9, "layers": {}, "accuracy_curve": accuracies})


def test_frontier_core_runs_the_issues_points_and_baselines_only(monkeypatch):
    """``--core``: the library's ranking at every point (no ``paper_order*``), L1 + FT, Taylor and Movement."""
    import torch

    frontier = _frontier()
    net = frontier.NETS["digits_ann"]
    points = frontier.selected_points(net, None, paper_order=False)
    assert list(points) == ["default", "syn_p95", "fc_eps2.5", "syn_p95_conv_eps1.5"]
    assert points["fc_eps2.5"] == {"linear_eps": 2.5}
    assert list(frontier.selected_points(net, ["syn_p95", "paper_order"])) == ["syn_p95", "paper_order"]

    _fake_runs(monkeypatch, frontier)
    records: list = []
    frontier.run_seed("digits_ann", net, 3, torch.device("cpu"), False, records, records.append, points,
                      frontier.CORE_BASELINES)
    assert {(r["method"], r["point"]) for r in records} == {("dense", "-")} | {
        (method, point) for point in points for method in (f"dpap_{point}", "l1_finetune", "taylor", "movement")}
    assert frontier.CORE_SEEDS == (0, 1, 2, 3, 4)


def test_frontier_refuses_a_dense_record_this_code_does_not_reproduce(monkeypatch):
    """L1 and Taylor continue the dense run; a dense record made with other code must not be paired with them."""
    import torch

    frontier = _frontier()
    net = frontier.NETS["digits_ann"]
    points = frontier.selected_points(net, ["default"])
    stale = {"net": "digits_ann", "method": "dense", "point": "-", "seed": 0, "accuracy_curve": [0.5, 0.5, 0.5, 0.6]}
    _fake_runs(monkeypatch, frontier)
    with pytest.raises(SystemExit, match="seed 0: the dense run no longer reproduces its record .* up to 10.00 points"):
        frontier.run_seed("digits_ann", net, 0, torch.device("cpu"), False, [stale], lambda r: None, points, ("taylor",))
    same = {**stale, "accuracy_curve": [0.5] * 4}
    written: list = []
    frontier.run_seed("digits_ann", net, 0, torch.device("cpu"), False, [same], written.append, points, ("taylor",))
    assert [(r["method"], r["point"]) for r in written] == [("dpap_default", "default"), ("taylor", "default")]
    frontier.check_dense_reproduced("digits_ann", 0, [0.5, 0.25], [0.5, 0.25 + 1e-12])  # rounding noise passes
    with pytest.raises(SystemExit, match="2 epochs recorded, 1 run"):
        frontier.check_dense_reproduced("digits_ann", 0, [0.5, 0.25], [0.5])  # a curve of another length


def test_frontier_refuses_an_unknown_point(monkeypatch, capsys, tmp_path):
    frontier = _frontier()
    monkeypatch.setattr(sys, "argv", ["bench_frontier.py", "--nets", "digits_ann", "--points", "p95_alive",
                                      "--quick", "--seeds", "0", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exc:
        frontier.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--points: ['p95_alive'] are not operating points of ['digits_ann']" in err and "syn_p95_conv_eps1.5" in err


def test_frontier_mixed_l1_removes_dpaps_count_among_the_fed_weights():
    """L1 with DPAP's mix: the conv channels by L1 norm, then fc1's smallest weights among those still fed,
    so that fc1 loses exactly DPAP's count (the weights behind removed channels included)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_frontier as frontier
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from nni.compression.pruning import L1NormPruner

    run = frontier.Seed("digits_snn", frontier.NETS["digits_snn"], 0, torch.device("cpu"), quick=True)
    target = {"conv1": {"weights": 135, "weights_removed": 0},
              "conv2": {"weights": 5400, "weights_removed": 2700},
              "fc1": {"weights": 48000, "weights_removed": 43200}}
    model = run._model()
    pruner = L1NormPruner(model, run._config_for(target, "mixed"))
    run._fed_only(pruner, target, "mixed")
    _, masks = pruner.compress()
    kept_channels = masks["conv2"]["weight"].flatten(1).any(1)
    assert int(kept_channels.sum()) == 20
    weight, mask = model.fc1.weight.detach(), masks["fc1"]["weight"] > 0
    fed = kept_channels.repeat_interleave(4).expand_as(mask)
    assert not mask[~fed].any()  # nothing behind a removed channel is kept
    assert int((~mask).sum()) == 43200  # exactly DPAP's count: 24000 unfed + 19200 of the 24000 fed
    smallest_kept = weight.abs()[mask].min()
    assert (weight.abs()[fed & ~mask] <= smallest_kept + 1e-6).all()  # the smallest fed weights went
    # NNI's own ratio over the whole layer would keep a different number of fed weights
    assert abs(int((~(weight.abs() > weight.abs().flatten().kthvalue(43200).values))[fed].sum()) - 19200) > 100


def test_frontier_target_check_pairs_seeds_and_separates_noise_from_a_real_gap():
    """bench_frontier.target_check: DPAP minus each matched baseline, paired by seed, with a Student-t interval."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_frontier as frontier
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def record(method: str, seed: int, accuracy: float, point: str = "p") -> dict:
        return {"net": "n", "method": method, "point": point, "seed": seed, "accuracy": accuracy,
                "params_removed": 0.9}

    dpap = [97.0, 96.0, 98.0]
    records = [record("dense", s, 99.0, "-") for s in range(3)] + [record("dpap_p", s, a) for s, a in enumerate(dpap)]
    records += [record("l1_finetune", s, a) for s, a in enumerate(dpap)]  # level in every seed
    records += [record("taylor", s, a + d) for s, (a, d) in enumerate(zip(dpap, [1.0, 1.1, 0.9]))]  # clearly ahead
    records += [record("movement", s, a + d) for s, (a, d) in enumerate(zip(dpap, [0.6, -0.4, 0.2]))]  # noisy
    records += [record("movement", 3, 50.0), record("l1_channel", 0, 90.0, "other")]  # unpaired: ignored
    _, rows = frontier.target_check(records)
    by = {r["baseline"]: r for r in rows}
    assert set(by) == {"l1_finetune", "taylor", "movement"}
    assert by["l1_finetune"]["verdict"] == "met" and abs(by["l1_finetune"]["difference_mean"]) < 1e-5
    taylor = by["taylor"]
    assert taylor["verdict"] == "behind" and taylor["seeds_level_or_ahead"] == 0
    assert abs(taylor["difference_mean"] + 1.0) < 1e-5 and abs(taylor["difference_std"] - 0.1) < 1e-5
    half = 4.302653 * 0.1 / 3 ** 0.5  # t(0.975, 2 degrees of freedom)
    assert abs(taylor["interval"][0] + 1.0 + half) < 1e-5 and abs(taylor["interval"][1] + 1.0 - half) < 1e-5
    single = frontier.target_check([record("dpap_p", 0, 97.0), record("taylor", 0, 97.5)])[1][0]
    assert single["difference_std"] is None and single["interval"] is None  # one seed: no spread (valid JSON)
    assert single["verdict"] == "behind, within noise"
    movement = by["movement"]
    assert movement["seeds"] == 3 and abs(movement["difference_mean"] + 0.4 / 3) < 1e-5
    assert movement["verdict"] == "behind, within noise" and movement["seeds_level_or_ahead"] == 1
    paper = [record("dpap_paper_order", 0, 97.0, "paper_order"), record("taylor", 0, 96.95, "paper_order")]
    note, rows = frontier.target_check(records + paper)  # the paper's ranking is counted apart
    assert len(rows) == 4
    assert "library's ranking (unit_order='movement'): met at 1 of 3 matched (point, baseline) pairs, behind " \
           "beyond the 95% interval at 1;" in note
    assert "paper's ranking (paper_order*, unit_order='dpap'): met at 1 of 1 matched" in note


def test_long_runs_pair_each_run_with_the_dense_run_of_its_seed_and_length():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_long_runs as long_runs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def record(method, epochs, seed, accuracy, removed=0.9):
        return {"net": "digits_snn", "method": method, "epochs_planned": epochs, "seed": seed, "accuracy": accuracy,
                "params_removed": 0.0 if method == "dense" else removed}

    records = [record("dense", 100, 0, 98.0), record("dense", 100, 1, 97.0), record("dense", 300, 0, 99.0),
               record("dpap_braincog", 100, 0, 97.5, 0.90), record("dpap_braincog", 100, 1, 97.5, 0.88),
               record("dpap_braincog", 300, 0, 98.0, 0.91)]
    table, rows = long_runs.summarize(records)
    by = {(r["epochs"], r["method"]): r for r in rows}
    assert by[(100, "dpap_braincog")]["vs_dense_mean"] == pytest.approx(0.0, abs=1e-9)  # -0.5 and +0.5
    assert by[(300, "dpap_braincog")]["vs_dense_mean"] == pytest.approx(-1.0, abs=1e-9)
    assert by[(100, "dpap_braincog")]["params_removed_mean"] == pytest.approx(0.89, abs=1e-9)
    assert "89.0 (88.0-90.0)" in table and "+0.00 ± 0.71" in table



def test_a_record_log_resumes_and_starts_afresh_when_asked(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from _common import RecordLog
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    path = tmp_path / "runs.jsonl"
    log = RecordLog(path)
    assert log.records == []
    log.write({"seed": 0, "accuracy": 97.5}, "seed 0 done")
    log.write({"seed": 1, "accuracy": 98.0}, "seed 1 done")
    assert capsys.readouterr().out == "seed 0 done\nseed 1 done\n"
    resumed = RecordLog(path)  # an interrupted run starts again: it finds both records
    assert resumed.records == [{"seed": 0, "accuracy": 97.5}, {"seed": 1, "accuracy": 98.0}]
    resumed.write({"seed": 2, "accuracy": 96.0}, "seed 2 done")
    assert len(RecordLog(path).records) == 3
    assert RecordLog(path, fresh=True).records == [] and path.read_text() == ""
