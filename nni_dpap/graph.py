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
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from .adapters import is_leaf, is_neuron, output_arity, traceable_forward
from .errors import GraphError

__all__ = ["Readout", "LayerLink", "GraphInfo", "trace_model", "link_layers", "upstream_layers", "PRUNABLE_TYPES"]

_logger = logging.getLogger(__name__)

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)
_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)

_ACTIVATION_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
)
_ACTIVATION_FUNCTIONS: set[Any] = {
    F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu,
    F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, F.sigmoid, torch.tanh,
    F.tanh, F.softplus, F.prelu,
}
_ACTIVATION_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}

_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Identity,
    nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)
_DROPOUT_FUNCTIONS: set[Any] = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout}
_PASS_FUNCTIONS: set[Any] = _DROPOUT_FUNCTIONS | {
    F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.max_pool2d,
}
_PASS_METHODS = {"contiguous"}
_ADD_FUNCTIONS: set[Any] = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_FLATTEN_FUNCTIONS: set[Any] = {torch.flatten}
_FLATTEN_METHODS = {"flatten", "view", "reshape"}


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
        return super().is_leaf_module(m, module_qualified_name)

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


# ---------------------------------------------------------------------------------------
# node classification
# ---------------------------------------------------------------------------------------
def _module(modules: Mapping[str, nn.Module], node: fx.Node) -> nn.Module | None:
    return modules.get(str(node.target)) if node.op == "call_module" else None


def _is_terminal(modules: Mapping[str, nn.Module], node: fx.Node) -> bool:
    mod = _module(modules, node)
    if mod is not None:
        return is_neuron(mod) or isinstance(mod, _ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in _ACTIVATION_FUNCTIONS
    if node.op == "call_method":
        return node.target in _ACTIVATION_METHODS
    return False


def _is_add(node: fx.Node) -> bool:
    return (node.op == "call_function" and node.target in _ADD_FUNCTIONS) or (
        node.op == "call_method" and node.target in _ADD_METHODS
    )


def _is_time_fold(node: fx.Node) -> bool:
    """``flatten(0, 1)`` / ``unflatten(0, ...)``: folding time into the batch or back keeps the channels."""
    if node.op != "call_method" or node.target not in ("flatten", "unflatten"):
        return False
    args = list(node.args[1:])
    if node.target == "flatten":
        return args[:2] == [0, 1] or (node.kwargs.get("start_dim") == 0 and node.kwargs.get("end_dim") == 1)
    return (args[:1] == [0]) or node.kwargs.get("dim") == 0


def _is_passthrough(modules: Mapping[str, nn.Module], node: fx.Node) -> bool:
    if _is_time_fold(node):
        return True
    mod = _module(modules, node)
    if mod is not None:
        return isinstance(mod, _PASS_MODULES)
    if node.op == "call_function":
        return node.target in _PASS_FUNCTIONS or _is_add(node)
    if node.op == "call_method":
        return node.target in _PASS_METHODS or _is_add(node)
    return False


def _is_flatten(modules: Mapping[str, nn.Module], node: fx.Node) -> bool:
    mod = _module(modules, node)
    if mod is not None:
        return isinstance(mod, nn.Flatten)
    if node.op == "call_function":
        return node.target in _FLATTEN_FUNCTIONS
    if node.op == "call_method":
        return node.target in _FLATTEN_METHODS
    return False


def _describe(node: fx.Node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return f"{node.op} {name!s} (node {node.name!r})"


# ---------------------------------------------------------------------------------------
# replay of functional tails
# ---------------------------------------------------------------------------------------
def _substitute(value: Any, prev: fx.Node, x: Tensor) -> Any:
    if isinstance(value, fx.Node):
        return x if value is prev else value
    if isinstance(value, (list, tuple)):
        return type(value)(_substitute(v, prev, x) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, prev, x) for k, v in value.items()}
    return value


def _nodes_in(value: Any) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return found


def _make_replay(node: fx.Node, prev: fx.Node, layer: str) -> Callable[[Tensor], Tensor] | None:
    others = [n for n in _nodes_in((node.args, node.kwargs)) if n is not prev]
    if others:
        raise GraphError(
            f"cannot read the activation after layer {layer!r}: {_describe(node)} also takes "
            f"{[n.name for n in others]}, so it cannot be replayed from a hook. Fix: use an activation "
            "module (e.g. nn.ReLU) after the layer, or pass neuron_map={...}."
        )
    if node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
        return None  # dropout is the identity for the trace
    kwargs = dict(node.kwargs)
    if "inplace" in kwargs:
        kwargs["inplace"] = False
    if node.op == "call_function":
        fn = node.target
        args = node.args

        def replay_function(x: Tensor) -> Tensor:
            return fn(*_substitute(args, prev, x), **_substitute(kwargs, prev, x))  # type: ignore[operator]

        return replay_function
    method = str(node.target).rstrip("_")
    margs = node.args

    def replay_method(x: Tensor) -> Tensor:
        sub = _substitute(margs, prev, x)
        return getattr(sub[0], method)(*sub[1:], **_substitute(kwargs, prev, x))

    return replay_method


# ---------------------------------------------------------------------------------------
# linking
# ---------------------------------------------------------------------------------------
def _call_indices(graph: fx.Graph) -> dict[fx.Node, int]:
    counts: dict[str, int] = {}
    index: dict[fx.Node, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            key = str(node.target)
            index[node] = counts.get(key, 0)
            counts[key] = index[node] + 1
    return index


def _reaches_output(modules: Mapping[str, nn.Module], start: fx.Node) -> bool:
    stack, seen = list(start.users), set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "output":
            return True
        mod = _module(modules, node)
        if mod is not None and isinstance(mod, _LAYER_TYPES):
            continue
        stack.extend(node.users)
    return False


def _upstream(modules: Mapping[str, nn.Module], start: fx.Node) -> str | None:
    tensor_args = [a for a in start.args if isinstance(a, fx.Node)]
    node = tensor_args[0] if tensor_args else None
    while node is not None:
        mod = _module(modules, node)
        if mod is not None and isinstance(mod, _LAYER_TYPES):
            return str(node.target)
        if _is_add(node) or not (
            _is_terminal(modules, node) or _is_passthrough(modules, node) or _is_flatten(modules, node)
        ):
            return None
        inputs = [a for a in node.args if isinstance(a, fx.Node)]
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
        if _is_terminal(modules, nxt):
            chain.append(nxt)
            return chain, nxt
        if not _is_passthrough(modules, nxt):
            raise GraphError(
                f"layer {layer!r} has no spiking neuron or activation after it: its output goes to "
                f"{_describe(nxt)} first (only BatchNorm, dropout, pooling and residual adds may come "
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
        if isinstance(_module(modules, n), nn.modules.batchnorm._BatchNorm)
    ]
    term_mod = _module(modules, terminal)
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
        replay = _make_replay(node, prev, layer)
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
        call_index = _call_indices(graph)
        for node in graph.nodes:
            if node.op == "call_module" and str(node.target) in calls:
                calls[str(node.target)].append(node)

    links: dict[str, LayerLink] = {}
    outputs: list[str] = []
    for layer in layers:
        module = modules[layer]
        kind: Literal["conv", "linear"] = "linear" if isinstance(module, nn.Linear) else "conv"
        nodes = calls[layer]
        upstream = _upstream(modules, nodes[0]) if nodes else None
        if layer in neuron_map:
            neuron = neuron_map[layer]
            links[layer] = LayerLink(layer, kind, neuron, is_neuron(modules[neuron]),
                                     (Readout(neuron, None),), (), upstream)
            continue
        if not nodes:
            raise GraphError(
                f"layer {layer!r} is never called in the traced forward pass; exclude it from the "
                "config_list or pass neuron_map={...}"
            )
        if any(_reaches_output(modules, node) for node in nodes):
            outputs.append(layer)
            continue
        readouts, neurons, spiking, norms = [], set(), set(), []
        for node in nodes:
            readout, neuron, is_spiking, found_norms = _link_call(modules, node, layer, call_index)
            readouts.append(readout)
            neurons.add(neuron)
            spiking.add(is_spiking)
            norms += [n for n in found_norms if n not in norms]
        if len(neurons) > 1 or len(spiking) > 1:
            raise GraphError(
                f"layer {layer!r} is followed by different neurons in different calls ({sorted(map(str, neurons))}); "
                "pass neuron_map={...} to choose one"
            )
        links[layer] = LayerLink(layer, kind, neurons.pop(), spiking.pop(), tuple(readouts), tuple(norms), upstream)
    return GraphInfo(links, tuple(outputs))


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
        mod = _module(modules, node)
        if mod is not None and isinstance(mod, _LAYER_TYPES) and str(node.target) not in result:
            result[str(node.target)] = _upstream(modules, node)
    return result


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
        parents = _nodes_in((node.args, node.kwargs))
        mod = _module(modules, node)
        from_spikes = any(driven.get(p, False) or (_module(modules, p) is not None and is_neuron(_module(modules, p)))
                          for p in parents)
        driven[node] = from_spikes
        if mod is not None and isinstance(mod, _LAYER_TYPES) and from_spikes:
            result.add(str(node.target))
    return result
