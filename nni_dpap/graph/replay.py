"""Replaying the functional ops after a layer's last module (``F.relu(self.bn(self.conv(x)))``) in a hook."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, fx

from ..errors import GraphError
from .nodes import DROPOUT_FUNCTIONS, describe, nodes_in

__all__ = ["make_replay"]


def _substitute(value: Any, prev: fx.Node, x: Tensor) -> Any:
    if isinstance(value, fx.Node):
        return x if value is prev else value
    if isinstance(value, (list, tuple)):
        return type(value)(_substitute(v, prev, x) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, prev, x) for k, v in value.items()}
    return value


def make_replay(node: fx.Node, prev: fx.Node, layer: str) -> Callable[[Tensor], Tensor] | None:
    others = [n for n in nodes_in((node.args, node.kwargs)) if n is not prev]
    if others:
        raise GraphError(
            f"cannot read the activation after layer {layer!r}: {describe(node)} also takes "
            f"{[n.name for n in others]}, so it cannot be replayed from a hook. Fix: use an activation "
            "module (e.g. nn.ReLU) after the layer, or pass neuron_map={...}."
        )
    if node.op == "call_function" and node.target in DROPOUT_FUNCTIONS:
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
