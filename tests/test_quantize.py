"""nni_dpap.quantize: NNI's QAT config, int8 layers that compute what NNI's wrappers simulate, shrunk == masked."""

from __future__ import annotations

import copy

import nni
import pytest
import torch
from conftest import TinyANN, TinySNN
from helpers import assert_close, assert_same_spiking_function, spiking_run
from nni.compression import TorchEvaluator
from nni.compression.quantization import QATQuantizer
from torch import nn

from nni_dpap.errors import ConfigError
from nni_dpap.quantize import QuantizedLayer, qat_config_list, shrink_and_quantize, state_dict_bytes, to_int8
from nni_dpap.training import classification_step


def _calibrated(model: nn.Module, x: torch.Tensor) -> tuple[QATQuantizer, dict]:
    """A QATQuantizer on ``model`` whose ranges were tracked on ``x`` (fake quantization on from step 0)."""
    evaluator = TorchEvaluator(lambda *a, **k: None, nni.trace(torch.optim.Adam)(model.parameters()),
                               classification_step)
    quantizer = QATQuantizer(model, qat_config_list(model), evaluator)
    model.train()
    quantizer.track_forward(x)
    model.eval()
    return quantizer, quantizer.get_calibration_config()


def test_config_list_quantizes_layer_outputs_only_without_spiking_neurons(tiny_snn, tiny_ann):
    snn, ann = qat_config_list(tiny_snn)[0], qat_config_list(tiny_ann)[0]
    assert snn["target_names"] == ["_input_", "weight"]
    assert ann["target_names"] == ["_input_", "weight", "_output_"]
    assert ann["target_settings"]["weight"] == {"quant_dtype": "int8", "quant_scheme": "symmetric"}
    assert qat_config_list(None, bits=4)[0]["quant_dtype"] == "int4"
    with pytest.raises(ConfigError, match=r"op_types \['LIFNeuron'\] cannot be quantized"):
        qat_config_list(tiny_snn, op_types=("LIFNeuron",))
    with pytest.raises(ConfigError, match="bits must be an integer from 2 to 8"):
        qat_config_list(tiny_snn, bits=16)


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_int8_layers_compute_what_nni_simulates(kind, digits):
    torch.manual_seed(0)
    model = TinyANN() if kind == "ann" else TinySNN()
    x = next(iter(digits[1]))[0]
    quantizer, calibration = _calibrated(model, x)
    with torch.no_grad():
        simulated = model(x)  # NNI's wrappers: fake-quantized inputs, weights (and outputs)
    quantizer.unwrap_model()
    with torch.no_grad():
        plain = model(x)
    int8 = copy.deepcopy(model)
    assert sorted(to_int8(int8, calibration)) == sorted(calibration)
    assert isinstance(int8.fc1, QuantizedLayer) and int8.fc1.weight_int8.dtype == torch.int8
    with torch.no_grad():
        assert_close(int8(x), simulated)
        assert_close(int8(x), plain, atol=1.0)  # (close to the float model: 8 bits lose little)
        first = model.encoder(x) if kind == "snn" else x
        assert float((int8.conv(first) - model.conv(first)).abs().max()) > 1e-4  # quantization is really applied
    grid = int8.fc1.weight / int8.fc1.qparams[0, 0]
    assert_close(grid, grid.round())


def _drop(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Masks removing conv channels 1 and 5 (and the BN after it) and fc1 neurons 3-10, plus a few synapses."""
    masks: dict[str, dict[str, torch.Tensor]] = {}
    conv = torch.ones(8)
    conv[[1, 5]] = 0
    masks["conv"] = {"weight": conv.view(-1, 1, 1, 1).expand_as(model.conv.weight).clone(), "bias": conv.clone()}
    if hasattr(model, "bn"):
        masks["bn"] = {"weight": conv.clone(), "bias": conv.clone()}
    fc1 = torch.ones(32)
    fc1[3:11] = 0
    weight = fc1.view(-1, 1).expand_as(model.fc1.weight).clone()
    weight[0, :5] = 0  # pruned synapses stay zeros inside the smaller matrix
    masks["fc1"] = {"weight": weight, "bias": fc1.clone()}
    return masks


@pytest.mark.parametrize("kind", ["ann", "snn"])
def test_quantized_and_shrunk_equals_quantized_and_masked(kind, digits):
    torch.manual_seed(1)
    model = TinyANN() if kind == "ann" else TinySNN()
    x = next(iter(digits[1]))[0]
    masks = _drop(model)
    with torch.no_grad():
        for name, targets in masks.items():
            for target, mask in targets.items():
                getattr(model.get_submodule(name), target).mul_(mask)
    quantizer, calibration = _calibrated(model, x)
    quantizer.unwrap_model()
    masked = copy.deepcopy(model)
    to_int8(masked, calibration)
    reference = spiking_run(masked, x) if kind == "snn" else masked(x).detach()
    shrink_and_quantize(model, x[:2], masks, calibration)
    assert model.conv.weight_int8.shape[0] == 6 and model.fc1.weight_int8.shape == (24, 6 * 16)
    assert bool((model.fc1.weight[0, :5] == 0).all())  # pruned synapses exactly 0 after quantization
    assert bool((masked.fc1.weight[3:11] == 0).all())
    if kind == "snn":
        assert_same_spiking_function(reference, model, x)
    else:
        with torch.no_grad():
            assert_close(model(x), reference)
    assert state_dict_bytes(model) < state_dict_bytes(masked)


def test_int8_storage_is_about_four_times_smaller():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    before = state_dict_bytes(model)
    to_int8(model, {"0": {"weight": {"scale": torch.tensor(0.01), "zero_point": torch.tensor(0.0),
                                     "quant_dtype": "int8"}}})
    assert isinstance(model[0], QuantizedLayer) and isinstance(model[2], nn.Linear)
    assert 3.0 < before / state_dict_bytes(model) < 4.0  # (the second layer and the biases stay float)


def test_bad_calibrations_are_refused(tiny_ann, digits):
    x = next(iter(digits[1]))[0]
    quantizer, calibration = _calibrated(tiny_ann, x)
    with pytest.raises(ConfigError, match="still wrapped by an NNI compressor: call quantizer.unwrap_model"):
        to_int8(tiny_ann, calibration)
    quantizer.unwrap_model()
    cases = [
        ({"nope": calibration["fc1"]}, "names 'nope', which is not a module"),
        ({"relu1": calibration["fc1"]}, r"relu1 \(ReLU\) is quantized on"),
        ({"fc1": {**calibration["fc1"], "bias": calibration["fc1"]["weight"]}}, "fc1 .* is quantized on"),
        ({"fc1": {"weight": {**calibration["fc1"]["weight"], "scale": None}}}, "never ran in training after "
                                                                               "quant_start_step"),
        ({"fc1": {"weight": {**calibration["fc1"]["weight"], "scale": torch.ones(32)}}}, "per channel"),
        ({"fc1": {"weight": {**calibration["fc1"]["weight"], "quant_dtype": "int16"}}}, "int2-int8"),
    ]
    for config, message in cases:
        with pytest.raises(ConfigError, match=message):
            to_int8(copy.deepcopy(tiny_ann), config)
    with pytest.raises(ConfigError, match="QuantizedLayer takes a Conv1d/2d/3d or Linear"):
        QuantizedLayer(nn.ReLU(), {})
