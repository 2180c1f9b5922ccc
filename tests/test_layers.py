"""DPAP's per-layer state: built from the link and the configuration, masks, update, select, persistence."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import assert_close
from nni_dpap._layers import LayerState, group_connectivity, neuron_time_masks, removable_fraction
from nni_dpap.errors import ConfigError, ShapeError
from nni_dpap.graph import LayerLink, Readout
from nni_dpap.policy import get_preset
from nni_dpap.slicing import KeptIndices

CONFIG = get_preset("paper", conv_eps=2.0, conv_bonus=0.0, conv_beta=0.5, conv_eta=1e9, linear_eps=2.0,
                    linear_bonus=0.0, linear_beta=0.5, linear_eta=1e9, conv_gamma=1.0, linear_gamma=1.0,
                    prune_conv_kernels=True)


def _state(kind: str = "conv", temporal: bool = False) -> LayerState:
    torch.manual_seed(0)
    modules = {"layer": nn.Conv2d(2, 3, 3) if kind == "conv" else nn.Linear(2, 3), "sn": nn.ReLU()}
    link = LayerLink("layer", kind, "sn", False, (Readout("sn", None),))
    return LayerState.build(link, modules, CONFIG, temporal, torch.device("cpu"))


def test_build_and_masks():
    state = _state()
    assert (state.n_out, state.n_in, state.units_built, state.synapses_built) == (3, 2, 3, 6)
    assert state.neurons is not None and state.synapses is not None and not state.pruned
    state.neurons.mask = torch.tensor([True, False, True])
    state.synapses.mask = torch.tensor([[True, False], [True, True], [True, True]])
    weight = torch.ones(3, 2, 3, 3)
    mask = state.weight_mask(weight)
    assert mask.shape == weight.shape and state.pruned
    assert mask[:, :, 0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]  # rows of pruned units, pruned slices
    assert bool((mask == mask[:, :, :1, :1]).all())  # the same over the kernel


def test_a_unit_that_lost_every_synapse_is_gone_with_its_bias():
    state = _state("linear")
    assert state.synapses is not None and state.neurons is not None
    state.synapses.mask = torch.tensor([[False, False], [True, False], [True, True]])  # unit 0: no synapse left
    assert state.neuron_mask.tolist() == [False, True, True] and bool(state.neurons.mask.all())
    weight = state.weight_mask(torch.ones(3, 2))
    assert weight.tolist() == [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]
    assert state.summary(weight, 6)["neurons_kept"] == 2
    state = get_preset(CONFIG, prune_linear_synapses=False)  # without synapse pruning nothing changes
    layer = LayerState.build(LayerLink("layer", "linear", "sn", False, (Readout("sn", None),)),
                             {"layer": nn.Linear(2, 3), "sn": nn.ReLU()}, state, False, torch.device("cpu"))
    assert layer.synapses is None and layer.neuron_mask.tolist() == [True] * 3


def test_masks_follow_every_change_of_their_sources():
    """The neuron and synapse masks are cached between changes: a replaced or in-place edited survival mask, or a
    new connectivity, is seen at the next read."""
    state = _state("linear")
    assert state.neurons is not None and state.synapses is not None
    assert state.neuron_mask.tolist() == [True] * 3 and state.neuron_mask is state.neuron_mask  # (cached)
    state.neurons.mask[1] = False  # in place
    assert state.neuron_mask.tolist() == [True, False, True]
    state.synapses.mask = torch.tensor([[False, False], [True, True], [True, True]])  # replaced
    assert state.neuron_mask.tolist() == [False, False, True]
    assert state.synapse_mask.tolist() == [[False, False], [True, True], [True, True]]
    state.connectivity = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    assert state.synapse_mask.tolist() == [[False, False], [True, True], [False, True]]
    assert state.summary(None, 6)["synapses_kept"] == 1 and state.summary(None, 6)["synapses_total"] == 5


def test_update_prunes_the_least_important():
    state = _state("linear")
    # paper form, eps = 2, C = 0, beta = 0.5, gamma = 1, schedule factor 1: F = 0.5 + (2 Norm - 2)
    importance = {"neuron": torch.tensor([0.0, 1.0, 0.5]), "synapse": torch.tensor([[0.0, 1.0]] * 3)}
    state.update(importance, epoch=0, keep_at_least=0)
    assert state.neurons is not None and state.neurons.value.tolist() == [-1.5, 0.5, -0.5]
    assert state.neuron_mask.tolist() == [False, True, False]
    assert state.synapses is not None and state.synapses.mask[:, 0].tolist() == [False] * 3


def test_select_after_a_shrink_and_state_dict():
    state = _state()
    state.stats.observe(torch.rand(2, 4, 2), torch.rand(2, 4, 3))
    bcm, theta = state.stats.bcm.clone(), state.stats.theta.clone()
    assert state.synapses is not None and state.neurons is not None
    state.synapses.value = torch.arange(6.0).view(3, 2)
    saved = state.state_dict()
    state.select(nn.Conv2d(1, 2, 3), KeptIndices(torch.tensor([0, 2]), torch.tensor([1])))
    assert (state.n_out, state.n_in, state.removed_units, state.removed_synapses) == (2, 1, 1, 4)
    torch.testing.assert_close(state.stats.bcm, bcm[[0, 2]][:, [1]])
    torch.testing.assert_close(state.stats.theta, theta[[0, 2]])
    assert state.synapses.value.tolist() == [[1.0], [5.0]] and state.neurons.value.shape == (2,)
    with pytest.raises(ShapeError, match="cannot map DPAP's state of 'layer'"):
        state.select(nn.Conv2d(1, 1, 3), None)
    fresh = _state()
    fresh.load_state_dict(saved, temporal=False)
    torch.testing.assert_close(fresh.stats.bcm, bcm)
    assert fresh.synapses is not None and fresh.synapses.value.tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ConfigError, match="temporal masks but this pruner has temporal=False"):
        fresh.load_state_dict({**saved, "time": {"value": torch.ones(3, 2), "mask": torch.ones(3, 2).bool()}},
                              temporal=False)


def test_batchnorm_size_is_checked():
    modules = {"layer": nn.Conv2d(1, 3, 3), "bn": nn.BatchNorm2d(4), "sn": nn.ReLU()}
    link = LayerLink("layer", "conv", "sn", False, (Readout("sn", None),), ("bn",))
    with pytest.raises(ConfigError, match="BatchNorm 'bn' after layer 'layer' does not have 3 features"):
        LayerState.build(link, modules, CONFIG, False, torch.device("cpu"))


def test_time_masks_of_a_shared_neuron_keep_what_any_layer_keeps():
    a, b = _state(temporal=True), _state(temporal=True)
    a.update({"neuron": torch.ones(3), "synapse": torch.ones(3, 2), "time": torch.tensor([[0.0, 1.0]] * 3)}, 0, 0)
    b.update({"neuron": torch.ones(3), "synapse": torch.ones(3, 2), "time": torch.tensor([[1.0, 0.0]] * 3)}, 0, 0)
    for state in (a, b):
        assert state.neurons is not None and state.synapses is not None
        state.neurons.mask = torch.ones(3, dtype=torch.bool)  # only the time steps are pruned here
        state.synapses.mask = torch.ones(3, 2, dtype=torch.bool)
    assert a.time_keep() is not None and a.time_keep()[:, 0].tolist() == [0.0] * 3
    merged = neuron_time_masks([a, b])
    assert list(merged) == ["sn"] and bool(merged["sn"].eq(1).all())


def test_group_connectivity():
    assert group_connectivity(nn.Conv2d(4, 4, 3, groups=2), 4, 4).tolist() == [
        [1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]


def test_bcm_weight_synapse_importance_scales_by_the_weight():
    modules = {"layer": nn.Conv2d(2, 3, 3), "sn": nn.ReLU()}
    link = LayerLink("layer", "conv", "sn", False, (Readout("sn", None),))
    with torch.no_grad():
        modules["layer"].weight.copy_(torch.arange(54.0).view(3, 2, 3, 3) - 20.0)
    plain = LayerState.build(link, modules, CONFIG, False, torch.device("cpu"))
    weighted = LayerState.build(link, modules, get_preset(CONFIG, synapse_importance="bcm_weight"), False,
                                torch.device("cpu"))
    pre, post = torch.rand(1, 8, 2), torch.rand(1, 8, 3)
    for state in (plain, weighted):
        state.stats.observe(pre, post)
    window = plain.stats.window()
    base, scaled = plain.importance(window), weighted.importance(window)
    strength = (torch.arange(54.0).view(3, 2, 9) - 20.0).abs().sum(-1)  # |w| summed over each kernel slice
    assert_close(scaled["synapse"], base["synapse"] * strength)
    assert_close(scaled["neuron"], base["neuron"])


def test_spine_weight_neuron_importance_weighs_each_spine_by_its_weight():
    modules = {"layer": nn.Linear(3, 2), "sn": nn.ReLU()}
    link = LayerLink("layer", "linear", "sn", False, (Readout("sn", None),))
    with torch.no_grad():
        modules["layer"].weight.copy_(torch.tensor([[1.0, -2.0, 4.0], [0.5, 0.0, -3.0]]))
    plain = LayerState.build(link, modules, CONFIG, False, torch.device("cpu"))
    weighted = LayerState.build(link, modules, get_preset(CONFIG, neuron_importance="spine_weight"), False,
                                torch.device("cpu"))
    assert weighted.synapses is not None
    weighted.synapses.mask = torch.tensor([[True, True, False], [True, True, True]])  # neuron 0 lost a spine
    window = {"bcm": torch.tensor([[2.0, -1.0, 5.0], [1.0, 7.0, 2.0]]), "trace": torch.tensor([3.0, 0.5])}
    # D_i = trace_i * sum_j BCM_ij |w_ij| over the spines that exist: 3 * (2 - 2), 0.5 * (0.5 + 0 + 6)
    assert_close(weighted.importance(window)["neuron"], torch.tensor([0.0, 3.25]))
    assert_close(plain.importance(window)["neuron"], torch.tensor([18.0, 5.0]))  # all spines, BCM alone
    assert_close(weighted.importance(window)["synapse"], window["bcm"])  # synapses: BCM alone, as before


def test_strength_of_a_grouped_conv_fills_its_groups_only():
    conv = nn.Conv2d(4, 4, 3, groups=2)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(72.0).view(4, 2, 3, 3) - 30.0)
    link = LayerLink("layer", "conv", "sn", False, (Readout("sn", None),))
    state = LayerState.build(link, {"layer": conv, "sn": nn.ReLU()}, get_preset(CONFIG, prune_conv_kernels=False),
                             False, torch.device("cpu"))
    per_kernel = (torch.arange(72.0).view(4, 2, 9) - 30.0).abs().sum(-1)
    expected = torch.zeros(4, 4)
    expected[:2, :2], expected[2:, 2:] = per_kernel[:2], per_kernel[2:]
    assert_close(state.strength(), expected)


def test_neuron_competition_ranks_each_synapse_by_its_share_of_its_neuron():
    modules = {"layer": nn.Linear(3, 2), "sn": nn.ReLU()}
    link = LayerLink("layer", "linear", "sn", False, (Readout("sn", None),))
    plain = LayerState.build(link, modules, CONFIG, False, torch.device("cpu"))
    competing = LayerState.build(link, modules, get_preset(CONFIG, synapse_competition="neuron"), False,
                                 torch.device("cpu"))
    assert plain.synapses is not None and competing.synapses is not None
    pruned = torch.tensor([[True, True, False], [True, True, True]])  # neuron 0 lost its third synapse
    plain.synapses.mask, competing.synapses.mask = pruned, pruned.clone()
    bcm = torch.tensor([[2.0, -1.0, 5.0], [0.0, 0.0, 0.0]])  # neuron 1: nothing potentiated or depressed
    window = {"bcm": bcm, "trace": torch.tensor([1.0, 1.0])}
    base, share = plain.importance(window), competing.importance(window)
    assert_close(base["synapse"], bcm)
    # neuron 0: |2| + |-1| over its remaining synapses (the pruned one's 5 does not count); neuron 1: all zero
    assert_close(share["synapse"], torch.tensor([[2.0 / 3.0, -1.0 / 3.0, 5.0 / 3.0], [0.0, 0.0, 0.0]]))
    assert_close(share["neuron"], base["neuron"])  # the neurons' D is not affected


def _movement_pair() -> tuple[LayerState, LayerState]:
    """A linear 2 -> 3 layer's state with ``unit_order='movement'`` and one with DPAP's own order."""
    modules = {"layer": nn.Linear(2, 3), "sn": nn.ReLU()}
    link = LayerLink("layer", "linear", "sn", False, (Readout("sn", None),))
    moved = LayerState.build(link, modules, get_preset(CONFIG, unit_order="movement"), False, torch.device("cpu"))
    return moved, LayerState.build(link, modules, CONFIG, False, torch.device("cpu"))


def test_movement_order_hands_dpaps_values_out_by_the_accumulated_score():
    moved, plain = _movement_pair()
    assert plain.movement is None and moved.movement is not None
    assert_close(moved.movement, torch.zeros(3, 2))
    weight = moved.weight
    with torch.no_grad():
        weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, -2.0]]))
    weight.grad = torch.tensor([[-1.5, -1.0], [0.5, 0.0], [-0.5, 0.25]])
    moved.add_movement()
    moved.add_movement()  # two steps: -w * dL/dw twice
    assert_close(moved.movement, torch.tensor([[3.0, 2.0], [-1.0, 0.0], [1.0, 1.0]]))  # units: 5, -1, 2
    window = {"bcm": torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]), "trace": torch.ones(3)}
    base, ordered = plain.importance(window), moved.importance(window)
    assert_close(base["neuron"], torch.tensor([3.0, 7.0, 11.0]))  # D of Eq. (7)
    assert_close(base["synapse"], window["bcm"])
    assert_close(ordered["neuron"], torch.tensor([11.0, 3.0, 7.0]))  # unit 0 scores most, unit 1 least
    # synapses by score: (0,0) 3, (0,1) 2, (2,1) 1 and (2,0) 1 (a tie: by their own values 6 > 5), (1,1) 0, (1,0) -1
    assert_close(ordered["synapse"], torch.tensor([[6.0, 5.0], [1.0, 2.0], [3.0, 4.0]]))
    assert moved.neurons is not None
    moved.neurons.mask = torch.tensor([True, True, False])  # unit 2 pruned: it and its synapses take no part
    ordered = moved.importance(window)
    assert_close(ordered["neuron"], torch.tensor([7.0, 3.0, 11.0]))
    assert_close(ordered["synapse"], torch.tensor([[4.0, 3.0], [1.0, 2.0], [5.0, 6.0]]))


def test_movement_score_of_a_conv_layer_sums_each_kernel_slice():
    torch.manual_seed(0)
    modules = {"layer": nn.Conv2d(2, 2, 3), "sn": nn.ReLU()}
    link = LayerLink("layer", "conv", "sn", False, (Readout("sn", None),))
    state = LayerState.build(link, modules, get_preset(CONFIG, unit_order="movement"), False, torch.device("cpu"))
    weight = state.weight
    with torch.no_grad():
        weight.copy_(torch.arange(36.0).view(2, 2, 3, 3) - 10.0)
        weight[1, 0] = 0.0  # a zero weight scores 0
    weight.grad = torch.full((2, 2, 3, 3), -0.1)
    state.add_movement()
    assert state.movement is not None
    expected = 0.1 * weight.detach().flatten(2).sum(-1)  # -w * dL/dw, summed over each (out, in) slice
    assert_close(state.movement, expected)
    assert float(state.movement[1, 0]) == 0.0


def test_movement_score_follows_a_shrink_and_a_checkpoint():
    moved, plain = _movement_pair()
    assert moved.movement is not None
    moved.movement = torch.arange(6.0).view(3, 2)
    state = moved.state_dict()
    moved.select(nn.Linear(1, 2), KeptIndices(torch.tensor([0, 2]), torch.tensor([1])))
    assert_close(moved.movement, torch.tensor([[1.0], [5.0]]))
    fresh, _ = _movement_pair()
    fresh.load_state_dict(state, temporal=False)
    assert fresh.movement is not None
    assert_close(fresh.movement, torch.arange(6.0).view(3, 2))
    with pytest.raises(ConfigError, match=r"unit_order='movement'.*hparams=\{'unit_order': 'dpap'\}"):
        fresh.load_state_dict(plain.state_dict(), temporal=False)


def test_removable_fraction_counts_pruned_units_still_present():
    linear, conv = _state("linear"), _state("conv")  # 3 x 2 weights; 3 x 2 x 3 x 3
    assert removable_fraction([linear, conv]) == 0.0
    assert linear.neurons is not None and conv.neurons is not None
    linear.neurons.mask = torch.tensor([True, False, True])
    conv.neurons.mask = torch.tensor([False, False, True])
    assert removable_fraction([linear]) == pytest.approx(1 / 3)
    assert removable_fraction([linear, conv]) == pytest.approx((2 + 36) / (6 + 54))
