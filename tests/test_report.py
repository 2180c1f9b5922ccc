from __future__ import annotations

import pytest
import torch
from torch import nn

from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.report import format_table, layer_costs, totals


def test_dense_costs_match_layer_shapes():
    model = LeNetANN(1, 8, 10)
    costs = layer_costs(model, torch.rand(2, 1, 8, 8))
    assert costs["conv1"].params_total == 20 * 25 + 20
    assert costs["conv1"].macs_total == 20 * 25 * 64  # 8x8 output positions
    assert costs["conv2"].macs_total == 50 * 20 * 25 * 16
    assert costs["fc1"].macs_total == 500 * 200
    assert all(c.params_kept == c.params_total and c.macs_kept == c.macs_total for c in costs.values())


def test_removed_channel_removes_downstream_inputs():
    model = LeNetANN(1, 8, 10)
    with torch.no_grad():
        model.conv1.weight[3] = 0  # channel 3 of conv1 is pruned
        model.conv1.bias[3] = 0
        model.conv2.weight[:10] = 0  # 10 channels of conv2 pruned
        model.conv2.bias[:10] = 0
        model.fc1.weight[:, :7] = 0  # 7 synapses of every fc1 neuron
    costs = layer_costs(model, torch.rand(2, 1, 8, 8))
    assert costs["conv1"].units_kept == 19 and costs["conv1"].params_kept == 19 * 26
    # conv2: 40 live filters x 19 live input channels x 25 weights (+ 40 biases)
    assert costs["conv2"].params_kept == 40 * 19 * 25 + 40
    assert costs["conv2"].macs_kept == 40 * 19 * 25 * 16
    # fc1 input: conv2 has 50 channels x 2x2 -> channel c feeds features 4c..4c+3; channels 0-9 are dead, so
    # features 0-39 (which include the 7 zeroed ones) are removed and 160 live features remain
    assert costs["fc1"].params_kept == 500 * 160 + 500
    with torch.no_grad():
        model.fc1.weight[:, 40:43] = 0  # now 3 live features lose their synapses
    assert layer_costs(model, torch.rand(2, 1, 8, 8))["fc1"].params_kept == 500 * 157 + 500
    t = totals(costs, ["conv1", "conv2", "fc1"])
    assert 0 < t["params_fraction"] < 1 and t["macs_kept"] < t["macs_total"]


def test_a_unit_left_with_its_bias_alone_is_kept():
    """All of a channel's weights at zero but not its bias: it still emits f(bias), as speedup keeps it."""
    model = LeNetANN(1, 8, 10)
    with torch.no_grad():
        model.conv2.weight[:10] = 0
    costs = layer_costs(model, torch.rand(2, 1, 8, 8))
    assert costs["conv2"].units_kept == 50 and costs["conv2"].params_kept == 40 * 20 * 25 + 50
    assert costs["fc1"].params_kept == 500 * 200 + 500  # every input feature still carries a signal


def test_spiking_net_costs_per_time_step():
    model = SpikingConvNet(1, 8, 10, T=4)
    costs = layer_costs(model, torch.rand(3, 1, 8, 8))
    assert costs["conv1"].macs_total == 15 * 9 * 64  # per sample and time step
    assert costs["fc1"].macs_total == 300 * 160


def test_format_table():
    text = format_table([["a", 1], ["bb", 22]], ["name", "n"])
    assert text.splitlines()[0] == "| name |  n |" and text.splitlines()[3] == "|   bb | 22 |"


def test_grouped_conv_input_liveness():
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1, groups=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[0] = 0
        model[0].bias[0] = 0
    costs = layer_costs(model, torch.rand(1, 1, 1, 1))
    # group 0 of conv "2" (outputs 0, 1) reads inputs 0, 1; input 0 is dead
    assert costs["2"].params_kept == 2 * 1 + 2 * 2 + 4


def test_synaptic_operations_equal_a_hand_count():
    from nni_dpap.report import ENERGY_AC_PJ, ENERGY_MAC_PJ, activity_costs
    from nni_dpap.snn import LIFNeuron

    model = nn.Sequential(nn.Linear(3, 2, bias=False), LIFNeuron(T=2, v_threshold=0.5), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))  # 3 non-zero weights
    # one sample, T = 2: first layer analog (MACs with the 3 non-zero weights, 2 steps -> 6)
    x = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]])  # [T*B, 3]
    # neuron 0: h1 = 1 -> spike; h2 = 0 + 1 -> spike; neuron 1 never fires.
    # second layer: 2 input spikes of neuron 0, fan-out 2 (column 0 has 2 non-zero weights) -> 4 SOPs
    costs = activity_costs(model, x, samples=1)
    assert costs["0"].spiking_input is False and costs["0"].ops == 6 and costs["0"].dense_ops == 12
    assert costs["2"].spiking_input is True and costs["2"].ops == 4 and costs["2"].dense_ops == 4
    assert costs["2"].energy_pj == pytest.approx(4 * ENERGY_AC_PJ) and costs["0"].energy_pj == pytest.approx(6 * ENERGY_MAC_PJ)
    # silencing neuron 0 at step 1 removes 2 SOPs
    model[1].set_time_mask(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert activity_costs(model, x, samples=1)["2"].ops == 2


def test_conv_operations_count_padding_and_pruned_channels():
    from nni_dpap.report import activity_costs

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].weight[1] = 0  # channel 1 pruned
    costs = activity_costs(model, torch.ones(1, 1, 3, 3))
    # analog input: each of the 9 outputs of channel 0 sums its in-bounds neighbours: 4*4 + 4*6 + 9 = 49
    assert costs["0"].ops == 49 and costs["0"].dense_ops == 98
