"""Recognise spiking-neuron modules of any library through small adapters.

An adapter (:class:`~nni_dpap.adapters.base.NeuronAdapter`) tells DPAP whether a
module is one of its library's neurons, how to read one call's spikes as
``[t, B, C, ...]`` (``t = T`` for a multi-step call, 1 for a single-step call), how
to reset its state and how to silence (channel, time step) pairs, plus, where the
library needs it, its step modes, its time-aware layers and containers. nni-dpap's
own neurons go through the same interface as the ones of other libraries; adding a
library is one ``NeuronAdapter`` subclass registered with :func:`register_adapter`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from .base import NeuronAdapter, mro_names

__all__ = ["NeuronAdapter", "register_adapter", "find_adapter", "is_neuron", "is_leaf", "is_time_major",
           "traceable_forward", "single_step_contexts", "output_arity", "mro_names", "require"]


def _default_adapters() -> list[NeuronAdapter]:
    from .native import NativeAdapter
    from .snntorch import SnnTorchAdapter
    from .spikingjelly import SpikingJellyAdapter

    # the library adapters recognise classes by their module path and import their
    # library only when they meet one of its neurons
    return [NativeAdapter(), SpikingJellyAdapter(), SnnTorchAdapter()]


_ADAPTERS: list[NeuronAdapter] = []


def register_adapter(adapter: NeuronAdapter) -> None:
    """Add an adapter (checked before the ones already registered)."""
    if not isinstance(adapter, NeuronAdapter):
        raise ConfigError(f"{adapter!r} is not a NeuronAdapter: subclass nni_dpap.adapters.NeuronAdapter and "
                          "implement matches, split_steps and reset")
    _adapters().insert(0, adapter)


def _adapters() -> list[NeuronAdapter]:
    if not _ADAPTERS:
        _ADAPTERS.extend(_default_adapters())
    return _ADAPTERS


def find_adapter(module: nn.Module) -> NeuronAdapter | None:
    """The adapter handling ``module``, or ``None`` if it is not a known spiking neuron."""
    for adapter in _adapters():
        if adapter.matches(module):
            return adapter
    return None


def is_neuron(module: nn.Module) -> bool:
    """Whether ``module`` is a spiking neuron of a registered library."""
    return find_adapter(module) is not None


def is_leaf(module: nn.Module) -> bool:
    """Whether a library asks for ``module`` to be kept whole when tracing (its time-aware layers)."""
    return any(adapter.is_leaf(module) for adapter in _adapters())


def is_time_major(module: nn.Module) -> bool:
    """Whether a library module takes ``[T, N, ...]`` input in its current step mode."""
    return any(adapter.time_major(module) for adapter in _adapters())


_EXTRAS = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}


def require(library: str) -> None:
    """Raise a clear error naming the extra to install when ``library`` is missing."""
    import importlib.util

    if library not in _EXTRAS:
        raise ConfigError(f"unknown library {library!r}; nni-dpap has adapters for {sorted(_EXTRAS)}")
    if importlib.util.find_spec(library) is None:
        raise ConfigError(f"{library} is not installed; install the extra: pip install nni-dpap[{_EXTRAS[library]}]")


def output_arity(module: nn.Module) -> int:
    """How many values a neuron's forward returns (1 unless its library returns ``(spikes, state...)``)."""
    adapter = find_adapter(module)
    return adapter.output_arity(module) if adapter is not None else 1


def single_step_contexts(model: nn.Module) -> list[Any]:
    """Context managers that put ``model`` in single-step mode, one per library that needs one."""
    return [adapter.single_step(model) for adapter in _adapters()]


def traceable_forward(module: nn.Module) -> Any:
    """A torch.fx-traceable replacement of ``module``'s forward, if a library provides one."""
    for adapter in _adapters():
        forward = adapter.trace_forward(module)
        if forward is not None:
            return forward
    return None
