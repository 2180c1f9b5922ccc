"""DPAP's adaptive pruning rule (pure torch, no NNI).

* :mod:`.rule`: :class:`SurvivalRule`, the hyper-parameters of one kind of unit.
* :mod:`.survival`: Eqs. (9)-(11) as pure functions, and :class:`SurvivalState`, the
  survival values and permanent masks of one group of units.
* :mod:`.config`: :class:`DPAPConfig`, everything DPAP can be told, its flat names for
  HPO and the command line, and the presets ``paper`` and ``braincog``.
"""

from __future__ import annotations

from .config import PRESETS, Accumulation, DPAPConfig, LayerKind, get_preset
from .rule import SurvivalRule
from .survival import (
    Normalization, Schedule, SurvivalState, UpdateForm, normalize, schedule_factor, survival_increment,
    update_survival,
)

__all__ = [
    "SurvivalRule", "DPAPConfig", "SurvivalState", "UpdateForm", "LayerKind", "Normalization", "Schedule",
    "Accumulation", "normalize", "survival_increment", "schedule_factor", "update_survival", "get_preset", "PRESETS",
]
