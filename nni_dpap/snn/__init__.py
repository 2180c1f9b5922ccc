"""Spiking building blocks: LIF/PLIF neurons, surrogate gradients, encoders.

Time layout: time-major fold ``[T*B, ...]`` (see :mod:`nni_dpap.snn.neurons`). Resetting
the neurons of a whole network, of any library, is ``nni_dpap.reset_net`` /
``nni_dpap.auto_reset`` (:mod:`nni_dpap.adapters.network`).
"""

from __future__ import annotations

from .direct import encode_fire_pool
from .encoding import DirectEncoder, TimeAverage, fold_time, unfold_time
from .functional import set_step_mode, set_time_steps
from .neurons import BaseNeuron, LIFNeuron, PLIFNeuron
from .pooling import AvgPool2d, MaxPool2d
from .surrogate import ATanSurrogate, SigmoidSurrogate, SurrogateFunction, get_surrogate

__all__ = [
    "BaseNeuron",
    "LIFNeuron",
    "PLIFNeuron",
    "SurrogateFunction",
    "ATanSurrogate",
    "SigmoidSurrogate",
    "get_surrogate",
    "DirectEncoder",
    "encode_fire_pool",
    "TimeAverage",
    "fold_time",
    "unfold_time",
    "AvgPool2d",
    "MaxPool2d",
    "set_time_steps",
    "set_step_mode",
]

