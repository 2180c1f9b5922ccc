"""Which neuron follows which layer: the layer -> neuron map, read from a torch.fx trace.

DPAP reads the postsynaptic trace of a prunable layer at the spiking neuron (SNN)
or activation (ANN) that follows it, possibly after BatchNorm, dropout or pooling,
while the mask lands on the layer's weight. Module order says nothing reliable
about that, so the map is taken from the traced data flow:

``layer -> [BatchNorm | Dropout | Identity | pooling | + residual]* -> neuron / activation``

The postsynaptic signal is read where a forward hook can see it: at the neuron or
activation *module* when there is one (shared modules, such as one ``nn.ReLU`` used
after several layers or a neuron called once per time step, are told apart by the
index of the call within one forward pass); for a functional activation
(``F.relu(...)``) at the last module of the chain, replaying the functional ops
after it on a detached copy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

from torch import Tensor, fx, nn

from ..adapters import is_neuron
from ..errors import GraphError
from .nodes import ADD, FLATTEN, call_indices, describe, is_layer, is_passthrough, is_terminal, module_of, nodes_in
from .replay import make_replay
from .tracer import trace_model

__all__ = ["Readout", "LayerLink", "GraphInfo", "link_layers", "upstream_of"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readout:
    """Where the postsynaptic signal of one call of a prunable layer is read.

    Attributes
    ----------
    module
        Name of the module whose forward output is read.
    call_index
        Which call of ``module`` within one forward pass (``None``: every call).
    tail
        Functional ops replayed, in order, on a detached copy of that output.
    """

    module: str
    call_index: int | None
    tail: tuple[Callable[[Tensor], Tensor], ...] = ()


@dataclass(frozen=True)
class LayerLink:
    """A prunable layer and the neuron / activation that follows it.

    Attributes
    ----------
    name
        The layer's module name.
    kind
        ``'conv'`` or ``'linear'``.
    neuron
        Name of the neuron or activation module after the layer (``None`` for a
        functional activation).
    spiking
        Whether that neuron is a spiking neuron.
    readouts
        One :class:`Readout` per call of the layer in a forward pass.
    norms
        BatchNorm modules between the layer and its neuron, masked with its units.
    upstream
        The conv/linear layer whose output feeds this layer through channel-preserving
        ops only (neurons, activations, BN, pooling, dropout, flatten), or ``None``.
    """

    name: str
    kind: Literal["conv", "linear"]
    neuron: str | None
    spiking: bool
    readouts: tuple[Readout, ...]
    norms: tuple[str, ...] = ()
    upstream: str | None = None


@dataclass(frozen=True)
class GraphInfo:
    """Result of :func:`link_layers`."""

    links: dict[str, LayerLink]
    output_layers: tuple[str, ...]


def _reaches_output(modules: Mapping[str, nn.Module], start: fx.Node) -> bool:
    stack, seen = list(start.users), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "output":
            return True
        if is_layer(modules, node):
            continue
        stack.extend(node.users)
    return False


def upstream_of(modules: Mapping[str, nn.Module], start: fx.Node) -> str | None:
    """The conv / linear layer whose output reaches ``start`` through channel-preserving ops only, or ``None``."""
    tensor_args = [a for a in start.args if isinstance(a, fx.Node)]
    node = tensor_args[0] if tensor_args else None
    while node is not None:
        if is_layer(modules, node):
            return str(node.target)
        if ADD.matches(modules, node) or not (
            is_terminal(modules, node) or is_passthrough(modules, node) or FLATTEN.matches(modules, node)
        ):
            return None
        inputs = nodes_in(node.args)  # nested too: torch.cat([x] * T, 0) repeats x over time
        node = inputs[0] if inputs else None
    return None


def _follow_chain(
    modules: Mapping[str, nn.Module], call: fx.Node, layer: str
) -> tuple[list[fx.Node], fx.Node]:
    """Nodes after ``call`` up to and including the terminal neuron/activation."""
    chain: list[fx.Node] = []
    node = call
    while True:
        users = [u for u in node.users]
        if len(users) != 1:
            where = "is not used" if not users else f"feeds {len(users)} ops ({', '.join(u.name for u in users)})"
            raise GraphError(
                f"layer {layer!r} has no spiking neuron or activation after it: its output {where} "
                "before one is reached. Fix: exclude it from the config_list (exclude_op_names=[...]) "
                "or pass neuron_map={...}."
            )
        nxt = users[0]
        if is_terminal(modules, nxt):
            chain.append(nxt)
            return chain, nxt
        if not is_passthrough(modules, nxt):
            raise GraphError(
                f"layer {layer!r} has no spiking neuron or activation after it: its output goes to "
                f"{describe(nxt)} first (only BatchNorm, dropout, pooling and residual adds may come "
                "between a layer and its neuron). Fix: exclude the layer from the config_list "
                "(exclude_op_names=[...]) or pass neuron_map={'layer': 'neuron'}."
            )
        chain.append(nxt)
        node = nxt


def _link_call(
    modules: Mapping[str, nn.Module], call: fx.Node, layer: str, call_index: Mapping[fx.Node, int]
) -> tuple[Readout, str | None, bool, list[str]]:
    chain, terminal = _follow_chain(modules, call, layer)
    norms = [
        str(n.target) for n in chain
        if isinstance(module_of(modules, n), nn.modules.batchnorm._BatchNorm)
    ]
    term_mod = module_of(modules, terminal)
    if term_mod is not None:
        return Readout(str(terminal.target), call_index[terminal]), str(terminal.target), is_neuron(term_mod), norms
    # functional activation: read at the last module of the chain and replay the rest
    anchor, tail_nodes = call, chain
    for i, node in enumerate(chain):
        if node.op == "call_module":
            anchor, tail_nodes = node, chain[i + 1:]
    tail: list[Callable[[Tensor], Tensor]] = []
    prev = anchor
    for node in tail_nodes:
        replay = make_replay(node, prev, layer)
        if replay is not None:
            tail.append(replay)
        prev = node
    return Readout(str(anchor.target), call_index[anchor], tuple(tail)), None, False, norms


def link_layers(
    model: nn.Module,
    layers: Iterable[str],
    *,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
    neuron_map: Mapping[str, str] | None = None,
) -> GraphInfo:
    """Find the neuron / activation after every layer in ``layers``.

    Parameters
    ----------
    model
        The (unwrapped or NNI-wrapped) model.
    layers
        Names of prunable conv / linear modules.
    leaf_modules, concrete_args
        Passed to :func:`trace_model`.
    neuron_map
        Explicit ``{layer: neuron module}`` entries that override the traced map; if
        it covers every layer, tracing failures are tolerated.

    Returns
    -------
    GraphInfo
        Links of the layers followed by a neuron, and the output layers (whose output
        reaches the model output without another conv/linear layer); DPAP never
        prunes output layers.
    """
    layers = list(layers)
    modules = dict(model.named_modules())
    neuron_map = dict(neuron_map or {})
    for layer, neuron in neuron_map.items():
        if layer not in modules:
            raise GraphError(f"neuron_map names layer {layer!r}, which is not a module of the model")
        if neuron not in modules:
            raise GraphError(f"neuron_map maps {layer!r} to {neuron!r}, which is not a module of the model")
    try:
        graph: fx.Graph | None = trace_model(model, leaf_modules, concrete_args)
    except GraphError:
        if all(layer in neuron_map for layer in layers):
            _logger.warning("torch.fx could not trace the model; using the given neuron_map only")
            graph = None
        else:
            raise

    calls: dict[str, list[fx.Node]] = {layer: [] for layer in layers}
    call_index: dict[fx.Node, int] = {}
    if graph is not None:
        call_index = call_indices(graph)
        for node in graph.nodes:
            if node.op == "call_module" and str(node.target) in calls:
                calls[str(node.target)].append(node)

    links: dict[str, LayerLink] = {}
    outputs: list[str] = []
    for layer in layers:
        module = modules[layer]
        kind: Literal["conv", "linear"] = "linear" if isinstance(module, nn.Linear) else "conv"
        nodes = calls[layer]
        upstream = upstream_of(modules, nodes[0]) if nodes else None
        if layer in neuron_map:
            mapped = neuron_map[layer]
            links[layer] = LayerLink(layer, kind, mapped, is_neuron(modules[mapped]),
                                     (Readout(mapped, None),), (), upstream)
            continue
        if not nodes:
            raise GraphError(
                f"layer {layer!r} is never called in the traced forward pass; exclude it from the "
                "config_list or pass neuron_map={...}"
            )
        if any(_reaches_output(modules, node) for node in nodes):
            outputs.append(layer)
            continue
        readouts: list[Readout] = []
        neurons: set[str | None] = set()
        spiking: set[bool] = set()
        norms: list[str] = []
        for node in nodes:
            readout, found, is_spiking, found_norms = _link_call(modules, node, layer, call_index)
            readouts.append(readout)
            neurons.add(found)
            spiking.add(is_spiking)
            norms += [n for n in found_norms if n not in norms]
        if len(neurons) > 1 or len(spiking) > 1:
            raise GraphError(
                f"layer {layer!r} is followed by different neurons in different calls ({sorted(map(str, neurons))}); "
                "pass neuron_map={...} to choose one"
            )
        links[layer] = LayerLink(layer, kind, neurons.pop(), spiking.pop(), tuple(readouts), tuple(norms), upstream)
    return GraphInfo(links, tuple(outputs))
