"""Int8 models from NNI's quantization-aware training, after DPAP's pruning (real removal included).

NNI's ``QATQuantizer`` simulates integer inference while it trains ("fake quantization":
quantize, round, dequantize) and hands back a calibration config (scale and zero point of
every quantized target); NNI's own int8 deployment path (``ModelSpeedupTensorRT``) needs
TensorRT on a GPU. This module turns the trained model into a small int8 model that
computes exactly what NNI simulated, with plain PyTorch:

>>> quantizer = QATQuantizer.from_compressor(pruner, qat_config_list(), quant_start_step=...)
>>> _, calibration = quantizer.compress(max_steps, max_epochs)
>>> quantizer.unwrap_model()
>>> shrink_and_quantize(model, dummy_input, pruner.get_masks(), calibration)   # in place

* :func:`qat_config_list`: what is quantized. Every ``Conv1d``/``Conv2d``/``Linear`` layer:
  its weight (int8, symmetric, one scale per tensor) and its input (int8, affine); in an
  ANN also its output. Spiking neurons are not quantized: NNI has no quantization rule for
  them (``QuantizationSetting`` knows conv, linear, BN and a few activations), their output
  spikes are 0/1 already (1 bit), their membrane potential is internal state that no NNI
  wrapper can reach, and the current they integrate stays an accumulator (see
  :func:`qat_config_list` for why quantizing it silences them).
* :class:`QuantizedLayer`: a conv / linear layer that stores its weight as int8 plus one
  scale and zero point (biases stay float32, as NNI's QAT leaves them) and applies NNI's
  rounding to its input and output (``ClampRound``: ``round(clamp(zp + x / s)) - zp) * s``).
* :func:`to_int8` replaces the calibrated layers of a model (masked or shrunk) in place;
  :func:`shrink_and_quantize` first removes the pruned units with :func:`nni_dpap.speedup`.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapters import is_neuron
from .errors import ConfigError
from .speedup import speedup

__all__ = ["qat_config_list", "QuantizedLayer", "to_int8", "shrink_and_quantize", "state_dict_bytes",
           "QUANTIZED_TYPES"]

_logger = logging.getLogger(__name__)
_TARGETS = ("weight", "_input_0", "_output_0")
QUANTIZED_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_Calibration = Mapping[str, Mapping[str, Mapping[str, Any]]]


def qat_config_list(model: nn.Module | None = None, op_types: tuple[str, ...] = ("Conv2d", "Linear"), bits: int = 8,
                    exclude_op_names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """NNI ``QATQuantizer`` config list: weights symmetric, inputs (and outputs) affine, ``bits`` bits each.

    Parameters
    ----------
    model
        The model to quantize. With spiking neurons in it, the layers' outputs are not quantized:
        a layer's output is the current a neuron integrates (an int32 accumulator in integer
        hardware, as the bias is), and NNI clamps a quantized output to a running range of past
        batches with no gradient beyond it, so a current could never grow past the range seen so
        far to reach the firing threshold: neurons that start silent stay silent (tested on the
        tiny SNN: 10% accuracy). The inputs of the later layers are (pooled) spikes, which 8 bits
        hold almost exactly. ``None`` or an ANN: inputs, weights and outputs are quantized.
    op_types
        Layer types to quantize (``Conv1d``, ``Conv2d``, ``Conv3d``, ``Linear``).
    bits
        Bit width (2-8); NNI's ``int{bits}`` covers ``[-(2^(bits-1) - 1), 2^(bits-1) - 1]``.
    exclude_op_names
        Layers to leave in float.
    """
    unknown = sorted(set(op_types) - {t.__name__ for t in QUANTIZED_TYPES})
    if unknown or not op_types:
        raise ConfigError(f"op_types {unknown or list(op_types)} cannot be quantized by nni_dpap.quantize; choose "
                          f"from {[t.__name__ for t in QUANTIZED_TYPES]} (spiking neurons are not quantized: their "
                          "spikes are already 1 bit)")
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ConfigError(f"bits must be an integer from 2 to 8, got {bits!r}")
    dtype = f"int{bits}"
    spiking = model is not None and any(is_neuron(m) for m in model.modules())
    targets = ["_input_", "weight"] if spiking else ["_input_", "weight", "_output_"]
    settings = {"weight": {"quant_dtype": dtype, "quant_scheme": "symmetric"},
                "_input_": {"quant_dtype": dtype, "quant_scheme": "affine"},
                "_output_": {"quant_dtype": dtype, "quant_scheme": "affine"}}
    entry: dict[str, Any] = {"op_types": list(op_types), "target_names": targets, "quant_dtype": dtype,
                             "target_settings": {t: settings[t] for t in targets}}
    if exclude_op_names:
        entry["exclude_op_names"] = list(exclude_op_names)
    return [entry]


def _qrange(dtype: str) -> tuple[int, int]:
    """NNI's integer range of ``int{b}`` / ``uint{b}`` (``QuantizationTargetSpace._compute_qmin_qmax``)."""
    bits = int(dtype.lstrip("uint"))
    return (0, 2 ** bits - 1) if dtype.startswith("uint") else (-2 ** (bits - 1) + 1, 2 ** (bits - 1) - 1)


def _qparams(layer: str, target: str, info: Mapping[str, Any]) -> list[float]:
    scale, zero_point, dtype = info.get("scale"), info.get("zero_point"), info.get("quant_dtype") or "int8"
    if not isinstance(scale, Tensor) or not isinstance(zero_point, Tensor):
        raise ConfigError(f"{layer}.{target} has no scale / zero point: it never ran in training after "
                          "quant_start_step. Give QATQuantizer a quant_start_step below the number of training steps")
    if scale.numel() != 1 or zero_point.numel() != 1:
        raise ConfigError(f"{layer}.{target} is quantized per channel ({scale.numel()} scales); to_int8 supports one "
                          "scale per tensor: leave 'granularity' at its default in the QAT config list")
    if not isinstance(dtype, str) or not dtype.lstrip("u").startswith("int") or int(dtype.lstrip("uint")) > 8:
        raise ConfigError(f"{layer}.{target} has quant_dtype {dtype!r}; to_int8 stores int2-int8 / uint2-uint8")
    qmin, qmax = _qrange(dtype)
    return [float(scale), float(zero_point), float(qmin), float(qmax)]


def _round(x: Tensor, scale: Tensor, zero_point: Tensor, qmin: Tensor, qmax: Tensor) -> Tensor:
    """NNI's ``ClampRound`` (the integer values, before dequantization)."""
    return torch.round(torch.clamp(zero_point + x / scale, qmin, qmax))


class QuantizedLayer(nn.Module):
    """A conv or linear layer with an int8 weight that reproduces NNI's simulated quantization.

    Parameters
    ----------
    layer
        The float ``Conv1d/2d/3d`` or ``Linear`` (its weight is replaced; its bias and settings are kept).
    qparams
        Per target (``weight``, ``_input_0``, ``_output_0``): ``[scale, zero_point, qmin, qmax]``; ``weight``
        is required, a missing input / output stays float.

    Notes
    -----
    The state holds ``weight_int8`` (``int8``, or ``uint8`` for an unsigned type), ``qparams`` (one float32
    row per target: scale, zero point, qmin, qmax; NaN for a float input or output) and the float bias.
    """

    qparams: Tensor
    weight_int8: Tensor

    def __init__(self, layer: nn.Module, qparams: Mapping[str, list[float]]) -> None:
        super().__init__()
        if not isinstance(layer, QUANTIZED_TYPES):
            raise ConfigError(f"QuantizedLayer takes a Conv1d/2d/3d or Linear, got {type(layer).__name__}")
        rows = [qparams.get(t, [float("nan")] * 4) for t in _TARGETS]
        weight = layer.weight.detach().float()
        self.register_buffer("qparams", torch.tensor(rows, dtype=torch.float32, device=weight.device))
        del layer.weight
        self.layer = layer
        scale, zero_point, qmin, qmax = self.qparams[0]
        dtype = torch.uint8 if float(qmin) >= 0 else torch.int8
        self.register_buffer("weight_int8", _round(weight, scale, zero_point, qmin, qmax).to(dtype))

    @property
    def weight(self) -> Tensor:
        """The dequantized weight (what the layer computes with)."""
        scale, zero_point = self.qparams[0, 0], self.qparams[0, 1]
        return (self.weight_int8.float() - zero_point) * scale

    def _fake_quant(self, x: Tensor, row: int) -> Tensor:
        scale, zero_point, qmin, qmax = self.qparams[row]
        if torch.isnan(scale):
            return x
        return (_round(x, scale, zero_point, qmin, qmax) - zero_point) * scale

    def forward(self, x: Tensor) -> Tensor:
        x = self._fake_quant(x, 1)
        bias = self.layer.bias
        if isinstance(self.layer, nn.Linear):
            out = F.linear(x, self.weight, bias)
        else:
            out = self.layer._conv_forward(x, self.weight, bias)
        return self._fake_quant(out, 2)

    def extra_repr(self) -> str:
        return f"{type(self.layer).__name__}, int8 weight {tuple(self.weight_int8.shape)}"


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def to_int8(model: nn.Module, calibration_config: _Calibration) -> list[str]:
    """Replace every calibrated conv / linear layer of ``model`` by a :class:`QuantizedLayer`, in place.

    Parameters
    ----------
    model
        The trained model, unwrapped (``quantizer.unwrap_model()``), masked or already shrunk.
    calibration_config
        ``QATQuantizer.compress()``'s second result (or ``quantizer.get_calibration_config()``).

    Returns
    -------
    The names of the replaced layers.
    """
    if any(hasattr(m, "_nni_wrapper") for m in model.modules()):
        raise ConfigError("the model is still wrapped by an NNI compressor: call quantizer.unwrap_model() first")
    modules = dict(model.named_modules())
    replaced = []
    for name, targets in calibration_config.items():
        module = modules.get(name)
        if module is None:
            raise ConfigError(f"the calibration config names {name!r}, which is not a module of this model")
        extra = sorted(set(targets) - set(_TARGETS))
        if extra or "weight" not in targets or not isinstance(module, QUANTIZED_TYPES):
            raise ConfigError(f"{name} ({type(module).__name__}) is quantized on {sorted(targets)}; to_int8 converts "
                              f"conv / linear layers quantized on weight and optionally _input_0 / _output_0 "
                              "(nni_dpap.quantize.qat_config_list)")
        _set_module(model, name, QuantizedLayer(module, {t: _qparams(name, t, info) for t, info in targets.items()}))
        replaced.append(name)
    _logger.info("int8 layers: %s", ", ".join(replaced))
    return replaced


def shrink_and_quantize(model: nn.Module, dummy_input: Any, masks: Mapping[str, Mapping[str, Tensor]],
                        calibration_config: _Calibration, **speedup_kwargs: Any) -> nn.Module:
    """Remove the pruned units (:func:`nni_dpap.speedup`), then store the calibrated layers as int8; in place.

    The scales are NNI's, taken over the unpruned tensors: removing units that are exactly zero
    changes neither a weight's range nor an activation's, so the shrunk int8 model computes what
    the masked, fake-quantized model computed during training.
    """
    speedup(model, dummy_input, masks, **speedup_kwargs)
    to_int8(model, calibration_config)
    return model


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the model's size on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
