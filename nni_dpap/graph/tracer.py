"""A ``torch.fx`` tracer that keeps spiking neurons and library step layers whole."""

from __future__ import annotations

from typing import Any, Sequence

from torch import fx, nn

from ..adapters import is_leaf, is_neuron, output_arity, traceable_forward
from ..errors import GraphError

__all__ = ["trace_model"]


class _Tracer(fx.Tracer):
    """``torch.fx`` tracer that keeps spiking neurons and user-named modules as leaves.

    Tracing *into* a neuron would turn its surrogate-gradient spike function into a
    plain comparison and unroll its state handling; as a leaf it is one node.
    """

    def __init__(self, leaf_types: tuple[type[nn.Module], ...], leaf_names: frozenset[str]) -> None:
        super().__init__()
        self.leaf_types = leaf_types
        self.leaf_names = leaf_names

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if is_neuron(m) or is_leaf(m) or module_qualified_name in self.leaf_names:
            return True
        if self.leaf_types and isinstance(m, self.leaf_types):
            return True
        return bool(super().is_leaf_module(m, module_qualified_name))

    def call_module(self, m: nn.Module, forward: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        replacement = None if self.is_leaf_module(m, self.path_of_module(m)) else traceable_forward(m)
        if replacement is not None:  # a library container whose own forward cannot be traced
            return replacement(*args, **kwargs)
        out = super().call_module(m, forward, args, kwargs)
        arity = output_arity(m)
        if arity > 1:  # a neuron returning (spikes, state...): let the model unpack it
            return tuple(out[i] for i in range(arity))
        return out


def trace_model(
    model: nn.Module,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> fx.Graph:
    """Symbolically trace ``model`` with neurons (and ``leaf_modules``) kept as leaves.

    Raises
    ------
    GraphError
        If torch.fx cannot trace the model; the message says how to fix it.
    """
    leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
    leaf_names = frozenset(m for m in leaf_modules if isinstance(m, str))
    tracer = _Tracer(leaf_types, leaf_names)
    try:
        return tracer.trace(model, concrete_args=concrete_args)
    except Exception as exc:  # fx raises many exception types; all mean "cannot trace"
        raise GraphError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc}. "
            "DPAP needs the graph to find the neuron after each layer. Fix: declare the module with "
            "data-dependent control flow a leaf (leaf_modules=[MyBlock] or its name), fix non-tensor "
            "forward arguments with concrete_args={...}, or give the map yourself with "
            "neuron_map={'layer_name': 'neuron_module_name'}."
        ) from exc
