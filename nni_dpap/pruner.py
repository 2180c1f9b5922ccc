"""``DPAPPruner``: DPAP as an NNI 3.0 training-aware pruner (NNI glue only).

The algorithm lives in :mod:`nni_dpap.plasticity`, :mod:`nni_dpap.metrics` and
:mod:`nni_dpap.policy`, each layer's state in :mod:`nni_dpap._layers`; this module wires
them into NNI the way NNI's own ``TaylorPruner`` does: ``_register_hooks`` collects data
through the evaluator, ``_register_trigger`` patches the optimizer step, and at every
epoch boundary ``generate_masks`` runs ``_collect_data -> _calculate_metrics ->
_generate_sparsity`` before ``update_masks``.
"""

from __future__ import annotations

import logging
import time
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import torch
from nni.compression.base.compressor import Pruner
from nni.compression.base.wrapper import ModuleWrapper, register_wrappers
from nni.compression.utils.evaluator import Evaluator
from torch import Tensor, nn

from ._collector import SignalCollector
from ._fastwrap import FastForwards
from ._lifecycle import (after_training, before_training, check_shrinking, lean_forwards, movement_tasks, shrink_due,
                         update_structure)
from ._config_list import resolve_links
from ._layers import LayerState, neuron_time_masks
from ._nni import check_evaluator, check_model, evaluator_optimizers
from ._validate import check_int
from .adapters import find_adapter
from .distributed import ddp_prefix, strip_prefix, sum_over_ranks
from .errors import ConfigError, TrainingError
from .graph import GraphInfo, LayerLink
from .policy import DPAPConfig
from .policy.defaults import configuration
from .report import record_epoch, time_sparsity
from .shrink import ShrinkPolicy, remap_optimizer
from .slicing import KeptIndices
from .speedup import speedup_with_indices

__all__ = ["DPAPPruner"]

_logger = logging.getLogger(__name__)
_METRICS = dict[str, dict[str, Tensor]]


def _layers_for(config: DPAPConfig, ann_config: Callable[[], DPAPConfig], model: nn.Module,
                config_list: list[dict[str, Any]], **trace: Any) -> tuple[DPAPConfig, GraphInfo, bool]:
    """The configuration, the layers it prunes in ``model`` and whether a spiking neuron follows any of them.

    An ANN gets ``ann_config()`` (its own calibration); its layers are chosen again if that calibration
    decides the first conv otherwise (they were chosen before the kind of network was known).
    """
    info = resolve_links(model, config_list, prune_first_conv=config.prune_first_conv, **trace)
    if any(link.spiking for link in info.links.values()):
        return config, info, True
    ann = ann_config()
    if ann.prune_first_conv != config.prune_first_conv:
        info = resolve_links(model, config_list, prune_first_conv=ann.prune_first_conv, **trace)
    return ann, info, False


class DPAPPruner(Pruner):
    r"""Developmental Plasticity-inspired Adaptive Pruning (DPAP).

    Prunes conv channels, FC neurons and FC synapses *while the model trains from scratch*, for spiking
    (SNN) and ordinary (ANN) networks. Every unit keeps a survival value driven by the activity-dependent
    trace of the neuron after it (spike trace for SNNs, activation trace for ANNs), BCM synaptic plasticity
    with a sliding threshold and the resulting dendritic-spine importance; units that stay unimportant
    decay and are removed for good once their survival value drops below zero. There is no target
    sparsity: the rate emerges from the rule.

    B. Han, F. Zhao, Y. Zeng, G. Shen, "Developmental Plasticity-Inspired Adaptive Pruning for Deep
    Spiking and Artificial Neural Networks", IEEE TPAMI 47(1), 2025.

    Parameters
    ----------
    model
        Model to prune. SNNs use the time-major folded layout ``[T*B, ...]`` (:mod:`nni_dpap.snn`), or
        any SpikingJelly / snnTorch layout (:mod:`nni_dpap.adapters`).
    config_list
        NNI config list selecting the layers to prune: ``op_types`` (``Conv1d``, ``Conv2d``, ``Linear``),
        ``op_names``, ``op_names_re`` and their ``exclude_*`` forms; no sparsity keys. Output layers are
        never pruned and are skipped with a log message.
    evaluator
        An NNI evaluator with a training function and an ``nni.trace``-d optimizer (``TorchEvaluator``).
        ``compress()`` calls the training function with ``max_steps = epochs * steps_per_epoch`` and
        ``max_epochs = epochs`` (the remaining epochs after :meth:`load_state_dict`) and returns
        ``(model, masks)`` in NNI's format.
    epochs, steps_per_epoch
        Training epochs (DPAP's schedule is laid out over them) and optimizer steps per epoch, normally
        ``len(train_loader)``: DPAP closes an epoch every ``steps_per_epoch`` steps.
    preset
        ``'braincog'`` (the released code's rule, default) or ``'paper'`` (the equations as printed), each
        with the library's defaults for ``epochs``, SNN or ANN (:func:`~nni_dpap.policy.defaults.default_hparams`); a
        :class:`~nni_dpap.policy.DPAPConfig` is used as given.
    hparams
        Flat overrides of those defaults, e.g. ``{'conv_eps': 0.8}`` (:meth:`DPAPConfig.flat_keys`).
    keep_at_least
        Never prune the last ``keep_at_least`` units (and synapses) of a layer; 0 disables the guard.
    leaf_modules, concrete_args, neuron_map
        For the torch.fx tracer that finds the neuron after each layer; ``neuron_map`` gives explicit
        ``{layer: neuron_module}`` entries.
    writer
        Optional ``SummaryWriter``: per epoch the kept fraction of every layer and survival histograms.
    temporal
        Also prune (neuron or channel, time step) pairs of spiking nets (Eq. 8): a pair whose survival
        value falls below zero is silenced at that step for the rest of training.
    shrink_every
        Physically shrink the model in place every ``shrink_every`` epochs when new units were pruned and
        the saving repays the cost (:class:`~nni_dpap.shrink.ShrinkPolicy`); training goes on, smaller.
    dummy_input
        An input batch for shrinking (default: the evaluator's ``dummy_input``).
    existed_wrappers
        Used by ``from_compressor`` to inherit another compressor's wrappers.

    Examples
    --------
    >>> evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), step)
    >>> pruner = DPAPPruner(model, [{'op_types': ['Conv2d', 'Linear']}], evaluator, epochs=40,
    ...                     steps_per_epoch=len(train_loader))
    >>> model, masks = pruner.compress()
    >>> pruner.unwrap_model()
    """

    def __init__(self, model: nn.Module, config_list: list[dict[str, Any]], evaluator: Evaluator, epochs: int,
                 steps_per_epoch: int, preset: str | DPAPConfig = "braincog", *,
                 hparams: Mapping[str, Any] | None = None, keep_at_least: int = 1,
                 leaf_modules: Sequence[type[nn.Module] | str] = (), concrete_args: dict[str, Any] | None = None,
                 neuron_map: Mapping[str, str] | None = None, writer: Any | None = None, temporal: bool = False,
                 shrink_every: int | None = None, dummy_input: Any | None = None,
                 existed_wrappers: dict[str, ModuleWrapper] | None = None) -> None:
        check_model(model, existed_wrappers)
        check_evaluator(evaluator)
        self.epochs = check_int("epochs", epochs)
        self.steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, hint=" (pass len(train_loader))")
        self.keep_at_least = check_int("keep_at_least", keep_at_least, minimum=0)
        self.dpap_config = configuration(preset, hparams, self.epochs)
        self._dummy_input = dummy_input if dummy_input is not None else getattr(evaluator, "dummy_input", None)
        self.shrink_every = check_shrinking(model, shrink_every, self._dummy_input)
        self._leaf_modules, self._concrete_args, self.temporal = tuple(leaf_modules), concrete_args, bool(temporal)
        self.dpap_config, info, spiking = _layers_for(
            self.dpap_config, lambda: configuration(preset, hparams, self.epochs, spiking=False), model, config_list,
            temporal=self.temporal, leaf_modules=leaf_modules, concrete_args=concrete_args, neuron_map=neuron_map)
        self._prefix, self.spiking = ddp_prefix(model), spiking  # (spiking: whether a neuron follows a layer)
        self.output_layers: tuple[str, ...] = info.output_layers
        norms = sorted({bn for link in info.links.values() for bn in link.norms})
        internal = [{"op_names": sorted(info.links)}] + ([{"op_names": norms}] if norms else [])
        super().__init__(model=model, config_list=internal, evaluator=evaluator, existed_wrappers=existed_wrappers)
        self.evaluator: Evaluator
        self._modules = dict(self.bound_model.named_modules())
        self._layers = {name: LayerState.build(link, self._modules, self.dpap_config, self.temporal,
                                               self._target(name, "weight").device)
                        for name, link in info.links.items()}
        self._collector = SignalCollector(self._layers, self._modules,
                                          [(m, a) for m in self._modules.values() if (a := find_adapter(m))])
        self.current_epoch, self._global_step, self.shrinks, self._pruned_since_shrink = 0, 0, 0, False
        self._masked, self.history, self._fast = set[str](), list[dict[str, Any]](), FastForwards()
        self.writer, self._hooks, self.shrink_policy, self._epoch_clock = writer, list[Any](), ShrinkPolicy(), 0.0

    def _target(self, module_name: str, target_name: str) -> Tensor:
        target = self._module_wrappers[module_name].pruning_target_spaces[target_name].target
        assert target is not None
        return target

    @property
    def layers(self) -> dict[str, LayerLink]:
        """The pruned layers and the neuron / activation DPAP reads for each."""
        return {name: layer.link for name, layer in self._layers.items()}

    @property
    def layer_states(self) -> Mapping[str, LayerState]:
        """DPAP's per-layer state (statistics, survival values, masks), read-only."""
        return MappingProxyType(self._layers)

    # -- NNI hooks and trigger ---------------------------------------------------------
    def _register_hooks(self, evaluator: Evaluator) -> None:
        self._hooks = self._collector.hooks(self.bound_model.module if self._prefix else self.bound_model)
        evaluator.register_hooks(self._hooks)  # (NNI re-wraps DDP models: the hooks sit on the inner module)

    def _register_trigger(self, evaluator: Evaluator) -> None:
        def after_optimizer_step() -> None:
            self._global_step += 1
            self._apply_masks_to_parameters(self._masked)
            if self._global_step % self.steps_per_epoch == 0:
                self._end_epoch()

        evaluator.patch_optimizer_step(before_step_tasks=movement_tasks(self), after_step_tasks=[after_optimizer_step])

    def _fuse_preprocess(self, evaluator: Evaluator) -> None:
        before_training(self)
        self._register_hooks(evaluator)
        self._register_trigger(evaluator)

    def _fuse_postprocess(self, evaluator: Evaluator) -> None:
        after_training(self)

    def _single_compress(self, max_steps: int | None, max_epochs: int | None) -> None:
        if max_steps is not None or max_epochs is not None:
            raise ConfigError("DPAPPruner trains for epochs * steps_per_epoch steps; set epochs= and "
                              "steps_per_epoch= in its constructor instead of passing max_steps / max_epochs")
        remaining = self.epochs - self.current_epoch  # fewer than epochs after load_state_dict (resume)
        if remaining <= 0:
            raise ConfigError(f"all {self.epochs} epochs are done (epoch {self.current_epoch}); nothing to train")
        self._fusion_compress(remaining * self.steps_per_epoch, remaining)

    def compress(self, max_steps: int | None = None, max_epochs: int | None = None) -> tuple[nn.Module, _METRICS]:
        """Train while pruning, with every compressor fused into this one (``DPAPPruner.from_compressor``)."""
        self._single_compress(max_steps, max_epochs)  # NNI's _fusion_compress: all fused compressors train
        return self.bound_model, self.get_masks()

    # -- the three NNI stages ------------------------------------------------------------
    def _collect_data(self) -> _METRICS:
        return {name: layer.stats.window(sum_over_ranks) for name, layer in self._layers.items()}

    def _calculate_metrics(self, data: _METRICS) -> _METRICS:
        self._check_finite(data)
        return {name: self._layers[name].importance(window) for name, window in data.items()}

    def _check_finite(self, data: _METRICS) -> None:
        for name, window in data.items():
            if not all(bool(torch.isfinite(t).all()) for t in window.values()):
                raise TrainingError(
                    f"DPAP's statistics of {name!r} are not finite at epoch {self.current_epoch}: training diverged "
                    "(NaN or infinite activations). Lower the learning rate or check the data; no mask was changed")

    def _generate_sparsity(self, metrics: _METRICS) -> _METRICS:
        for name, importance in metrics.items():
            self._layers[name].update(importance, self.current_epoch, self.keep_at_least)
        return self._nni_masks()

    def _nni_masks(self) -> _METRICS:
        """Weight, bias and following-BatchNorm masks of every layer in NNI's format."""
        masks: _METRICS = {}
        for name, layer in self._layers.items():
            masks[name] = {"weight": layer.weight_mask(self._target(name, "weight"))}
            units = layer.neuron_mask
            if self._module_wrappers[name].pruning_target_spaces["bias"].target is not None:
                masks[name]["bias"] = units.to(masks[name]["weight"].dtype)
            for bn in layer.link.norms:
                masks[bn] = {target: units.to(space.target.dtype) for target, space in
                             self._module_wrappers[bn].pruning_target_spaces.items() if space.target is not None}
        return masks

    # -- epoch boundary ------------------------------------------------------------------
    def _end_epoch(self) -> None:
        self._collector.commit()
        update_structure(self)
        for layer in self._layers.values():
            layer.stats.end_epoch()
        self._refresh_masks(update=False)
        survival = {name: layer.survival_values() for name, layer in self._layers.items()}
        self.history.append(record_epoch(self.current_epoch, self.summary(), survival, self.writer, self.temporal))
        if shrink_due(self):
            self.shrink()
        self.current_epoch += 1

    def _refresh_masks(self, update: bool = True) -> None:
        """(Re)send the masks to NNI's wrappers, zero the masked parameters, silence the pruned time steps."""
        if update:
            self.update_masks(self._nni_masks())
            self._masked = set(self._module_wrappers)
        self._apply_masks_to_parameters(self._masked)
        if self.temporal:
            self._apply_time_masks()

    def _apply_time_masks(self) -> None:
        """Silence the pruned (neuron, time step) pairs."""
        for name, mask in neuron_time_masks(self._layers.values()).items():
            adapter = find_adapter(self._modules[name])
            assert adapter is not None
            adapter.set_time_mask(self._modules[name], None if bool(mask.all()) else mask)

    @torch.no_grad()
    def _apply_masks_to_parameters(self, names: set[str] | Sequence[str]) -> None:
        """Zero masked weights in place, so no optimizer update can revive them."""
        for name in names:
            for space in self._module_wrappers[name].pruning_target_spaces.values():
                if space.mask is not None and space.target is not None:
                    space.target.data.mul_(space.mask)

    # -- physical shrinking during training ------------------------------------------------
    def shrink(self) -> dict[str, KeptIndices]:
        """Remove the pruned units physically now and carry the training state over (the model object stays)."""
        if self._dummy_input is None:
            raise ConfigError("shrinking needs dummy_input=... (DPAPPruner or TorchEvaluator)")
        start = time.perf_counter()
        model, masks, was_training = self.bound_model, self.get_masks(), self.bound_model.training
        old_params = dict(model.named_parameters())  # (NNI's wrappers hold the parameters: remap after rewrapping)
        own_hooks = [h for h in self._hooks if h.handle is not None]
        for hook in own_hooks:
            hook.remove()
        if hasattr(self.evaluator, "_hooks"):
            self.evaluator._hooks = [h for h in self.evaluator._hooks if h not in own_hooks]
        model.eval()
        self.unwrap_model()
        try:
            kept = speedup_with_indices(model, self._dummy_input, masks, leaf_modules=self._leaf_modules,
                                        concrete_args=self._concrete_args)
        finally:
            self._module_wrappers, self._target_spaces = register_wrappers(model, self.config_list, self.mode)
            self.wrap_model()
            self._register_scalers()
            model.train(was_training)
        new_params = dict(model.named_parameters())
        for optimizer in evaluator_optimizers(self.evaluator):
            remap_optimizer(optimizer, old_params, new_params, kept)
        self._modules = self._collector.modules = dict(model.named_modules())
        for name, layer in self._layers.items():
            layer.select(self._modules[name], kept.get(name))
        self._refresh_masks()
        if own_hooks:  # (during training)
            self._register_hooks(self.evaluator)
            lean_forwards(self)
        self._pruned_since_shrink, self.shrink_policy.last_cost = False, time.perf_counter() - start
        self.shrinks += 1
        _logger.info("DPAP shrank the model at epoch %d: %s", self.current_epoch,
                     ", ".join(f"{n} {lay.n_out}" for n, lay in self._layers.items()))
        return kept

    def unwrap_model(self) -> None:
        """Unwrap, leaving pruned weights (and their bias / BatchNorm entries) at exactly zero."""
        if self._is_wrapped:
            self._apply_masks_to_parameters(list(self._module_wrappers))
        self._fast.remove()
        super().unwrap_model()

    # -- reporting and persistence ---------------------------------------------------------
    def summary(self) -> dict[str, dict[str, int]]:
        """Per layer: kept / total neurons (channels), synapses and weights (and time steps)."""
        return {name: layer.summary(self._module_wrappers[name].pruning_target_spaces["weight"].mask,
                                    self._target(name, "weight").numel()) for name, layer in self._layers.items()}

    def time_sparsity(self) -> float:
        """Fraction of the (live neuron, time step) pairs that temporal pruning silenced (0 without it)."""
        return time_sparsity(self.summary())

    def state_dict(self) -> dict[str, Any]:
        """DPAP's whole state (statistics, survival values, masks, epoch) for checkpoints, under the plain
        model's layer names (so a data-parallel checkpoint resumes in one process and the other way round)."""
        return {"epoch": self.current_epoch, "global_step": self._global_step, "config": self.dpap_config.to_dict(),
                "layers": {strip_prefix(n, self._prefix): lay.state_dict() for n, lay in self._layers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output and re-apply its masks."""
        layers = state.get("layers") if isinstance(state, Mapping) else None
        if isinstance(layers, Mapping):
            layers = {self._prefix + strip_prefix(k, self._prefix): v for k, v in layers.items()}
        if not isinstance(layers, Mapping) or set(layers) != set(self._layers):
            got = sorted(layers) if isinstance(layers, Mapping) else type(layers).__name__
            raise ConfigError(f"DPAP state does not match this pruner: it has layers {got}, the pruner prunes "
                              f"{sorted(self._layers)}")
        for name, layer in self._layers.items():
            layer.load_state_dict(layers[name], self.temporal)
        self.current_epoch, self._global_step = int(state["epoch"]), int(state["global_step"])
        self._refresh_masks()
