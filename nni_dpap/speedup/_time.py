"""Mask propagation without the time dimension.

NNI's ``ModelSpeedup`` assumes that every tensor has the batch at dim 0: it rebuilds
inputs with ``batch_size`` rows, randomises tensors whose dim 0 is the batch and reads
a channel as dead from an output that is constant along dim 0. Multi-step spiking
models break that: SpikingJelly's tutorial CSNN turns ``[N, C, H, W]`` into
``[T, N, C, H, W]`` with ``x.unsqueeze(0).repeat(T, 1, 1, 1, 1)`` and averages
``.mean(0)`` at the end; snnTorch models ``torch.stack`` the spikes of every step.
Which channels exist does not depend on time, so masks are propagated through a copy
of the traced graph *with the time dimension removed*: every tensor is reduced to
``[N, ...]``, the ops that create time (``unsqueeze(0)``, ``repeat``, ``stack``) or
reduce it (``mean(0)``, ``sum(0)``, ``x[-1]``) become identities, ops on time-major
tensors get their dims shifted, and the library's step modules run one step at a
time. The new graph calls the model's own modules, so NNI replaces them in the model.

Which tensors carry time is read from the shapes, not guessed from op names: the
graph is run twice with 5 and 7 samples; the dim that changes with the number of
samples is the batch (``[N, ...]``), the batch folded with time (``[T*N, ...]``) or
the batch behind a time dim (``[T, N, ...]``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import torch
from torch import Tensor, fx
from torch.utils._pytree import tree_flatten, tree_map

from ..errors import SpeedupError

__all__ = ["Layout", "layout_of", "record_layouts", "remove_time", "resize_batch"]

_SIZES = (5, 7)  # two numbers of samples that no other dim of a sensible model is a multiple of in both runs
Kind = Literal["batch", "timed", "folded", "other", "unknown"]


@dataclass(frozen=True)
class Layout:
    """Where the samples are in a tensor: ``batch`` ``[N, ...]``, ``timed`` ``[T, N, ...]``, ``folded``
    ``[T*N, ...]``, ``other`` (no samples, e.g. a constant) or ``unknown``."""

    kind: Kind
    steps: int = 1

    @property
    def has_time(self) -> bool:
        return self.kind in ("timed", "folded")


def resize_batch(inputs: tuple[Any, ...], size: int, dim: int = 0) -> tuple[Any, ...]:
    """``inputs`` with ``size`` samples along ``dim`` (rows repeated cyclically)."""
    first = next((x for x in inputs if isinstance(x, Tensor) and x.dim() > dim), None)
    if first is None:
        return inputs
    rows = first.shape[dim]
    index = torch.arange(size) % rows

    def take(x: Any) -> Any:
        if isinstance(x, Tensor) and x.dim() > dim and x.shape[dim] == rows:
            return x.index_select(dim, index.to(x.device))
        return x

    return tuple(take(x) for x in inputs)


@dataclass(frozen=True)
class _Shape:
    """A tensor's shape as one pytree leaf (a plain tuple would be flattened into its ints)."""

    dims: tuple[int, ...]


class _ShapeRecorder(fx.Interpreter):
    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.shapes: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.shapes[n] = tree_map(lambda v: _Shape(tuple(v.shape)) if isinstance(v, Tensor) else None, result)
        return result


def _classify(shape_a: _Shape | None, shape_b: _Shape | None) -> Layout:
    if shape_a is None or shape_b is None or len(shape_a.dims) != len(shape_b.dims):
        return Layout("other")
    a, b = shape_a.dims, shape_b.dims
    changed = [d for d in range(len(a)) if a[d] != b[d]]
    if not changed:
        return Layout("other")
    n_a, n_b = _SIZES
    d = changed[0]
    if len(changed) > 1 or a[d] % n_a or b[d] % n_b or a[d] // n_a != b[d] // n_b:
        return Layout("unknown")
    factor = a[d] // n_a
    if d == 0:
        return Layout("batch") if factor == 1 else Layout("folded", factor)
    if d == 1 and factor == 1:
        return Layout("timed", a[0])
    return Layout("unknown")


def record_layouts(module: fx.GraphModule, inputs: tuple[Any, ...], reset: Callable[[], None],
                   batch_dim: int = 0) -> tuple[dict[fx.Node, Any], dict[fx.Node, Any]]:
    """Run ``module`` with 5 and 7 samples along ``batch_dim`` of the inputs.

    Returns every node's :class:`Layout` (a list for tuple outputs) and its output
    shape(s) in the first run.
    """
    runs = []
    with torch.no_grad():
        for size in _SIZES:
            reset()
            recorder = _ShapeRecorder(module)
            recorder.run(*resize_batch(inputs, size, batch_dim))
            runs.append(recorder.shapes)
    reset()
    layouts: dict[fx.Node, Any] = {}
    for node in module.graph.nodes:
        flat_a, spec = tree_flatten(runs[0].get(node))
        flat_b, _ = tree_flatten(runs[1].get(node))
        if len(flat_a) != len(flat_b):
            layouts[node] = Layout("unknown")
        elif len(flat_a) == 1 and isinstance(runs[0].get(node), _Shape):
            layouts[node] = _classify(flat_a[0], flat_b[0])
        else:
            layouts[node] = [_classify(x, y) for x, y in zip(flat_a, flat_b)]
    return layouts, runs[0]


def layout_of(layouts: dict[fx.Node, Any], node: fx.Node) -> Layout:
    """A node's layout; a tuple output counts as timed if any of its tensors is."""
    value = layouts.get(node, Layout("other"))
    if isinstance(value, Layout):
        return value
    return next((v for v in value if v.has_time), next((v for v in value if v.kind == "batch"), Layout("other")))


def _inputs(node: fx.Node) -> list[fx.Node]:
    found: list[fx.Node] = []
    fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


_DIM_ARGS: dict[str, tuple[int, ...]] = {  # positional indices (after the tensor) that are dims
    "flatten": (1, 2), "unflatten": (1,), "transpose": (1, 2), "swapaxes": (1, 2), "movedim": (1, 2),
    "mean": (1,), "sum": (1,), "amax": (1,), "amin": (1,), "max": (1,), "min": (1,), "std": (1,), "var": (1,),
    "prod": (1,), "argmax": (1,), "argmin": (1,), "logsumexp": (1,), "softmax": (1,), "log_softmax": (1,),
    "cumsum": (1,), "squeeze": (1,), "unsqueeze": (1,), "cat": (1,), "concat": (1,), "stack": (1,),
}
_RESHAPES = {"view", "reshape"}
_ELEMENTWISE = {  # ops that act on every element alike (their int arguments are not dims)
    "add", "sub", "mul", "truediv", "floordiv", "pow", "neg", "iadd", "isub", "imul", "itruediv", "div", "float",
    "double", "half", "to", "type_as", "clamp", "clamp_min", "clamp_max", "relu", "sigmoid", "tanh", "abs", "exp",
    "log", "sqrt", "contiguous", "clone", "detach", "masked_fill", "where", "maximum", "minimum", "dropout",
    "leaky_relu", "gelu", "silu", "elu", "hardtanh", "relu6",
}
_REPEATS = {"repeat", "expand", "tile"}


def _name(node: fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _map_dim(dim: Any, layout: Layout, node: fx.Node) -> Any:
    if isinstance(dim, (tuple, list)):
        return type(dim)(_map_dim(d, layout, node) for d in dim)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
        return dim
    if layout.kind == "timed":
        if dim >= 2:
            return dim - 1
    elif dim >= 1:
        return dim
    raise SpeedupError(
        f"cannot propagate masks through {node.format_node()}: it works on the time or batch dim of a "
        f"{'[T, N, ...]' if layout.kind == 'timed' else '[T*N, ...]'} tensor in a way nni-dpap does not know. "
        "Fix: write the model with the library's step layers (e.g. SpikingJelly's layer.Flatten), or shrink "
        "it with its neurons in single-step mode."
    )


def _copy_with_dims(new: fx.Graph, node: fx.Node, env: dict[fx.Node, Any], layout: Layout) -> fx.Node:
    positions = _DIM_ARGS[_name(node)]
    args = list(node.args)
    for i in positions:
        if i < len(args):
            args[i] = _map_dim(args[i], layout, node)
    kwargs = dict(node.kwargs)
    for key in ("dim", "start_dim", "end_dim", "dim0", "dim1", "source", "destination"):
        if key in kwargs:
            kwargs[key] = _map_dim(kwargs[key], layout, node)
    return _create(new, node, tuple(args), kwargs, env)


def _create(new: fx.Graph, node: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any],
            env: dict[fx.Node, Any]) -> fx.Node:
    args = fx.node.map_arg(args, lambda n: env[n])
    kwargs = fx.node.map_arg(kwargs, lambda n: env[n])
    return new.create_node(node.op, node.target, args, kwargs, node.name)


def _timed_op(new: fx.Graph, node: fx.Node, env: dict[fx.Node, Any], layouts: dict[fx.Node, Any],
              source: fx.Node) -> Any:
    """An op on tensors that carry time whose output also carries time."""
    into, out = layout_of(layouts, source), layout_of(layouts, node)
    name = _name(node)
    if into.kind != out.kind or name in _REPEATS:  # fold / unfold time, or repeat it: the samples stay
        return env[source]
    if name in _RESHAPES:
        return _reshape(new, node, env, source, out)
    if name in _DIM_ARGS:
        return _copy_with_dims(new, node, env, into)
    if name.rstrip("_") in _ELEMENTWISE or not any(
            isinstance(a, int) and not isinstance(a, bool) for a in tree_flatten((node.args, node.kwargs))[0]):
        return _create(new, node, node.args, dict(node.kwargs), env)
    raise SpeedupError(
        f"cannot propagate masks through {node.format_node()} of a tensor with a time dim: nni-dpap removes the "
        "time dim for mask propagation and does not know this op. Fix: shrink the model with its neurons in "
        "single-step mode, or express the op with the library's step layers."
    )


def _reshape(new: fx.Graph, node: fx.Node, env: dict[fx.Node, Any], source: fx.Node, out: Layout) -> fx.Node:
    meta = node.meta.get("nni_dpap_shape")
    if not isinstance(meta, _Shape):
        raise SpeedupError(f"cannot propagate masks through {node.format_node()}: its output shape is unknown")
    rest = meta.dims[2:] if out.kind == "timed" else meta.dims[1:]
    return new.create_node(node.op, node.target, (env[source], -1, *rest), {}, node.name)


def remove_time(module: fx.GraphModule, layouts: dict[fx.Node, Any], shapes: dict[fx.Node, Any]) -> fx.Graph | None:
    """A copy of ``module``'s graph in which no tensor carries time, or ``None`` if none does.

    Parameters
    ----------
    module
        The traced model (library step modules and neurons are leaves).
    layouts
        :func:`record_layouts` of it.
    shapes
        The output shape of every node in one of those runs (for reshapes).
    """
    graph = module.graph
    if not any(layout_of(layouts, n).has_time for n in graph.nodes):
        return None
    for node in graph.nodes:
        node.meta["nni_dpap_shape"] = shapes.get(node)
    new = fx.Graph()
    env: dict[fx.Node, Any] = {}
    for node in graph.nodes:
        layout = layout_of(layouts, node)
        timed_inputs = [n for n in _inputs(node) if layout_of(layouts, n).has_time]
        if node.op == "placeholder" and layout.kind == "timed":  # a [T, N, ...] input: keep one step
            placeholder = new.node_copy(node, lambda n: env[n])
            env[node] = new.call_function(operator.getitem, (placeholder, 0))
        elif node.op in ("placeholder", "get_attr", "output", "call_module"):
            env[node] = new.node_copy(node, lambda n: env[n])
        elif layout.has_time and not timed_inputs:  # time is created here (unsqueeze, repeat, stack...)
            env[node] = env[_first(node, layouts, ("batch",))]
        elif timed_inputs and layout.kind == "batch":  # time is reduced here (mean(0), x[-1]...)
            env[node] = env[timed_inputs[0]]
        elif timed_inputs and layout.has_time:
            env[node] = _timed_op(new, node, env, layouts, timed_inputs[0])
        else:
            env[node] = new.node_copy(node, lambda n: env[n])
    new.lint()
    return new


def _first(node: fx.Node, layouts: dict[fx.Node, Any], kinds: Sequence[str]) -> fx.Node:
    for candidate in _inputs(node):
        if layout_of(layouts, candidate).kind in kinds:
            return candidate
    raise SpeedupError(f"cannot propagate masks through {node.format_node()}: it creates a time dim from no batch")
