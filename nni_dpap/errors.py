"""Exceptions raised by nni-dpap.

Every error a user can trigger derives from :class:`DPAPError`; messages name the
offending module, key or value and say how to fix it. ``assert`` is only used for
internal invariants, never to check user input.
"""

from __future__ import annotations

__all__ = [
    "DPAPError",
    "ConfigError",
    "UnsupportedModuleError",
    "GraphError",
    "ShapeError",
    "SpeedupError",
    "DataError",
    "CheckpointError",
    "TrainingError",
]


class DPAPError(Exception):
    """Base class of all nni-dpap errors."""


class ConfigError(DPAPError, ValueError):
    """A configuration value, key or argument is invalid."""


class UnsupportedModuleError(DPAPError, TypeError):
    """A module type cannot be pruned or traced by DPAP."""


class GraphError(DPAPError):
    """The model's graph could not be traced or does not have the structure DPAP needs."""


class ShapeError(DPAPError, ValueError):
    """A tensor does not have the layout a spiking module expects."""


class SpeedupError(DPAPError):
    """A model could not be shrunk physically."""


class DataError(DPAPError, FileNotFoundError):
    """A data set is missing or unreadable; the message says which files to put where."""


class CheckpointError(DPAPError):
    """A checkpoint is corrupt, incomplete or does not match the run being resumed."""


class TrainingError(DPAPError):
    """Training went wrong in a way DPAP cannot prune through (e.g. it diverged to NaN)."""
