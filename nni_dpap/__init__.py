"""nni-dpap: Developmental Plasticity-inspired Adaptive Pruning (DPAP) for NNI 3.0.

B. Han, F. Zhao, Y. Zeng, G. Shen, "Developmental Plasticity-Inspired Adaptive Pruning
for Deep Spiking and Artificial Neural Networks", IEEE TPAMI 2024.
"""

from __future__ import annotations

import logging

from . import errors, speedup  # speedup: a module that can be called, speedup(model, dummy_input, masks)
from .policy import DPAPConfig, SurvivalRule, get_preset
from .pruner import DPAPPruner
from .adapters.network import auto_reset, reset_net
from .snn import set_step_mode, set_time_steps

__version__ = "0.1.0"

__all__ = [
    "DPAPPruner",
    "speedup",
    "DPAPConfig",
    "SurvivalRule",
    "get_preset",
    "reset_net",
    "set_time_steps",
    "set_step_mode",
    "auto_reset",
    "errors",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
