"""Pruning SpikingJelly and snnTorch models as they are (the CI installs both extras)."""

from __future__ import annotations

import copy
import subprocess
import sys

import nni
import pytest
import torch
from nni.compression import TorchEvaluator
from torch import nn

from helpers import assert_same_spiking_function, spiking_run

from nni_dpap import DPAPPruner, auto_reset
from nni_dpap.adapters import find_adapter, require
from nni_dpap.errors import ConfigError
from nni_dpap.plasticity import spike_trace
from nni_dpap.speedup import speedup
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func

HP = {"relative_schedule": True, "conv_eta": 0.3, "linear_eta": 0.3, "conv_start_epoch": 0.0,
      "linear_start_epoch": 0.0, "conv_eps": 0.8, "linear_eps": 1.5, "conv_beta": 2.5, "linear_beta": 2.5}


def _sj_csnn(step_mode: str):
    pytest.importorskip("spikingjelly", reason="needs the spikingjelly extra")
    from spikingjelly.activation_based import functional, layer, neuron

    class CSNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                layer.Conv2d(1, 8, 3, padding=1, bias=False), layer.BatchNorm2d(8), neuron.LIFNode(), layer.MaxPool2d(2),
                layer.Flatten(), layer.Linear(8 * 16, 32), neuron.LIFNode(), layer.Linear(32, 10))
            functional.set_step_mode(self, step_mode)

        def forward(self, x):
            if self.net[0].step_mode == "s":
                if step_mode == "s":  # a model looping over time itself
                    return sum(self.net(x) for _ in range(3)) / 3
                return self.net(x)
            return self.net(x.unsqueeze(0).repeat(3, 1, 1, 1, 1)).mean(0)

    torch.manual_seed(0)
    return auto_reset(CSNN())


def _snntorch_net():
    snn = pytest.importorskip("snntorch", reason="needs the snntorch extra")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.lif1 = nn.Linear(64, 48), snn.Leaky(beta=0.9)
            self.fc2, self.lif2 = nn.Linear(48, 10), snn.Leaky(beta=0.9)

        def forward(self, x):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            out = 0
            for _ in range(3):
                spk1, mem1 = self.lif1(self.fc1(x.flatten(1)), mem1)
                spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
                out = out + mem2
            return out / 3

    torch.manual_seed(0)
    return auto_reset(Net())


def _traces_match_emitted_spikes(model, neuron_name, layer_name, digits, to_steps):
    """After one training batch, DPAP's accumulated trace equals the trace of the spikes the neuron emitted."""
    emitted = []
    neuron = model.get_submodule(neuron_name)
    neuron.register_forward_hook(lambda m, a, out: emitted.append((out[0] if isinstance(out, tuple) else out).detach()))
    batch = [next(iter(digits[0]))]
    evaluator = TorchEvaluator(make_training_func(batch, progress=False),
                               nni.trace(torch.optim.SGD)(model.parameters(), lr=0.0), classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=1, steps_per_epoch=10)
    pruner.compress()
    stats = pruner.layer_states[layer_name].stats
    spikes = to_steps(emitted)  # [T, B, C, ...]
    expected = spike_trace(spikes, 0.5).sum(0)
    assert stats.num_batches == 1 and torch.allclose(stats.trace, expected)
    assert float(expected.sum()) > 0


@pytest.mark.parametrize("step_mode", ["m", "s"])
def test_spikingjelly_traces_equal_emitted_spikes(step_mode, digits):
    model = _sj_csnn(step_mode)
    to_steps = (lambda outs: outs[0]) if step_mode == "m" else (lambda outs: torch.stack(outs))
    _traces_match_emitted_spikes(model, "net.2", "net.0", digits, to_steps)


def test_snntorch_traces_equal_emitted_spikes(digits):
    _traces_match_emitted_spikes(_snntorch_net(), "lif1", "fc1", digits, lambda outs: torch.stack(outs))


def test_spikingjelly_pruned_end_to_end_and_shrunk(digits):
    model = _sj_csnn("m")
    assert find_adapter(model.net[2]).name == "spikingjelly"
    evaluator = TorchEvaluator(make_training_func(digits[0], progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=6,
                        steps_per_epoch=len(digits[0]), hparams=HP, temporal=True)
    assert {n: link.neuron for n, link in pruner.layers.items()} == {"net.0": "net.2", "net.5": "net.6"}
    assert pruner.layers["net.0"].norms == ("net.1",) and pruner.output_layers == ("net.7",)
    model, masks = pruner.compress()
    pruner.unwrap_model()
    summary = pruner.summary()
    assert summary["net.5"]["weights_kept"] < summary["net.5"]["weights_total"]
    assert evaluate_accuracy(model, digits[1]) > 0.7
    model.eval()
    x = next(iter(digits[1]))[0][:32]
    counts = []
    hooks = [m.register_forward_hook(lambda m, a, out: counts.append(float(out.detach().sum()))) for m in model.modules()
             if find_adapter(m) is not None]
    reference = model(x).detach()
    masked_counts = list(counts)
    kept = int(masks["net.0"]["weight"].flatten(1).any(1).sum())
    speedup(model, x[:4], masks)
    counts[:] = []
    assert model.net[0].out_channels == kept and type(model.net[0]).__module__.startswith("spikingjelly")
    assert model.net[0].step_mode == "m"
    out = model(x)
    assert counts == masked_counts  # identical spike counts at every neuron
    assert torch.allclose(out, reference, atol=1e-5)
    for hook in hooks:
        hook.remove()


def _sj_tutorial_csnn(T: int = 4):
    """Written as SpikingJelly's own tutorials write it: step layers in multi-step mode, the time dim made by
    ``x.unsqueeze(0).repeat(T, ...)`` in forward and averaged away with ``.mean(0)``."""
    pytest.importorskip("spikingjelly", reason="needs the spikingjelly extra")
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    class CSNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.T = T
            self.conv_fc = nn.Sequential(
                layer.Conv2d(1, 8, 3, padding=1, bias=False), layer.BatchNorm2d(8),
                neuron.LIFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2, 2),
                layer.Conv2d(8, 16, 3, padding=1, bias=False), layer.BatchNorm2d(16),
                neuron.LIFNode(surrogate_function=surrogate.ATan()), layer.MaxPool2d(2, 2),
                layer.Flatten(), layer.Linear(16 * 2 * 2, 64, bias=False), neuron.LIFNode(surrogate_function=surrogate.ATan()),
                layer.Linear(64, 10, bias=False))
            functional.set_step_mode(self, step_mode="m")

        def forward(self, x):
            x_seq = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)  # [N, C, H, W] -> [T, N, C, H, W]
            return self.conv_fc(x_seq).mean(0)

    torch.manual_seed(0)
    return CSNN()


def test_spikingjelly_tutorial_style_multi_step_model_is_pruned_and_shrunk(digits):
    model = _sj_tutorial_csnn()
    evaluator = TorchEvaluator(make_training_func(digits[0], progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=4,
                        steps_per_epoch=len(digits[0]), hparams={**HP, "conv_eps": 1.3, "linear_eps": 1.6})
    model, masks = pruner.compress()
    pruner.unwrap_model()
    kept = {name: s["neurons_kept"] for name, s in pruner.summary().items()}
    assert kept["conv_fc.0"] < 8 and kept["conv_fc.9"] < 64
    x = next(iter(digits[1]))[0]
    reference = spiking_run(model, x)
    assert all(count > 0 for count in reference[1])
    speedup(model, x[:4], masks)
    net = model.conv_fc
    assert (net[0].out_channels, net[1].num_features, net[4].in_channels) == (kept["conv_fc.0"],) * 3
    assert (net[4].out_channels, net[5].num_features) == (kept["conv_fc.4"],) * 2
    assert net[9].in_features == kept["conv_fc.4"] * 4 and net[9].out_features == net[11].in_features
    assert all(m.step_mode == "m" for m in net) and type(net[0]).__module__.startswith("spikingjelly")
    assert_same_spiking_function(reference, model, x)
    assert evaluate_accuracy(model, digits[1]) > 0.5


def test_spikingjelly_time_major_input_is_shrunk():
    """A multi-step model fed [T, N, C, H, W] directly (event frames)."""
    pytest.importorskip("spikingjelly", reason="needs the spikingjelly extra")
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(0)
    model = nn.Sequential(layer.Conv2d(2, 6, 3, padding=1), neuron.LIFNode(v_threshold=0.3), layer.Flatten(),
                          layer.Linear(6 * 16, 5))
    functional.set_step_mode(model, "m")
    masks = {"0": {"weight": torch.ones(6, 2, 3, 3), "bias": torch.ones(6)}}
    masks["0"]["weight"][[1, 4]] = 0
    masks["0"]["bias"][[1, 4]] = 0
    x = torch.rand(3, 8, 2, 4, 4) * 4  # T = 3, N = 8
    masked = copy.deepcopy(model)
    with torch.no_grad():
        masked[0].weight.mul_(masks["0"]["weight"])
        masked[0].bias.mul_(masks["0"]["bias"])
    reference = spiking_run(masked, x)
    assert sum(reference[1]) > 0  # the neurons fire
    speedup(model, x[:, :2], masks)
    assert model[0].out_channels == 4 and model[3].in_features == 4 * 16
    assert_same_spiking_function(reference, model, x)


def _snntorch_conv_net():
    """snnTorch's tutorial style: a loop over time with (spk, mem) neurons, spikes stacked over time."""
    snn = pytest.importorskip("snntorch", reason="needs the snntorch extra")
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.lif1 = nn.Conv2d(1, 8, 3, padding=1), snn.Leaky(beta=0.5, threshold=0.5)
            self.conv2, self.lif2 = nn.Conv2d(8, 16, 3, padding=1), snn.Leaky(beta=0.5, threshold=0.5)
            self.fc1, self.lif3 = nn.Linear(16 * 2 * 2, 10), snn.Leaky(beta=0.5, threshold=0.5)

        def forward(self, x):
            mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
            spikes = []
            for _ in range(3):
                spk1, mem1 = self.lif1(F.max_pool2d(self.conv1(x), 2), mem1)
                spk2, mem2 = self.lif2(F.max_pool2d(self.conv2(spk1), 2), mem2)
                spk3, mem3 = self.lif3(self.fc1(spk2.flatten(1)), mem3)
                spikes.append(spk3)
            return torch.stack(spikes).sum(0)

    torch.manual_seed(0)
    return Net()


def test_snntorch_model_is_shrunk():
    model = _snntorch_conv_net().eval()
    masks = {"conv1": {"weight": torch.ones(8, 1, 3, 3), "bias": torch.ones(8)},
             "conv2": {"weight": torch.ones(16, 8, 3, 3), "bias": torch.ones(16)}}
    for name, drop in (("conv1", [1, 3]), ("conv2", [0, 5, 6])):
        masks[name]["weight"][drop] = 0
        masks[name]["bias"][drop] = 0
    x = torch.rand(8, 1, 8, 8) * 3
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name, targets in masks.items():
            for target, mask in targets.items():
                getattr(masked.get_submodule(name), target).mul_(mask)
    reference = spiking_run(masked, x)  # snnTorch's spike_grad is a function, no hook: exact spikes demanded
    assert sum(reference[1]) > 0
    speedup(model, x[:2], masks)
    assert (model.conv1.out_channels, model.conv2.in_channels, model.conv2.out_channels) == (6, 6, 13)
    assert model.fc1.in_features == 13 * 4
    assert_same_spiking_function(reference, model, x)


def test_snntorch_pruned_end_to_end_in_space_and_time(digits):
    model = _snntorch_net()
    evaluator = TorchEvaluator(make_training_func(digits[0], progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Linear"]}], evaluator, epochs=6, steps_per_epoch=len(digits[0]),
                        hparams={**HP, "time_eps": 1.5}, temporal=True)
    assert [(r.module, r.call_index) for r in pruner.layers["fc1"].readouts] == [("lif1", t) for t in range(3)]
    assert pruner.output_layers == ("fc2",)
    model, _ = pruner.compress()
    pruner.unwrap_model()
    assert pruner.summary()["fc1"]["neurons_kept"] < 48 and pruner.time_sparsity() > 0
    assert evaluate_accuracy(model, digits[1]) > 0.6


def test_libraries_are_imported_only_when_met():
    code = ("import sys, torch, nni_dpap, nni_dpap.pruner, nni_dpap.speedup, nni_dpap.graph\n"
            "from nni_dpap.models import SpikingConvNet\n"
            "from nni_dpap.graph import link_layers\n"
            "link_layers(SpikingConvNet(1, 8, 10, T=2), ['conv1', 'conv2', 'fc1'])\n"
            "assert 'spikingjelly' not in sys.modules and 'snntorch' not in sys.modules, 'imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_require_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "snntorch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install nni-dpap\[snntorch\]"):
        require("snntorch")
    with pytest.raises(ConfigError, match="unknown library"):
        require("brian2")
