from __future__ import annotations

import nni
import pytest
import torch
from nni.compression import TorchEvaluator

from nni_dpap import DPAPPruner
from nni_dpap.errors import ConfigError
from nni_dpap.models import MODELS, LeNetANN, SpikingConvNet, SpikingResNet18, get_model, model_spec
from nni_dpap.training import classification_step, make_training_func


@pytest.mark.parametrize("size,channels", [(8, 1), (28, 1), (32, 2)])
def test_spiking_convnet_shapes_and_backward(size, channels):
    model = SpikingConvNet(channels, size, 10, T=3)
    x = torch.rand(4, channels, size, size)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    assert model.fc1.in_features == 40 * (size // 4) ** 2


def test_spiking_convnet_runs_conv1_once_per_image():
    torch.manual_seed(0)
    model = SpikingConvNet(1, 8, 10, T=4)
    x = torch.rand(3, 1, 8, 8, requires_grad=True)
    calls = []
    model.conv1.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    out = model(x)
    assert calls == [3]  # B images, not T*B
    h = model.conv1(model.encoder(x))  # the textbook order: repeat, then conv1 at every step
    h = model.pool2(model.sn2(model.conv2(model.pool1(model.sn1(h)))))
    reference = model.decoder(model.fc2(model.sn3(model.fc1(model.flatten(h)))))
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (grad_ref,) = torch.autograd.grad(reference.sum(), x)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("small_input", [True, False])
def test_spiking_resnet_runs_its_stem_once_per_image(small_input):
    torch.manual_seed(0)
    model = SpikingResNet18(3, 10, T=4, small_input=small_input, width=0.125)
    reference = SpikingResNet18(3, 10, T=4, small_input=small_input, width=0.125)
    reference.load_state_dict(model.state_dict())
    x = torch.rand(3, 3, 32, 32)
    calls = []
    model.conv1.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    out = model(x)
    assert calls == [3]  # B images, not T*B
    h = reference.pool(reference.sn1(reference.bn1(reference.conv1(reference.encoder(x)))))  # the textbook order
    expected = reference.decoder(reference.fc(reference.avgpool(reference.layers(h)).flatten(1)))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)  # training mode: BatchNorm's batch statistics
    out.sum().backward()
    expected.sum().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(model.bn1.running_mean, reference.bn1.running_mean, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model.bn1.running_var, reference.bn1.running_var, rtol=1e-3, atol=1e-7)  # n/(n-1)
    assert model.conv1.weight.grad.abs().sum() > 0


def test_spiking_convnet_on_event_frames_and_plif():
    model = SpikingConvNet(2, 32, 11, T=5, neuron="plif", encode=False)
    frames = torch.rand(5 * 2, 2, 32, 32)  # already folded [T*B, C, H, W]
    assert model(frames).shape == (2, 11)


def test_lenet_ann():
    model = LeNetANN(1, 28, 10)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model.fc1.in_features == 50 * 7 * 7


# small widths keep the zoo test fast; the architectures are the paper's
_SMALL = {"snn_cifar": {"width": 0.25}, "spiking_resnet18": {"width": 0.25}, "vgg16": {"width": 0.125}}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_table_one_network_builds_trains_and_is_prunable(name):
    torch.manual_seed(0)
    spec = model_spec(name)
    shape = (spec.input_shape[0], 32, 32)
    model = get_model(name, shape, 10, T=2, **_SMALL.get(name, {}))
    x = torch.rand(2, *shape)
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    data = [(torch.rand(4, *shape), torch.randint(0, 10, (4,))) for _ in range(2)]
    evaluator = TorchEvaluator(make_training_func(data, progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=1e-3), classification_step)
    hparams = {"relative_schedule": True, "conv_eta": 1.0, "linear_eta": 1.0, "conv_start_epoch": 0.0,
               "linear_start_epoch": 0.0, "conv_beta": 0.5, "linear_beta": 0.5, "conv_eps": 1.5, "linear_eps": 1.5}
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=3, steps_per_epoch=2,
                        hparams=hparams)
    convs_and_linears = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    first_conv = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv not in pruner.layers  # the library's default leaves the first conv alone
    assert set(pruner.layers) | set(pruner.output_layers) | {first_conv} == set(convs_and_linears)
    assert len(pruner.output_layers) == 1
    assert all(link.spiking == spec.spiking for link in pruner.layers.values())
    _, masks = pruner.compress()
    summary = pruner.summary()
    assert sum(s["neurons_kept"] for s in summary.values()) < sum(s["neurons_total"] for s in summary.values())


@pytest.mark.slow
def test_full_size_paper_vgg16():
    model = get_model("vgg16")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(165.7e6, rel=0.01)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_registry_errors_and_defaults():
    with pytest.raises(ConfigError, match="unknown model 'lenet5'.*ann_lenet"):
        get_model("lenet5")
    with pytest.raises(ConfigError, match="input_shape"):
        get_model("ann_lenet", (28, 28))
    assert isinstance(get_model("snn_mnist"), SpikingConvNet)
    assert model_spec("snn_mnist").exclude == ("conv1",) and model_spec("snn_mnist").T == 20
