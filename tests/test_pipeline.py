"""DPAP fused with NNI's QATQuantizer and DynamicLayerwiseDistiller: one training run, then shrink + int8; resume."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import nni
import pytest
import torch
from conftest import TinyANN, TinySNN
from helpers import PRESET_RULE, assert_close, assert_same_spiking_function, spiking_run
from nni.compression import TorchEvaluator
from nni.compression.distillation import DynamicLayerwiseDistiller
from nni.compression.quantization import QATQuantizer
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.cli import main
from nni_dpap.errors import CheckpointError, ConfigError
from nni_dpap.pipeline import fused_pruner, load_quantizer_state_dict, quantizer_state_dict
from nni_dpap.quantize import QuantizedLayer, qat_config_list, shrink_and_quantize
from nni_dpap.run import resolve_settings
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func

FAST = {**PRESET_RULE, "relative_schedule": True, "conv_eta": 0.5, "linear_eta": 0.5, "conv_start_epoch": 0.0,
        "linear_start_epoch": 0.0, "conv_eps": 1.3, "linear_eps": 1.6, "conv_beta": 1.0, "linear_beta": 1.0}
CONFIG = [{"op_types": ["Conv2d", "Linear"]}]
ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


def _evaluator(model: nn.Module, train_loader) -> TorchEvaluator:
    return TorchEvaluator(make_training_func(train_loader, progress=False),
                          nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    return TinyANN() if kind == "ann" else TinySNN()


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_dpap_and_qat_in_one_run_then_shrunk_int8(kind, digits):
    """NNI's order: pruner, QATQuantizer.from_compressor(pruner), quantizer.compress(steps, epochs)."""
    train_loader, test_loader = digits
    steps, model = len(train_loader), _model(kind)
    pruner = DPAPPruner(model, CONFIG, _evaluator(model, train_loader), epochs=EPOCHS, steps_per_epoch=steps,
                        hparams=FAST)
    quantizer = QATQuantizer.from_compressor(pruner, qat_config_list(model), quant_start_step=(EPOCHS - 1) * steps)
    _, calibration = quantizer.compress(max_steps=EPOCHS * steps, max_epochs=EPOCHS)
    assert pruner.current_epoch == EPOCHS and quantizer.current_step == EPOCHS * steps
    masks = pruner.get_masks()
    model.eval()
    pruned = 0
    for name in pruner.layers:  # masks and quantization both in force on the shared wrappers
        wrapper, mask = model.get_submodule(name)._nni_wrapper, masks[name]["weight"]
        pruned += int((mask == 0).sum())
        assert bool((wrapper.weight[mask == 0] == 0).all())
        space = wrapper.quantization_target_spaces["weight"]
        assert space.apply_method == "qat_clamp_round" and space.scale is not None
        used = wrapper.patch_params({"weight": wrapper.weight})["weight"]  # what the layer computes with
        assert bool((used[mask == 0] == 0).all())
        assert_close(used / space.scale, (used / space.scale).round(), atol=1e-4)
        inside = wrapper.weight.abs() < space.qmax * space.scale  # (NNI clamps to a running range)
        assert_close(used[inside], wrapper.weight[inside], atol=float(space.scale) / 2 + 1e-6)  # rounded
        assert float((used - wrapper.weight).detach().abs().max()) > 1e-5  # ... not the float weight itself
    assert pruned > 0
    x = next(iter(test_loader))[0]
    reference = spiking_run(model, x) if kind == "snn" else model(x).detach()  # quantized and masked
    accuracy = evaluate_accuracy(model, test_loader)
    quantizer.unwrap_model()
    for name, targets in masks.items():
        for target, mask in targets.items():
            assert bool((getattr(model.get_submodule(name), target)[mask == 0] == 0).all())
    params = sum(p.numel() for p in model.parameters())
    shrink_and_quantize(model, x[:2], masks, calibration)
    assert isinstance(model.fc1, QuantizedLayer) and isinstance(model.fc2, QuantizedLayer)
    assert sum(p.numel() for p in model.parameters()) + sum(
        m.weight_int8.numel() for m in model.modules() if isinstance(m, QuantizedLayer)) < params
    if kind == "snn":
        assert_same_spiking_function(reference, model, x)
    else:
        assert_close(model(x).detach(), reference)
    assert evaluate_accuracy(model, test_loader) == pytest.approx(accuracy, abs=0.01)


def test_dpap_last_trains_every_fused_compressor(digits):
    """``fused_pruner``: QATQuantizer first, DPAPPruner.from_compressor(...), then pruner.compress() alone."""
    train_loader, _ = digits
    steps, model = len(train_loader), _model("ann")
    evaluator = _evaluator(model, train_loader)
    pruner, quantizer = fused_pruner(model, CONFIG, evaluator, quantize="int8", quant_start=0.5, epochs=2,
                                     steps_per_epoch=steps, hparams=FAST)
    assert quantizer is not None and quantizer.quant_start_step == steps
    _, masks = pruner.compress()
    assert quantizer.current_step == 2 * steps and len(pruner.history) == 2
    assert all(s.scale is not None for spaces in quantizer._target_spaces.values() for s in spaces.values())
    assert set(masks) == set(pruner.layers)
    for bad, message in (({"quantize": "int4"}, "quantize must be one of"),
                         ({"quantize": "int8", "quant_start": 1.0}, "quant_start must be a fraction")):
        with pytest.raises(ConfigError, match=message):
            fused_pruner(_model("ann"), CONFIG, evaluator, epochs=2, steps_per_epoch=steps, **bad)


def test_dpap_with_nni_distillation_from_a_dense_teacher(digits):
    train_loader, _ = digits
    steps, model = len(train_loader), _model("snn")
    teacher = TinySNN().eval()
    pruner = DPAPPruner(model, CONFIG, _evaluator(model, train_loader), epochs=2, steps_per_epoch=steps,
                        hparams=FAST)
    distiller = DynamicLayerwiseDistiller.from_compressor(
        pruner, [{"op_names": ["decoder"], "target_names": ["_output_"], "apply_method": "kl"}],
        teacher_model=teacher, teacher_predict=lambda batch, t: t(batch[0]))
    losses: list[float] = []
    compute = distiller.compute_distill_loss

    def recorded() -> torch.Tensor:
        loss = compute()
        losses.append(float(loss.detach()))
        return loss

    distiller.compute_distill_loss = recorded  # type: ignore[method-assign]
    distiller.compress(max_steps=2 * steps, max_epochs=2)
    assert len(losses) == 2 * steps and all(loss > 0 for loss in losses)  # the KD loss was part of every step
    assert len(pruner.history) == 2
    masks = pruner.get_masks()
    distiller.unwrap_model()
    distiller.unwrap_teacher_model()
    assert not any(hasattr(m, "_nni_wrapper") for m in [*model.modules(), *teacher.modules()])
    for name in pruner.layers:
        assert bool((model.get_submodule(name).weight[masks[name]["weight"] == 0] == 0).all())


def test_shrinking_while_training_is_refused_in_a_fused_run(digits):
    train_loader, test_loader = digits
    steps, x = len(train_loader), next(iter(test_loader))[0][:2]
    model = _model("ann")
    pruner = DPAPPruner(model, CONFIG, _evaluator(model, train_loader), epochs=1, steps_per_epoch=steps,
                        hparams=FAST, shrink_every=1, dummy_input=x)
    quantizer = QATQuantizer.from_compressor(pruner, qat_config_list(model))
    with pytest.raises(ConfigError, match=r"shrink_every cannot be used when DPAP is fused .* wraps \['conv', "):
        quantizer.compress(max_steps=steps, max_epochs=1)
    model = _model("ann")
    evaluator = _evaluator(model, train_loader)
    quantizer = QATQuantizer(model, qat_config_list(model), evaluator)
    pruner = DPAPPruner.from_compressor(quantizer, CONFIG, epochs=1, steps_per_epoch=steps, hparams=FAST,
                                        shrink_every=1, dummy_input=x)
    with pytest.raises(ConfigError, match="shrink_every cannot be used when DPAP is fused"):
        pruner.compress()


def test_quantizer_state_of_another_quantizer_is_refused(digits):
    train_loader, _ = digits
    ann, snn = _model("ann"), _model("snn")
    ann_quantizer = QATQuantizer(ann, qat_config_list(ann), _evaluator(ann, train_loader), quant_start_step=5)
    snn_quantizer = QATQuantizer(snn, qat_config_list(snn), _evaluator(snn, train_loader), quant_start_step=5)
    with pytest.raises(CheckpointError, match="does not match this quantizer"):
        load_quantizer_state_dict(ann_quantizer, quantizer_state_dict(snn_quantizer))
    with pytest.raises(CheckpointError, match="quantizer state is incomplete"):
        load_quantizer_state_dict(ann_quantizer, {"targets": quantizer_state_dict(ann_quantizer)["targets"]})
    other = QATQuantizer(copy.deepcopy(_model("ann")), qat_config_list(ann), _evaluator(ann, train_loader),
                         quant_start_step=7)
    with pytest.raises(CheckpointError, match="quant_start_step 7, this quantizer 5"):
        load_quantizer_state_dict(ann_quantizer, quantizer_state_dict(other))


BASE = ["--log-level", "WARNING", "prune", "--model", "snn_mnist", "--data", "digits", "--T", "2", "--epochs", "4",
        "--hparams", json.dumps({"conv_beta": 1.5, "linear_beta": 1.5, "conv_stop_epoch": 1.0, "linear_stop_epoch": 1.0}),
        "--quantize", "int8", "--no-progress"]


def test_cli_quantized_run_resumes_to_the_same_int8_model(tmp_path, capsys):
    """Interrupted after 3 of 4 epochs (past quant_start_step), resumed: the same masks, scales and int8 model."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*BASE, "--logdir", str(full)]) == 0
    assert "int8 (shrunk, NNI QAT): test accuracy" in capsys.readouterr().out
    assert main([*BASE, "--logdir", str(part), "--stop-after", "3"]) == 0
    saved = torch.load(part / "checkpoint.pt", weights_only=True)
    assert saved["quantizer"]["current_step"] > saved["quantizer"]["quant_start_step"]
    assert main(["--log-level", "WARNING", "prune", "--config", str(part / "config.json"), "--resume"]) == 0
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (full, part)]
    assert metrics[1]["int8"]["accuracy"] == pytest.approx(metrics[0]["int8"]["accuracy"], abs=1e-9)
    assert metrics[0]["int8"]["float_shrunk_bytes"] > 3 * metrics[0]["int8"]["bytes"]
    assert metrics[0]["params_kept"] < 0.5 and metrics[0]["int8"]["accuracy"] > 0.2
    models = [torch.load(d / "model_int8.pth", weights_only=False) for d in (full, part)]
    for (name, a), (_, b) in zip(models[0].state_dict().items(), models[1].state_dict().items()):
        # int8 weights, scales (NaN: a float output), biases: the same
        torch.testing.assert_close(b.float(), a.float(), atol=1e-5, rtol=0.0, equal_nan=True, msg=name)
    masks = [torch.load(d / "model.pt", weights_only=True)["masks"] for d in (full, part)]
    for module, targets in masks[0].items():
        for target, mask in targets.items():
            assert_close(masks[1][module][target], mask)
    assert any(isinstance(m, QuantizedLayer) for m in models[0].modules())


def test_quantize_setting_is_checked(tmp_path, capsys):
    assert resolve_settings({"quantize": "int8", "logdir": str(tmp_path)})["quantize"] == "int8"
    with pytest.raises(ConfigError, match=r"quantize must be one of \['int8'\], got 'int4'"):
        resolve_settings({"quantize": "int4"})
    with pytest.raises(SystemExit):
        main(["prune", "--quantize", "int4"])
    assert "invalid choice: 'int4'" in capsys.readouterr().err


def test_pipeline_example_runs_and_reports(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pipeline_digits.py"), "--model", "ann", "--epochs", "2", "--seeds",
         "0", "--distill", "--no-progress", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "bytes on disk" in proc.stdout and "paired by seed" in proc.stdout
    runs = json.loads(out.read_text())["runs"][0]
    assert list(runs) == ["dense float", "DPAP float", "DPAP + QAT int8", "DPAP + KD float", "DPAP + KD + QAT int8"]
    for name in ("DPAP + QAT int8", "DPAP + KD + QAT int8"):
        assert runs[name]["pruned_are_zero"] and runs[name]["bytes"] * 3 < runs["DPAP float"]["bytes"]
        assert runs[name]["accuracy"] == pytest.approx(runs[name]["masked_accuracy"], abs=0.01)  # shrunk == masked
    assert all(r["latency_ms"] > 0 for r in runs.values())
