"""Physical removal: the shrunk model computes what the masked model computes."""

from __future__ import annotations

import copy
import logging

import nni
import pytest
import torch
import torchvision
from helpers import PRESET_RULE, assert_close, assert_same_spiking_function, spiking_run
from nni.compression import TorchEvaluator
from nni.compression.pruning import FPGMPruner, L1NormPruner, L2NormPruner, TaylorPruner
from torch import Tensor, nn

import nni_dpap
from nni_dpap import DPAPPruner, auto_reset
from nni_dpap.errors import GraphError, SpeedupError
from nni_dpap.graph import upstream_layers
from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.snn import DirectEncoder, LIFNeuron, TimeAverage
from nni_dpap.speedup import speedup

FAST = {**PRESET_RULE, "relative_schedule": True, "conv_eta": 0.5, "linear_eta": 0.5, "conv_start_epoch": 0.0,
        "linear_start_epoch": 0.0, "conv_eps": 1.3, "linear_eps": 1.6, "conv_beta": 1.0, "linear_beta": 1.0}


def channel_masks(model: nn.Module, drop: dict[str, list[int]], follow_bn: bool = True) -> dict[str, dict[str, Tensor]]:
    """Masks that remove the given output units (and the BN right after a conv)."""
    modules = dict(model.named_modules())
    names = list(modules)
    masks: dict[str, dict[str, Tensor]] = {}
    for name, units in drop.items():
        module = modules[name]
        keep = torch.ones(module.weight.shape[0])
        keep[units] = 0
        masks[name] = {"weight": torch.ones_like(module.weight) * keep.view(-1, *([1] * (module.weight.dim() - 1)))}
        if module.bias is not None:
            masks[name]["bias"] = keep.clone()
        following = modules[names[names.index(name) + 1]]
        if follow_bn and isinstance(following, nn.modules.batchnorm._BatchNorm):
            masks[names[names.index(name) + 1]] = {"weight": keep.clone(), "bias": keep.clone()}
    return masks


def masked_copy(model: nn.Module, masks) -> nn.Module:
    """What NNI's wrappers compute: the model with every mask multiplied into its target."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for name, targets in masks.items():
            for target, mask in targets.items():
                if mask is not None:
                    getattr(other.get_submodule(name), target).mul_(mask)
    return other


def randomize_norms(model: nn.Module) -> None:
    """BatchNorm statistics and affine parameters away from their identity initialisation."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) - 0.5)


def expected_params(model: nn.Module, masks) -> int:
    """Parameter count after removal, computed from the masks alone (plain nets, no merges)."""
    upstream = upstream_layers(model)
    kept_out = {}
    for name in upstream:
        module = model.get_submodule(name)
        w = masks.get(name, {}).get("weight")
        kept_out[name] = int(w.flatten(1).ne(0).any(1).sum()) if w is not None else module.weight.shape[0]
    total = 0
    for name, source in upstream.items():
        module = model.get_submodule(name)
        n_in = module.weight.shape[1]
        if source is not None:
            per_unit = n_in // model.get_submodule(source).weight.shape[0]
            n_in = kept_out[source] * per_unit
        total += kept_out[name] * n_in * module.weight[0, 0].numel() + (kept_out[name] if module.bias is not None else 0)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            total += 2 * int(masks.get(name, {"weight": torch.ones(module.num_features)})["weight"].ne(0).sum())
    return total + sum(p.numel() for m in model.modules() if not isinstance(
        m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)) for p in m.parameters(recurse=False))


@pytest.mark.parametrize("build", [lambda: SpikingConvNet(1, 8, 10, T=4), lambda: LeNetANN(1, 8, 10)])
def test_digits_nets_equal_after_speedup(build):
    torch.manual_seed(0)
    model = build().eval()
    masks = channel_masks(model, {"conv1": [0, 3], "conv2": [1, 2, 5, 7], "fc1": list(range(0, 100, 3))})
    masks["fc1"]["weight"][:, 1:3] = 0  # synapses (of the kept conv2 channel 0): stay as zeros in the shrunk layer
    x = torch.rand(32, 1, 8, 8)
    reference = spiking_run(masked_copy(model, masks), x)  # the weights themselves are not pre-masked
    params = expected_params(model, masks)
    c1, c2, hidden = (20, 50, 500) if isinstance(model, LeNetANN) else (15, 40, 300)
    speedup(model, x[:4], masks)
    assert (model.conv1.out_channels, model.conv2.in_channels, model.conv2.out_channels) == (c1 - 2, c1 - 2, c2 - 4)
    assert (model.fc1.in_features, model.fc1.out_features) == ((c2 - 4) * 4, hidden - 34)
    assert sum(p.numel() for p in model.parameters()) == params
    assert bool(model.fc1.weight[:, 1:3].eq(0).all())  # the pruned synapses of a kept neuron are zero
    assert_same_spiking_function(reference, model, x)
    assert not model.training


@pytest.mark.parametrize("build", [lambda: LeNetANN(1, 8, 10), lambda: SpikingConvNet(1, 8, 10, T=4)])
def test_a_neuron_left_with_its_bias_alone_is_kept(build):
    """Synapse-only pruning can take every synapse of a neuron: it still emits f(bias) and must stay."""
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        model.fc1.bias.fill_(0.7)  # (large enough for the spiking neurons to fire on the bias alone)
    masks = {"fc1": {"weight": torch.ones_like(model.fc1.weight), "bias": torch.ones_like(model.fc1.bias)}}
    masks["fc1"]["weight"][:5] = 0  # every synapse of neurons 0-4, not their bias
    masks["fc1"]["bias"][5:8] = 0  # neurons 5-7: synapses and bias, removed
    masks["fc1"]["weight"][5:8] = 0
    x = torch.rand(16, 1, 8, 8)
    reference = spiking_run(masked_copy(model, masks), x)
    hidden = model.fc1.out_features
    speedup(model, x[:4], masks)
    assert model.fc1.out_features == hidden - 3
    assert_same_spiking_function(reference, model, x)


def test_dpap_masks_of_a_trained_snn_with_bn(tiny_snn, make_evaluator, digits):
    pruner = DPAPPruner(tiny_snn, [{"op_types": ["Conv2d", "Linear"]}], make_evaluator(tiny_snn), epochs=4,
                        steps_per_epoch=len(digits[0]), hparams=FAST)
    model, masks = pruner.compress()
    pruner.unwrap_model()
    model.eval()
    x = next(iter(digits[1]))[0]
    reference = spiking_run(model, x)
    kept = pruner.summary()
    params = expected_params(model, masks)
    masks_before = {m: {t: v.clone() for t, v in d.items()} for m, d in masks.items()}
    speedup(model, x[:8], masks)
    assert model.conv.out_channels == model.bn.num_features == kept["conv"]["neurons_kept"] < 8
    assert model.fc1.out_features == kept["fc1"]["neurons_kept"]
    assert sum(p.numel() for p in model.parameters()) == params
    assert_same_spiking_function(reference, model, x)
    for m, d in masks.items():  # the caller's masks are not modified
        for t, v in d.items():
            assert torch.equal(v, masks_before[m][t])


def test_time_loop_model():
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.sn1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), LIFNeuron(step_mode="s")
            self.fc1, self.sn2, self.fc2 = nn.Linear(6 * 64, 20), LIFNeuron(step_mode="s"), nn.Linear(20, 3)

        def forward(self, x):
            out = 0
            for _ in range(3):
                out = out + self.fc2(self.sn2(self.fc1(self.sn1(self.bn(self.conv(x))).flatten(1))))
            return out / 3

    torch.manual_seed(0)
    model = auto_reset(Loop()).eval()
    randomize_norms(model)
    masks = channel_masks(model, {"conv": [1, 4], "fc1": [0, 5, 6]})
    x = torch.rand(8, 1, 8, 8) * 3
    reference = spiking_run(masked_copy(model, masks), x)
    speedup(model, x[:2], masks)
    assert (model.conv.out_channels, model.fc1.in_features, model.fc1.out_features) == (4, 4 * 64, 17)
    assert_same_spiking_function(reference, model, x)


class SpikingBlock(nn.Module):
    """conv-BN-LIF-conv-BN + identity -> LIF (a spiking ResNet basic block), T = 2."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1, self.bn1, self.sn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), LIFNeuron(2)
        self.conv2, self.bn2, self.sn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), LIFNeuron(2)

    def forward(self, x):
        return self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x))))) + x)


def test_spiking_residual_block():
    torch.manual_seed(0)
    model = nn.Sequential(DirectEncoder(2), nn.Conv2d(1, 8, 3, padding=1), LIFNeuron(2), SpikingBlock(),
                          nn.Flatten(), nn.Linear(8 * 36, 4), TimeAverage(2)).eval()
    masks = channel_masks(model, {"3.conv1": [0, 2, 3], "3.conv2": [1, 5]})
    x = torch.rand(6, 1, 6, 6) * 4
    reference = spiking_run(masked_copy(model, masks), x)
    params_before = sum(p.numel() for p in model.parameters())
    speedup(model, x[:2], masks)
    assert model[3].conv1.out_channels == 5  # inside the block: removed
    assert model[3].conv2.out_channels == 8  # joined by the add: kept as NNI's dependency rules require...
    assert bool(model[3].conv2.weight[[1, 5]].eq(0).all())  # ...with the masked weights zeroed by speedup
    # exactly what the masks imply under the add's rule: stem conv 8x1x3x3+8; block conv1 5x8x3x3+5, bn1 2x5;
    # block conv2 keeps 8 outputs (add) but reads 5 inputs: 8x5x3x3+8, bn2 2x8; linear 4x288+4
    implied = (72 + 8) + (5 * 8 * 9 + 5) + 2 * 5 + (8 * 5 * 9 + 8) + 2 * 8 + (4 * 288 + 4)
    assert sum(p.numel() for p in model.parameters()) == implied < params_before
    assert_same_spiking_function(reference, model, x)


def _taylor_masks(model: nn.Module, config: list[dict]) -> dict:
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.rand(4, 3, 32, 32, generator=generator), torch.randint(0, 10, (4,), generator=generator))
               for _ in range(3)]

    def train(model, optimizers, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        optimizer = optimizers[0] if isinstance(optimizers, list) else optimizers
        model.train()
        for step, batch in enumerate(batches * 2):
            if max_steps is not None and step >= max_steps:
                break
            optimizer.zero_grad()
            training_step(batch, model).backward()
            optimizer.step()

    evaluator = TorchEvaluator(train, nni.trace(torch.optim.SGD)(model.parameters(), lr=1e-3),
                               lambda batch, m: nn.functional.cross_entropy(m(batch[0]), batch[1]))
    pruner = TaylorPruner(model, config, evaluator, training_steps=3)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    return masks


@pytest.mark.parametrize("pruner", ["l1", "l2", "fpgm", "taylor"])
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vgg11_bn"])
def test_nni_pruners_masks_on_unmasked_weights(name, pruner):
    """NNI's contract: weights not zeroed plus masks; channels kept by an add must be zeroed by speedup."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10)
    randomize_norms(model)
    first = "conv1" if name == "resnet18" else "features.0" if name == "vgg11_bn" else "features.0.0"
    config = [{"op_types": ["Conv2d"], "exclude_op_names": [first], "sparse_ratio": 0.5}]
    if pruner == "taylor":
        masks = _taylor_masks(model, config)
    else:
        cls = {"l1": L1NormPruner, "l2": L2NormPruner, "fpgm": FPGMPruner}[pruner]
        nni_pruner = cls(model, config)
        _, masks = nni_pruner.compress()
        nni_pruner.unwrap_model()
    model.eval()
    masks = {m: dict(t) for m, t in masks.items()}
    for conv in list(masks):  # mask the BatchNorm after each masked conv alike
        names = [n for n, _ in model.named_modules()]
        following = model.get_submodule(names[names.index(conv) + 1])
        if isinstance(following, nn.BatchNorm2d):
            channels = masks[conv]["weight"].flatten(1).ne(0).any(1).float()
            masks[names[names.index(conv) + 1]] = {"weight": channels.clone(), "bias": channels.clone()}
    assert any(bool(model.get_submodule(m).weight[t["weight"] == 0].ne(0).any()) for m, t in masks.items()
               if "weight" in t)  # the weights really are not zeroed
    x = torch.rand(2, 3, 32, 32)
    reference = masked_copy(model, masks)(x)
    params_before = sum(p.numel() for p in model.parameters())
    speedup(model, x, masks)
    assert sum(p.numel() for p in model.parameters()) < 0.8 * params_before
    assert_close(model(x), reference)


def test_an_unmasked_batchnorm_shift_is_reported(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3))
    randomize_norms(model)
    model.eval()
    masks = channel_masks(model, {"0": [1, 2]}, follow_bn=False)
    with caplog.at_level(logging.WARNING, logger="nni_dpap.speedup"):
        speedup(model, torch.rand(4, 1, 6, 6), masks)
    assert "differs from the masked model" in caplog.text and "BatchNorm" in caplog.text
    assert model[0].out_channels == 4
    caplog.clear()
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3))
    randomize_norms(model)
    with caplog.at_level(logging.WARNING, logger="nni_dpap.speedup"):
        speedup(model.eval(), torch.rand(4, 1, 6, 6), channel_masks(model, {"0": [1, 2]}))
    assert "differs" not in caplog.text


def test_torchvision_residual_and_depthwise_random_channels():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    randomize_norms(model)
    generator = torch.Generator().manual_seed(1)
    drop = {n: [i for i in range(1, m.out_channels) if torch.rand(1, generator=generator) < 0.3]
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != "conv1"}
    masks = channel_masks(model, drop)
    x = torch.rand(2, 3, 64, 64)
    reference = masked_copy(model, masks)(x)
    params_before = sum(p.numel() for p in model.parameters())
    speedup(model, x, masks)
    assert sum(p.numel() for p in model.parameters()) < 0.9 * params_before
    assert_close(model(x), reference)


def test_per_channel_neuron_parameters_are_sliced():
    class BiasedLIF(LIFNeuron):
        def __init__(self, channels: int, T: int) -> None:
            super().__init__(T)
            self.offset = nn.Parameter(torch.linspace(0.0, 1.0, channels))

        def neuronal_charge(self, v, x):
            return super().neuronal_charge(v, x) + self.offset.view(1, -1, 1, 1)

    torch.manual_seed(0)
    model = nn.Sequential(DirectEncoder(2), nn.Conv2d(1, 6, 3, padding=1), BiasedLIF(6, 2), nn.Flatten(),
                          nn.Linear(6 * 16, 3), TimeAverage(2)).eval()
    masks = channel_masks(model, {"1": [0, 4]})
    x = torch.rand(4, 1, 4, 4)
    with torch.no_grad():
        model[2].offset[[0, 4]] = -5.0  # a removed channel must stay silent in the masked model too
    reference = spiking_run(masked_copy(model, masks), x)
    speedup(model, x[:2], masks)
    assert model[2].offset.shape == (4,)
    assert_close(model[2].offset.detach(), torch.linspace(0, 1, 6)[[1, 2, 3, 5]])
    assert_same_spiking_function(reference, model, x)


def test_the_module_is_callable():
    model = LeNetANN(1, 8, 10).eval()
    masks = channel_masks(model, {"conv1": [0]})
    assert nni_dpap.speedup(model, torch.rand(2, 1, 8, 8), masks) is model and model.conv1.out_channels == 19
    assert nni_dpap.speedup.speedup is speedup


def test_clear_errors():
    model = LeNetANN(1, 8, 10)
    x = torch.rand(2, 1, 8, 8)
    good = channel_masks(model, {"conv1": [0]})
    with pytest.raises(SpeedupError, match="not in the model"):
        speedup(model, x, {"conv9": {"weight": torch.ones(1)}})
    with pytest.raises(SpeedupError, match=r"masks\['conv1'\]\['weight'\] has shape \(20,\).*\(20, 1, 5, 5\)"):
        speedup(model, x, {"conv1": {"weight": torch.ones(20)}})
    with pytest.raises(SpeedupError, match="not a parameter or buffer"):
        speedup(model, x, {"conv1": {"gamma": torch.ones(20)}})
    with pytest.raises(SpeedupError, match="other than 0 and 1"):
        speedup(model, x, {"conv1": {"bias": torch.full((20,), 0.5)}})
    with pytest.raises(SpeedupError, match="masks must be"):
        speedup(model, x, [good])
    with pytest.raises(SpeedupError, match=r"does not run on dummy_input of shape \(2, 3, 8, 8\)"):
        speedup(model, torch.rand(2, 3, 8, 8), good)
    with pytest.raises(SpeedupError, match="dummy_input must be an input batch"):
        speedup(model, "x", good)
    with pytest.raises(SpeedupError, match="needs the model"):
        speedup(model.state_dict(), x, good)
    assert model.conv1.out_channels == 20 and bool(model.conv1.weight[0].ne(0).any())  # nothing was changed

    config = [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}]
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    with pytest.raises(SpeedupError, match=r"still wrapped.*unwrap_model\(\)"):
        speedup(model, x, masks)
    pruner.unwrap_model()
    speedup(model, x, masks)

    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(GraphError, match="leaf_modules"):
        speedup(Dynamic(), torch.rand(2, 3), {"fc": {"weight": torch.ones(3, 3)}})
