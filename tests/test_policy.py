from __future__ import annotations

import math

import pytest
import torch

from helpers import assert_close
from nni_dpap.errors import ConfigError
from nni_dpap.policy import (
    DPAPConfig, SurvivalRule, SurvivalState, get_preset, normalize, schedule_factor, survival_increment,
    update_survival,
)


def test_normalize_minmax_percentile_and_flat():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert normalize(x).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # pnorm_{min,75}: P75 of [0..4] = 3 -> values above clip to 1
    assert torch.allclose(normalize(x, "percentile", (None, 75.0)), torch.tensor([0.0, 1 / 3, 2 / 3, 1.0, 1.0]))
    # pnorm_{25,75}: P25 = 1
    assert torch.allclose(normalize(x, "percentile", (25.0, 75.0)), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert normalize(torch.ones(3)).tolist() == [0.5, 0.5, 0.5]
    assert normalize(torch.arange(6.0).view(2, 3)).shape == (2, 3)
    with pytest.raises(ConfigError):
        normalize(x, "zscore")  # type: ignore[arg-type]


def _gathered_normalize(x, method, percentiles, mask=None, extra_zeros=0):
    """The reference: the entries gathered with boolean indexing, percentiles by ``torch.quantile`` (a full sort)."""
    values = (x if mask is None else x[mask]).float().flatten()
    values = torch.cat([values, values.new_zeros(extra_zeros)])
    lo = values.min() if method == "minmax" or percentiles[0] is None else torch.quantile(values, percentiles[0] / 100)
    hi = values.max() if method == "minmax" else torch.quantile(values, percentiles[1] / 100)
    scaled = ((x.float() - lo) / (hi - lo)).clamp(0, 1) if bool(hi > lo) else torch.full_like(x, 0.5)
    return scaled if mask is None else torch.where(mask, scaled, 0.0)


@pytest.mark.parametrize("kind", ["uniform", "ties", "heavy_tailed"])
def test_normalize_by_selection_equals_sorting_and_gathering(kind):
    """The percentiles are selected (not sorted) and the alive units masked (not gathered): the same numbers."""
    gen = torch.Generator().manual_seed(3)
    for n in (1, 2, 7, 100, 1001, 20000):
        x = {"uniform": torch.rand(n, generator=gen), "ties": torch.randint(0, 4, (n,), generator=gen).float(),
             "heavy_tailed": torch.randn(n, generator=gen) ** 3}[kind]
        mask = torch.rand(n, generator=gen) > 0.3
        mask[0] = True
        for method, percentiles in (("minmax", (None, 75.0)), ("percentile", (None, 75.0)),
                                    ("percentile", (5.0, 95.0)), ("percentile", (None, 99.0))):
            assert_close(normalize(x, method, percentiles), _gathered_normalize(x, method, percentiles))
            assert_close(normalize(x, method, percentiles, extra_zeros=5),
                         _gathered_normalize(x, method, percentiles, extra_zeros=5))
            assert_close(normalize(x, method, percentiles, mask=mask),
                         _gathered_normalize(x, method, percentiles, mask))
            assert_close(normalize(x, method, percentiles, mask=mask, extra_zeros=5),
                         _gathered_normalize(x, method, percentiles, mask, extra_zeros=5))
    assert normalize(torch.rand(3), mask=torch.zeros(3, dtype=torch.bool)).tolist() == [0.0, 0.0, 0.0]


def test_survival_increment_eq9_eq10_branches():
    n = torch.tensor([0.0, 0.25, 0.5, 1.0])
    # eps = 1: delta = [-1, -0.5, 0, 1]
    assert survival_increment(n, eps=1.0, bonus=5.0).tolist() == [-1.0, -0.5, 5.0, 6.0]  # paper: delta >= 0
    assert survival_increment(n, eps=1.0, bonus=5.0, strict=True).tolist() == [-1.0, -0.5, 0.0, 6.0]  # code


def test_schedule_factor_exp_step_and_start():
    assert schedule_factor(0, eta=10.0) == 1.0
    assert schedule_factor(5, eta=10.0) == pytest.approx(math.exp(-0.5))
    assert schedule_factor(4, eta=12.0, start_epoch=5, kind="step") == 0.0
    assert schedule_factor(5, eta=12.0, start_epoch=5, kind="step") == 1.0
    assert schedule_factor(16, eta=12.0, start_epoch=5, kind="step") == 1.0
    assert schedule_factor(17, eta=12.0, start_epoch=5, kind="step") == pytest.approx(math.exp(-1))
    assert update_survival(torch.tensor([10.0]), torch.tensor([-2.0]), 0.5, 0.5).tolist() == [4.0]


def test_survival_state_hand_computed_and_permanent():
    cfg = get_preset("paper")
    rule = SurvivalRule(eps=1.0, bonus=2.0, eta=1e9, beta=1.0, gamma=1.0)  # factor ~ 1
    state = SurvivalState((3,), rule, cfg.update_form())
    # importance -> norm [0, 0.5, 1] -> delta [-1, 0, 1] -> dF [-1, 2, 3]
    assert state.step(torch.tensor([0.0, 1.0, 2.0]), epoch=0) == 0
    assert torch.allclose(state.value, torch.tensor([0.0, 3.0, 4.0]))
    assert state.step(torch.tensor([0.0, 1.0, 2.0]), epoch=1) == 1
    assert state.mask.tolist() == [False, True, True]
    # unit 0 becomes the most important: F rises again, but the mask never comes back
    state.step(torch.tensor([10.0, 0.0, 1.0]), epoch=2)
    state.step(torch.tensor([10.0, 0.0, 1.0]), epoch=3)
    assert state.value[0] > 0 and not state.mask[0]


def test_keep_at_least_guard():
    cfg = get_preset("paper")
    state = SurvivalState((4,), SurvivalRule(eps=2.0, bonus=0.0, eta=1e9, beta=0.5, gamma=1.0), cfg.update_form())
    state.step(torch.tensor([0.0, 1.0, 2.0, 3.0]), epoch=0, keep_at_least=1)
    # eps = 2 -> every delta <= 0; F = 0.5 + [-2, -1.33, -0.67, 0] -> only unit 3 stays >= 0
    assert state.mask.tolist() == [False, False, False, True]
    state.step(torch.tensor([3.0, 2.0, 1.0, 0.0]), epoch=1, keep_at_least=1)
    assert int(state.mask.sum()) == 1 and bool(state.mask[3])


def test_larger_eps_prunes_more():
    """The same importances, eps from 0.3 to 1.5: the units kept never increase and fall from all to none."""
    torch.manual_seed(0)
    importances = [torch.rand(200) ** 2 for _ in range(30)]
    kept = []
    for eps in (0.3, 0.6, 0.9, 1.2, 1.5):
        state = SurvivalState((200,), SurvivalRule(eps=eps, bonus=0.5, eta=8.0, beta=1.0),
                              get_preset("paper").update_form())
        for epoch, imp in enumerate(importances):
            state.step(imp, epoch)
        kept.append(int(state.mask.sum()))
    assert all(b <= a for a, b in zip(kept, kept[1:])), kept
    assert kept == sorted(kept, reverse=True) and len(set(kept)) == 5 and kept[0] == 200 and kept[-1] == 0, kept


def test_presets_side_by_side():
    paper, braincog = get_preset("paper"), get_preset("braincog")
    assert (paper.normalization, paper.schedule, paper.accumulation, paper.strict_positive) == \
        ("minmax", "exp", "epoch", False)
    assert (braincog.normalization, braincog.schedule, braincog.accumulation, braincog.strict_positive) == \
        ("percentile", "step", "cumulative", True)
    assert braincog.conv == SurvivalRule(eps=0.65, bonus=5.0, eta=12.0, start_epoch=5, gamma=0.999, beta=10.0)
    assert braincog.linear.eps == 1.5 and braincog.linear.bonus == 2.0 and braincog.linear.eta == 13.0
    with pytest.raises(ConfigError, match="unknown DPAP preset"):
        get_preset("fast")


def test_with_params_relative_schedule_and_roundtrip():
    cfg = get_preset("braincog", conv_eps=0.8, linear_eta=0.15, relative_schedule=True, conv_eta=0.1,
                     conv_start_epoch=0.1, linear_start_epoch=0.0)
    assert cfg.conv.eps == 0.8 and cfg.linear.eta == 0.15
    resolved = cfg.resolve(60)
    assert resolved.conv.eta == pytest.approx(6.0) and resolved.conv.start_epoch == 6
    assert resolved.linear.eta == pytest.approx(9.0) and not resolved.relative_schedule
    assert DPAPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown DPAP hyper-parameter 'conv_epsilon'"):
        cfg.with_params(conv_epsilon=1.0)
    with pytest.raises(ConfigError, match="eta must be a number > 0"):
        get_preset("paper", conv_eta=0.0)
    with pytest.raises(ConfigError, match="relative_schedule"):
        get_preset("braincog", relative_schedule=True)  # eta = 12 is not a fraction
    assert get_preset("paper", time_eps=0.3).rule("time").eps == 0.3
    assert get_preset("paper").rule("time", "conv") == get_preset("paper").conv


def test_stop_epoch_ends_pruning_and_resolves_relative():
    rule = SurvivalRule(eps=2.0, bonus=0.0, eta=1e9, beta=0.5, gamma=1.0, stop_epoch=2)
    state = SurvivalState((2,), rule)
    # epoch 1 updates (F = 0.5 + 2 * Norm - 2): [-1.5, 0.5]; from epoch 2 on nothing changes
    assert state.step(torch.tensor([0.0, 1.0]), 1) == 1
    assert state.step(torch.tensor([1.0, 0.0]), 2) == 0
    assert_close(state.value, torch.tensor([-1.5, 0.5]))
    resolved = get_preset("braincog", relative_schedule=True, conv_eta=0.2, conv_start_epoch=0.2,
                          conv_stop_epoch=0.75, linear_eta=0.2, linear_start_epoch=0.2).resolve(40)
    assert (resolved.conv.start_epoch, resolved.conv.stop_epoch, resolved.linear.stop_epoch) == (8, 30, None)
    assert resolved.final_epoch() == math.inf  # linear pruning never stops
    assert [resolved.updates_at(e) for e in (0, 7, 8, 29, 30, 400)] == [False, False, True, True, True, True]
    both = resolved.with_params(linear_stop_epoch=25)
    assert [both.updates_at(e) for e in (7, 8, 29, 30)] == [False, True, True, False]
    late_time = both.with_params(time_eps=1.0, time_bonus=0.0, time_eta=5.0, time_start_epoch=32, time_stop_epoch=35)
    assert [late_time.updates_at(e, temporal) for e in (31, 33) for temporal in (False, True)] == \
        [False, False, False, True]
    assert both.final_epoch() == 30 and both.final_epoch(temporal=True) == 30  # time falls back to the kinds' rules
    assert both.with_params(time_eps=1.0, time_bonus=0.0, time_eta=5.0, time_stop_epoch=35).final_epoch(True) == 35
    endless_time = both.with_params(time_eps=1.0, time_bonus=0.0, time_eta=5.0, time_stop_epoch=None)
    assert endless_time.final_epoch(True) == math.inf and endless_time.final_epoch(False) == 30
    with pytest.raises(ConfigError, match="stop_epoch .* must come after start_epoch"):
        SurvivalRule(eps=1.0, bonus=1.0, eta=1.0, start_epoch=5, stop_epoch=5)
    with pytest.raises(ConfigError, match="stop_epoch in"):
        get_preset("braincog", relative_schedule=True, conv_eta=0.2, conv_start_epoch=0.2, linear_eta=0.2,
                   linear_start_epoch=0.2, conv_stop_epoch=30)


def test_alive_only_normalisation_hand_computed():
    rule = SurvivalRule(eps=1.0, bonus=0.0, eta=1e9, beta=10.0, gamma=1.0)
    importance = torch.tensor([0.0, 1.0, 2.0, 4.0])
    everyone = SurvivalState((4,), rule, get_preset("paper").update_form())
    alive = SurvivalState((4,), rule, get_preset("paper", alive_normalization=["linear_neurons"])
                          .update_form("linear_neurons"))
    for state in (everyone, alive):
        state.mask = torch.tensor([False, True, True, True])
        state.step(importance, 0)
    # over all four units: Norm = [0, .25, .5, 1]; over the alive three [1, 2, 4]: Norm = [0, 1/3, 1] (pruned: 0)
    assert_close(everyone.value, torch.tensor([9.0, 9.5, 10.0, 11.0]))
    assert_close(alive.value, torch.tensor([9.0, 9.0, 10.0 - 1 / 3, 11.0]))


def test_unit_groups_forms_and_validation():
    cfg = get_preset("braincog", alive_normalization=["conv_channels", "linear_synapses"],
                     linear_synapse_percentiles=[None, 95.0])
    assert DPAPConfig.unit_group("neurons", "conv") == "conv_channels"
    assert DPAPConfig.unit_group("synapses", "linear") == "linear_synapses"
    assert cfg.update_form("linear_synapses").percentiles == (None, 95.0) and cfg.update_form("linear_synapses").alive_only
    assert cfg.update_form("linear_neurons").percentiles == (None, 75.0) and not cfg.update_form("linear_neurons").alive_only
    assert cfg.survival_state((3, 2), "synapses", "linear").form.alive_only
    assert DPAPConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="alive_normalization must be a list of unit groups"):
        get_preset("braincog", alive_normalization=["fc"])
    with pytest.raises(ConfigError, match="linear_synapse_percentiles must satisfy"):
        get_preset("braincog", linear_synapse_percentiles=[90.0, 50.0])
    with pytest.raises(ConfigError, match="synapse_importance"):
        get_preset("braincog", synapse_importance="weight")
    with pytest.raises(ConfigError, match=r"synapse_competition must be one of \['layer', 'neuron'\]"):
        get_preset("braincog", synapse_competition="column")
    with pytest.raises(ConfigError, match=r"neuron_importance must be one of \['spine', 'spine_weight'\]"):
        get_preset("braincog", neuron_importance="weight")
    with pytest.raises(ConfigError, match=r"unit_order must be one of \['dpap', 'movement'\]"):
        get_preset("braincog", unit_order="gradient")
