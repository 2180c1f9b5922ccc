"""The library's default DPAP settings for a run of a given length (one source for the API, CLI, HPO, examples).

``DPAPPruner(..., preset=name)`` without ``hparams`` trains with ``default_hparams(epochs, name)``;
``hparams`` given by the user override single entries of it. Every value is relative to the
planned number of epochs, so one calibration serves 10 to 300 epochs:

============================  =========================  ===============================================
setting                       default                    why (evidence: ``benchmarks/README.md``)
============================  =========================  ===============================================
``relative_schedule``         true                       ``eta``, start and stop are fractions of the run:
                                                         the released ``eta`` (12-13 epochs) assumes
                                                         100-300 epochs and prunes nothing in a short run
start (``*_start_epoch``)     0.2 of the run             statistics of an untrained net are noise
stop (``*_stop_epoch``)       0.75 of the run            the last quarter recovers with a fixed structure
``eta``                       0.2 of the run             updates fade over the pruning window
``beta`` (initial survival)   epochs / 6, at least 2.5   the decay a unit can accumulate grows with the
                                                         run; a constant beta prunes too late in long runs
                                                         and too early in short ones
``conv_eps``                  1.0                        channels below half the layer's P75 lose survival
``linear_eps``                2.0                        FC units and synapses must reach the P75 level
``prune_first_conv``          false                      as the released code: the first conv sees the raw
                                                         input and holds few parameters (+0.7 points)
``alive_normalization``       conv channels / kernels,   the bar rises as a layer shrinks, so pruning
                              FC synapses                goes on until the layer is compact
``synapse_importance``        ``bcm_weight``             BCM alone is nearly rank 1 in ``fc1``; with
                                                         ``|w|`` the synapse ranking is informative
``unit_order``                ``movement``               not the paper's rule: DPAP's importance values
                                                         handed out in the order of Movement's score
                                                         (``-sum w dL/dw``), so DPAP decides how many
                                                         units go and when, the gradient which. On the
                                                         frontier no NNI baseline is clearly ahead of it;
                                                         with DPAP's own ranking Movement is, at every
                                                         digits SNN point (``'dpap'``: the paper's ranking)
============================  =========================  ===============================================

ANNs (no spiking neuron after any pruned layer) get their own calibration on top of ``braincog``
(:data:`ANN_CALIBRATIONS`): FC neurons are kept (``prune_linear_neurons = false``, FC synapses
are still pruned), ``conv_eps = 1.2`` and pruning stops at 0.6 of the run. On the 2-conv ANN of
NNI's documentation (20 epochs, 8 seeds; DPAP's own ranking) it keeps 28.6% of the weights at -1.74
points against 29.1% at -2.50 with the SNN calibration (28.1% at -0.49 with Movement's order); on
the digits LeNet as much (81%) at -0.03 instead of -0.12; on the SNNs the same settings remove 5-6
points less at no gain, so spiking nets keep the table above. The pruner picks the calibration
from the network it analyses; ``nni-dpap prune`` from the zoo model's kind.

The ``paper`` preset ranks units by DPAP's own importance (``unit_order='dpap'``) and evaluates the
equations as printed (min-max normalisation, ``delta >= 0``,
exponential schedule, per-epoch windows); min-max puts most units near 0, so the ``braincog``
``eps`` prunes almost everything (digits SNN: 97% removed, 47% accuracy) and ``linear_eps <= 0.8``
nothing at all. Its own calibration, ``conv_eps = 0.8`` and ``linear_eps = 1.2``, removes 81-84% of
the digits SNN's prunable parameters at 96.8-97.8% (3 seeds, 40 epochs).
"""

from __future__ import annotations

from typing import Any, Mapping

from .._validate import check_choice, check_int
from ..errors import ConfigError
from .config import DPAPConfig, get_preset

__all__ = ["CALIBRATIONS", "ANN_CALIBRATIONS", "BETA_PER_EPOCH", "MIN_BETA", "default_hparams", "configuration"]

_COMMON: dict[str, Any] = {
    "relative_schedule": True, "conv_eta": 0.2, "linear_eta": 0.2, "conv_start_epoch": 0.2,
    "linear_start_epoch": 0.2, "conv_stop_epoch": 0.75, "linear_stop_epoch": 0.75,
    "prune_first_conv": False, "alive_normalization": ("conv_channels", "conv_kernels", "linear_synapses"),
    "synapse_importance": "bcm_weight",
}

#: Flat overrides of each preset, relative to the run's length (``beta`` is added by :func:`default_hparams`).
CALIBRATIONS: dict[str, dict[str, Any]] = {
    "braincog": {**_COMMON, "conv_eps": 1.0, "linear_eps": 2.0, "unit_order": "movement"},
    "paper": {**_COMMON, "conv_eps": 0.8, "linear_eps": 1.2},
}

#: Overrides of each preset's calibration for ANNs (no spiking neuron after any pruned layer); evidence above.
#: (``prune_first_conv`` may be among them: the pruner chooses the layers again once it knows the net is an ANN.)
ANN_CALIBRATIONS: dict[str, dict[str, Any]] = {
    "braincog": {"prune_linear_neurons": False, "conv_eps": 1.2, "conv_stop_epoch": 0.6, "linear_stop_epoch": 0.6},
    "paper": {},  # (not calibrated for ANNs: the paper preset keeps its one calibration)
}

#: Initial survival value per planned epoch, and its floor (below 15 epochs): with less, a unit of a barely
#: trained network that is below the bar in the first counted epoch is gone at once (5-epoch digits SNN: 10%).
BETA_PER_EPOCH = 1.0 / 6.0
MIN_BETA = 2.5


def default_hparams(epochs: int, preset: str = "braincog", spiking: bool = True) -> dict[str, Any]:
    """Flat DPAP overrides of ``preset`` for a run of ``epochs`` epochs (the library's defaults).

    ``spiking=False`` (an ANN) adds :data:`ANN_CALIBRATIONS`.

    Examples
    --------
    >>> default_hparams(60)["conv_beta"]
    10.0
    >>> default_hparams(60, spiking=False)["prune_linear_neurons"]
    False
    """
    epochs = check_int("epochs", epochs)
    check_choice("preset", preset, sorted(CALIBRATIONS))
    beta = round(max(BETA_PER_EPOCH * epochs, MIN_BETA), 3)
    kind = {} if spiking else ANN_CALIBRATIONS[preset]
    return {**CALIBRATIONS[preset], **kind, "conv_beta": beta, "linear_beta": beta}


def configuration(preset: str | DPAPConfig, hparams: Mapping[str, Any] | None, epochs: int,
                  spiking: bool = True) -> DPAPConfig:
    """The configuration ``DPAPPruner(preset=..., hparams=..., epochs=...)`` runs, with an absolute schedule.

    A preset name gets :func:`default_hparams` for ``epochs`` and the kind of network with
    ``hparams`` on top; a :class:`DPAPConfig` is used as given (``hparams`` still apply).
    """
    if hparams is not None and not isinstance(hparams, Mapping):
        raise ConfigError(f"hparams must be a dict of flat DPAP hyper-parameters such as {{'conv_eps': 0.8}}, "
                          f"got {type(hparams).__name__}")
    if isinstance(preset, DPAPConfig):
        return get_preset(preset, **dict(hparams or {})).resolve(epochs)
    return get_preset(preset, **{**default_hparams(epochs, preset, spiking), **dict(hparams or {})}).resolve(epochs)
