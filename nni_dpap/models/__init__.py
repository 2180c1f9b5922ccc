"""Networks of the DPAP paper (Table I) that the examples and tests use."""

from __future__ import annotations

from .convnets import LeNetANN, SpikingConvNet

__all__ = ["SpikingConvNet", "LeNetANN"]
