"""The library's default DPAP settings: relative to the run, one source for the API, the CLI and HPO."""

from __future__ import annotations

import nni
import pytest
import torch
from nni.compression import TorchEvaluator

from nni_dpap import DPAPPruner
from nni_dpap.errors import ConfigError
from nni_dpap.policy import get_preset
from nni_dpap.policy.defaults import ANN_CALIBRATIONS, BETA_PER_EPOCH, CALIBRATIONS, MIN_BETA, default_hparams
from nni_dpap.run import DEFAULTS, dpap_settings
from nni_dpap.training import classification_step, make_training_func

CONFIG = [{"op_types": ["Conv2d", "Linear"]}]


def test_defaults_scale_with_the_run():
    assert default_hparams(60)["conv_beta"] == pytest.approx(10.0)
    assert default_hparams(5)["conv_beta"] == pytest.approx(MIN_BETA)  # the floor of short runs
    assert default_hparams(300)["linear_beta"] == pytest.approx(300 * BETA_PER_EPOCH, abs=1e-3)
    for epochs in (10, 40, 300):
        resolved = get_preset("braincog", **default_hparams(epochs)).resolve(epochs)
        assert resolved.conv.start_epoch == round(0.2 * epochs) and resolved.conv.stop_epoch == round(0.75 * epochs)
        assert resolved.linear.eta == pytest.approx(0.2 * epochs)
    assert default_hparams(40, "paper")["linear_eps"] != default_hparams(40)["linear_eps"]
    assert set(CALIBRATIONS) == {"braincog", "paper"}
    with pytest.raises(ConfigError, match="preset must be one of"):
        default_hparams(40, "released")


def _pruner(model, data, **kwargs):
    evaluator = TorchEvaluator(make_training_func(data, progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=1e-3), classification_step)
    return DPAPPruner(model, CONFIG, evaluator, epochs=30, steps_per_epoch=len(data), **kwargs)


def test_pruner_api_and_cli_share_the_defaults(tiny_snn, digits):
    expected = get_preset("braincog", **default_hparams(30)).resolve(30)
    assert _pruner(tiny_snn, digits[0]).dpap_config == expected
    cli_hparams, _ = dpap_settings({**DEFAULTS, "epochs": 30})
    assert get_preset("braincog", **cli_hparams).resolve(30) == expected


def test_an_ann_gets_the_ann_calibration_from_the_api_and_the_cli(tiny_ann, tiny_snn, digits):
    ann = get_preset("braincog", **default_hparams(30, spiking=False)).resolve(30)
    snn = get_preset("braincog", **default_hparams(30)).resolve(30)
    assert not ann.prune_linear_neurons and snn.prune_linear_neurons
    assert ann.conv.eps == ANN_CALIBRATIONS["braincog"]["conv_eps"] != snn.conv.eps
    assert ann.conv.stop_epoch == ann.linear.stop_epoch == 18  # 0.6 of 30 epochs
    pruner = _pruner(tiny_ann, digits[0])
    assert not pruner.spiking and pruner.dpap_config == ann
    assert _pruner(tiny_snn, digits[0]).spiking
    cli_hparams, _ = dpap_settings({**DEFAULTS, "model": "ann_lenet", "epochs": 30})
    assert get_preset("braincog", **cli_hparams).resolve(30) == ann
    # the user's hparams still come last, and the paper preset keeps its one calibration
    assert _pruner(type(tiny_ann)(), digits[0], hparams={"prune_linear_neurons": True}).dpap_config.prune_linear_neurons
    assert default_hparams(30, "paper", spiking=False) == default_hparams(30, "paper")


def test_an_ann_calibration_may_choose_the_first_conv(tiny_ann, tiny_snn, digits, monkeypatch):
    """The layers are chosen before the pruner knows the net is an ANN: a calibration that prunes the first
    conv must still get it (the library's calibration leaves it alone, as for SNNs)."""
    assert "conv" not in _pruner(type(tiny_ann)(), digits[0]).layer_states
    monkeypatch.setitem(ANN_CALIBRATIONS["braincog"], "prune_first_conv", True)
    pruner = _pruner(tiny_ann, digits[0])
    assert pruner.dpap_config.prune_first_conv and "conv" in pruner.layer_states
    assert "conv" not in _pruner(tiny_snn, digits[0]).layer_states  # an SNN keeps its own calibration
    no = _pruner(type(tiny_ann)(), digits[0], hparams={"prune_first_conv": False})  # the user's word comes last
    assert not no.dpap_config.prune_first_conv and "conv" not in no.layer_states


def test_hparams_override_single_defaults_and_a_config_is_taken_as_given(tiny_snn, digits):
    config = _pruner(tiny_snn, digits[0], hparams={"conv_eps": 0.9}).dpap_config
    assert config.conv.eps == 0.9 and config.linear.eps == default_hparams(30)["linear_eps"]
    assert config.synapse_importance == "bcm_weight"
    # Movement's order by default (SNN and ANN), DPAP's own ranking with the paper preset or on request
    assert config.unit_order == "movement" and default_hparams(30, spiking=False)["unit_order"] == "movement"
    assert all(state.movement is not None for state in _pruner(type(tiny_snn)(), digits[0]).layer_states.values())
    assert get_preset("paper", **default_hparams(30, "paper")).unit_order == "dpap"
    assert _pruner(type(tiny_snn)(), digits[0], hparams={"unit_order": "dpap"}).dpap_config.unit_order == "dpap"
    tiny_snn = type(tiny_snn)()
    raw = _pruner(tiny_snn, digits[0], preset=get_preset("braincog")).dpap_config
    assert raw == get_preset("braincog") and raw.prune_first_conv
