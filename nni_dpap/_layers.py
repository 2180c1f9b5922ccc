"""DPAP's state of one prunable layer: statistics, survival values, masks, connectivity.

The pruner owns one :class:`LayerState` per layer and keeps the
NNI side (wrappers, masks in NNI's format, hooks) to itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from .adapters import find_adapter
from .errors import ShapeError
from .graph import LayerLink
from .metrics import LayerStatistics
from .plasticity import reduce_spatial
from .policy import SurvivalState
from .slicing import KeptIndices

__all__ = ["LayerState", "group_connectivity"]


@dataclass
class LayerState:
    """Everything DPAP keeps for one prunable layer: its link, statistics, survival states."""

    link: LayerLink
    module: nn.Module
    n_out: int
    n_in: int
    stats: LayerStatistics
    connectivity: Tensor  # [n_out, n_in] 0/1: synapses the layer's structure allows (groups)
    neurons: SurvivalState | None
    synapses: SurvivalState | None
    units_built: int = 0  # output units and allowed synapses of the layer as built, before any shrink
    synapses_built: int = 0
    time: SurvivalState | None = None  # [n_out, T] (neuron, time step) pairs, created at the first update

    def __post_init__(self) -> None:
        self._adapter: Any = None
        self.units_built = self.units_built or self.n_out
        self.synapses_built = self.synapses_built or int(self.connectivity.sum())

    @property
    def removed_units(self) -> int:
        """Output units removed physically by shrinking (they count as zero importance)."""
        return self.units_built - self.n_out

    @property
    def removed_synapses(self) -> int:
        return self.synapses_built - int(self.connectivity.sum())

    def pre_rows(self, x: Tensor) -> Tensor:
        """The layer's input as ``[rows, n_in]``: one row per (time step, sample), time-major.

        Accepts the folded ``[T*B, C, ...]`` layout, an unfolded ``[T, B, C, ...]`` input of a
        multi-step conv (SpikingJelly's ``layer.Conv2d``), and any leading dims for linear layers.
        """
        x = x.detach()
        if self.link.kind == "linear":
            return x.reshape(-1, x.shape[-1])
        if x.dim() == self.module.weight.dim() + 1:
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

    @property
    def neuron_mask(self) -> Tensor:
        if self.neurons is not None:
            return self.neurons.mask
        return torch.ones(self.n_out, dtype=torch.bool, device=self.connectivity.device)

    @property
    def synapse_mask(self) -> Tensor:
        base = self.connectivity.bool()
        return base & self.synapses.mask if self.synapses is not None else base

    def shrink_to(self, module: nn.Module, kept: KeptIndices | None) -> None:
        """Slice the statistics, survival values and masks to the units ``module`` kept after a shrink."""
        layer = self
        n_out, n_in = (module.out_features, module.in_features) if layer.link.kind == "linear" \
            else (module.out_channels, module.in_channels)
        out = kept.out if kept is not None and n_out != layer.n_out else None
        inp = kept.inp if kept is not None and n_in != layer.n_in else None
        if (n_out != layer.n_out and (out is None or out.numel() != n_out)) or \
                (n_in != layer.n_in and (inp is None or inp.numel() != n_in)):
            raise ShapeError(f"cannot map DPAP's state of {layer.link.name!r} onto its shrunk layer")

        def cut(t: Tensor, dims: tuple[int, ...]) -> Tensor:
            for dim, index in zip(dims, (out, inp)):
                if index is not None:
                    t = t.index_select(dim, index.to(t.device))
            return t.clone()

        stats = layer.stats
        stats.theta, stats.trace = cut(stats.theta, (0,)), cut(stats.trace, (0,))
        stats.bcm = cut(stats.bcm, (0, 1))
        if stats.time is not None:
            stats.time = cut(stats.time, (1,))
        stats.n_out, stats.n_in = n_out, n_in
        if layer.neurons is not None:
            layer.neurons.value, layer.neurons.mask = cut(layer.neurons.value, (0,)), cut(layer.neurons.mask, (0,))
        if layer.synapses is not None:
            layer.synapses.value = cut(layer.synapses.value, (0, 1))
            layer.synapses.mask = cut(layer.synapses.mask, (0, 1))
        if layer.time is not None:
            layer.time.value, layer.time.mask = cut(layer.time.value, (0,)), cut(layer.time.mask, (0,))
        layer.module, layer.n_out, layer.n_in = module, n_out, n_in
        layer.connectivity = group_connectivity(module, n_out, n_in).to(layer.connectivity.device)


def group_connectivity(module: nn.Module, n_out: int, n_in: int) -> Tensor:
    """0/1 ``[n_out, n_in]``: the synapses a (grouped) conv or a linear layer has."""
    groups = getattr(module, "groups", 1)
    if groups == 1:
        return torch.ones(n_out, n_in)
    out_group = torch.arange(n_out) // (n_out // groups)
    in_group = torch.arange(n_in) // (n_in // groups)
    return (out_group[:, None] == in_group[None, :]).float()
