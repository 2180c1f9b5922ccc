"""The hyper-parameters of one kind of unit's survival function (Eqs. 9-11)."""

from __future__ import annotations

from dataclasses import dataclass

from .._validate import check_float

__all__ = ["SurvivalRule"]


@dataclass(frozen=True)
class SurvivalRule:
    """Hyper-parameters of the survival function of one kind of unit.

    Parameters
    ----------
    eps
        Decay value epsilon of Eq. (9): units whose normalised importance is below
        ``eps / 2`` lose survival.
    bonus
        The constant ``C`` of Eq. (10) added in epochs where ``delta`` is positive.
    eta
        Decay rate of the schedule in Eq. (11), in epochs (or as a fraction of the
        planned epochs when :attr:`DPAPConfig.relative_schedule` is set).
    start_epoch
        First epoch (0-based) whose statistics update ``F`` (same unit as ``eta``).
    gamma
        Multiplicative decay of ``F`` per update.
    beta
        Initial survival value.
    """

    eps: float
    bonus: float
    eta: float
    start_epoch: float = 0.0
    gamma: float = 0.999
    beta: float = 10.0

    def __post_init__(self) -> None:
        check_float("SurvivalRule.eps (epsilon)", self.eps, minimum=0.0)
        check_float("SurvivalRule.bonus (C)", self.bonus, minimum=0.0)
        check_float("SurvivalRule.eta", self.eta, minimum=0.0, strict_minimum=True)
        check_float("SurvivalRule.start_epoch", self.start_epoch, minimum=0.0)
        check_float("SurvivalRule.gamma", self.gamma, minimum=0.0, maximum=1.0, strict_minimum=True)
        check_float("SurvivalRule.beta (initial survival)", self.beta, minimum=0.0, strict_minimum=True)
