"""Physical removal: the shrunk model computes what the masked model computes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

from nni_dpap import DPAPPruner
from nni_dpap.errors import GraphError, SpeedupError
from nni_dpap.graph import upstream_layers
from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.snn import LIFNeuron, auto_reset
from nni_dpap.speedup import speedup

FAST = {"relative_schedule": True, "conv_eta": 0.5, "linear_eta": 0.5, "conv_start_epoch": 0.0,
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


@torch.no_grad()
def apply_masks(model: nn.Module, masks) -> None:
    for name, targets in masks.items():
        for target, mask in targets.items():
            getattr(model.get_submodule(name), target).mul_(mask)


def spike_counts(model: nn.Module, x: Tensor) -> list[float]:
    counts: list[float] = []
    handles = [m.register_forward_hook(lambda m, a, out: counts.append(float(out.sum())))
               for m in model.modules() if isinstance(m, LIFNeuron)]
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    return counts + [float(out.abs().sum())]


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
    masks["fc1"]["weight"][:, 5:9] = 0  # synapses: stay as zeros in the dense shrunk layer
    apply_masks(model, masks)
    x = torch.rand(32, 1, 8, 8)
    reference, counts = model(x).detach(), spike_counts(model, x)
    params = expected_params(model, masks)
    speedup(model, x[:4], masks)
    assert model.conv1.out_channels == model.conv1.out_channels and model.conv2.in_channels == model.conv1.out_channels
    assert (model.conv1.out_channels, model.conv2.out_channels, model.fc1.out_features) == (
        model.conv1.weight.shape[0], model.conv2.weight.shape[0], 500 - 34 if isinstance(model, LeNetANN) else 300 - 34)
    assert model.fc1.in_features == model.conv2.out_channels * 4
    assert sum(p.numel() for p in model.parameters()) == params
    assert torch.allclose(model(x), reference, atol=1e-5)
    assert spike_counts(model, x) == pytest.approx(counts, abs=1e-4)
    assert not model.training


def test_dpap_masks_of_a_trained_snn_with_bn(tiny_snn, make_evaluator, digits):
    pruner = DPAPPruner(tiny_snn, [{"op_types": ["Conv2d", "Linear"]}], make_evaluator(tiny_snn), epochs=4,
                        steps_per_epoch=len(digits[0]), hparams=FAST)
    model, masks = pruner.compress()
    pruner.unwrap_model()
    model.eval()
    x = next(iter(digits[1]))[0]
    reference, counts = model(x).detach(), spike_counts(model, x)
    kept = pruner.summary()
    params = expected_params(model, masks)
    masks_before = {m: {t: v.clone() for t, v in d.items()} for m, d in masks.items()}
    speedup(model, x[:8], masks)
    assert model.conv.out_channels == model.bn.num_features == kept["conv"]["neurons_kept"] < 8
    assert model.fc1.out_features == kept["fc1"]["neurons_kept"]
    assert sum(p.numel() for p in model.parameters()) == params
    assert torch.equal(model(x), reference)
    assert spike_counts(model, x) == counts
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
    masks = channel_masks(model, {"conv": [1, 4], "fc1": [0, 5, 6]})
    apply_masks(model, masks)
    x = torch.rand(8, 1, 8, 8) * 3
    reference = model(x).detach()
    speedup(model, x[:2], masks)
    assert (model.conv.out_channels, model.fc1.in_features, model.fc1.out_features) == (4, 4 * 64, 17)
    assert torch.allclose(model(x), reference, atol=1e-6)


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
    from nni_dpap.snn import DirectEncoder, TimeAverage

    model = nn.Sequential(DirectEncoder(2), nn.Conv2d(1, 8, 3, padding=1), LIFNeuron(2), SpikingBlock(),
                          nn.Flatten(), nn.Linear(8 * 36, 4), TimeAverage(2)).eval()
    masks = channel_masks(model, {"3.conv1": [0, 2, 3], "3.conv2": [1, 5]})
    apply_masks(model, masks)
    x = torch.rand(6, 1, 6, 6) * 4
    reference = model(x).detach()
    params_before = sum(p.numel() for p in model.parameters())
    speedup(model, x[:2], masks)
    assert model[3].conv1.out_channels == 5  # inside the block: removed
    assert model[3].conv2.out_channels == 8  # joined by the add: kept (zeroed) as NNI's dependency rules require
    # exactly what the masks imply under the add's rule: stem conv 8x1x3x3+8; block conv1 5x8x3x3+5, bn1 2x5;
    # block conv2 keeps 8 outputs (add) but reads 5 inputs: 8x5x3x3+8, bn2 2x8; linear 4x288+4
    implied = (72 + 8) + (5 * 8 * 9 + 5) + 2 * 5 + (8 * 5 * 9 + 8) + 2 * 8 + (4 * 288 + 4)
    assert sum(p.numel() for p in model.parameters()) == implied < params_before
    assert torch.allclose(model(x), reference, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_residual_and_depthwise(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    generator = torch.Generator().manual_seed(1)
    drop = {}
    for module_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module_name not in ("conv1", "features.0.0"):
            drop[module_name] = [i for i in range(1, module.out_channels) if torch.rand(1, generator=generator) < 0.3]
    masks = channel_masks(model, drop)
    apply_masks(model, masks)
    x = torch.rand(2, 3, 64, 64)
    reference = model(x).detach()
    params_before = sum(p.numel() for p in model.parameters())
    speedup(model, x, masks)
    assert sum(p.numel() for p in model.parameters()) < 0.9 * params_before
    assert torch.allclose(model(x), reference, atol=1e-5)


def test_per_channel_neuron_parameters_are_sliced():
    class BiasedLIF(LIFNeuron):
        def __init__(self, channels: int, T: int) -> None:
            super().__init__(T)
            self.offset = nn.Parameter(torch.linspace(0.0, 1.0, channels))

        def neuronal_charge(self, v, x):
            return super().neuronal_charge(v, x) + self.offset.view(1, -1, 1, 1)

    from nni_dpap.snn import DirectEncoder, TimeAverage

    torch.manual_seed(0)
    model = nn.Sequential(DirectEncoder(2), nn.Conv2d(1, 6, 3, padding=1), BiasedLIF(6, 2), nn.Flatten(),
                          nn.Linear(6 * 16, 3), TimeAverage(2)).eval()
    masks = channel_masks(model, {"1": [0, 4]})
    apply_masks(model, masks)
    x = torch.rand(4, 1, 4, 4)
    with torch.no_grad():
        model[2].offset[[0, 4]] = -5.0  # a removed channel must stay silent in the masked model too
    reference = model(x).detach()
    speedup(model, x[:2], masks)
    assert model[2].offset.shape == (4,) and torch.allclose(model[2].offset, torch.linspace(0, 1, 6)[[1, 2, 3, 5]])
    assert torch.allclose(model(x), reference, atol=1e-6)


def test_clear_errors():
    model = LeNetANN(1, 8, 10)
    with pytest.raises(SpeedupError, match="not in the model"):
        speedup(model, torch.rand(2, 1, 8, 8), {"conv9": {"weight": torch.ones(1)}})

    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(GraphError, match="leaf_modules"):
        speedup(Dynamic(), torch.rand(2, 3), {"fc": {"weight": torch.ones(3, 3)}})
