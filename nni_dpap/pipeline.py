"""DPAP fused with NNI's quantization-aware training in one run, and the checkpoint of such a run.

NNI 3.0 fuses compressors on one model through shared wrappers: ``Other.from_compressor(first,
config_list, ...)`` builds the second on the first one's wrappers and evaluator, and the last
one's ``compress()`` trains them all in one training run. DPAP fuses both ways:

* NNI's order: ``pruner = DPAPPruner(...)``, ``quantizer = QATQuantizer.from_compressor(pruner,
  qat_config_list(model), quant_start_step=...)``, ``quantizer.compress(epochs * steps_per_epoch, epochs)``;
* DPAP last (:func:`fused_pruner`): ``DPAPPruner.from_compressor(quantizer, config_list, epochs=...,
  steps_per_epoch=...)``, then ``pruner.compress()`` (no arguments, as without fusion).

A checkpoint of a fused run needs the quantizer's state next to DPAP's:
:func:`quantizer_state_dict` / :func:`load_quantizer_state_dict`. NNI keeps scales, zero points and
tracked ranges as wrapper buffers that do not exist until the first training step (so a plain
``model.load_state_dict`` into a new pipeline fails on unexpected keys), and its step counter and
the switch from "bypass" to fake quantization at ``quant_start_step`` are not saved at all: a
resumed ``QATQuantizer`` would stay in "bypass" for good. Load the quantizer state *before* the
model's state dict.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from nni.compression.quantization import QATQuantizer
from nni.compression.utils.evaluator import Evaluator
from torch import Tensor, nn

from .artifacts import write_new
from .errors import CheckpointError, ConfigError
from .pruner import DPAPPruner
from .quantize import qat_config_list, shrink_and_quantize, state_dict_bytes
from .speedup import speedup
from .training import evaluate_accuracy

__all__ = ["fused_pruner", "quantizer_state_dict", "load_quantizer_state_dict", "export_int8", "QUANTIZE_CHOICES"]

_logger = logging.getLogger(__name__)
_STATE = ("scale", "zero_point", "tracked_min", "tracked_max")
QUANTIZE_CHOICES = ("int8",)


def fused_pruner(model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator, *,
                 quantize: str | None = None, quant_start: float = 0.5, **dpap_kwargs: Any
                 ) -> tuple[DPAPPruner, QATQuantizer | None]:
    """A ``DPAPPruner``, fused with NNI's ``QATQuantizer`` when ``quantize`` is given.

    Parameters
    ----------
    model, config_list, evaluator, dpap_kwargs
        As for :class:`~nni_dpap.DPAPPruner` (``epochs`` and ``steps_per_epoch`` included).
    quantize
        ``None`` (float) or ``'int8'``: quantization-aware training of every conv / linear layer
        (:func:`~nni_dpap.quantize.qat_config_list`) in the same run as DPAP.
    quant_start
        Fraction of the training steps after which fake quantization starts (NNI's
        ``quant_start_step``; ranges are tracked from the first step).

    Returns
    -------
    ``(pruner, quantizer)``; ``pruner.compress()`` trains both, ``quantizer.get_calibration_config()``
    gives the scales afterwards.
    """
    if quantize is None:
        return DPAPPruner(model, config_list, evaluator, **dpap_kwargs), None
    if quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"quantize must be one of {list(QUANTIZE_CHOICES)} or None, got {quantize!r}")
    if isinstance(quant_start, bool) or not isinstance(quant_start, (int, float)) or not 0 <= quant_start < 1:
        raise ConfigError(f"quant_start must be a fraction of the training in [0, 1), got {quant_start!r}")
    epochs, steps = dpap_kwargs.get("epochs"), dpap_kwargs.get("steps_per_epoch")
    if not isinstance(epochs, int) or not isinstance(steps, int):
        raise ConfigError("fused_pruner needs epochs= and steps_per_epoch= (integers), as DPAPPruner does")
    start_step = int(quant_start * epochs * steps)
    quantizer = QATQuantizer(model, qat_config_list(model), evaluator, quant_start_step=start_step)
    pruner = DPAPPruner.from_compressor(quantizer, config_list, **dpap_kwargs)
    return pruner, quantizer


def quantizer_state_dict(quantizer: QATQuantizer) -> dict[str, Any]:
    """The quantizer's state for a checkpoint: its step and every target's scale, zero point and range."""
    targets: dict[str, dict[str, dict[str, Tensor]]] = {}
    for module, spaces in quantizer._target_spaces.items():
        for target, space in spaces.items():
            values = {key: getattr(space, key) for key in _STATE}
            targets.setdefault(module, {})[target] = {k: v.detach().cpu().clone() for k, v in values.items()
                                                      if isinstance(v, Tensor)}
    return {"current_step": int(quantizer.current_step), "quant_start_step": int(quantizer.quant_start_step),
            "targets": targets}


def load_quantizer_state_dict(quantizer: QATQuantizer, state: Mapping[str, Any]) -> None:
    """Restore :func:`quantizer_state_dict` output into a newly built quantizer (before ``model.load_state_dict``).

    Raises
    ------
    CheckpointError
        The state belongs to another quantizer (other layers or targets, another ``quant_start_step``).
    """
    targets = state.get("targets") if isinstance(state, Mapping) else None
    if not isinstance(state, Mapping) or any(not isinstance(state.get(k), int) for k in ("current_step",
                                                                                           "quant_start_step")):
        raise CheckpointError("the quantizer state is incomplete (no current_step / quant_start_step): give what "
                              "nni_dpap.pipeline.quantizer_state_dict returned")
    ours = {m: sorted(spaces) for m, spaces in quantizer._target_spaces.items()}
    theirs = {m: sorted(t) for m, t in targets.items()} if isinstance(targets, Mapping) else None
    if theirs != ours:
        raise CheckpointError(f"the quantizer state does not match this quantizer: it quantizes {theirs}, this one "
                              f"{ours}; resume with the same QAT config list")
    if int(state["quant_start_step"]) != quantizer.quant_start_step:
        raise CheckpointError(f"the quantizer state has quant_start_step {state['quant_start_step']}, this quantizer "
                              f"{quantizer.quant_start_step}: resume with the same setting")
    assert isinstance(targets, Mapping)
    for module, spaces in quantizer._target_spaces.items():
        device = next(iter(quantizer._module_wrappers[module].parameters()), torch.empty(0)).device
        for target, space in spaces.items():
            for key, value in targets[module][target].items():
                setattr(space, key, None)  # NNI copies into an existing buffer: replace it (shape may differ)
                setattr(space, key, value.to(device))
    quantizer.current_step = int(state["current_step"])
    if quantizer.current_step >= quantizer.quant_start_step:  # NNI switches only *at* quant_start_step
        for spaces in quantizer._target_spaces.values():
            for space in spaces.values():
                space.apply_method = "qat_clamp_round"
    _logger.info("quantizer resumed at step %d (fake quantization from step %d)", quantizer.current_step,
                 quantizer.quant_start_step)


def export_int8(model: nn.Module, masks: Mapping[str, Mapping[str, Tensor]], quantizer: QATQuantizer,
                dummy_input: Any, test_loader: Any, path: str | Path) -> dict[str, Any]:
    """Shrink and int8-store a copy of a trained, unwrapped model; save it (``torch.save`` of the module) to ``path``.

    Returns the int8 model's test accuracy, its bytes on disk (state dict) and those of the shrunk float model.
    """
    shrunk = speedup(copy.deepcopy(model), dummy_input, masks)
    int8 = shrink_and_quantize(copy.deepcopy(model), dummy_input, masks, quantizer.get_calibration_config())
    write_new(path, lambda tmp: torch.save(int8, tmp), "model")
    return {"accuracy": evaluate_accuracy(int8, test_loader), "bytes": state_dict_bytes(int8),
            "float_shrunk_bytes": state_dict_bytes(shrunk), "path": str(path)}
