"""The interface every neuron adapter implements, with defaults for what most libraries lack."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

from torch import Tensor, nn

from ..errors import UnsupportedModuleError

__all__ = ["NeuronAdapter", "mro_names"]


def mro_names(module: nn.Module) -> set[tuple[str, str]]:
    """``(module path, class name)`` of every class of ``module`` (to recognise classes without importing)."""
    return {(cls.__module__, cls.__name__) for cls in type(module).__mro__}


class NeuronAdapter:
    """What DPAP needs to know about the spiking neurons of one library.

    Subclasses implement :meth:`matches`, :meth:`split_steps` and :meth:`reset`; the
    other methods have defaults that fit a library whose neurons take one tensor, return
    the spikes and have no step modes or special layers.
    """

    name: str = "unnamed"

    def matches(self, module: nn.Module) -> bool:
        """Whether ``module`` is a spiking neuron handled by this adapter."""
        raise NotImplementedError

    def split_steps(self, module: nn.Module, output: Any) -> Tensor:
        """The spikes of one call as ``[t, B, C, ...]`` (``t`` time steps of that call)."""
        raise NotImplementedError

    def reset(self, module: nn.Module) -> None:
        """Forget the neuron's state (membrane potential)."""
        raise NotImplementedError

    def set_time_mask(self, module: nn.Module, mask: Tensor | None) -> None:
        """Silence channel ``c`` at step ``t`` where ``mask[c, t] == 0`` (temporal pruning)."""
        raise UnsupportedModuleError(
            f"{type(module).__name__} ({self.name}) cannot be silenced per time step: use temporal=False")

    def output_arity(self, module: nn.Module) -> int:
        """How many values the neuron's forward returns (spikes first)."""
        return 1

    def time_major(self, module: nn.Module) -> bool:
        """Whether ``module`` (a neuron or a step layer of the library) takes ``[T, N, ...]`` input now."""
        return False

    def is_leaf(self, module: nn.Module) -> bool:
        """Whether a (non-neuron) module of the library must be kept whole when tracing."""
        return False

    def trace_forward(self, module: nn.Module) -> Callable[..., Any] | None:
        """A torch.fx-traceable replacement of a library container's forward (``None``: trace it as it is)."""
        return None

    def single_step(self, model: nn.Module) -> ContextManager[None]:
        """A context in which the library's modules of ``model`` run one time step per call."""
        return contextlib.nullcontext()
