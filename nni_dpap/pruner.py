"""``DPAPPruner``: DPAP as an NNI 3.0 training-aware pruner (NNI glue only).

The algorithm lives in :mod:`nni_dpap.plasticity`, :mod:`nni_dpap.metrics` and
:mod:`nni_dpap.policy`; this module wires it into NNI the way NNI's own
``TaylorPruner`` does: ``_register_hooks`` collects data through the evaluator,
``_register_trigger`` patches the optimizer step, and at every epoch boundary
``generate_masks`` runs ``_collect_data -> _calculate_metrics -> _generate_sparsity``
before ``update_masks``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from typing import Any, Callable, Mapping, Sequence

import torch
from nni.compression import TorchEvaluator
from nni.compression.base.compressor import Pruner
from nni.compression.base.wrapper import ModuleWrapper, register_wrappers
from nni.compression.utils.evaluator import Evaluator, ForwardHook, ModuleHook
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ._config_list import select_targets
from .adapters import find_adapter
from .errors import ConfigError
from .graph import GraphInfo, LayerLink, link_layers
from ._layers import LayerState, group_connectivity
from .metrics import LayerStatistics
from .plasticity import developmental_value
from .distributed import mean_over_ranks, sum_over_ranks, world_size
from .policy import DPAPConfig, SurvivalState, get_preset
from .shrink import remap_optimizer
from .slicing import KeptIndices
from .speedup import speedup_with_indices

__all__ = ["DPAPPruner"]

_logger = logging.getLogger(__name__)
_METRICS = dict[str, dict[str, Tensor]]
_Reader = tuple[LayerState, "int | None", tuple[Callable[[Tensor], Tensor], ...]]  # layer, call index, replay tail


class _ForwardPreHook(ModuleHook):
    """NNI-style hook object for ``register_forward_pre_hook`` (NNI 3.0 has none)."""

    def _register(self, hook_func: Callable[..., Any]) -> torch.utils.hooks.RemovableHandle:
        return self.target.register_forward_pre_hook(hook_func)


def _with_prefix(info: GraphInfo, prefix: str) -> GraphInfo:
    """``info`` with every module name prefixed (the names of a DistributedDataParallel model)."""
    if not prefix:
        return info
    links = {
        prefix + name: dataclasses.replace(
            link, name=prefix + link.name, neuron=None if link.neuron is None else prefix + link.neuron,
            readouts=tuple(dataclasses.replace(r, module=prefix + r.module) for r in link.readouts),
            norms=tuple(prefix + n for n in link.norms),
            upstream=None if link.upstream is None else prefix + link.upstream)
        for name, link in info.links.items()
    }
    return GraphInfo(links, tuple(prefix + n for n in info.output_layers))


def _check_evaluator(evaluator: Any) -> None:
    if evaluator is None:
        raise ConfigError(
            "DPAPPruner prunes while it trains and needs an evaluator: pass "
            "nni.compression.TorchEvaluator(training_func, nni.trace(torch.optim.Adam)(model.parameters()), "
            "training_step)"
        )
    if not isinstance(evaluator, Evaluator):
        raise ConfigError(
            f"evaluator must be an nni.compression Evaluator (e.g. TorchEvaluator), got {type(evaluator).__name__}"
        )
    if isinstance(evaluator, TorchEvaluator):
        optimizers = getattr(evaluator, "_tmp_optimizers", None)
        if optimizers is None:
            optimizers = getattr(evaluator, "_optimizer_helpers", None)
        if not optimizers:
            raise ConfigError(
                "the evaluator has no optimizer: DPAP trains the model, so build it with one, e.g. "
                "TorchEvaluator(training_func, nni.trace(torch.optim.Adam)(model.parameters(), lr=1e-3), training_step)"
            )


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        hint = " (pass len(train_loader))" if name == "steps_per_epoch" else ""
        raise ConfigError(f"{name} must be a positive int{hint}, got {value!r}")
    return value


class DPAPPruner(Pruner):
    r"""Developmental Plasticity-inspired Adaptive Pruning (DPAP).

    Prunes conv channels, FC neurons and FC synapses *while the model trains from
    scratch*, for spiking (SNN) and ordinary (ANN) networks. Every unit keeps a
    survival value driven by the activity-dependent trace of the neuron after it
    (spike trace for SNNs, activation trace for ANNs), BCM synaptic plasticity with a
    sliding threshold and the resulting dendritic-spine importance; units that stay
    unimportant decay and are removed for good once their survival value drops
    below zero. There is no target sparsity: the rate emerges from the rule.

    B. Han, F. Zhao, Y. Zeng, G. Shen, "Developmental Plasticity-Inspired Adaptive
    Pruning for Deep Spiking and Artificial Neural Networks", IEEE TPAMI 47(1), 2025.

    Parameters
    ----------
    model
        Model to prune. SNNs use the time-major folded layout ``[T*B, ...]``
        (:mod:`nni_dpap.snn`).
    config_list
        NNI config list selecting the layers to prune: ``op_types`` (``Conv1d``,
        ``Conv2d``, ``Linear``), ``op_names``, ``op_names_re`` and their ``exclude_*``
        forms. Sparsity keys (``sparse_ratio`` ...) are rejected. Output layers (whose
        output reaches the model output without another conv/linear layer) are never
        pruned and are skipped with a log message.
    evaluator
        An NNI evaluator with a training function and an ``nni.trace``-d optimizer
        (``TorchEvaluator``). ``compress()`` calls the training function with
        ``max_steps = epochs * steps_per_epoch`` and ``max_epochs = epochs``.
    epochs
        Number of training epochs; DPAP's schedule is laid out over them.
    steps_per_epoch
        Optimizer steps per epoch, normally ``len(train_loader)``. DPAP counts
        optimizer steps and closes an epoch every ``steps_per_epoch`` steps; it is
        taken explicitly because the training loop is the user's. A run whose step
        count does not match ``epochs * steps_per_epoch`` is reported with a warning.
    preset
        ``'braincog'`` (the released code's rule, default), ``'paper'`` (the equations
        as printed) or a :class:`~nni_dpap.policy.DPAPConfig`.
    hparams
        Flat overrides of the preset, e.g. ``{'conv_eps': 0.8, 'linear_eta': 0.15}``
        (see :meth:`DPAPConfig.flat_keys`).
    keep_at_least
        Never prune the last ``keep_at_least`` neurons / channels of a layer (and synapses
        of a layer), so that no layer dies completely. 0 disables the guard.
    leaf_modules, concrete_args
        Passed to the torch.fx tracer that finds the neuron after each layer.
    neuron_map
        Explicit ``{layer: neuron_module}`` entries overriding the traced map.
    writer
        Optional ``torch.utils.tensorboard.SummaryWriter``; per epoch it receives the
        kept fraction of every layer and histograms of the survival values.
    temporal
        Also prune in time (spiking nets only): every (neuron or channel, time step) pair
        has a survival value driven by its time-step importance (Eq. 8); a pair whose value
        falls below zero is silenced at that step for the rest of training (the neuron may
        not fire then). Off by default.
    shrink_every
        Physically shrink the model in place every ``shrink_every`` epochs (once that
        epoch's masks are fixed and something new was pruned) and keep training the
        smaller model: the optimizer's parameters and state (Adam moments, SGD momentum)
        and DPAP's own per-unit state are sliced to the kept units; the LR scheduler
        keeps working. ``None`` (default) only masks.
    dummy_input
        An input batch for shrinking (default: the evaluator's ``dummy_input``).
    existed_wrappers
        Used by ``from_compressor`` to inherit another compressor's wrappers.

    Examples
    --------
    >>> evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), step)
    >>> pruner = DPAPPruner(model, [{'op_types': ['Conv2d', 'Linear']}], evaluator,
    ...                     epochs=40, steps_per_epoch=len(train_loader))
    >>> model, masks = pruner.compress()
    >>> pruner.unwrap_model()
    """

    def __init__(
        self,
        model: nn.Module,
        config_list: list[dict[str, Any]],
        evaluator: Evaluator,
        epochs: int,
        steps_per_epoch: int,
        preset: str | DPAPConfig = "braincog",
        *,
        hparams: Mapping[str, Any] | None = None,
        keep_at_least: int = 1,
        leaf_modules: Sequence[type[nn.Module] | str] = (),
        concrete_args: dict[str, Any] | None = None,
        neuron_map: Mapping[str, str] | None = None,
        writer: Any | None = None,
        temporal: bool = False,
        shrink_every: int | None = None,
        dummy_input: Any | None = None,
        existed_wrappers: dict[str, ModuleWrapper] | None = None,
    ) -> None:
        _check_evaluator(evaluator)
        self.epochs = _positive_int("epochs", epochs)
        self.steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
        if isinstance(keep_at_least, bool) or not isinstance(keep_at_least, int) or keep_at_least < 0:
            raise ConfigError(f"keep_at_least must be an int >= 0, got {keep_at_least!r}")
        self.keep_at_least = keep_at_least
        self.dpap_config = get_preset(preset, **dict(hparams or {})).resolve(self.epochs)
        self.shrink_every = None if shrink_every is None else _positive_int("shrink_every", shrink_every)
        self._dummy_input = dummy_input if dummy_input is not None else getattr(evaluator, "dummy_input", None)
        if self.shrink_every is not None and isinstance(model, DistributedDataParallel):
            raise ConfigError("shrink_every is not supported for DistributedDataParallel models yet; use "
                              "shrink_every=None and shrink the trained model with nni_dpap.speedup.speedup")
        if self.shrink_every is not None and self._dummy_input is None:
            raise ConfigError(
                "shrink_every needs an input batch to trace the model: pass dummy_input=... to DPAPPruner "
                "(or to the TorchEvaluator)"
            )
        self._leaf_modules, self._concrete_args = tuple(leaf_modules), concrete_args

        targets = select_targets(model, config_list)
        # a DistributedDataParallel model is traced through its module; names keep DDP's "module." prefix
        self._prefix = "module." if isinstance(model, DistributedDataParallel) else ""
        inner = model.module if self._prefix else model
        info = link_layers(inner, [t[len(self._prefix):] for t in targets], leaf_modules=leaf_modules,
                           concrete_args=concrete_args,
                           neuron_map={k[len(self._prefix):] if k.startswith(self._prefix) else k:
                                       v[len(self._prefix):] if v.startswith(self._prefix) else v
                                       for k, v in (neuron_map or {}).items()})
        info = _with_prefix(info, self._prefix)
        for name in info.output_layers:
            _logger.info("%s is an output layer: DPAP never prunes output layers, it is left untouched", name)
        if not info.links:
            raise ConfigError(
                f"nothing left to prune: the selected layers {targets} are all output layers. "
                "Select hidden conv/linear layers that are followed by a neuron or activation."
            )
        self.output_layers: tuple[str, ...] = info.output_layers
        self.temporal = bool(temporal)
        if self.temporal:
            for link in info.links.values():
                if not link.spiking or link.neuron is None:
                    raise ConfigError(
                        f"temporal=True prunes (neuron, time step) pairs of spiking neurons, but layer {link.name!r} "
                        f"is followed by {link.neuron or 'a functional activation'}, not a spiking neuron: use "
                        "temporal=False for ANNs, or exclude the layer from the config_list"
                    )
        norms = sorted({bn for link in info.links.values() for bn in link.norms})
        internal = [{"op_names": sorted(info.links)}] + ([{"op_names": norms}] if norms else [])
        super().__init__(model=model, config_list=internal, evaluator=evaluator, existed_wrappers=existed_wrappers)
        self.evaluator: Evaluator

        self._modules = dict(self.bound_model.named_modules())
        self._neurons = [(m, a) for m in self._modules.values() if (a := find_adapter(m)) is not None]
        self._layers: dict[str, LayerState] = {}
        for name, link in info.links.items():
            self._layers[name] = self._build_layer(link)
        self.current_epoch = 0
        self._global_step = 0
        self._masked: set[str] = set()
        self._call_counts: dict[int, int] = defaultdict(int)
        self.history: list[dict[str, Any]] = []
        self.writer = writer
        self._hooks: list[Any] = []
        self._pruned_since_shrink = False
        self.shrinks = 0

    # -- construction ------------------------------------------------------------------
    def _build_layer(self, link: LayerLink) -> LayerState:
        module = self._modules[link.name]
        if link.kind == "linear":
            n_out, n_in = module.out_features, module.in_features
        else:
            n_out, n_in = module.out_channels, module.in_channels
        for bn in link.norms:
            features = getattr(self._modules[bn], "num_features", n_out)
            if features != n_out:
                raise ConfigError(
                    f"BatchNorm {bn!r} after layer {link.name!r} has {features} features, expected {n_out}"
                )
        device = self._wrapper_target(link.name, "weight").device
        cfg = self.dpap_config
        rule = cfg.rule(link.kind)
        prune_neurons = cfg.prune_conv_channels if link.kind == "conv" else cfg.prune_linear_neurons
        prune_synapses = cfg.prune_linear_synapses if link.kind == "linear" else cfg.prune_conv_kernels
        if link.kind == "conv" and prune_synapses and getattr(module, "groups", 1) != 1:
            _logger.warning("%s is a grouped conv: kernel-slice pruning is skipped for it", link.name)
            prune_synapses = False
        return LayerState(
            link=link,
            module=module,
            n_out=n_out,
            n_in=n_in,
            stats=LayerStatistics(n_out, n_in, cfg.trace_tau, cfg.accumulation, temporal=self.temporal,
                                  device=device),
            connectivity=group_connectivity(module, n_out, n_in).to(device),
            neurons=SurvivalState((n_out,), rule, cfg, device) if prune_neurons else None,
            synapses=SurvivalState((n_out, n_in), rule, cfg, device) if prune_synapses else None,
        )

    def _wrapper_target(self, module_name: str, target_name: str) -> Tensor:
        target = self._module_wrappers[module_name].pruning_target_spaces[target_name].target
        assert target is not None
        return target

    @property
    def layers(self) -> dict[str, LayerLink]:
        """The pruned layers and the neuron / activation DPAP reads for each."""
        return {name: layer.link for name, layer in self._layers.items()}

    # -- NNI hooks and trigger ---------------------------------------------------------
    def _register_hooks(self, evaluator: Evaluator) -> None:
        root = self.bound_model.module if self._prefix else self.bound_model  # NNI re-wraps DDP models
        hooks: list[Any] = [_ForwardPreHook(root, "", self._root_hook_factory)]
        for name, layer in self._layers.items():
            hooks.append(_ForwardPreHook(layer.module, name, self._pre_hook_factory(layer)))
        readers: dict[str, list[_Reader]] = defaultdict(list)
        for layer in self._layers.values():
            for readout in layer.link.readouts:
                readers[readout.module].append((layer, readout.call_index, readout.tail))
        for module_name, entries in readers.items():
            hooks.append(ForwardHook(self._modules[module_name], module_name, self._post_hook_factory(entries)))
        evaluator.register_hooks(hooks)
        self._hooks = hooks

    def _root_hook_factory(self, buffer: list) -> Callable[..., None]:
        def start_of_forward(module: nn.Module, args: Any) -> None:
            self._commit_pending()
            self._call_counts.clear()
            for neuron, adapter in self._neurons:  # state is reset between batches without user action
                adapter.reset(neuron)

        return start_of_forward

    def _pre_hook_factory(self, layer: LayerState) -> Callable[[list], Callable[..., None]]:
        def factory(buffer: list) -> Callable[..., None]:
            def collect_pre(module: nn.Module, args: tuple[Any, ...]) -> None:
                if module.training and args and isinstance(args[0], Tensor):
                    layer.stats.add_pre(layer.pre_rows(args[0]))

            return collect_pre

        return factory

    def _post_hook_factory(self, entries: list[_Reader]) -> Callable[[list], Callable[..., None]]:
        def factory(buffer: list) -> Callable[..., None]:
            def collect_post(module: nn.Module, args: Any, output: Any) -> None:
                index = self._call_counts[id(module)]
                self._call_counts[id(module)] = index + 1
                if not module.training:
                    return
                for layer, call_index, tail in entries:
                    if call_index is not None and call_index != index:
                        continue
                    signal = output
                    if tail:
                        signal = signal.detach().clone()
                        for op in tail:
                            signal = op(signal)
                    layer.stats.add_post(layer.post_steps(self._modules, signal))

            return collect_post

        return factory

    def _register_trigger(self, evaluator: Evaluator) -> None:
        def after_optimizer_step() -> None:
            self._global_step += 1
            self._apply_masks_to_parameters(self._masked)
            if self._global_step % self.steps_per_epoch == 0:
                self._end_epoch()

        evaluator.patch_optimizer_step(before_step_tasks=[], after_step_tasks=[after_optimizer_step])

    def _fuse_preprocess(self, evaluator: Evaluator) -> None:
        if world_size() > 1:  # data-parallel: the thresholds follow the mean over the ranks
            for layer in self._layers.values():
                layer.stats.batch_mean = mean_over_ranks
        self._register_hooks(evaluator)
        self._register_trigger(evaluator)

    def _fuse_postprocess(self, evaluator: Evaluator) -> None:
        self._commit_pending()
        expected = self.epochs * self.steps_per_epoch
        if self._global_step != expected:
            _logger.warning(
                "the training function made %d optimizer steps, but epochs * steps_per_epoch = %d * %d = %d: "
                "DPAP's epochs were not the training loop's epochs. Pass steps_per_epoch=len(train_loader) and "
                "make the training function respect max_steps / max_epochs.",
                self._global_step, self.epochs, self.steps_per_epoch, expected,
            )

    def _single_compress(self, max_steps: int | None, max_epochs: int | None) -> None:
        if max_steps is not None or max_epochs is not None:
            raise ConfigError(
                "DPAPPruner trains for epochs * steps_per_epoch steps; set epochs= and steps_per_epoch= in its "
                "constructor instead of passing max_steps / max_epochs to compress()"
            )
        remaining = self.epochs - self.current_epoch  # fewer than epochs after load_state_dict (resume)
        if remaining <= 0:
            raise ConfigError(f"all {self.epochs} epochs are done (epoch {self.current_epoch}); nothing to train")
        self._fusion_compress(remaining * self.steps_per_epoch, remaining)

    def compress(self, max_steps: int | None = None, max_epochs: int | None = None
                 ) -> tuple[nn.Module, dict[str, dict[str, Tensor]]]:
        """Train for ``epochs`` epochs while pruning; returns ``(model, masks)`` in NNI's format.

        After :meth:`load_state_dict` (resuming), only the remaining epochs are trained.
        """
        return super().compress(max_steps, max_epochs)

    # -- the three NNI stages ------------------------------------------------------------
    def _collect_data(self) -> _METRICS:
        data: _METRICS = {}
        for name, layer in self._layers.items():
            # sums over the data-parallel ranks (plain copies in a single process)
            data[name] = {"bcm": sum_over_ranks(layer.stats.bcm), "trace": sum_over_ranks(layer.stats.trace)}
            if layer.stats.time is not None:
                data[name]["time"] = sum_over_ranks(layer.stats.time)
        return data

    def _calculate_metrics(self, data: _METRICS) -> _METRICS:
        metrics: _METRICS = {}
        normalize_factors = self.dpap_config.normalize_spine_factors
        for name, stats in data.items():
            layer = self._layers[name]
            metrics[name] = {
                "neuron": developmental_value(stats["bcm"], stats["trace"], layer.synapse_mask.float(),
                                              normalize_factors, layer.removed_units),
                "synapse": stats["bcm"],
            }
            if "time" in stats:
                metrics[name]["time"] = stats["time"].t()  # [n_out, T], Eq. (8)
        return metrics

    def _generate_sparsity(self, metrics: _METRICS) -> _METRICS:
        for name, importance in metrics.items():
            layer = self._layers[name]
            if layer.neurons is not None:
                layer.neurons.step(importance["neuron"], self.current_epoch, self.keep_at_least, layer.removed_units)
            if layer.synapses is not None:
                allowed = layer.connectivity.bool()
                synapse_importance = torch.where(allowed, importance["synapse"], importance["synapse"][allowed].min())
                layer.synapses.step(synapse_importance, self.current_epoch, self.keep_at_least,
                                    layer.removed_synapses)
            if "time" in importance:
                if layer.time is None:
                    layer.time = SurvivalState(tuple(importance["time"].shape),
                                               self.dpap_config.rule("time", layer.link.kind), self.dpap_config,
                                               layer.connectivity.device)
                steps = importance["time"].shape[1]
                layer.time.step(importance["time"], self.current_epoch, self.keep_at_least,
                                layer.removed_units * steps)
        return self._nni_masks()

    def _apply_time_masks(self) -> None:
        """Silence the pruned (neuron, time step) pairs.

        A neuron fed by several layers keeps a pair that any of them keeps.
        """
        keep: dict[str, Tensor] = {}
        for layer in self._layers.values():
            if layer.time is None or layer.link.neuron is None:
                continue
            mask = (layer.time.mask & layer.neuron_mask[:, None]).float()
            name = layer.link.neuron
            keep[name] = torch.maximum(keep[name], mask) if name in keep and keep[name].shape == mask.shape else mask
        for name, mask in keep.items():
            neuron = self._modules[name]
            adapter = find_adapter(neuron)
            if adapter is None or not hasattr(adapter, "set_time_mask"):
                raise ConfigError(f"the neuron {name!r} cannot be silenced per time step (its adapter has no "
                                  "set_time_mask): use temporal=False")
            adapter.set_time_mask(neuron, None if bool(mask.all()) else mask)

    def _nni_masks(self) -> _METRICS:
        masks: _METRICS = {}
        for name, layer in self._layers.items():
            weight = self._wrapper_target(name, "weight")
            neuron = layer.neuron_mask
            w_mask = neuron.view(-1, *([1] * (weight.dim() - 1))).expand(weight.shape)
            if layer.synapses is not None:
                synapse = layer.synapses.mask
                if weight.dim() > 2:
                    synapse = synapse.view(*synapse.shape, *([1] * (weight.dim() - 2)))
                w_mask = w_mask & synapse.expand(weight.shape)
            masks[name] = {"weight": w_mask.to(weight.dtype).contiguous()}
            if self._module_wrappers[name].pruning_target_spaces["bias"].target is not None:
                masks[name]["bias"] = neuron.to(weight.dtype)
            for bn in layer.link.norms:
                masks[bn] = {}
                for target_name, space in self._module_wrappers[bn].pruning_target_spaces.items():
                    if space.target is not None:
                        masks[bn][target_name] = neuron.to(space.target.dtype)
        return masks

    # -- epoch boundary ------------------------------------------------------------------
    def _commit_pending(self) -> None:
        for layer in self._layers.values():
            if layer.stats.pending:
                layer.stats.commit()

    def _end_epoch(self) -> None:
        self._commit_pending()
        kept_before = {n: int(lay.neuron_mask.sum()) for n, lay in self._layers.items()}
        masks = self.generate_masks()
        self.update_masks(masks)
        self._pruned_since_shrink |= any(int(lay.neuron_mask.sum()) < kept_before[n] for n, lay in self._layers.items())
        for name, layer in self._layers.items():
            if not bool(layer.neuron_mask.all()) or not bool(layer.synapse_mask[layer.connectivity.bool()].all()):
                self._masked.add(name)
                self._masked.update(layer.link.norms)
            layer.stats.end_epoch()
        self._apply_masks_to_parameters(self._masked)
        if self.temporal:
            self._apply_time_masks()
        self._record_epoch()
        if self.shrink_every is not None and (self.current_epoch + 1) % self.shrink_every == 0 \
                and self._pruned_since_shrink:
            self.shrink()
        self.current_epoch += 1

    # -- physical shrinking during training ------------------------------------------------
    def shrink(self) -> dict[str, KeptIndices]:
        """Remove the pruned units physically now and carry the training state over.

        The model object stays the same (its layers are replaced in place), so the
        training loop keeps running on it; the evaluator's optimizers are re-pointed at
        the new parameters with their state sliced; DPAP's statistics, survival values
        and masks are sliced to the kept units; the hooks move to the new layers.
        """
        if self._dummy_input is None:
            raise ConfigError("shrinking needs dummy_input=... (DPAPPruner or TorchEvaluator)")
        model = self.bound_model
        was_training = model.training
        old_params = dict(model.named_parameters())
        masks = self.get_masks()
        own_hooks = [h for h in self._hooks if h.handle is not None]
        for hook in own_hooks:
            hook.remove()
        if self.evaluator is not None and hasattr(self.evaluator, "_hooks"):
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
        for optimizer in getattr(self.evaluator, "_optimizers", None) or []:
            remap_optimizer(optimizer, old_params, new_params, kept)
        self._modules = dict(model.named_modules())
        for name, layer in self._layers.items():
            layer.shrink_to(self._modules[name], kept.get(name))
        self.update_masks(self._nni_masks())
        self._masked = set(self._module_wrappers)
        self._apply_masks_to_parameters(self._masked)
        if self.temporal:
            self._apply_time_masks()
        if self.evaluator is not None and own_hooks:
            self._register_hooks(self.evaluator)
        self._pruned_since_shrink = False
        self.shrinks += 1
        _logger.info("DPAP shrank the model at epoch %d: %s", self.current_epoch, ", ".join(
            f"{n} {lay.n_out}" for n, lay in self._layers.items()))
        return kept


    @torch.no_grad()
    def _apply_masks_to_parameters(self, names: set[str] | Sequence[str]) -> None:
        """Zero masked weights in place, so no optimizer update can revive them."""
        for name in names:
            for space in self._module_wrappers[name].pruning_target_spaces.values():
                if space.mask is not None and space.target is not None:
                    space.target.data.mul_(space.mask)

    def unwrap_model(self) -> None:
        """Unwrap, leaving pruned weights (and their bias / BatchNorm entries) at exactly zero."""
        if self._is_wrapped:
            self._apply_masks_to_parameters(list(self._module_wrappers))
        super().unwrap_model()

    # -- reporting -----------------------------------------------------------------------
    def summary(self) -> dict[str, dict[str, int]]:
        """Per layer: kept / total neurons (channels), synapses and weights."""
        out: dict[str, dict[str, int]] = {}
        for name, layer in self._layers.items():
            allowed = layer.connectivity.bool()
            weight = self._wrapper_target(name, "weight")
            mask = self._module_wrappers[name].pruning_target_spaces["weight"].mask
            out[name] = {
                "neurons_kept": int(layer.neuron_mask.sum()),
                "neurons_total": layer.n_out,
                "synapses_kept": int((layer.synapse_mask & layer.neuron_mask[:, None])[allowed].sum()),
                "synapses_total": int(allowed.sum()),
                "weights_kept": int(mask.count_nonzero()) if mask is not None else weight.numel(),
                "weights_total": weight.numel(),
            }
            if layer.time is not None:
                alive = layer.neuron_mask[:, None].expand_as(layer.time.mask)
                out[name]["steps_kept"] = int((layer.time.mask & alive).sum())
                out[name]["steps_total"] = int(alive.sum())
        return out

    def time_sparsity(self) -> float:
        """Fraction of the (live neuron, time step) pairs that temporal pruning silenced (0 without it)."""
        summary = self.summary().values()
        total = sum(s.get("steps_total", 0) for s in summary)
        return 1.0 - sum(s.get("steps_kept", 0) for s in summary) / total if total else 0.0

    def _record_epoch(self) -> None:
        summary = self.summary()
        self.history.append({"epoch": self.current_epoch, "layers": summary})
        parts = [
            f"{name} {s['neurons_kept']}/{s['neurons_total']} units, "
            f"{s['weights_kept'] / max(s['weights_total'], 1):.1%} weights"
            for name, s in summary.items()
        ]
        if self.temporal:
            parts.append(f"time sparsity {self.time_sparsity():.1%}")
        _logger.info("DPAP epoch %d: %s", self.current_epoch, "; ".join(parts))
        if self.writer is not None:
            step = self.current_epoch
            for name, s in summary.items():
                self.writer.add_scalar(f"dpap/kept_units/{name}", s["neurons_kept"] / s["neurons_total"], step)
                self.writer.add_scalar(f"dpap/kept_weights/{name}", s["weights_kept"] / s["weights_total"], step)
                layer = self._layers[name]
                if layer.neurons is not None:
                    self.writer.add_histogram(f"dpap/survival_units/{name}", layer.neurons.value, step)
                if layer.synapses is not None:
                    self.writer.add_histogram(f"dpap/survival_synapses/{name}", layer.synapses.value, step)
                if "steps_total" in s:
                    self.writer.add_scalar(f"dpap/kept_steps/{name}", s["steps_kept"] / max(s["steps_total"], 1), step)

    # -- persistence ---------------------------------------------------------------------
    def _canonical(self, name: str) -> str:
        return name[len(self._prefix):] if self._prefix and name.startswith(self._prefix) else name

    def state_dict(self) -> dict[str, Any]:
        """DPAP's whole state (statistics, survival values, masks, epoch) for checkpoints.

        Layer names are those of the plain model (without DistributedDataParallel's
        ``module.``), so a checkpoint of a data-parallel run resumes in one process and
        the other way round.
        """
        return {
            "epoch": self.current_epoch,
            "global_step": self._global_step,
            "config": self.dpap_config.to_dict(),
            "layers": {
                name: {
                    "stats": layer.stats.state_dict(),
                    "neurons": None if layer.neurons is None else layer.neurons.state_dict(),
                    "synapses": None if layer.synapses is None else layer.synapses.state_dict(),
                    "time": None if layer.time is None else layer.time.state_dict(),
                }
                for name, layer in ((self._canonical(n), lay) for n, lay in self._layers.items())
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output and re-apply its masks."""
        layers = state.get("layers") if isinstance(state, Mapping) else None
        if isinstance(layers, Mapping):
            layers = {self._prefix + self._canonical(k): v for k, v in layers.items()}
        if not isinstance(layers, Mapping) or set(layers) != set(self._layers):
            got = sorted(layers) if isinstance(layers, Mapping) else type(layers).__name__
            raise ConfigError(
                f"DPAP state does not match this pruner: it has layers {got}, the pruner prunes {sorted(self._layers)}"
            )
        for name, layer in self._layers.items():
            entry = layers[name]
            layer.stats.load_state_dict(entry["stats"])
            for key in ("neurons", "synapses"):
                survival = getattr(layer, key)
                if (survival is None) != (entry.get(key) is None):
                    raise ConfigError(f"DPAP state of {name!r}: {key} pruning differs from this pruner's preset")
                if survival is not None:
                    survival.load_state_dict(entry[key])
            saved_time = entry.get("time")
            if saved_time is not None:
                if not self.temporal:
                    raise ConfigError(f"DPAP state of {name!r} has temporal masks but this pruner has temporal=False")
                layer.time = SurvivalState(tuple(saved_time["value"].shape), self.dpap_config.rule(
                    "time", layer.link.kind), self.dpap_config, layer.connectivity.device)
                layer.time.load_state_dict(saved_time)
        self.current_epoch = int(state["epoch"])
        self._global_step = int(state["global_step"])
        self.update_masks(self._nni_masks())
        self._masked = set(self._module_wrappers)
        self._apply_masks_to_parameters(self._masked)
        if self.temporal:
            self._apply_time_masks()
