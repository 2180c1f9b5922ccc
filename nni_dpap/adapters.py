"""Recognise spiking-neuron modules of any library through small adapters.

An adapter tells DPAP four things about a neuron module: whether a module is one
of its neurons, how to read one call's spikes as ``[t, B, C, ...]`` (``t = T`` for a
multi-step call, 1 for a single-step call), how to reset its state and how to silence
(channel, time step) pairs. nni-dpap's own
neurons go through the same interface as the ones of other libraries; adding a
library is one adapter registered with :func:`register_adapter`.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from .snn.neurons import BaseNeuron

__all__ = ["NeuronAdapter", "NativeAdapter", "register_adapter", "find_adapter", "is_neuron"]


@runtime_checkable
class NeuronAdapter(Protocol):
    """What DPAP needs to know about the neurons of one library."""

    name: str

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` is a spiking neuron handled by this adapter."""

    def split_steps(self, module: nn.Module, output: Any) -> Tensor:
        """The spikes of one call as ``[t, B, C, ...]`` (``t`` time steps of that call)."""

    def reset(self, module: nn.Module) -> None:
        """Forget the neuron's state (membrane potential)."""

    def set_time_mask(self, module: nn.Module, mask: Tensor | None) -> None:
        """Silence channel ``c`` at step ``t`` where ``mask[c, t] == 0`` (temporal pruning)."""


class NativeAdapter:
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


_ADAPTERS: list[NeuronAdapter] = [NativeAdapter()]


def register_adapter(adapter: NeuronAdapter) -> None:
    """Add an adapter (checked before the ones already registered)."""
    if not isinstance(adapter, NeuronAdapter):
        raise TypeError(f"{adapter!r} does not implement NeuronAdapter "
                        "(name, matches, split_steps, reset, set_time_mask)")
    _ADAPTERS.insert(0, adapter)


def find_adapter(module: nn.Module) -> NeuronAdapter | None:
    """The adapter handling ``module``, or ``None`` if it is not a known spiking neuron."""
    for adapter in _ADAPTERS:
        if adapter.matches(module):
            return adapter
    return None


def is_neuron(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron of a registered library."""
    return find_adapter(module) is not None
