"""The library's default DPAP settings for a run of a given length (one source for the API, CLI, HPO, examples).

The released code's ``eta`` values assume 100-300 epochs: a unit at the minimum every
epoch cannot be pruned before epoch 8-57. The default therefore lays DPAP's schedule
out relative to the planned number of epochs (``relative_schedule``): ``eta`` and the
start epoch are fractions of the run, so a 10-60 epoch run goes through the whole
developmental schedule.
"""

from __future__ import annotations

from typing import Any

from .._validate import check_int

__all__ = ["SHORT_RUN", "default_hparams"]

# eta and the start epoch as fractions of the run; eps per layer kind
SHORT_RUN: dict[str, Any] = {
    "relative_schedule": True, "conv_eta": 0.2, "linear_eta": 0.2, "conv_start_epoch": 0.2,
    "linear_start_epoch": 0.2, "conv_eps": 0.6, "linear_eps": 2.0,
}


def default_hparams(epochs: int) -> dict[str, Any]:
    """Flat DPAP overrides of the ``braincog`` preset for a run of ``epochs`` epochs.

    A unit that is always the least useful loses about ``1.58 x eta x eps`` over a whole
    run; below 60 epochs the initial survival value ``beta = 10`` would outlast that, so it
    shrinks with the run length (not below 2.5, so that one bad epoch of a barely trained
    network cannot remove a layer).
    """
    epochs = check_int("epochs", epochs)
    beta = round(10.0 * min(1.0, max(epochs, 15) / 60), 3)
    return {**SHORT_RUN, "conv_beta": beta, "linear_beta": beta}
