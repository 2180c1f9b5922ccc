"""Physical removal of pruned channels and neurons with NNI's ``ModelSpeedup``, on torch 2.14.

NNI 3.0's ``ModelSpeedup`` does the surgery, but three of its defaults break here,
so :func:`speedup` drives it differently:

* Its default tracer (``concrete_trace``) crashes on torch 2.14 (a ``None``
  ``__module__`` in ``concrete_tracer.py``). We hand it a ``torch.fx.GraphModule``
  traced by nni-dpap's tracer instead, in which spiking neurons are leaf modules
  (traced into, their surrogate spike function would become a plain comparison).
* It decides what is dead from intermediate outputs that are constant over the
  batch. Spikes are zero most of the time, and NNI only randomises tensors whose
  batch dimension equals ``batch_size`` (it also rebuilds the input with that many
  rows), which the folded ``[T*B, ...]`` tensors of an SNN never do; it then removed
  live features. Here neurons get an explicit channel-wise rule (output mask = input
  mask), and the masks are propagated with one time step (``T = 1`` on every neuron,
  encoder and decoder while NNI works): which channels exist does not depend on T,
  and every tensor then has the batch at dim 0, so NNI randomises all of them.
* It returns replaced modules in training mode and edits the masks it is given:
  the caller's mode and masks are restored / copied.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, fx, nn

with warnings.catch_warnings():  # NNI re-registers torch.fx pytree nodes at import and warns about it
    warnings.simplefilter("ignore")
    from nni.compression.speedup import ModelSpeedup
    from nni.compression.speedup.mask_updater import NoChangeMaskUpdater
    from nni.compression.speedup.replacer import DefaultReplacer

from .adapters import find_adapter, single_step_contexts
from .errors import ShapeError, SpeedupError
from .graph import trace_model
from .snn import BaseNeuron, DirectEncoder, TimeAverage

__all__ = ["speedup", "speedup_with_indices", "KeptIndices"]

_logger = logging.getLogger(__name__)
_MASKS = Mapping[str, Mapping[str, Tensor]]
_TIME_MODULES = (BaseNeuron, DirectEncoder, TimeAverage)


@dataclass(frozen=True)
class KeptIndices:
    """Which output and input units of a module survived :func:`speedup` (``None``: all)."""

    out: Tensor | None
    inp: Tensor | None


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
            in_masks = [speedup.node_infos[a].output_masks for a in node.args if isinstance(a, fx.Node)]
            self.record[str(node.target)] = KeptIndices(_coarse(info.output_masks, dim), _coarse(in_masks, dim))
        super().replace_modules(speedup)


def _neurons(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if find_adapter(m) is not None]


def _reset(model: nn.Module) -> None:
    for module in _neurons(model):
        adapter = find_adapter(module)
        assert adapter is not None
        adapter.reset(module)


def _channel_keep(mask: Tensor | None) -> Tensor | None:
    """Indices of the channels (dim 1 of a ``[N, C, ...]`` mask) that are not masked everywhere."""
    if not isinstance(mask, Tensor) or mask.dim() < 2:
        return None
    alive = mask.flatten(2).ne(0).any(-1) if mask.dim() > 2 else mask.ne(0)
    return alive.any(0).nonzero().flatten()


def _replace_neuron(module: nn.Module, masks: tuple[Any, Any, Any]) -> nn.Module:
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
        if tensor is None or tensor.dim() == 0:
            continue
        if tensor.shape[0] != full:
            continue
        sliced = tensor.detach()[keep.to(tensor.device)].clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
        else:
            module.register_buffer(name, sliced, persistent=name not in module._non_persistent_buffers_set)
    return module


@contextmanager
def _single_time_step(model: nn.Module) -> Iterator[None]:
    """Temporarily run one time step: ``T = 1`` on nni-dpap's neurons, encoders and decoders, single-step
    mode for libraries that have one (the model's forward must handle it, as SpikingJelly models written
    for both step modes do)."""
    saved = [(m, m.T) for m in model.modules() if isinstance(m, _TIME_MODULES) and m.T is not None]
    for module, _ in saved:
        module.T = 1
    try:
        with contextlib.ExitStack() as stack:
            for context in single_step_contexts(model):  # other libraries' step modes (SpikingJelly)
                stack.enter_context(context)
            yield
    finally:
        for module, T in saved:
            module.T = T


def _check_layout(model: nn.Module, dummy_input: tuple[Any, ...]) -> None:
    """Every neuron must see the input's batch at dim 0 (true once T = 1)."""
    batch = int(dummy_input[0].shape[0])
    sizes: set[int] = set()
    handles = [n.register_forward_pre_hook(lambda m, args: sizes.add(int(args[0].shape[0]))) for n in _neurons(model)]
    try:
        with torch.no_grad():
            model(*dummy_input)
    finally:
        for handle in handles:
            handle.remove()
        _reset(model)
    if sizes - {batch}:
        raise ShapeError(
            f"with one time step the spiking neurons see batch sizes {sorted(sizes)} but the input has {batch}: "
            "speedup supports the time-major fold [T*B, ...] with nni_dpap neurons (T set per module) and "
            "models that loop over time with single-step neurons"
        )


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


def _restore_subclasses(model: nn.Module, before: Mapping[str, nn.Module]) -> None:
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


def _structured(masks: _MASKS) -> dict[str, dict[str, Tensor]]:
    """Keep only what can be removed: whole output units (rows) of every weight.

    Fine-grained zeros (pruned synapses) stay as zeros in the dense shrunk weights.
    Handing them to NNI would be wrong: it removes a linear layer's input feature
    whose weight column is all zero, although the layer before can only drop whole
    channels, so the shrunk model no longer fits together.
    """
    out: dict[str, dict[str, Tensor]] = {}
    for module, targets in masks.items():
        out[module] = {}
        for target, mask in targets.items():
            if mask is None:
                continue
            mask = mask.detach()
            if target == "weight" and mask.dim() > 1:
                rows = mask.flatten(1).ne(0).any(1)
                mask = rows.view(-1, *([1] * (mask.dim() - 1))).expand(mask.shape).to(mask.dtype).clone()
            out[module][target] = mask.clone()
    return out


def _randomized(value: Any) -> Any:
    if isinstance(value, Tensor) and value.is_floating_point():
        return torch.rand_like(value) + 0.1
    if isinstance(value, (tuple, list)):
        return type(value)(_randomized(v) for v in value)
    return value


def speedup_with_indices(
    model: nn.Module,
    dummy_input: Tensor | tuple[Any, ...],
    masks: _MASKS,
    *,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> dict[str, KeptIndices]:
    """:func:`speedup`, returning the kept output / input indices of every module NNI visited."""
    inputs = dummy_input if isinstance(dummy_input, tuple) else (dummy_input,)
    masks_copy = _structured(masks)
    modules = dict(model.named_modules())
    unknown = sorted(m for m in masks_copy if m not in modules)
    if unknown:
        raise SpeedupError(f"masks name modules that are not in the model: {unknown}")
    was_training = model.training
    record: dict[str, KeptIndices] = {}
    _reset(model)
    with _single_time_step(model), torch.enable_grad():  # NNI propagates masks through gradients
        _check_layout(model, inputs)
        # encoders and decoders are identities at T = 1: leaves that keep the masks
        leaves = (*leaf_modules, DirectEncoder, TimeAverage)
        graph_module = fx.GraphModule(model, trace_model(model, leaves, concrete_args))
        before = dict(model.named_modules())
        _run_model_speedup(model, inputs, masks_copy, graph_module, was_training, record)
        _restore_subclasses(model, before)
    return record


def speedup(
    model: nn.Module,
    dummy_input: Tensor | tuple[Any, ...],
    masks: _MASKS,
    *,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> nn.Module:
    """Physically remove the channels and neurons that ``masks`` prune, in place.

    Parameters
    ----------
    model
        The unwrapped model (``pruner.unwrap_model()`` first).
    dummy_input
        An input batch of the right shape (its values are not used).
    masks
        NNI masks ``{module: {'weight': ..., 'bias': ...}}`` as returned by
        ``pruner.compress()``; not modified. Whole output units (channels, neurons)
        are removed; pruned synapses stay as zeros in the shrunk dense weights.
    leaf_modules, concrete_args
        Passed to the torch.fx tracer.

    Returns
    -------
    nn.Module
        ``model``, with smaller conv / linear / BatchNorm layers; its training mode
        is the one it had before.
    """
    speedup_with_indices(model, dummy_input, masks, leaf_modules=leaf_modules, concrete_args=concrete_args)
    return model


def _run_model_speedup(model: nn.Module, inputs: tuple[Any, ...], masks: dict[str, dict[str, Tensor]],
                       graph_module: fx.GraphModule, was_training: bool, record: dict[str, KeptIndices]) -> None:
    neuron_types = tuple({type(n) for n in _neurons(model)})
    identities = tuple({type(m) for m in model.modules() if isinstance(m, (DirectEncoder, TimeAverage))})
    rules = {cls.__name__: _replace_neuron for cls in neuron_types}
    rules.update({cls.__name__: (lambda module, masks: module) for cls in identities})
    replacers: list[Any] = [_RecordingReplacer(rules, record)]  # a new list on every call: NNI appends to it
    no_change = neuron_types + identities
    updaters = [NoChangeMaskUpdater(customized_no_change_act_module=no_change)] if no_change else []
    nni_logger = logging.getLogger("nni_dpap.speedup.nni")
    nni_logger.setLevel(logging.WARNING)
    try:
        with _quiet_nni():
            ModelSpeedup(
                model, _randomized(inputs), masks, batch_size=int(inputs[0].shape[0]),
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
    finally:
        _reset(model)
        model.train(was_training)
