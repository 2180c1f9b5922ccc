"""What a spiking network does on real inputs: synaptic operations, energy, firing rates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..adapters import is_neuron
from ..graph import spike_driven_layers

__all__ = ["ActivityCost", "activity_costs", "FiringRates", "ENERGY_AC_PJ", "ENERGY_MAC_PJ"]


# Energy per operation, 45 nm CMOS, 32-bit float: add 0.9 pJ, multiply 3.7 pJ (M. Horowitz, "Computing's
# energy problem (and what we can do about it)", ISSCC 2014, doi:10.1109/ISSCC.2014.6757323). A spike
# arriving at a synapse costs one accumulate (AC); an analog input costs a multiply-accumulate (MAC).
ENERGY_AC_PJ = 0.9
ENERGY_MAC_PJ = 0.9 + 3.7


@dataclass(frozen=True)
class ActivityCost:
    """Operations one layer performed per sample (all time steps), counted on real inputs.

    ``spiking_input``: the layer's input comes from spiking neurons, so an operation is an
    accumulate (a synaptic operation, SOP), triggered by a non-zero input event and a
    non-zero weight; otherwise every input is multiplied (MAC). ``ops`` counts exactly the
    pairs (input event, non-zero weight) the layer's convolution or product touches, so
    pruned weights, removed units, silent neurons and silenced time steps all cost
    nothing. ``dense_*``: the same inputs with every weight present.
    """

    name: str
    spiking_input: bool
    input_rate: float
    ops: float
    dense_ops: float
    energy_pj: float
    dense_energy_pj: float


def _count_ops(module: nn.Module, events: Tensor) -> tuple[float, float]:
    """Exact number of (non-zero input, weight) products of ``module`` on ``events`` (0/1), and with all weights."""
    weight = module.weight.detach()  # type: ignore[operator]
    present = weight.ne(0).to(events.dtype)
    if not isinstance(module, nn.Linear) and events.dim() == weight.dim() + 1:
        events = events.flatten(0, 1)  # a multi-step conv's [T, N, C, ...] input (SpikingJelly)
    if isinstance(module, nn.Linear):
        flat = events.reshape(-1, events.shape[-1])
        return float((flat @ present.t()).sum()), float(flat.sum() * weight.shape[0])
    functional = torch.nn.functional
    conv = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[weight.dim() - 2]
    args: tuple[Any, ...] = (None, module.stride, module.padding, module.dilation, module.groups)
    return float(conv(events, present, *args).sum()), float(conv(events, torch.ones_like(present), *args).sum())


@torch.no_grad()
def activity_costs(model: nn.Module, inputs: Tensor, leaf_modules: Sequence[type[nn.Module] | str] = (),
                   samples: int | None = None) -> dict[str, ActivityCost]:
    """Synaptic operations and estimated energy of every conv / linear layer on ``inputs``.

    ``samples`` is the number of examples in ``inputs`` (default ``inputs.shape[0]``; give
    it for event data already folded to ``[T*B, ...]``). ``energy / dense_energy`` is the
    energy of the pruned network relative to the same network with all its weights.
    """
    modules = dict(model.named_modules())
    layers = [n for n, m in modules.items() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    driven = spike_driven_layers(model, leaf_modules)
    seen: dict[str, list[float]] = {name: [0.0, 0.0, 0.0, 0.0] for name in layers}  # ops, dense, non-zero, entries

    def hook(name: str):
        def record(module: nn.Module, args: Any) -> None:
            x = args[0].detach()
            events = x.ne(0).to(torch.float32) if name in driven else torch.ones_like(x, dtype=torch.float32)
            ops, dense = _count_ops(module, events)
            stats = seen[name]
            stats[0] += ops
            stats[1] += dense
            stats[2] += float(x.ne(0).sum())
            stats[3] += x.numel()
        return record

    handles = [modules[name].register_forward_pre_hook(hook(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        model(inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    batch = samples if samples is not None else inputs.shape[0]
    result: dict[str, ActivityCost] = {}
    for name in layers:
        ops, dense, nonzero, total = seen[name]
        spiking = name in driven
        energy = ENERGY_AC_PJ if spiking else ENERGY_MAC_PJ
        result[name] = ActivityCost(name, spiking, nonzero / total if total else 0.0, ops / batch, dense / batch,
                                    ops / batch * energy, dense / batch * energy)
    return result


class FiringRates:
    """Mean spike rate of every spiking neuron module while it is attached (e.g. during an evaluation pass).

    Use as a context manager: ``with FiringRates(model) as rates: evaluate(...)``, then ``rates.rates()``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.sums: dict[str, list[float]] = {}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in model.named_modules() if is_neuron(m)]

    def _hook(self, name: str) -> Any:
        def record(module: nn.Module, args: Any, output: Any) -> None:
            spikes = output[0] if isinstance(output, tuple) else output
            entry = self.sums.setdefault(name, [0.0, 0.0])
            entry[0] += float(spikes.detach().float().sum())
            entry[1] += spikes.numel()
        return record

    def rates(self) -> dict[str, float]:
        return {n: s / max(c, 1) for n, (s, c) in self.sums.items()}

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def __enter__(self) -> FiringRates:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
