"""What DPAP did in an epoch: the record kept in ``pruner.history``, the log line and TensorBoard."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from torch import Tensor

__all__ = ["record_epoch", "time_sparsity"]

_logger = logging.getLogger("nni_dpap.pruner")


def time_sparsity(summary: Mapping[str, Mapping[str, int]]) -> float:
    """Fraction of the (live neuron, time step) pairs that temporal pruning silenced (0 without it)."""
    total = sum(s.get("steps_total", 0) for s in summary.values())
    return 1.0 - sum(s.get("steps_kept", 0) for s in summary.values()) / total if total else 0.0


def record_epoch(epoch: int, summary: Mapping[str, Mapping[str, int]], survival: Mapping[str, Mapping[str, Tensor]],
                 writer: Any | None = None, temporal: bool = False) -> dict[str, Any]:
    """Log one epoch's structure, write it to TensorBoard and return the history record.

    Parameters
    ----------
    epoch
        0-based epoch.
    summary
        Per layer: kept / total neurons, weights (and steps), as ``DPAPPruner.summary()``.
    survival
        Per layer: ``{'units': values, 'synapses': values}`` survival values (either may be absent).
    writer
        A ``SummaryWriter`` (or anything with ``add_scalar`` / ``add_histogram``), or ``None``.
    temporal
        Whether time steps are pruned (adds the time sparsity to the log line).
    """
    parts = [f"{name} {s['neurons_kept']}/{s['neurons_total']} units, "
             f"{s['weights_kept'] / max(s['weights_total'], 1):.1%} weights" for name, s in summary.items()]
    if temporal:
        parts.append(f"time sparsity {time_sparsity(summary):.1%}")
    _logger.info("DPAP epoch %d: %s", epoch, "; ".join(parts))
    if writer is not None:
        for name, s in summary.items():
            writer.add_scalar(f"dpap/kept_units/{name}", s["neurons_kept"] / s["neurons_total"], epoch)
            writer.add_scalar(f"dpap/kept_weights/{name}", s["weights_kept"] / s["weights_total"], epoch)
            for kind, values in survival.get(name, {}).items():
                writer.add_histogram(f"dpap/survival_{kind}/{name}", values, epoch)
            if "steps_total" in s:
                writer.add_scalar(f"dpap/kept_steps/{name}", s["steps_kept"] / max(s["steps_total"], 1), epoch)
    return {"epoch": epoch, "layers": {name: dict(s) for name, s in summary.items()}}
