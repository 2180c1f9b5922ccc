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

__all__ = ["NeuronAdapter", "register_adapter", "find_adapter", "is_neuron", "is_leaf", "traceable_forward",
           "single_step_contexts", "output_arity", "mro_names", "require"]


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


def mro_names(module: nn.Module) -> set[tuple[str, str]]:
    """``(module path, class name)`` of every class of ``module`` (to recognise classes without importing)."""
    return {(cls.__module__, cls.__name__) for cls in type(module).__mro__}


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
        raise TypeError(f"{adapter!r} does not implement NeuronAdapter "
                        "(name, matches, split_steps, reset, set_time_mask)")
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
    return any(getattr(adapter, "is_leaf", lambda m: False)(module) for adapter in _adapters())


_EXTRAS = {"spikingjelly": "spikingjelly", "snntorch": "snntorch"}


def require(library: str) -> None:
    """Raise a clear error naming the extra to install when ``library`` is missing."""
    import importlib.util

    from ..errors import ConfigError

    if library not in _EXTRAS:
        raise ConfigError(f"unknown library {library!r}; nni-dpap has adapters for {sorted(_EXTRAS)}")
    if importlib.util.find_spec(library) is None:
        raise ConfigError(f"{library} is not installed; install the extra: pip install nni-dpap[{_EXTRAS[library]}]")


def output_arity(module: nn.Module) -> int:
    """How many values a neuron's forward returns (1 unless its library returns ``(spikes, state...)``)."""
    adapter = find_adapter(module)
    arity = getattr(adapter, "output_arity", None) if adapter is not None else None
    return arity(module) if arity is not None else 1


def single_step_contexts(model: nn.Module) -> list[Any]:
    """Context managers that put ``model`` in single-step mode, one per library that needs one."""
    contexts = []
    for adapter in _adapters():
        make = getattr(adapter, "single_step", None)
        if make is not None:
            contexts.append(make(model))
    return contexts


def traceable_forward(module: nn.Module) -> Any:
    """A torch.fx-traceable replacement of ``module``'s forward, if a library provides one."""
    for adapter in _adapters():
        forward = getattr(adapter, "trace_forward", lambda m: None)(module)
        if forward is not None:
            return forward
    return None
