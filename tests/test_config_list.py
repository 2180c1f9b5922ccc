"""Which layers DPAP prunes: NNI config lists checked, layers linked to their neurons."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nni_dpap._config_list import resolve_links, select_targets
from nni_dpap.errors import ConfigError, GraphError, UnsupportedModuleError

CONFIG = [{"op_types": ["Conv2d", "Linear"]}]


def test_selection_in_model_order(tiny_ann):
    assert select_targets(tiny_ann, CONFIG) == ["conv", "fc1", "fc2"]
    assert select_targets(tiny_ann, [{"op_types": ["Linear"], "exclude_op_names": ["fc2"]}]) == ["fc1"]
    assert select_targets(tiny_ann, [{"op_names_re": ["fc.*"]}]) == ["fc1", "fc2"]


@pytest.mark.parametrize(("config_list", "message"), [
    ([{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], "'sparse_ratio', which DPAP does not use"),
    ([{"op_types": ["LSTM"]}], "cannot prune op type 'LSTM'"),
    ([{"op_type": ["Conv2d"]}], "unknown key 'op_type'"),
    ([], "config_list is empty"),
    ({"op_types": ["Conv2d"]}, r"must be a list of dicts \(NNI's format\), got one dict: wrap it as \[\{"),
    ("Conv2d", "must be a list of dicts such as"),
    ([{"op_names": ["fc9"]}], "names \\['fc9'\\], which are not modules of the model"),
    ([{"op_types": "Conv2d"}], "must be a list of strings"),
    ([{"exclude_op_names": ["fc2"]}], "selects nothing"),
    ([{"op_names_re": ["fc("]}], "invalid regular expression"),
    (["conv"], r"config_list\[0\] must be a dict"),
])
def test_config_list_errors(tiny_ann, config_list, message):
    with pytest.raises(ConfigError, match=message):
        select_targets(tiny_ann, config_list)


def test_selected_module_of_another_type(tiny_ann):
    with pytest.raises(UnsupportedModuleError, match="'relu1' is a ReLU"):
        select_targets(tiny_ann, [{"op_names": ["relu1"]}])


def test_links_output_layers_and_temporal(tiny_ann, tiny_snn):
    info = resolve_links(tiny_ann, CONFIG, temporal=False)
    assert set(info.links) == {"conv", "fc1"} and info.output_layers == ("fc2",)
    assert info.links["conv"].neuron == "relu1" and not info.links["conv"].spiking
    with pytest.raises(ConfigError, match="all output layers"):
        resolve_links(tiny_ann, [{"op_names": ["fc2"]}], temporal=False)
    with pytest.raises(ConfigError, match="temporal=True prunes .* not a spiking neuron"):
        resolve_links(tiny_ann, CONFIG, temporal=True)
    assert resolve_links(tiny_snn, CONFIG, temporal=True).links["fc1"].neuron == "sn2"


def test_layer_without_a_neuron():
    class NoNeuron(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(64, 16), nn.Linear(16, 16), nn.Linear(16, 10)

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(self.fc1(x.flatten(1)))))

    with pytest.raises(GraphError, match="layer 'fc1' has no spiking neuron or activation after it"):
        resolve_links(NoNeuron(), [{"op_types": ["Linear"]}], temporal=False)
