from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nni_dpap.errors import GraphError
from nni_dpap.graph import link_layers, trace_model, upstream_layers
from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.snn import LIFNeuron


def test_spiking_convnet_map_from_graph_not_module_order():
    model = SpikingConvNet(1, 8, 10, T=2)
    info = link_layers(model, ["conv1", "conv2", "fc1", "fc2"])
    assert info.output_layers == ("fc2",)
    assert {n: (link.neuron, link.spiking, link.kind) for n, link in info.links.items()} == {
        "conv1": ("sn1", True, "conv"), "conv2": ("sn2", True, "conv"), "fc1": ("sn3", True, "linear")}
    assert info.links["fc1"].upstream == "conv2" and info.links["conv1"].upstream is None


def test_module_order_differs_from_data_flow():
    class Shuffled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sn_b, self.sn_a = LIFNeuron(2), LIFNeuron(2)  # declared in the "wrong" order
            self.fc_a, self.fc_b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.out(self.sn_b(self.fc_b(self.sn_a(self.fc_a(x)))))

    info = link_layers(Shuffled(), ["fc_a", "fc_b"])
    assert info.links["fc_a"].neuron == "sn_a" and info.links["fc_b"].neuron == "sn_b"


def test_bn_chain_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.1), LIFNeuron(2),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    info = link_layers(model, ["0", "5"])
    assert info.links["0"].norms == ("1",) and info.links["0"].neuron == "3"
    assert info.output_layers == ("5",)


def test_shared_relu_is_told_apart_by_call_index():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))

    info = link_layers(Shared(), ["fc1", "fc2"])
    assert [(r.module, r.call_index) for r in info.links["fc1"].readouts] == [("act", 0)]
    assert [(r.module, r.call_index) for r in info.links["fc2"].readouts] == [("act", 1)]


def test_functional_activation_is_replayed():
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Linear(3 * 3 * 3, 2)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.bn(self.conv(x)), 2))
            return self.fc(x.flatten(1))

    info = link_layers(Functional(), ["conv"])
    readout = info.links["conv"].readouts[0]
    assert readout.module == "bn" and len(readout.tail) == 2 and info.links["conv"].neuron is None
    y = torch.randn(2, 3, 6, 6)
    replayed = y
    for op in readout.tail:
        replayed = op(replayed)
    torch.testing.assert_close(replayed, F.relu(F.max_pool2d(y, 2)))


def test_time_loop_with_single_step_neurons():
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.sn, self.fc2 = nn.Linear(3, 4), LIFNeuron(step_mode="s"), nn.Linear(4, 2)

        def forward(self, x):
            out = 0
            for _ in range(3):
                out = out + self.fc2(self.sn(self.fc1(x)))
            return out

    info = link_layers(Loop(), ["fc1", "fc2"])
    assert [(r.module, r.call_index) for r in info.links["fc1"].readouts] == [("sn", 0), ("sn", 1), ("sn", 2)]
    assert info.output_layers == ("fc2",)


def test_neuron_is_a_leaf_of_the_trace():
    graph = trace_model(nn.Sequential(nn.Linear(2, 2), LIFNeuron(2)))
    assert [n.op for n in graph.nodes] == ["placeholder", "call_module", "call_module", "output"]


def test_clear_errors():
    no_neuron = nn.Sequential(nn.Linear(3, 4), nn.Flatten(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(GraphError, match=r"layer '0' has no spiking neuron or activation after it.*exclude"):
        link_layers(no_neuron, ["0"])

    class Dynamic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            if x.sum() > 0:
                return torch.relu(self.fc(x))
            return self.fc(x)

    with pytest.raises(GraphError, match="leaf_modules"):
        link_layers(Dynamic(), ["fc"])
    # an explicit map works without a trace
    info = link_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), ["0"], neuron_map={"0": "1"})
    assert info.links["0"].neuron == "1"
    with pytest.raises(GraphError, match="not a module"):
        link_layers(nn.Sequential(nn.Linear(2, 2)), ["0"], neuron_map={"0": "relu"})


def test_upstream_layers_of_lenet():
    assert upstream_layers(LeNetANN(1, 8, 10)) == {"conv1": None, "conv2": "conv1", "fc1": "conv2", "fc2": "fc1"}


def test_repeat_over_time_between_a_layer_and_its_neuron_keeps_the_channels():
    # SpikingConvNet: conv1 -> DirectEncoder (torch.cat([x] * T, 0)) -> sn1 -> pool -> conv2
    assert upstream_layers(SpikingConvNet(1, 8, 10, T=3))["conv2"] == "conv1"
    info = link_layers(SpikingConvNet(1, 8, 10, T=3), ["conv1"])
    assert info.links["conv1"].neuron == "sn1" and info.links["conv1"].spiking

    class Mixed(nn.Module):  # a cat of two different tensors merges them: no upstream
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.c(torch.relu(torch.cat([self.a(x), self.b(x)], 0)))

    assert upstream_layers(Mixed())["c"] is None
