"""DPAP's state of one prunable layer: statistics, survival values, masks, connectivity.

A :class:`LayerState` owns everything DPAP keeps for a layer and every operation on it:
it is built from the layer's :class:`~nni_dpap.graph.LayerLink` and the configuration,
reads the layer's input and its neuron's output, turns a window of statistics into a
survival update, gives the weight mask, is saved and restored, and is cut down to the
units a physical shrink kept. The pruner keeps the NNI side (wrappers, masks in NNI's
format, hooks) to itself.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from .adapters import NeuronAdapter, find_adapter
from .errors import ConfigError, ShapeError
from .graph import LayerLink
from .metrics import LayerStatistics, window_importance
from .ordering import in_order_of
from .plasticity import developmental_value, reduce_spatial
from .policy import DPAPConfig, SurvivalState
from .slicing import KeptIndices, cut

__all__ = ["LayerState", "group_connectivity", "layer_size", "neuron_time_masks", "removable_fraction"]

_logger = logging.getLogger(__name__)


def layer_size(module: nn.Module) -> tuple[int, int]:
    """``(output units, input units)`` of a conv or linear layer."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    return int(module.out_channels), int(module.in_channels)  # type: ignore[arg-type]


def group_connectivity(module: nn.Module, n_out: int, n_in: int) -> Tensor:
    """0/1 ``[n_out, n_in]``: the synapses a (grouped) conv or a linear layer has."""
    groups = int(getattr(module, "groups", 1))
    if groups == 1:
        return torch.ones(n_out, n_in)
    out_group = torch.arange(n_out) // (n_out // groups)
    in_group = torch.arange(n_in) // (n_in // groups)
    return (out_group[:, None] == in_group[None, :]).float()


@dataclass
class LayerState:
    """Everything DPAP keeps for one prunable layer: its link, statistics, survival states."""

    link: LayerLink
    module: nn.Module
    config: DPAPConfig
    stats: LayerStatistics
    connectivity: Tensor  # [n_out, n_in] 0/1: synapses the layer's structure allows (groups)
    neurons: SurvivalState | None
    synapses: SurvivalState | None
    units_built: int  # output units and allowed synapses of the layer as built, before any shrink
    synapses_built: int
    time: SurvivalState | None = None  # [n_out, T] (neuron, time step) pairs, created at the first update
    movement: Tensor | None = None  # [n_out, n_in] Movement's score of each synapse (unit_order='movement')

    @classmethod
    def build(cls, link: LayerLink, modules: Mapping[str, nn.Module], config: DPAPConfig, temporal: bool,
              device: torch.device) -> LayerState:
        """A fresh state for the layer ``link`` names (``modules``: the model's modules by name), as ``config`` asks."""
        module = modules[link.name]
        n_out, n_in = layer_size(module)
        for bn in link.norms:
            if getattr(modules[bn], "num_features", n_out) != n_out:
                raise ConfigError(f"BatchNorm {bn!r} after layer {link.name!r} does not have {n_out} features")
        prune_neurons = config.prune_conv_channels if link.kind == "conv" else config.prune_linear_neurons
        prune_synapses = config.prune_linear_synapses if link.kind == "linear" else config.prune_conv_kernels
        if link.kind == "conv" and prune_synapses and getattr(module, "groups", 1) != 1:
            _logger.warning("%s is a grouped conv: kernel-slice pruning is skipped for it", link.name)
            prune_synapses = False
        connectivity = group_connectivity(module, n_out, n_in).to(device)
        return cls(
            link=link, module=module, config=config,
            stats=LayerStatistics(n_out, n_in, config.trace_tau, config.accumulation, temporal=temporal,
                                  device=device),
            connectivity=connectivity,
            neurons=config.survival_state((n_out,), "neurons", link.kind, device) if prune_neurons else None,
            synapses=config.survival_state((n_out, n_in), "synapses", link.kind, device) if prune_synapses else None,
            units_built=n_out, synapses_built=int(connectivity.sum()),
            movement=torch.zeros(n_out, n_in, device=device) if config.unit_order == "movement" else None,
        )

    def __post_init__(self) -> None:
        self._adapter: NeuronAdapter | None = None
        self._mask_cache: tuple[tuple[Tensor | None, ...], tuple[Tensor, Tensor], tuple[int | None, ...]] | None = None
        self._weight_dim = self.weight.dim()  # (read on every forward; a shrink keeps the number of dims)

    # -- sizes and masks -------------------------------------------------------------
    @property
    def n_out(self) -> int:
        return self.stats.n_out

    @property
    def n_in(self) -> int:
        return self.stats.n_in

    @property
    def removed_units(self) -> int:
        """Output units removed physically by shrinking (they count as zero importance)."""
        return self.units_built - self.n_out

    @property
    def synapses_allowed(self) -> int:
        """Synapses the layer's (shrunk) structure has: ``connectivity``'s ones."""
        return int(self.connectivity.sum())

    @property
    def removed_synapses(self) -> int:
        return self.synapses_built - self.synapses_allowed

    @property
    def neuron_mask(self) -> Tensor:
        """The output units still alive: not pruned, and with a synapse left if synapses are pruned.

        A unit that lost every synapse (e.g. when only FC synapses are pruned) would emit ``f(bias)``
        whatever the input: it is gone with its bias, so the masked model is what physical removal keeps.
        """
        return self._masks()[0]

    @property
    def synapse_mask(self) -> Tensor:
        """The synapses that exist: allowed by the layer's structure and not pruned."""
        return self._masks()[1]

    def _masks(self) -> tuple[Tensor, Tensor]:
        """``(neuron_mask, synapse_mask)``, recomputed only when a survival mask or the connectivity changed.

        They are read a few times per layer at every epoch end (masks, importance, summary, shrink); the
        sources are compared by identity and in-place version, and held, so that a new tensor at the
        address of a freed one cannot pass for it.
        """
        sources = (self.connectivity, self.neurons.mask if self.neurons is not None else None,
                   self.synapses.mask if self.synapses is not None else None)
        versions = tuple(None if t is None else t._version for t in sources)
        cached = self._mask_cache
        if cached is None or cached[2] != versions or any(a is not b for a, b in zip(cached[0], sources)):
            synapse = self.connectivity.bool()
            if self.synapses is not None:
                synapse = synapse & self.synapses.mask
            neuron = self.neurons.mask if self.neurons is not None else \
                torch.ones(self.n_out, dtype=torch.bool, device=self.connectivity.device)
            if self.synapses is not None:
                neuron = neuron & synapse.any(1)
            cached = self._mask_cache = (sources, (neuron, synapse), versions)
        return cached[1]

    @property
    def pruned(self) -> bool:
        """Whether any unit or allowed synapse of the layer is pruned."""
        return not bool(self.neuron_mask.all()) or bool(self.synapse_mask.sum() < self.synapses_allowed)

    def weight_mask(self, weight: Tensor) -> Tensor:
        """0/1 mask of ``weight`` (pruned neurons' rows and pruned synapses), in the weight's dtype."""
        mask = self.neuron_mask.view(-1, *([1] * (weight.dim() - 1))).expand(weight.shape)
        if self.synapses is not None:
            synapse = self.synapses.mask
            if weight.dim() > 2:
                synapse = synapse.view(*synapse.shape, *([1] * (weight.dim() - 2)))
            mask = mask & synapse.expand(weight.shape)
        return mask.to(weight.dtype).contiguous()

    def time_keep(self) -> Tensor | None:
        """0/1 ``[n_out, T]``: the (neuron, step) pairs still allowed to fire (``None`` without temporal pruning)."""
        if self.time is None:
            return None
        return (self.time.mask & self.neuron_mask[:, None]).float()

    @property
    def weight(self) -> Tensor:
        wrapper = getattr(self.module, "_nni_wrapper", None)  # wrapped: the parameter, not the last forward's copy
        weight = getattr(wrapper, "weight", None) if wrapper is not None else self.module.weight
        assert isinstance(weight, Tensor)
        return weight

    # -- reading the signals ---------------------------------------------------------
    def pre_rows(self, x: Tensor) -> Tensor:
        """The layer's input as ``[rows, n_in]``: one row per (time step, sample), time-major.

        Accepts the folded ``[T*B, C, ...]`` layout, an unfolded ``[T, B, C, ...]`` input of a
        multi-step conv (SpikingJelly's ``layer.Conv2d``), and any leading dims for linear layers.
        """
        x = x.detach()
        if self.link.kind == "linear":
            return x.reshape(-1, x.shape[-1])
        if x.dim() == self._weight_dim + 1:
            x = x.flatten(0, 1)
        return reduce_spatial(x, channel_dim=1)

    def post_steps(self, modules: Mapping[str, nn.Module], output: Any) -> Tensor:
        """The postsynaptic signal of one call as ``[t, B, n_out]``."""
        if self.link.spiking and self.link.neuron is not None:
            neuron = modules[self.link.neuron]
            if self._adapter is None:  # looked up once: this runs on every forward of the training loop
                self._adapter = find_adapter(neuron)
                assert self._adapter is not None
            return reduce_spatial(self._adapter.split_steps(neuron, output).detach(), channel_dim=2)
        output = output.detach()
        if self.link.kind == "linear":
            return output.reshape(1, -1, output.shape[-1])
        return reduce_spatial(output, channel_dim=1).unsqueeze(0)

    # -- the survival update -----------------------------------------------------------
    def importance(self, window: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The importance of a window of (rank-summed) statistics, over the synapses that still exist.

        With ``synapse_importance='bcm_weight'`` a synapse's importance is also scaled by its ``|w|``
        (summed over a kernel slice), and with ``neuron_importance='spine_weight'`` so is each spine's
        BCM in a unit's D of Eq. (7); with ``synapse_competition='neuron'`` a synapse's importance is
        then divided by the summed ``|importance|`` of its neuron's synapses; with ``unit_order='movement'``
        the values are finally handed out in the order of Movement's score (:mod:`nni_dpap.ordering`).
        """
        importance = window_importance(window, self.synapse_mask.float(), self.config.normalize_spine_factors,
                                       self.removed_units)
        weigh_synapses = self.synapses is not None and self.config.synapse_importance == "bcm_weight"
        weigh_spines = self.config.neuron_importance == "spine_weight"
        if weigh_synapses or weigh_spines:
            strength = self.strength()
            if weigh_spines:
                importance["neuron"] = developmental_value(window["bcm"] * strength, window["trace"],
                                                           self.synapse_mask.float(),
                                                           self.config.normalize_spine_factors, self.removed_units)
            if weigh_synapses:
                importance["synapse"] = importance["synapse"] * strength
        if self.synapses is not None and self.config.synapse_competition == "neuron":
            synapse = importance["synapse"]  # (pruned synapses and removed inputs hold 0: they add nothing)
            total = (synapse.abs() * self.synapse_mask).sum(1, keepdim=True)
            importance["synapse"] = torch.where(total > 0, synapse / total.clamp_min(1e-30), 0.0)
        if self.movement is not None:
            importance["neuron"] = in_order_of(importance["neuron"], self.movement.sum(1), self.neuron_mask)
            if self.synapses is not None:
                alive = self.synapse_mask & self.neuron_mask[:, None]
                importance["synapse"] = in_order_of(importance["synapse"], self.movement, alive)
        return importance

    def add_movement(self) -> None:
        """Add this optimizer step's Movement score (read from the weight's gradient) to ``movement``."""
        weight = self.weight
        if self.movement is not None and weight.grad is not None:
            # the step's score -w * dL/dw, summed over each kernel slice by per_synapse, added in place
            self.movement.sub_(self.per_synapse(weight.detach() * weight.grad))

    def strength(self) -> Tensor:
        """``|w|`` of every synapse as ``[n_out, n_in]`` (summed over a kernel slice; 0 where groups forbid)."""
        return self.per_synapse(self.weight.detach().abs())

    def per_synapse(self, values: Tensor) -> Tensor:
        """Weight-shaped ``values`` (or summed over kernel slices) as ``[n_out, n_in]``, 0 where groups forbid."""
        if values.dim() > 2:
            values = values.flatten(2).sum(-1)
        if values.shape != self.connectivity.shape:  # a grouped conv holds only its groups' synapses, row by row
            allowed = self.connectivity.bool().to(values.device)  # (built only here: this runs on every step)
            values = torch.zeros(allowed.shape, dtype=values.dtype, device=values.device).masked_scatter_(
                allowed, values)
        return values.to(self.connectivity.device)

    def update(self, importance: Mapping[str, Tensor], epoch: int, keep_at_least: int) -> None:
        """Eqs. (9)-(11) for every kind of unit of the layer, with the importance of ``epoch``."""
        if self.neurons is not None:
            self.neurons.step(importance["neuron"], epoch, keep_at_least, self.removed_units)
        if self.synapses is not None:
            self.update_synapses(importance["synapse"], epoch, keep_at_least)
        if "time" in importance:
            steps = importance["time"].shape[1]
            if self.time is None:
                self.time = self.config.survival_state((self.n_out, steps), "time", self.link.kind,
                                                       self.connectivity.device)
            self.time.step(importance["time"], epoch, keep_at_least, self.removed_units * steps)

    def update_synapses(self, importance: Tensor, epoch: int, keep_at_least: int) -> None:
        """Eqs. (9)-(11) for the synapses; those the structure does not allow count as the layer's minimum."""
        assert self.synapses is not None
        allowed = self.connectivity.bool()  # (the minimum over the allowed synapses, without gathering them)
        synapse = torch.where(allowed, importance, torch.where(allowed, importance, math.inf).min())
        self.synapses.step(synapse, epoch, keep_at_least, self.removed_synapses)

    # -- shrinking ---------------------------------------------------------------------
    def select(self, module: nn.Module, kept: KeptIndices | None) -> None:
        """Slice statistics, survival values and masks to the units ``module`` kept after a shrink."""
        n_out, n_in = layer_size(module)
        out = kept.out if kept is not None and n_out != self.n_out else None
        inp = kept.inp if kept is not None and n_in != self.n_in else None
        if (n_out != self.n_out and (out is None or out.numel() != n_out)) or \
                (n_in != self.n_in and (inp is None or inp.numel() != n_in)):
            raise ShapeError(f"cannot map DPAP's state of {self.link.name!r} onto its shrunk layer")
        self.stats.select(out, inp)
        for state in (self.neurons, self.synapses):
            if state is not None:
                state.select(out, inp)
        if self.time is not None:
            self.time.select(out)
        if self.movement is not None:
            self.movement = cut(self.movement, out, inp)
        self.module = module
        self.connectivity = group_connectivity(module, n_out, n_in).to(self.connectivity.device)

    # -- reporting and persistence -------------------------------------------------------
    def summary(self, weight_mask: Tensor | None, weight_total: int) -> dict[str, int]:
        """Kept / total neurons (channels), synapses, weights and (temporal) steps."""
        neurons = self.neuron_mask
        out = {
            "neurons_kept": int(neurons.sum()),
            "neurons_total": self.n_out,
            "synapses_kept": int((self.synapse_mask & neurons[:, None]).sum()),  # (synapse_mask: allowed ones only)
            "synapses_total": self.synapses_allowed,
            "weights_kept": int(weight_mask.count_nonzero()) if weight_mask is not None else weight_total,
            "weights_total": weight_total,
        }
        if self.time is not None:
            alive = self.neuron_mask[:, None].expand_as(self.time.mask)
            out["steps_kept"] = int((self.time.mask & alive).sum())
            out["steps_total"] = int(alive.sum())
        return out

    def survival_values(self) -> dict[str, Tensor]:
        """The survival values ``F`` of the layer's units and synapses (those that are pruned)."""
        return {kind: state.value for kind, state in (("units", self.neurons), ("synapses", self.synapses))
                if state is not None}

    def state_dict(self) -> dict[str, Any]:
        return {
            "stats": self.stats.state_dict(),
            "neurons": None if self.neurons is None else self.neurons.state_dict(),
            "synapses": None if self.synapses is None else self.synapses.state_dict(),
            "time": None if self.time is None else self.time.state_dict(),
            "movement": None if self.movement is None else self.movement.clone(),
        }

    def load_state_dict(self, state: Mapping[str, Any], temporal: bool) -> None:
        name = self.link.name
        self.stats.load_state_dict(state["stats"])
        for key in ("neurons", "synapses"):
            survival = getattr(self, key)
            if (survival is None) != (state.get(key) is None):
                raise ConfigError(f"DPAP state of {name!r}: {key} pruning differs from this pruner's preset")
            if survival is not None:
                survival.load_state_dict(state[key])
        if self.movement is not None:
            movement = state.get("movement")
            if not isinstance(movement, Tensor) or movement.shape != self.movement.shape:
                raise ConfigError(f"DPAP state of {name!r} has no Movement score of shape "
                                  f"{tuple(self.movement.shape)}: it was saved without unit_order='movement' "
                                  "(with DPAP's own ranking, the default before 2026-12-07); resume it with the "
                                  "ranking it was saved with: hparams={'unit_order': 'dpap'}")
            self.movement = movement.to(self.movement.device).float().clone()
        saved_time = state.get("time")
        if saved_time is not None:
            if not temporal:
                raise ConfigError(f"DPAP state of {name!r} has temporal masks but this pruner has temporal=False")
            self.time = self.config.survival_state(tuple(saved_time["value"].shape), "time", self.link.kind,
                                                   self.connectivity.device)
            self.time.load_state_dict(saved_time)


def neuron_time_masks(layers: Iterable[LayerState]) -> dict[str, Tensor]:
    """``{neuron module: [C, T] 0/1}``: the steps each neuron may fire at; a neuron fed by several layers keeps
    a (channel, step) pair that any of them keeps."""
    keep: dict[str, Tensor] = {}
    for layer in layers:
        mask, name = layer.time_keep(), layer.link.neuron
        if mask is None or name is None:
            continue
        keep[name] = torch.maximum(keep[name], mask) if name in keep and keep[name].shape == mask.shape else mask
    return keep


def removable_fraction(layers: Iterable[LayerState]) -> float:
    """Share of the layers' weights in output units that are pruned but still present (a shrink would remove)."""
    removable = total = 0
    for layer in layers:
        per_unit = layer.weight.numel() // max(layer.n_out, 1)
        removable += (layer.n_out - int(layer.neuron_mask.sum())) * per_unit
        total += layer.weight.numel()
    return removable / total if total else 0.0
