"""Whole-network helpers for spiking models of any registered library."""

from __future__ import annotations

from torch import nn

from . import find_adapter

__all__ = ["reset_net", "auto_reset"]

_AUTO_RESET_ATTR = "_nni_dpap_auto_reset_handle"


def reset_net(model: nn.Module) -> None:
    """Reset the state of every spiking neuron in ``model``, of any registered library (idempotent)."""
    for module in model.modules():
        adapter = find_adapter(module)
        if adapter is not None:
            adapter.reset(module)


def auto_reset(model: nn.Module) -> nn.Module:
    """Reset all neuron states at the start of every ``model(...)`` call.

    Multi-step neurons never need it; models that loop over time with single-step
    neurons do. Installing it twice is a no-op. Returns ``model``.
    """
    if getattr(model, _AUTO_RESET_ATTR, None) is None:
        handle = model.register_forward_pre_hook(lambda module, args: reset_net(module))
        object.__setattr__(model, _AUTO_RESET_ATTR, handle)
    return model
