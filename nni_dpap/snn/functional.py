"""Whole-network helpers for nni-dpap's spiking modules.

Resetting the neurons of any library (``reset_net``, ``auto_reset``) lives in
:mod:`nni_dpap.adapters.network`, which knows every library's neurons.
"""

from __future__ import annotations

from torch import nn

from .encoding import DirectEncoder, TimeAverage
from .neurons import BaseNeuron, StepMode

__all__ = ["set_time_steps", "set_step_mode"]


def set_time_steps(model: nn.Module, T: int) -> None:
    """Set the number of time steps on every neuron, encoder and decoder of ``model``."""
    for module in model.modules():
        if isinstance(module, (BaseNeuron, DirectEncoder, TimeAverage)):
            module.T = T


def set_step_mode(model: nn.Module, step_mode: StepMode) -> None:
    """Switch every neuron of ``model`` to single-step (``'s'``) or multi-step (``'m'``) mode (and reset it)."""
    for module in model.modules():
        if isinstance(module, BaseNeuron):
            module.step_mode = step_mode
            module.reset()
