"""The hyper-parameters of one kind of unit's survival function (Eqs. 9-11)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

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
        for name in ("eps", "bonus", "eta", "start_epoch", "gamma", "beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"SurvivalRule.{name} must be a finite number, got {value!r}")
        if self.eta <= 0:
            raise ConfigError(f"SurvivalRule.eta must be > 0, got {self.eta}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"SurvivalRule.gamma must be in (0, 1], got {self.gamma}")
        if self.start_epoch < 0:
            raise ConfigError(f"SurvivalRule.start_epoch must be >= 0, got {self.start_epoch}")
        if self.bonus < 0:
            raise ConfigError(f"SurvivalRule.bonus (C) must be >= 0, got {self.bonus}")
