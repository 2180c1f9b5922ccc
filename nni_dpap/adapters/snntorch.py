"""snnTorch neurons (``Leaky``, ``Synaptic``, ``RLeaky``, ... any ``SpikingNeuron``).

snnTorch neurons take one time step per call (models loop over time) and return the
spikes, or ``(spikes, state...)``; their membrane lives on the module and is reset
with ``reset_mem()``. Nothing here imports snnTorch unless one of its neurons is met.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import Tensor, nn

from .base import NeuronAdapter, mro_names
from ._gate import install_time_mask, reset_step

__all__ = ["SnnTorchAdapter"]


class SnnTorchAdapter(NeuronAdapter):
    name = "snntorch"

    def matches(self, module: nn.Module) -> bool:
        return any(path.startswith("snntorch") and name == "SpikingNeuron" for path, name in mro_names(module))

    def split_steps(self, module: nn.Module, output: Any) -> Tensor:
        spikes = output[0] if isinstance(output, tuple) else output
        return spikes.unsqueeze(0)

    def reset(self, module: nn.Module) -> None:
        for method in ("reset_mem", "reset_hidden"):
            if hasattr(module, method):
                getattr(module, method)()
                break
        reset_step(module)

    def set_time_mask(self, module: nn.Module, mask: Tensor | None) -> None:
        install_time_mask(module, mask, lambda m: False)

    def output_arity(self, module: nn.Module) -> int:
        """``spk`` alone with ``init_hidden=True``; otherwise ``(spk, *states)``, one state per state input."""
        if getattr(module, "init_hidden", False) and not getattr(module, "output", False):
            return 1
        return len(inspect.signature(module.forward).parameters)
