"""Keeping DPAP's statistics identical across data-parallel processes (torch.distributed).

Every rank sees its own shard of the data, so its traces and BCM sums are its own.
Two collectives make the ranks agree, so that they compute identical masks:

* the batch mean of the postsynaptic trace that drives BCM's sliding threshold
  (Eqs. 4-5) is averaged over the ranks at every batch, so each rank's threshold is
  the one a single process would have on the union of the ranks' batches, and its
  BCM products use it;
* before the survival update, the window sums (BCM, postsynaptic traces, time-step
  importance) are summed over the ranks.

With equal batch sizes per rank (``DistributedSampler``), the result equals one
process that trains on batches made of the ranks' batches put together.
"""

from __future__ import annotations

import torch.distributed as dist
from torch import Tensor

__all__ = ["world_size", "mean_over_ranks", "sum_over_ranks"]


def world_size() -> int:
    """Number of processes of the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over all ranks (a copy; the input is left as it is)."""
    out = tensor.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def mean_over_ranks(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over all ranks (a copy)."""
    size = world_size()
    return sum_over_ranks(tensor) / size if size > 1 else tensor.detach().clone()
