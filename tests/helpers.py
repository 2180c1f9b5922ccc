"""Assertions shared by the tests: float comparisons with a tolerance, spikes compared where it is sound.

Floats are never compared bit for bit: kernels differ between CPUs (the suite once failed
on an AMD machine by 2e-7). Spikes are 0/1, but a membrane potential within rounding
distance of the threshold can fire in one model and not in its physically shrunk twin,
whose smaller matrix products add in another order; :func:`assert_same_spiking_function`
therefore demands identical spike counts only up to the number of such near-threshold
events, which it counts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nni_dpap import reset_net
from nni_dpap.adapters import is_neuron

ATOL = 1e-5
#: Flat hparams that turn off the library's default levers (first conv skipped, alive-only normalisation,
#: synapse importance with |w|, end of pruning, Movement's order): the preset's rule as published, for tests of
#: the mechanics.
PRESET_RULE = {"prune_first_conv": True, "alive_normalization": [], "synapse_importance": "bcm",
               "conv_stop_epoch": None, "linear_stop_epoch": None, "prune_linear_neurons": True, "unit_order": "dpap"}
NEAR_THRESHOLD = 1e-5


def assert_close(actual: Any, expected: Any, atol: float = ATOL) -> None:
    """Tensors (or nested lists of them) equal within ``atol``."""
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0.0)


def _surrogates(model: nn.Module) -> list[nn.Module]:
    """The surrogate spike function module of every neuron (called with ``h - v_threshold``)."""
    found = []
    for module in model.modules():
        if is_neuron(module):
            for attr in ("surrogate", "surrogate_function", "spike_grad"):
                value = getattr(module, attr, None)
                if isinstance(value, nn.Module):
                    found.append(value)
                    break
    return found


@torch.no_grad()
def spiking_run(model: nn.Module, x: Tensor) -> tuple[Tensor, list[float], int]:
    """Output, spike count per neuron module and number of membrane values within 1e-5 of the threshold."""
    counts: list[float] = []
    near = [0]
    handles = [m.register_forward_hook(lambda m, a, out: counts.append(float((out[0] if isinstance(
        out, tuple) else out).sum()))) for m in model.modules() if is_neuron(m)]
    handles += [s.register_forward_pre_hook(lambda m, a: near.__setitem__(0, near[0] + int(
        (a[0].abs() < NEAR_THRESHOLD).sum()))) for s in _surrogates(model)]
    was_training = model.training
    model.eval()
    reset_net(model)
    try:
        out = model(x)
    finally:
        reset_net(model)
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return out, counts, near[0]


def assert_same_spiking_function(reference: tuple[Tensor, list[float], int], model: nn.Module, x: Tensor) -> None:
    """``model`` on ``x`` emits the spikes and outputs of ``reference`` (a :func:`spiking_run` result).

    Spike counts may differ only by near-threshold events of either run; outputs must agree
    within 1e-5 when there are none.
    """
    out_ref, counts_ref, near_ref = reference
    out, counts, near = spiking_run(model, x)
    assert len(counts) == len(counts_ref)
    flips = sum(abs(a - b) for a, b in zip(counts, counts_ref))
    assert flips <= near_ref + near, (counts, counts_ref, near_ref, near)
    if near_ref + near == 0:
        assert_close(out, out_ref)
