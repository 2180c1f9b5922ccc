"""What :func:`nni_dpap.speedup.speedup` accepts, checked before anything is changed.

NNI's ``ModelSpeedup`` contract is a model whose masked weights are *not* zeroed plus
the masks (what ``L1NormPruner`` / ``TaylorPruner`` and ``unwrap_model()`` hand over).
:func:`apply_masks` zeroes them first: a channel kept because an add joins it to a
live one would otherwise keep its old weights in the shrunk model.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import SpeedupError
from ..slicing import live_units

__all__ = ["as_inputs", "check_model", "check_masks", "apply_masks", "structured"]

Masks = dict[str, dict[str, Tensor]]


def as_inputs(dummy_input: Any) -> tuple[Any, ...]:
    """``dummy_input`` as the positional arguments of the model's forward."""
    inputs = tuple(dummy_input) if isinstance(dummy_input, (tuple, list)) else (dummy_input,)
    if not inputs or not isinstance(inputs[0], Tensor):
        raise SpeedupError(
            f"dummy_input must be an input batch (a tensor, or a tuple of the forward's arguments starting with "
            f"a tensor), got {type(dummy_input).__name__}"
        )
    if inputs[0].dim() == 0 or inputs[0].shape[0] == 0:
        raise SpeedupError(f"dummy_input must hold at least one sample, got shape {tuple(inputs[0].shape)}")
    return inputs


def check_model(model: Any) -> None:
    """A plain ``nn.Module``, not wrapped by an NNI compressor."""
    if not isinstance(model, nn.Module):
        raise SpeedupError(f"speedup needs the model (an nn.Module), got {type(model).__name__}")
    wrapped = [name for name, m in model.named_modules() if hasattr(m, "_nni_wrapper")]
    if wrapped:
        raise SpeedupError(
            f"the model is still wrapped by an NNI compressor ({', '.join(wrapped[:3])}"
            f"{'...' if len(wrapped) > 3 else ''}): call pruner.unwrap_model() before speedup"
        )


def check_masks(model: nn.Module, masks: Any) -> Masks:
    """Validate NNI-format masks against ``model``; return float copies on the parameters' devices.

    Raises
    ------
    SpeedupError
        Not ``{module: {target: tensor}}``, unknown modules or targets, shapes that differ
        from the target's, values other than 0 and 1.
    """
    if not isinstance(masks, Mapping):
        raise SpeedupError(f"masks must be {{module name: {{'weight': tensor, ...}}}} as returned by "
                           f"pruner.compress(), got {type(masks).__name__}")
    modules = dict(model.named_modules())
    unknown = sorted(str(m) for m in masks if m not in modules)
    if unknown:
        raise SpeedupError(f"masks name modules that are not in the model: {unknown}")
    out: Masks = {}
    for name, targets in masks.items():
        if not isinstance(targets, Mapping):
            raise SpeedupError(f"masks[{name!r}] must be a dict {{target name: tensor}}, got {type(targets).__name__}")
        out[name] = {}
        for target, mask in targets.items():
            if mask is None:
                continue
            value = getattr(modules[name], str(target), None)
            if not isinstance(value, Tensor):
                raise SpeedupError(f"masks[{name!r}] has a mask for {target!r}, which is not a parameter or buffer "
                                   f"of that {type(modules[name]).__name__}")
            if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(value.shape):
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise SpeedupError(f"masks[{name!r}][{target!r}] has shape {shape}, but {name}.{target} has shape "
                                   f"{tuple(value.shape)}: a mask must have its target's shape")
            mask = mask.detach().to(value.device, torch.float32)
            if not bool(((mask == 0) | (mask == 1)).all()):
                raise SpeedupError(f"masks[{name!r}][{target!r}] has values other than 0 and 1")
            out[name][str(target)] = mask
    return out


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Zero every masked entry in place (NNI's contract: the weights need not be zeroed before)."""
    for name, targets in masks.items():
        module = model.get_submodule(name)
        for target, mask in targets.items():
            getattr(module, target).mul_(mask.to(getattr(module, target).dtype))


def structured(masks: Masks, model: nn.Module) -> Masks:
    """Keep only what can be removed: whole output units (rows) of every weight.

    Fine-grained zeros (pruned synapses) stay as zeros in the dense shrunk weights.
    Handing them to NNI would be wrong: it removes a linear layer's input feature
    whose weight column is all zero, although the layer before can only drop whole
    channels, so the shrunk model no longer fits together. A unit whose synapses are
    all pruned but whose bias is not masked still emits ``f(bias)`` (a constant, or a
    spike train for a spiking neuron): it stays, since NNI would remove it with its
    weight row.
    """
    out: Masks = {}
    for module, targets in masks.items():
        out[module] = {}
        bias = getattr(model.get_submodule(module), "bias", None)
        bias_mask = targets.get("bias", torch.ones_like(bias) if isinstance(bias, Tensor) else None)
        for target, mask in targets.items():
            if target == "weight" and mask.dim() > 1:
                rows = live_units(mask, bias_mask)
                mask = rows.view(-1, *([1] * (mask.dim() - 1))).expand(mask.shape).to(mask.dtype)
            out[module][target] = mask.clone()
    return out
