"""Whole-network helpers for spiking models."""

from __future__ import annotations

from torch import nn

from .encoding import DirectEncoder, TimeAverage
from .neurons import BaseNeuron, StepMode

__all__ = ["reset_net", "set_time_steps", "set_step_mode", "auto_reset"]

_AUTO_RESET_ATTR = "_nni_dpap_auto_reset_handle"


def reset_net(model: nn.Module) -> None:
    """Reset the state of every spiking neuron in ``model``, of any registered library (idempotent)."""
    from ..adapters import find_adapter  # adapters know how each library resets its neurons

    for module in model.modules():
        adapter = find_adapter(module)
        if adapter is not None:
            adapter.reset(module)


def set_time_steps(model: nn.Module, T: int) -> None:
    """Set the number of time steps on every neuron, encoder and decoder of ``model``."""
    for module in model.modules():
        if isinstance(module, (BaseNeuron, DirectEncoder, TimeAverage)):
            module.T = T


def set_step_mode(model: nn.Module, step_mode: StepMode) -> None:
    """Switch every neuron of ``model`` to single-step (``'s'``) or multi-step (``'m'``) mode."""
    for module in model.modules():
        if isinstance(module, BaseNeuron):
            module.step_mode = step_mode
    reset_net(model)


def auto_reset(model: nn.Module) -> nn.Module:
    """Reset all neuron states at the start of every ``model(...)`` call.

    Multi-step neurons never need it; models that loop over time with single-step
    neurons do. Installing it twice is a no-op. Returns ``model``.
    """
    if getattr(model, _AUTO_RESET_ATTR, None) is None:
        handle = model.register_forward_pre_hook(lambda module, args: reset_net(module))
        object.__setattr__(model, _AUTO_RESET_ATTR, handle)
    return model
