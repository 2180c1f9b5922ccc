"""How layers feed each other, read from a torch.fx trace (for counting what pruning removed)."""

from __future__ import annotations

from typing import Any, Sequence

from torch import fx, nn

from ..adapters import is_neuron
from .links import upstream_of
from .nodes import is_layer, module_of, nodes_in
from .tracer import trace_model

__all__ = ["upstream_layers", "spike_driven_layers"]


def upstream_layers(
    model: nn.Module,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> dict[str, str | None]:
    """For every conv / linear layer, the conv / linear layer that feeds it directly.

    "Directly" means through neurons, activations, BatchNorm, pooling, dropout and
    flatten only, so that the upstream layer's output units map onto this layer's
    input units (one channel onto ``in_features / channels`` consecutive features
    after a flatten). ``None`` for the first layer and after merges (add, cat).
    """
    graph = trace_model(model, leaf_modules, concrete_args)
    modules = dict(model.named_modules())
    result: dict[str, str | None] = {}
    for node in graph.nodes:
        if is_layer(modules, node) and str(node.target) not in result:
            result[str(node.target)] = upstream_of(modules, node)
    return result


def _is_neuron_node(modules: dict[str, nn.Module], node: fx.Node) -> bool:
    module = module_of(modules, node)
    return module is not None and is_neuron(module)


def spike_driven_layers(
    model: nn.Module,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> set[str]:
    """Conv / linear layers whose input depends on the output of a spiking neuron.

    Their inputs are events (spikes, possibly pooled), so each non-zero input costs an
    accumulate; the others (e.g. the first layer of a directly encoded SNN) see analog
    values and cost multiply-accumulates.
    """
    graph = trace_model(model, leaf_modules, concrete_args)
    modules = dict(model.named_modules())
    driven: dict[fx.Node, bool] = {}
    result: set[str] = set()
    for node in graph.nodes:  # topological order
        parents = nodes_in((node.args, node.kwargs))
        from_spikes = any(driven.get(p, False) or _is_neuron_node(modules, p) for p in parents)
        driven[node] = from_spikes
        if is_layer(modules, node) and from_spikes:
            result.add(str(node.target))
    return result
