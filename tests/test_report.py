from __future__ import annotations

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
    costs = layer_costs(model, torch.rand(1, 1, 1, 1))
    # group 0 of conv "2" (outputs 0, 1) reads inputs 0, 1; input 0 is dead
    assert costs["2"].params_kept == 2 * 1 + 2 * 2 + 4
