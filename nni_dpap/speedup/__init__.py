"""Physical removal of pruned channels and neurons with NNI's ``ModelSpeedup``, on torch 2.14.

``from nni_dpap import speedup; speedup(model, dummy_input, masks)`` (the module itself
is callable; ``nni_dpap.speedup.speedup`` is the same function).

What happens, in order:

1. The inputs are checked (:mod:`._inputs`): a plain model (not wrapped by an NNI
   compressor), masks in NNI's format whose shapes match their targets, an input batch
   the model runs on. Nothing is changed before these checks pass.
2. Every masked entry is zeroed in place (NNI's contract: ``L1NormPruner`` +
   ``unwrap_model()`` hand over weights that are not zeroed).
3. Masks are propagated with one time step: ``T = 1`` on nni-dpap's neurons, encoders and
   decoders, single-step mode for other libraries' step modules, and a copy of the
   traced graph without a time dimension where the forward creates one
   (:mod:`._time`: SpikingJelly's ``x.unsqueeze(0).repeat(T, ...)`` / ``.mean(0)``,
   snnTorch's ``torch.stack``). Which channels exist does not depend on T, and every
   tensor then has the batch at dim 0, as NNI needs.
4. NNI's ``ModelSpeedup`` replaces the layers (:mod:`._bridge`).
5. The shrunk model is run on the input batch and compared with the masked model; a
   difference is logged as a warning naming its size and usual cause (an unmasked
   BatchNorm shift after a removed channel), never passed over silently.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_flatten

from ..adapters import find_adapter, is_time_major, single_step_contexts
from ..errors import ShapeError, SpeedupError
from ..graph import trace_model
from ..slicing import KeptIndices
from ..snn import BaseNeuron, DirectEncoder, TimeAverage
from ._bridge import restore_subclasses, run_model_speedup
from ._inputs import apply_masks, as_inputs, check_masks, check_model, structured
from ._time import layout_of, record_layouts, remove_time

__all__ = ["speedup", "speedup_with_indices", "KeptIndices"]

_logger = logging.getLogger(__name__)
_TIME_MODULES = (BaseNeuron, DirectEncoder, TimeAverage)
_CHECK_TOLERANCE = 1e-4


def _neurons(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if find_adapter(m) is not None]


def _reset(model: nn.Module) -> None:
    for module in _neurons(model):
        adapter = find_adapter(module)
        assert adapter is not None
        adapter.reset(module)


@contextmanager
def _native_single_step(model: nn.Module) -> Iterator[None]:
    """``T = 1`` on nni-dpap's neurons, encoders and decoders (their folded ``[T*B, ...]`` becomes ``[B, ...]``)."""
    saved = [(m, m.T) for m in model.modules() if isinstance(m, _TIME_MODULES) and m.T is not None]
    for module, _ in saved:
        module.T = 1
    try:
        yield
    finally:
        for module, T in saved:
            module.T = T


def _run(model: nn.Module | fx.GraphModule, inputs: tuple[Any, ...]) -> Any:
    _reset(model)
    try:
        with torch.no_grad():
            return model(*inputs)
    finally:
        _reset(model)


def _check_layout(graph_module: fx.GraphModule, model: nn.Module, inputs: tuple[Any, ...], batch: int) -> None:
    """Every neuron must see the input's batch at dim 0 once time is gone."""
    sizes: set[int] = set()
    handles = [n.register_forward_pre_hook(lambda m, args: sizes.add(int(args[0].shape[0]))) for n in _neurons(model)]
    try:
        _run(graph_module, inputs)
    finally:
        for handle in handles:
            handle.remove()
    if sizes - {batch}:
        raise ShapeError(
            f"with one time step the spiking neurons see batch sizes {sorted(sizes)} but the input has {batch}: "
            "speedup supports the time-major fold [T*B, ...] with nni_dpap neurons, models that loop over time "
            "with single-step neurons and multi-step models with a [T, N, ...] time dim"
        )


def _propagation_graph(model: nn.Module, inputs: tuple[Any, ...], leaves: Sequence[type[nn.Module] | str],
                       concrete_args: dict[str, Any] | None) -> tuple[fx.GraphModule, int]:
    """The traced model, with the time dimension removed where the forward has one, and the batch size."""
    traced = fx.GraphModule(model, trace_model(model, leaves, concrete_args))
    try:
        batch_dim = 0
        layouts, shapes = record_layouts(traced, inputs, lambda: _reset(model))
        time_major = [n for n in traced.graph.nodes if n.op == "call_module" and is_time_major(model.get_submodule(
            str(n.target)))]
        if any(layout_of(layouts, n.args[0]).kind == "batch" for n in time_major if isinstance(n.args[0], fx.Node)):
            # a time-major step module saw the input's dim 0 change: the input is [T, N, ...]
            batch_dim = 1
            layouts, shapes = record_layouts(traced, inputs, lambda: _reset(model), batch_dim=batch_dim)
    except SpeedupError:
        raise
    except Exception as exc:
        raise SpeedupError(f"{type(model).__name__} does not run on dummy_input of shape "
                           f"{tuple(inputs[0].shape)}: {type(exc).__name__}: {exc}") from exc
    graph = remove_time(traced, layouts, shapes)
    return (traced if graph is None else fx.GraphModule(model, graph)), int(inputs[0].shape[batch_dim])


def _difference(before: Any, after: Any) -> float:
    flat_before, _ = tree_flatten(before)
    flat_after, _ = tree_flatten(after)
    worst = 0.0
    for a, b in zip(flat_before, flat_after):
        if isinstance(a, Tensor) and isinstance(b, Tensor) and a.is_floating_point():
            if a.shape != b.shape:
                return float("inf")
            scale = max(1.0, float(a.abs().max())) if a.numel() else 1.0
            worst = max(worst, float((a - b).abs().max()) / scale if a.numel() else 0.0)
    return worst


def speedup_with_indices(
    model: nn.Module,
    dummy_input: Tensor | tuple[Any, ...],
    masks: Mapping[str, Mapping[str, Tensor]],
    *,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> dict[str, KeptIndices]:
    """:func:`speedup`, returning the kept output / input indices of every module NNI visited."""
    check_model(model)
    inputs = as_inputs(dummy_input)
    checked = check_masks(model, masks)
    was_training = model.training
    model.eval()
    try:
        _run(model, inputs)
    except Exception as exc:
        model.train(was_training)
        raise SpeedupError(f"{type(model).__name__} does not run on dummy_input of shape "
                           f"{tuple(inputs[0].shape)}: {type(exc).__name__}: {exc}") from exc
    apply_masks(model, checked)
    masked_reference = _run(model, inputs)
    neuron_types = tuple({type(n) for n in _neurons(model)})
    codecs = tuple({type(m) for m in model.modules() if isinstance(m, (DirectEncoder, TimeAverage))})
    try:
        with _native_single_step(model), torch.enable_grad():  # NNI propagates masks through gradients
            graph_module, batch = _propagation_graph(model, inputs, (*leaf_modules, DirectEncoder, TimeAverage),
                                              concrete_args)
            with contextlib.ExitStack() as stack:
                for context in single_step_contexts(model):  # other libraries' step modes (SpikingJelly)
                    stack.enter_context(context)
                _check_layout(graph_module, model, inputs, batch)
                before = dict(model.named_modules())
                record = run_model_speedup(model, inputs, batch, structured(checked, model), graph_module,
                                           neuron_types + codecs, neuron_types)
                restore_subclasses(model, before)
    finally:
        _reset(model)
        model.eval()
    difference = _difference(masked_reference, _run(model, inputs))
    model.train(was_training)
    if difference > _CHECK_TOLERANCE:
        _logger.warning(
            "the shrunk %s differs from the masked model by %.3g (relative) on dummy_input: usually a BatchNorm "
            "after removed channels that was not masked (its shift is lost with the channel, as in NNI's own "
            "speedup); mask its weight and bias with the channel mask of the layer before it",
            type(model).__name__, difference)
    return record


def speedup(
    model: nn.Module,
    dummy_input: Tensor | tuple[Any, ...],
    masks: Mapping[str, Mapping[str, Tensor]],
    *,
    leaf_modules: Sequence[type[nn.Module] | str] = (),
    concrete_args: dict[str, Any] | None = None,
) -> nn.Module:
    """Physically remove the channels and neurons that ``masks`` prune, in place.

    Parameters
    ----------
    model
        The unwrapped model (``pruner.unwrap_model()`` first). Its masked weights need
        not be zeroed: they are zeroed here, as NNI's ``ModelSpeedup`` contract says.
    dummy_input
        An input batch of the right shape (a tensor, or a tuple of the forward's arguments).
    masks
        NNI masks ``{module: {'weight': ..., 'bias': ...}}`` as returned by
        ``pruner.compress()`` (of DPAP or any NNI pruner); not modified. Whole output units
        (channels, neurons) are removed; pruned synapses stay as zeros in the shrunk
        dense weights.
    leaf_modules, concrete_args
        Passed to the torch.fx tracer.

    Returns
    -------
    nn.Module
        ``model``, with smaller conv / linear / BatchNorm layers; its training mode is the
        one it had before.

    Raises
    ------
    SpeedupError
        Bad arguments (named), a model still wrapped by NNI, a model that does not run on
        ``dummy_input``, or a model NNI cannot shrink (with the reason).
    """
    speedup_with_indices(model, dummy_input, masks, leaf_modules=leaf_modules, concrete_args=concrete_args)
    return model


class _CallableModule(types.ModuleType):
    """``nni_dpap.speedup(model, x, masks)``: the module is callable, and stays importable as a module."""

    def __call__(self, model: nn.Module, dummy_input: Tensor | tuple[Any, ...],
                 masks: Mapping[str, Mapping[str, Tensor]], **kwargs: Any) -> nn.Module:
        return speedup(model, dummy_input, masks, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
