"""Driving NNI 3.0's ``ModelSpeedup`` on torch 2.14 with spiking neurons.

* ``ModelSpeedup``'s default tracer (``concrete_trace``) crashes on torch 2.14; it is
  handed a ``torch.fx`` GraphModule from nni-dpap's tracer instead, in which neurons
  are leaf modules.
* Neurons get an explicit channel-wise rule (:class:`PassThroughMaskUpdater`: every
  tensor output keeps the mask of the neuron's input), since NNI would read a channel
  whose spikes happen to be zero as dead; their per-channel parameters are sliced by
  :func:`replace_neuron`.
* NNI replaces a layer by a plain torch layer and returns it in training mode; the
  library class of a layer that subclasses the torch one is given back
  (:func:`restore_subclasses`) and the caller's mode is restored.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten, tree_map

with warnings.catch_warnings():  # NNI re-registers torch.fx pytree nodes at import and warns about it
    warnings.simplefilter("ignore")
    from nni.compression.speedup import ModelSpeedup
    from nni.compression.speedup.mask_updater import DefaultMaskUpdater, NoChangeMaskUpdater
    from nni.compression.speedup.replacer import DefaultReplacer

from ..errors import ShapeError, SpeedupError
from ..slicing import KeptIndices

__all__ = ["run_model_speedup", "replace_neuron", "restore_subclasses", "PassThroughMaskUpdater"]

_logger = logging.getLogger(__name__)


def _coarse(mask: Any, dim: int) -> Tensor | None:
    """NNI's ``convert_to_coarse_mask``: indices along ``dim`` that are not masked everywhere."""
    if isinstance(mask, (tuple, list)):
        mask = mask[0] if len(mask) == 1 else None
    if not isinstance(mask, Tensor) or mask.dim() <= (dim if dim >= 0 else mask.dim() + dim):
        return None
    dims = [d for d in range(mask.dim()) if d != (dim if dim >= 0 else mask.dim() + dim)]
    return mask.sum(dims).ne(0).nonzero().flatten()


class _RecordingReplacer(DefaultReplacer):
    """NNI's default replacement, remembering the kept unit indices of every replaced module."""

    def __init__(self, rules: dict[str, Any], record: dict[str, KeptIndices]) -> None:
        super().__init__(rules)
        self.record = record

    def replace_modules(self, speedup: Any) -> None:
        for node, info in speedup.node_infos.items():
            if node.op != "call_module" or node.target in self.record:
                continue
            dim = -1 if isinstance(speedup.fetch_attr(node.target), nn.Linear) else 1
            in_masks = [speedup.node_infos[a].output_masks for a in node.args[:1] if isinstance(a, fx.Node)]
            self.record[str(node.target)] = KeptIndices(_coarse(info.output_masks, dim), _coarse(in_masks, dim))
        super().replace_modules(speedup)


class PassThroughMaskUpdater(DefaultMaskUpdater):
    """Neurons and time codecs: every tensor output keeps the mask of the module's first input.

    Unlike NNI's ``NoChangeMaskUpdater`` this also serves neurons that return
    ``(spikes, membrane)`` (snnTorch): each tensor of the output gets the mask.
    """

    def __init__(self, types: tuple[type[nn.Module], ...]) -> None:
        self.types = types

    def detect(self, model_speedup: Any, node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(model_speedup.fetch_attr(node.target), self.types)

    def direct_update_process(self, model_speedup: Any, node: fx.Node) -> None:
        info = model_speedup.node_infos[node]
        source = node.args[0] if node.args else None
        mask = model_speedup.node_infos[source].output_masks if isinstance(source, fx.Node) else None

        def follow(output: Any) -> Any:
            if not isinstance(output, Tensor):
                return None
            if isinstance(mask, Tensor) and mask.shape[1:] == output.shape[1:]:
                return mask.clone().detach()
            return torch.ones_like(output[:1], dtype=torch.float32)

        info.output_masks = tree_map(follow, info.output_origin)
        if model_speedup.garbage_collect_values:
            for to_delete in model_speedup.user_to_last_uses.get(node, []):
                model_speedup.node_infos[to_delete].output_randomize = None

    def indirect_update_process(self, model_speedup: Any, node: fx.Node) -> None:
        info = model_speedup.node_infos[node]
        flat_grads, _ = tree_flatten(info.output_grad)
        flat_masks, _ = tree_flatten(info.output_masks)
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node):
            return
        grads = [g * m for g, m in zip(flat_grads, flat_masks) if isinstance(g, Tensor) and isinstance(m, Tensor)]
        origin = model_speedup.node_infos[source].output_origin
        grads = [g for g in grads if isinstance(origin, Tensor) and g.shape == origin.shape]
        if grads:
            total = torch.stack(grads).sum(0)
            carrier = torch.rand_like(total)
            carrier.grad = total
            model_speedup.indirect_pass_grad(source, carrier)


class _ItemMaskUpdater(NoChangeMaskUpdater):
    """NNI's rule for ``getitem`` of a tuple output, which crashes when an item gets no gradient back (the
    membrane of a neuron's last step, which nothing reads)."""

    def detect(self, model_speedup: Any, node: fx.Node) -> bool:
        return node.op == "call_function" and node.target is operator.getitem and super().detect(model_speedup, node)

    def indirect_getitem(self, model_speedup: Any, node: fx.Node) -> None:
        if model_speedup.node_infos[node].output_grad is not None:
            super().indirect_getitem(model_speedup, node)


def _channel_keep(mask: Tensor | None) -> Tensor | None:
    """Indices of the channels (dim 1 of a ``[N, C, ...]`` mask) that are not masked everywhere."""
    if not isinstance(mask, Tensor) or mask.dim() < 2:
        return None
    alive = mask.flatten(2).ne(0).any(-1) if mask.dim() > 2 else mask.ne(0)
    return alive.any(0).nonzero().flatten()


def replace_neuron(module: nn.Module, masks: tuple[Any, Any, Any]) -> nn.Module:
    """Keep a neuron, slicing its per-channel parameters and buffers to the kept channels.

    Scalar parameters (a PLIF's shared ``w``, thresholds) are kept as they are.
    """
    in_masks, _, _ = masks
    mask = in_masks[0] if isinstance(in_masks, (tuple, list)) and in_masks else in_masks
    keep = _channel_keep(mask)
    if keep is None:
        return module
    full = mask.shape[1]  # channels before removal: per-channel tensors have this many rows
    for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        if tensor is None or tensor.dim() == 0 or tensor.shape[0] != full:
            continue
        sliced = tensor.detach()[keep.to(tensor.device)].clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
        else:
            module.register_buffer(name, sliced, persistent=name not in module._non_persistent_buffers_set)
    return module


def restore_subclasses(model: nn.Module, before: Mapping[str, nn.Module]) -> None:
    """NNI replaces a layer by a plain torch layer; give it back its original class when that subclasses
    the new one (e.g. SpikingJelly's ``layer.Conv2d``, which folds ``[T, N, ...]`` itself)."""
    for name, new in list(model.named_modules()):
        old = before.get(name)
        if old is None or old is new or type(new) is type(old) or not isinstance(old, type(new)):
            continue
        # plain attributes only: a method bound to the old object (NNI's unwrap leaves ``forward`` as one)
        # would run the old, unshrunk module
        extra = {k: v for k, v in old.__dict__.items()
                 if k not in new.__dict__ and getattr(v, "__self__", None) is not old}
        new.__class__ = type(old)
        new.__dict__.update(extra)


@contextmanager
def _quiet_nni() -> Iterator[None]:
    """Silence what NNI's speedup prints (a stray ``print``, INFO logs, torch.std warnings) while it runs."""
    nni_root = logging.getLogger("nni")
    level = nni_root.level
    nni_root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        nni_root.setLevel(level)


def _randomized(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return torch.rand_like(value) + 0.1
    if isinstance(value, (tuple, list)):
        return type(value)(_randomized(v) for v in value)
    return value


def run_model_speedup(model: nn.Module, inputs: tuple[Any, ...], batch: int, masks: dict[str, dict[str, Tensor]],
                      graph_module: fx.GraphModule, pass_through: tuple[type[nn.Module], ...],
                      neurons: tuple[type[nn.Module], ...]) -> dict[str, KeptIndices]:
    """Run NNI's ``ModelSpeedup`` on ``model`` with ``graph_module``; return the kept indices per module.

    ``pass_through`` modules keep their input's mask (neurons, time codecs); ``neurons``
    additionally have their per-channel parameters sliced, the others are kept as they are.
    """
    record: dict[str, KeptIndices] = {}
    rules: dict[str, Any] = {cls.__name__: (lambda module, masks: module) for cls in pass_through}
    rules.update({cls.__name__: replace_neuron for cls in neurons})
    replacers: list[Any] = [_RecordingReplacer(rules, record)]  # a new list on every call: NNI appends to it
    updaters = [_ItemMaskUpdater(), *([PassThroughMaskUpdater(pass_through)] if pass_through else [])]
    nni_logger = logging.getLogger("nni_dpap.speedup.nni")
    nni_logger.setLevel(logging.WARNING)
    try:
        with _quiet_nni():
            ModelSpeedup(
                model, _randomized(inputs), masks, batch_size=batch,
                customized_mask_updaters=updaters, customized_replacers=replacers, graph_module=graph_module,
                logger=nni_logger,
            ).speedup_model()
    except (SpeedupError, ShapeError):
        raise
    except Exception as exc:
        raise SpeedupError(
            f"NNI ModelSpeedup failed on {type(model).__name__}: {type(exc).__name__}: {exc}. If a module it "
            "names has data-dependent control flow, declare it a leaf (leaf_modules=[...]); if a custom layer "
            "cannot be shrunk, exclude the layers around it from pruning."
        ) from exc
    return record
