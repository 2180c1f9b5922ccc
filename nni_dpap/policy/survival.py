"""The survival function of DPAP's units, Eqs. (9)-(11): pure functions and the per-group state.

For every prunable unit ``u`` (conv channel, conv kernel slice, FC neuron, FC synapse,
(neuron, time step) pair) DPAP keeps a survival value ``F_u``, initialised to
``beta``. After each epoch ``e`` (from the start epoch on), with ``x`` the unit's
importance:

.. math::

    \\delta = 2\\,\\mathrm{Norm}(x) - \\epsilon                                \\quad (9)

    \\Delta F = \\delta + C \\text{ if } \\delta \\ge 0 \\text{ else } \\delta   \\quad (10)

    F \\leftarrow \\gamma F + e^{-e/\\eta}\\, \\Delta F                           \\quad (11)

and the unit is pruned, permanently, once ``F < 0``. Units that are rarely the
most useful ones lose a little survival every epoch ("use it or lose it, gradually
decay"); any epoch in which a unit is above the ``eps/2`` normalised level earns it
the bonus ``C``. The schedule factor shrinks the updates, so the structure settles.
Pure torch, no NNI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .rule import SurvivalRule

__all__ = ["Normalization", "Schedule", "UpdateForm", "SurvivalState", "normalize", "survival_increment",
           "schedule_factor", "update_survival"]

Normalization = Literal["minmax", "percentile"]
Schedule = Literal["exp", "step"]


def normalize(
    x: Tensor,
    method: Normalization = "minmax",
    percentiles: tuple[float | None, float] = (None, 75.0),
    extra_zeros: int = 0,
    mask: Tensor | None = None,
) -> Tensor:
    """Map importance values of one layer into ``[0, 1]`` ("Normalized" of Eq. 9).

    Parameters
    ----------
    x
        Importance of every unit of a layer (any shape; normalised over all entries).
    method
        ``'minmax'``: ``(x - min) / (max - min)``. ``'percentile'``: percentile-clipped
        min-max ``clip((x - P_lo) / (P_hi - P_lo), 0, 1)`` as in the released code.
    percentiles
        ``(lo, hi)`` in percent for ``'percentile'``; ``lo=None`` means the minimum.
    extra_zeros
        Units that were physically removed from the layer and count with importance 0,
        exactly what they contribute while they are only masked (a masked unit is
        silent, so its trace, BCM and D are 0); this keeps a shrunk layer's scale equal
        to the masked layer's.
    mask
        Normalise over the entries where ``mask`` (same shape as ``x``) is true only; the
        others get 0. The same numbers as ``x[mask]`` normalised alone, without gathering them.

    Returns
    -------
    Tensor
        Same shape as ``x``; 0.5 everywhere (where ``mask``) when the range is zero.
    """
    flat = x.detach().float().flatten()
    keep = None if mask is None else mask.flatten()
    if extra_zeros:
        flat = torch.cat([flat, flat.new_zeros(extra_zeros)])
        keep = None if keep is None else torch.cat([keep, keep.new_ones(extra_zeros)])
    # entries outside the mask sort after every value: the first `count` order statistics are the masked-in ones
    last = flat if keep is None else torch.where(keep, flat, math.inf)
    count = flat.numel() if keep is None else int(keep.sum())
    if count == 0:
        return torch.zeros_like(x, dtype=torch.float32)
    if method == "minmax":
        lo = last.min()
        hi = flat.max() if keep is None else torch.where(keep, flat, -math.inf).max()
    elif method == "percentile":
        p_lo, p_hi = percentiles
        lo = last.min() if p_lo is None else _quantile(last, count, p_lo / 100.0)
        hi = _quantile(last, count, p_hi / 100.0)
    else:
        raise ConfigError(f"unknown normalization {method!r}; use 'minmax' or 'percentile'")
    if not bool(hi > lo):
        scaled = torch.full_like(x, 0.5, dtype=torch.float32)
    else:
        scaled = ((x.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)
    return scaled if mask is None else torch.where(mask, scaled, 0.0)


def _quantile(values: Tensor, count: int, q: float) -> Tensor:
    """``torch.quantile(values.sort().values[:count], q)`` (linear interpolation), bit for bit, in linear time.

    ``torch.quantile`` sorts all of ``values``; on the CPU the two order statistics it interpolates
    are selected instead (NumPy's introselect: 2-3x faster at 50-600k entries, every epoch, for every
    layer's synapses). The rank is formed as ``torch.quantile`` forms it (``q`` rounded to float32,
    times ``count - 1`` in double) and the two values are interpolated with ``torch.lerp`` in float32,
    so the result is the same number (checked against ``torch.quantile`` in the tests).
    """
    rank = float(torch.tensor(q, dtype=torch.float32)) * (count - 1)
    below, above = math.floor(rank), math.ceil(rank)
    if values.device.type == "cpu":
        picked = torch.from_numpy(np.partition(values.numpy(), (below, above))[[below, above]])
    else:
        picked = values.sort().values[[below, above]]
    return torch.lerp(picked[0], picked[1], torch.tensor(rank - below, dtype=torch.float32, device=picked.device))


def survival_increment(normalized: Tensor, eps: float, bonus: float, strict: bool = False) -> Tensor:
    """Eqs. (9)-(10): ``delta = 2 * Norm(x) - eps``; ``dF = delta + C`` where delta is positive.

    ``strict=False`` rewards ``delta >= 0`` (paper), ``strict=True`` only ``delta > 0`` (code).
    """
    delta = 2.0 * normalized - eps
    positive = delta > 0 if strict else delta >= 0
    return torch.where(positive, delta + bonus, delta)


def schedule_factor(epoch: int, eta: float, start_epoch: float = 0.0, kind: Schedule = "exp") -> float:
    """Weight of epoch ``epoch``'s update in Eq. (11); 0 before ``start_epoch``.

    ``'exp'``: ``exp(-(e - e0) / eta)`` (the paper's ``exp(-e/eta)`` for ``e0 = 0``);
    ``'step'``: ``exp(-floor((e - e0) / eta))`` (the released code).
    """
    if epoch < start_epoch:
        return 0.0
    age = (epoch - start_epoch) / eta
    if kind == "step":
        age = math.floor(age)
    elif kind != "exp":
        raise ConfigError(f"unknown schedule {kind!r}; use 'exp' or 'step'")
    return math.exp(-age)


def update_survival(value: Tensor, increment: Tensor, gamma: float, factor: float) -> Tensor:
    """Eq. (11): ``F <- gamma * F + factor * dF``."""
    return gamma * value + factor * increment


@dataclass(frozen=True)
class UpdateForm:
    """Which variant of Eqs. (9)-(11) a group of units is evaluated with.

    Parameters
    ----------
    normalization, percentiles
        ``Norm`` of Eq. (9), see :func:`normalize`.
    strict_positive
        Positive branch of Eq. (10) for ``delta > 0`` only.
    schedule
        ``'exp'`` or ``'step'``, see :func:`schedule_factor`.
    alive_only
        Normalise over the units that are still alive (pruned ones take no part and get 0);
        otherwise over all units, the pruned and removed ones counting with importance 0.
    """

    normalization: Normalization = "minmax"
    percentiles: tuple[float | None, float] = (None, 75.0)
    strict_positive: bool = False
    schedule: Schedule = "exp"
    alive_only: bool = False


class SurvivalState:
    """Survival values ``F`` and the permanent 0/1 mask of one group of units.

    Parameters
    ----------
    shape
        Shape of the unit group, e.g. ``(C_out,)`` for channels, ``(N_out, N_in)`` for synapses.
    rule
        Its :class:`SurvivalRule` (absolute schedule).
    form
        The :class:`UpdateForm` of Eqs. (9)-(11) (normalisation, positive branch, schedule).
    """

    def __init__(self, shape: tuple[int, ...], rule: SurvivalRule, form: UpdateForm = UpdateForm(),
                 device: torch.device | str | None = None) -> None:
        self.rule = rule
        self.form = form
        self.value = torch.full(shape, float(rule.beta), device=device)
        self.mask = torch.ones(shape, dtype=torch.bool, device=device)

    def step(self, importance: Tensor, epoch: int, keep_at_least: int = 0, extra_zeros: int = 0) -> int:
        """Update ``F`` with this epoch's importance (Eqs. 9-11) and prune where ``F < 0``.

        Parameters
        ----------
        importance
            Importance of every unit, same shape as the state.
        epoch
            0-based epoch whose statistics ``importance`` summarises.
        keep_at_least
            Never let fewer than this many units survive (the ones with the highest
            ``F`` are kept); 0 disables the guard.
        extra_zeros
            Units of the layer that were removed physically (see :func:`normalize`).

        Returns
        -------
        int
            Number of units pruned by this step.
        """
        factor = schedule_factor(epoch, self.rule.eta, self.rule.start_epoch, self.form.schedule)
        if factor == 0.0 or (self.rule.stop_epoch is not None and epoch >= self.rule.stop_epoch):
            return 0
        importance = importance.to(self.value.device)
        form, alive_before = self.form, int(self.mask.sum())
        if form.alive_only and alive_before >= 2:
            norm = normalize(importance, form.normalization, form.percentiles, mask=self.mask)
        else:
            norm = normalize(importance, form.normalization, form.percentiles, extra_zeros)
        increment = survival_increment(norm, self.rule.eps, self.rule.bonus, form.strict_positive)
        self.value = update_survival(self.value, increment, self.rule.gamma, factor)
        new_mask = self.mask & (self.value >= 0)
        if keep_at_least and int(new_mask.sum()) < min(keep_at_least, alive_before):
            ranked = torch.where(self.mask, self.value, torch.full_like(self.value, -math.inf)).flatten()
            keep = ranked.topk(min(keep_at_least, alive_before)).indices
            new_mask = new_mask.flatten()
            new_mask[keep] = True
            new_mask = new_mask.view_as(self.mask)
        self.mask = new_mask
        return alive_before - int(new_mask.sum())

    def select(self, out: Tensor | None, inp: Tensor | None = None) -> None:
        """Keep only the units ``out`` along dim 0 (and ``inp`` along dim 1), after a physical shrink."""
        for dim, index in ((0, out), (1, inp)):
            if index is not None and self.value.dim() > dim:
                self.value = self.value.index_select(dim, index.to(self.value.device))
                self.mask = self.mask.index_select(dim, index.to(self.mask.device))

    def state_dict(self) -> dict[str, Tensor]:
        return {"value": self.value.clone(), "mask": self.mask.clone()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for key in ("value", "mask"):
            if key not in state or tuple(state[key].shape) != tuple(self.value.shape):
                raise ConfigError(
                    f"survival state {key!r} missing or of the wrong shape "
                    f"(expected {tuple(self.value.shape)}): the checkpoint does not match this model"
                )
        self.value = state["value"].to(self.value.device, torch.float32).clone()
        self.mask = state["mask"].to(self.mask.device, torch.bool).clone()
