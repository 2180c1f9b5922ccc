"""What a node of a traced graph is, for DPAP: a layer, a neuron/activation, a pass-through op, a flatten, an add.

One op kind is described by :class:`OpKind` (the module types, functions and tensor
methods that are that kind) and one dispatcher, :meth:`OpKind.matches`, reads a node
whether it calls a module, a function or a method.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..adapters import is_neuron

__all__ = ["PRUNABLE_TYPES", "LAYER_TYPES", "OpKind", "TERMINAL", "PASS", "FLATTEN", "ADD", "DROPOUT_FUNCTIONS",
           "module_of", "is_layer", "is_terminal", "is_passthrough", "is_time_fold", "describe", "nodes_in",
           "call_indices"]

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)
DROPOUT_FUNCTIONS: frozenset[Any] = frozenset({F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout})


@dataclass(frozen=True)
class OpKind:
    """A kind of op, whether written as a module, a function or a tensor method."""

    modules: tuple[type[nn.Module], ...] = ()
    functions: frozenset[Any] = field(default_factory=frozenset)
    methods: frozenset[str] = field(default_factory=frozenset)

    def matches(self, modules: Mapping[str, nn.Module], node: fx.Node) -> bool:
        if node.op == "call_module":
            module = modules.get(str(node.target))
            return module is not None and isinstance(module, self.modules)
        if node.op == "call_function":
            return node.target in self.functions
        if node.op == "call_method":
            return node.target in self.methods
        return False


TERMINAL = OpKind(  # activations (neurons are recognised by their adapters)
    modules=(nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
             nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus),
    functions=frozenset({F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
                         F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, F.sigmoid,
                         torch.tanh, F.tanh, F.softplus, F.prelu}),
    methods=frozenset({"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_"}),
)
PASS = OpKind(  # ops that keep the channels: normalisation, dropout, pooling
    modules=(nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Identity,
             nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
             nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd),
    functions=DROPOUT_FUNCTIONS | {F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.max_pool1d, F.max_pool2d,
                                   F.max_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
                                   F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
                                   torch.max_pool2d},
    methods=frozenset({"contiguous"}),
)
ADD = OpKind(functions=frozenset({operator.add, operator.iadd, torch.add}), methods=frozenset({"add", "add_"}))
FLATTEN = OpKind(modules=(nn.Flatten,), functions=frozenset({torch.flatten}),
                 methods=frozenset({"flatten", "view", "reshape"}))


def module_of(modules: Mapping[str, nn.Module], node: fx.Node) -> nn.Module | None:
    """The module a ``call_module`` node calls (``None`` for other nodes)."""
    return modules.get(str(node.target)) if node.op == "call_module" else None


def is_layer(modules: Mapping[str, nn.Module], node: fx.Node) -> bool:
    module = module_of(modules, node)
    return module is not None and isinstance(module, LAYER_TYPES)


def is_terminal(modules: Mapping[str, nn.Module], node: fx.Node) -> bool:
    """A spiking neuron or an activation: where a layer's postsynaptic signal is read."""
    module = module_of(modules, node)
    return (module is not None and is_neuron(module)) or TERMINAL.matches(modules, node)


def _is_repeat_over_time(node: fx.Node) -> bool:
    """``torch.cat([x] * T, 0)`` (:class:`~nni_dpap.snn.DirectEncoder`): the same tensor at every step."""
    if node.op != "call_function" or node.target is not torch.cat or not node.args:
        return False
    parts, dim = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return isinstance(parts, (list, tuple)) and len(set(parts)) == 1 and isinstance(dim, int) and dim == 0


def is_time_fold(node: fx.Node) -> bool:
    """``flatten(0, 1)`` / ``unflatten(0, ...)`` / repeating over time: time folded into the batch keeps channels."""
    if _is_repeat_over_time(node):
        return True
    if node.op != "call_method" or node.target not in ("flatten", "unflatten"):
        return False
    args = list(node.args[1:])
    if node.target == "flatten":
        return bool(args[:2] == [0, 1] or (node.kwargs.get("start_dim") == 0 and node.kwargs.get("end_dim") == 1))
    return bool(args[:1] == [0] or node.kwargs.get("dim") == 0)


def is_passthrough(modules: Mapping[str, nn.Module], node: fx.Node) -> bool:
    """An op between a layer and its neuron that keeps the channels (BN, dropout, pooling, adds, time folds)."""
    return is_time_fold(node) or PASS.matches(modules, node) or ADD.matches(modules, node)


def describe(node: fx.Node) -> str:
    name = getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {name!s} (node {node.name!r})"


def nodes_in(value: Any) -> list[fx.Node]:
    """The graph nodes inside ``value`` (args, kwargs, nested containers)."""
    found: list[fx.Node] = []
    fx.node.map_arg(value, found.append)
    return found


def call_indices(graph: fx.Graph) -> dict[fx.Node, int]:
    """For every ``call_module`` node, how many calls of the same module come before it in a forward."""
    counts: dict[str, int] = {}
    index: dict[fx.Node, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            key = str(node.target)
            index[node] = counts.get(key, 0)
            counts[key] = index[node] + 1
    return index
