"""One wording for bad values: ints are not bools, bools are not strings, floats are finite."""

from __future__ import annotations

import math

import pytest

from nni_dpap._validate import check_bool, check_choice, check_float, check_int
from nni_dpap.errors import ConfigError


def test_check_int():
    assert check_int("epochs", 3) == 3 and check_int("workers", 0, minimum=0) == 0
    for bad in (0, -1, True, 2.0, "3", None):
        with pytest.raises(ConfigError, match=r"epochs must be a positive int \(hint\), got"):
            check_int("epochs", bad, hint=" (hint)")
    with pytest.raises(ConfigError, match="workers must be an int >= 0, got -1"):
        check_int("workers", -1, minimum=0)


def test_check_float():
    assert check_float("lr", 3) == 3.0 and isinstance(check_float("lr", 3), float)
    for bad in (math.nan, math.inf, True, "fast", None):
        with pytest.raises(ConfigError, match="lr must be a finite number, got"):
            check_float("lr", bad)
    with pytest.raises(ConfigError, match="lr must be a number > 0, got 0"):
        check_float("lr", 0, minimum=0.0, strict_minimum=True)
    with pytest.raises(ConfigError, match=r"gamma must be a number in \(0, 1\], got 1.5"):
        check_float("gamma", 1.5, minimum=0.0, maximum=1.0, strict_minimum=True)
    assert check_float("weight_decay", 0.0, minimum=0.0) == 0.0


def test_check_bool_and_choice():
    assert check_bool("flag", False) is False
    for bad in ("false", "true", 0, 1, None):
        with pytest.raises(ConfigError, match="flag must be true or false"):
            check_bool("flag", bad)
    assert check_choice("preset", "paper", ["paper", "braincog"]) == "paper"
    with pytest.raises(ConfigError, match=r"preset must be one of \['paper', 'braincog'\], got 'fast'"):
        check_choice("preset", "fast", ["paper", "braincog"])
