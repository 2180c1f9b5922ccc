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

A ``DistributedDataParallel`` model is traced through its ``.module``; DPAP's state
uses the plain model's layer names, so checkpoints move between data-parallel and
single-process runs (:func:`ddp_prefix`, :func:`strip_prefix`, :func:`with_prefix`).
"""

from __future__ import annotations

import dataclasses

import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from .graph import GraphInfo

__all__ = ["world_size", "mean_over_ranks", "sum_over_ranks", "ddp_prefix", "strip_prefix", "with_prefix"]


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


# -- DistributedDataParallel models: DPAP traces the inner module, NNI wraps the outer one ------------------
DDP_PREFIX = "module."


def ddp_prefix(model: nn.Module) -> str:
    """``"module."`` for a ``DistributedDataParallel`` model (its module names carry it), else ``""``."""
    return DDP_PREFIX if isinstance(model, DistributedDataParallel) else ""


def strip_prefix(name: str, prefix: str) -> str:
    """``name`` without the DDP prefix (the plain model's name)."""
    return name[len(prefix):] if prefix and name.startswith(prefix) else name


def with_prefix(info: GraphInfo, prefix: str) -> GraphInfo:
    """``info`` (traced on the inner model) with every module name prefixed as the DDP model names it."""
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
