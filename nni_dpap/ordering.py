"""Movement's order for DPAP's importance values (``unit_order='movement'``, the default; not the paper's rule).

DPAP's survival rule (Eqs. 9-11) turns a layer's importance values into survival updates through a
normalisation calibrated on their distribution. With ``unit_order='movement'`` that distribution is
kept as it is, value for value, but the values are handed out again among the layer's alive units
(and, separately, its alive synapses) in the order of Movement pruning's score (Sanh, Wolf and Rush,
"Movement Pruning", NeurIPS 2020), ``S = -sum_t w_t * dL/dw_t`` accumulated over every optimizer step:
the unit with the k-th highest score gets the k-th highest of DPAP's values. A unit's score is the
sum of its weights' scores. How many units the rule removes, and when, stays DPAP's; which units go
follows the loss gradient. ``benchmarks/README.md`` ("DPAP's levers") measures both halves apart.

Pure PyTorch: the pruner adds :func:`movement_step` to its score in an optimizer-step hook (in place).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["movement_step", "in_order_of"]


def movement_step(weight: Tensor, grad: Tensor) -> Tensor:
    """One optimizer step's Movement score ``-w * dL/dw``, summed over a kernel slice: ``[n_out, n_in / groups]``.

    A weight that gradient descent pushes away from zero (``w`` and ``-dL/dw`` of one sign) scores
    positive, one pushed towards zero negative; a masked weight (held at zero) scores 0.
    """
    step = -(weight.detach() * grad.detach())
    return step.flatten(2).sum(-1) if step.dim() > 2 else step


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
    by_value = own.argsort(descending=True, stable=True)  # ties in score are broken by DPAP's own order
    ranked = own[by_value]
    order = score.reshape(-1)[index][by_value].to(values.device).argsort(descending=True, stable=True)
    handed = torch.empty_like(ranked)
    handed[order] = ranked  # the entry with the k-th highest score gets the k-th highest value
    return values.reshape(-1).index_copy(0, index[by_value], handed).view_as(values)
