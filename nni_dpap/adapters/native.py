"""nni-dpap's own neurons (:class:`nni_dpap.snn.BaseNeuron`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..snn.neurons import BaseNeuron
from .base import NeuronAdapter

__all__ = ["NativeAdapter"]


class NativeAdapter(NeuronAdapter):
    """nni-dpap's own neurons (:class:`nni_dpap.snn.BaseNeuron` and subclasses)."""

    name = "nni_dpap"

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, BaseNeuron)

    def split_steps(self, module: nn.Module, output: Any) -> Tensor:
        assert isinstance(module, BaseNeuron)
        steps = module.steps_per_call  # folded [T*B, ...] in multi-step mode, one step otherwise
        return output.reshape(steps, output.shape[0] // steps, *output.shape[1:])

    def reset(self, module: nn.Module) -> None:
        assert isinstance(module, BaseNeuron)
        module.reset()

    def set_time_mask(self, module: nn.Module, mask: Tensor | None) -> None:
        assert isinstance(module, BaseNeuron)
        module.set_time_mask(mask)
