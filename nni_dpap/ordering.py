"""Movement's order for DPAP's importance values (``unit_order='movement'``, the default; not the paper's rule).

DPAP's survival rule (Eqs. 9-11) turns a layer's importance values into survival updates through a
normalisation calibrated on their distribution. With ``unit_order='movement'`` that distribution is
kept as it is, value for value, but the values are handed out again among the layer's alive units
(and, separately, its alive synapses) in the order of Movement pruning's score (Sanh, Wolf and Rush,
"Movement Pruning", NeurIPS 2020), ``S = -sum_t w_t * dL/dw_t`` accumulated over every optimizer step:
the unit with the k-th highest score gets the k-th highest of DPAP's values. A unit's score is the
sum of its weights' scores. How many units the rule removes, and when, stays DPAP's; which units go
follows the loss gradient. ``benchmarks/README.md`` ("DPAP's levers") measures both halves apart.

The score is kept per layer (``LayerState.movement``, ``[n_out, n_in]``, a kernel slice summed): an
optimizer-step hook subtracts ``w * dL/dw`` before each step (``LayerState.add_movement``). Handing the
values out takes one sort of the scores and one of the values (NumPy's on the CPU, where it is faster than
PyTorch's); only runs of tied scores are sorted again, by DPAP's own values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["in_order_of"]


def _numpy_sorts(tensor: Tensor) -> bool:
    """Sort ``tensor`` with NumPy (on the CPU) rather than PyTorch (elsewhere)."""
    return tensor.device.type == "cpu"


def _descending_order(key: Tensor) -> Tensor:
    """Indices sorting ``key`` from its highest entry, ties in any order.

    On the CPU NumPy's introsort (about 1.6x faster than ``torch.argsort`` for 100k floats on one thread:
    the epoch end of every layer in the window sorts all of its alive synapses).
    """
    if _numpy_sorts(key):
        return torch.from_numpy(np.argsort(-key.numpy()))
    return key.argsort(descending=True)


def _descending_values(values: Tensor) -> Tensor:
    """``values`` sorted from the highest (NumPy's sort on the CPU: about 3x faster than ``torch.sort``)."""
    if _numpy_sorts(values):
        return torch.from_numpy(np.ascontiguousarray(np.sort(values.numpy())[::-1]))
    return values.sort(descending=True).values


def _ties_by_own_value(order: Tensor, ranked_key: Tensor, own: Tensor) -> Tensor:
    """``order`` (by descending score) with each run of tied scores re-ordered by descending ``own``, then index.

    Only the tied entries are sorted again (a few among 100k float scores; all of them before the first
    optimizer step), so the whole costs one unstable sort instead of two stable ones.
    """
    same = ranked_key[1:] == ranked_key[:-1]
    if not bool(same.any()):
        return order
    tied = torch.zeros(order.numel(), dtype=torch.bool, device=order.device)
    tied[1:] |= same
    tied[:-1] |= same
    run = torch.cat([same.new_ones(1), ~same]).cumsum(0)  # the run of equal scores each position is in
    positions = tied.nonzero().squeeze(1)
    members, runs = order[positions], run[positions]
    perm = members.argsort()  # by index first (alive entries are numbered in index order; no two are equal)
    members, runs = members[perm], runs[perm]
    perm = own[members].argsort(descending=True, stable=True)  # then by descending own value
    members, runs = members[perm], runs[perm]
    members = members[runs.argsort(stable=True)]  # and grouped by run, which comes first
    order = order.clone()
    order[positions] = members  # each run's positions get its members, in the new order
    return order


def in_order_of(values: Tensor, score: Tensor, alive: Tensor) -> Tensor:
    """``values`` with its ``alive`` entries handed out again in the order of ``score``.

    Among the ``alive`` entries, the one with the k-th highest ``score`` gets the k-th highest of
    their ``values``; entries tied in ``score`` keep the order of their own values (so a score that
    is all zeros, e.g. before the first optimizer step, leaves ``values`` as they are). The other
    entries keep their values. The multiset of alive values is unchanged.

    Parameters
    ----------
    values, score
        Tensors of one shape: DPAP's importance and Movement's score of the same units.
    alive
        Boolean mask of that shape: the units taking part.

    Examples
    --------
    >>> in_order_of(torch.tensor([3., 1., 2., 9.]), torch.tensor([0., 5., 1., -7.]),
    ...             torch.tensor([True, True, True, False]))
    tensor([1., 3., 2., 9.])
    """
    if values.shape != score.shape or values.shape != alive.shape:
        raise ValueError(f"values, score and alive must have one shape, got {tuple(values.shape)}, "
                         f"{tuple(score.shape)} and {tuple(alive.shape)}")
    index = alive.reshape(-1).nonzero().squeeze(1)
    if index.numel() < 2:
        return values.clone()
    own = values.reshape(-1)[index]
    key = score.reshape(-1)[index].to(values.device)
    order = _descending_order(key)
    order = _ties_by_own_value(order, key[order], own)
    handed_out = values.reshape(-1).clone()
    handed_out[index[order]] = _descending_values(own)  # the k-th in ``order`` gets the k-th highest value
    return handed_out.view_as(values)
