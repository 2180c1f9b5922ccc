"""Checks of user-given values, with one wording for the whole package.

Every function returns the value (converted where that is lossless) or raises
:class:`~nni_dpap.errors.ConfigError` naming the argument, what was given and what is
allowed. ``True`` is not an int here, and ``"false"`` is not a bool.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, TypeVar

from .errors import ConfigError

__all__ = ["check_int", "check_float", "check_bool", "check_choice"]

T = TypeVar("T")


def check_int(name: str, value: Any, minimum: int | None = 1, hint: str = "") -> int:
    """An int (not a bool) ``>= minimum``; ``hint`` is appended to the message."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        what = {1: "a positive int", 0: "an int >= 0", None: "an int"}.get(minimum, f"an int >= {minimum}")
        raise ConfigError(f"{name} must be {what}{hint}, got {value!r}")
    return value


def check_float(name: str, value: Any, minimum: float | None = None, maximum: float | None = None,
                strict_minimum: bool = False, hint: str = "") -> float:
    """A finite real number (not a bool) within ``[minimum, maximum]`` (``(minimum, ...`` if ``strict_minimum``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if strict_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        if minimum is not None and maximum is not None:
            what = f"a number in {'(' if strict_minimum else '['}{minimum:g}, {maximum:g}]"
        elif minimum is not None:
            what = f"a number {'>' if strict_minimum else '>='} {minimum:g}"
        elif maximum is not None:
            what = f"a number <= {maximum:g}"
        else:
            what = "a finite number"
        raise ConfigError(f"{name} must be {what}{hint}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` (a string such as ``"false"`` is refused, not read as true)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false (a JSON boolean, not a string or number), got {value!r}")
    return value


def check_choice(name: str, value: T, choices: Iterable[T]) -> T:
    """One of ``choices``."""
    allowed = list(choices)
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
    return value
