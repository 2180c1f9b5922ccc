"""What a pruned network costs and what DPAP did.

* :mod:`.costs`: kept units, parameters and multiply-accumulates per layer, read from the weights.
* :mod:`.activity`: synaptic operations, energy and firing rates on real inputs.
* :mod:`.epochs`: the per-epoch record, log line and TensorBoard scalars of a DPAP run.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from ..data.split import take_samples
from .activity import ENERGY_AC_PJ, ENERGY_MAC_PJ, ActivityCost, FiringRates, activity_costs
from .costs import LayerCost, format_table, layer_costs, totals
from .epochs import record_epoch, time_sparsity

__all__ = ["LayerCost", "layer_costs", "totals", "format_table", "ActivityCost", "activity_costs", "FiringRates",
           "ENERGY_AC_PJ", "ENERGY_MAC_PJ", "record_epoch", "time_sparsity", "structure"]


def structure(model: nn.Module, example: Tensor, prunable: Sequence[str], time_steps: int | None = None,
              cost_samples: int = 2) -> dict[str, Any]:
    """Parameters, FLOPs, synaptic operations and energy of ``model`` (an unwrapped, possibly pruned model).

    Parameters
    ----------
    model
        The model.
    example
        An input batch (folded ``[T*B, ...]`` for event data: give ``time_steps``).
    prunable
        The layers whose parameters count as prunable (``params_kept``).
    time_steps
        ``T`` of a folded event batch, ``None`` for static inputs.
    cost_samples
        Samples used to measure output sizes for the structural counts.
    """
    costs = layer_costs(model, take_samples(example, cost_samples, time_steps))
    samples = example.shape[0] // time_steps if time_steps else None
    activity = activity_costs(model, example, samples=samples)
    all_totals, prunable_totals = totals(costs), totals(costs, prunable)
    energy = sum(a.energy_pj for a in activity.values())
    dense_energy = sum(a.dense_energy_pj for a in activity.values())
    return {
        "params_kept": prunable_totals["params_fraction"],
        "flops_kept": all_totals["macs_fraction"],
        "sops_per_sample": sum(a.ops for a in activity.values() if a.spiking_input),
        "energy_uj_per_sample": energy * 1e-6,
        "energy_ratio": energy / dense_energy if dense_energy else 1.0,
        "layers": {n: {"units": f"{c.units_kept}/{c.units_total}", "params_kept": c.params_kept,
                       "params_total": c.params_total, "macs_kept": c.macs_kept, "macs_total": c.macs_total,
                       "input_rate": activity[n].input_rate, "spiking_input": activity[n].spiking_input}
                   for n, c in costs.items()},
    }
