"""The lean wrapper forward gives NNI's results: same training trajectory, masked gradients, fallbacks."""

from __future__ import annotations

import copy

import nni
import pytest
import torch
from nni.compression import TorchEvaluator
from nni.compression.base.wrapper import register_wrappers
from torch import nn

from helpers import PRESET_RULE, assert_close
from nni_dpap import DPAPPruner, _fastwrap
from nni_dpap.data import digits_loaders
from nni_dpap.training import classification_step, make_training_func

FAST = {**PRESET_RULE, "relative_schedule": True, "conv_eta": 0.3, "linear_eta": 0.3, "conv_start_epoch": 0.0,
        "linear_start_epoch": 0.0, "conv_eps": 1.2, "linear_eps": 2.0, "conv_beta": 2.0, "linear_beta": 2.0}
CONFIG = [{"op_types": ["Conv2d", "Linear"]}]


def _train(model, shrink_every=None):
    train_loader = digits_loaders(batch_size=64, seed=0)[0]  # a fresh loader: the same batches for every run
    evaluator = TorchEvaluator(make_training_func(train_loader, progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, CONFIG, evaluator, epochs=4, steps_per_epoch=len(train_loader),
                        hparams=FAST, shrink_every=shrink_every,
                        dummy_input=torch.rand(2, 1, 8, 8) if shrink_every else None)
    model, masks = pruner.compress()
    pruner.unwrap_model()
    return model, masks


@pytest.mark.parametrize("fixture", ["tiny_ann", "tiny_snn"])
def test_training_matches_nni_wrapper_forward(fixture, request, monkeypatch):
    model = request.getfixturevalue(fixture)
    reference_model = copy.deepcopy(model)
    lean, lean_masks = _train(model)
    with monkeypatch.context() as patch:  # NNI's own forward: every parameter times its mask
        patch.setattr(_fastwrap, "install", lambda *args: _fastwrap.FastForwards())
        reference, reference_masks = _train(reference_model)
    assert any(float(m["weight"].mean()) < 0.9 for m in reference_masks.values())  # something was pruned
    for name, targets in reference_masks.items():
        for target, mask in targets.items():
            assert_close(lean_masks[name][target], mask)
    for p, q in zip(lean.parameters(), reference.parameters()):
        assert_close(p, q)


def test_lean_forward_masks_gradients_and_gives_nni_output():
    torch.manual_seed(0)
    lean = nn.Sequential(nn.Linear(6, 4))
    plain = copy.deepcopy(lean)
    x = torch.randn(5, 6)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0]).unsqueeze(1).expand(4, 6).clone()
    outputs, grads = [], []
    for model, fast in ((lean, True), (plain, False)):
        wrappers, _ = register_wrappers(model, [{"op_names": ["0"]}], "pruning")
        wrapper = wrappers["0"]
        wrapper.wrap()
        wrapper.pruning_target_spaces["weight"].mask = mask
        with torch.no_grad():
            wrapper.weight.mul_(mask)  # what DPAP guarantees before every forward
        installed = _fastwrap.install(wrappers, masked={"0"}) if fast else None
        if fast:
            assert model[0].forward is not wrapper.forward
        out = model(x)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append(wrapper.weight.grad.clone())
        if installed is not None:
            installed.remove()
            assert model[0].forward == wrapper.forward
    assert_close(outputs[0], outputs[1])
    assert_close(grads[0], grads[1])
    assert float(grads[0][mask == 0].abs().sum()) == 0.0
    assert float(grads[0][mask == 1].abs().sum()) > 0.0


def test_wrapper_shared_with_a_quantizer_keeps_nni_forward():
    model = nn.Sequential(nn.Linear(6, 4))
    wrappers, _ = register_wrappers(model, [{"op_names": ["0"]}], "pruning")
    wrappers["0"].wrap()
    wrappers, _ = register_wrappers(model, [{"op_names": ["0"], "target_names": ["weight"], "quant_dtype": "int8"}],
                                    "quantization", existed_wrappers=wrappers)
    assert wrappers["0"].quantization_target_spaces
    installed = _fastwrap.install(wrappers)
    assert model[0].forward == wrappers["0"].forward  # not replaced
    installed.remove()


def test_pruner_restores_nni_forward_after_training(tiny_ann):
    train_loader = digits_loaders(batch_size=64, seed=0)[0]
    seen = []

    def training(model, optimizer, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for batch in train_loader:
            seen.append(model.fc1.forward == model.fc1._nni_wrapper.forward)
            loss = training_step(batch, model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    evaluator = TorchEvaluator(training, nni.trace(torch.optim.Adam)(tiny_ann.parameters(), lr=3e-3),
                               classification_step)
    pruner = DPAPPruner(tiny_ann, CONFIG, evaluator, epochs=1, steps_per_epoch=len(train_loader), hparams=FAST)
    model, _ = pruner.compress()
    assert seen and not any(seen)  # the lean forward while training
    assert model.fc1.forward == model.fc1._nni_wrapper.forward  # NNI's again after it
