"""Shrinking while training: optimizer surgery and DPAPPruner(shrink_every=...)."""

from __future__ import annotations

import nni
import pytest
import torch
from nni.compression import TorchEvaluator
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.data import digits_loaders
from nni_dpap.errors import ConfigError
from nni_dpap.report import layer_costs
from nni_dpap.shrink import ShrinkPolicy, module_of, remap_optimizer
from nni_dpap.slicing import KeptIndices
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func
from helpers import PRESET_RULE

FAST = {**PRESET_RULE, "relative_schedule": True, "conv_eta": 0.3, "linear_eta": 0.3, "conv_start_epoch": 0.0,
        "linear_start_epoch": 0.0, "conv_eps": 1.2, "linear_eps": 1.2, "conv_beta": 2.0, "linear_beta": 2.0}


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.Adam(p, lr=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.1, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
])
def test_remap_optimizer_slices_state(make_optimizer):
    torch.manual_seed(0)
    old = nn.Linear(4, 3)
    optimizer = make_optimizer(old.parameters())
    for _ in range(2):
        old(torch.rand(5, 4)).pow(2).sum().backward()
        optimizer.step()
    before = {k: {s: v.clone() if torch.is_tensor(v) else v for s, v in optimizer.state[p].items()}
              for k, p in old.named_parameters()}
    out, inp = torch.tensor([0, 2]), torch.tensor([1, 3])
    new = nn.Linear(2, 2)
    with torch.no_grad():
        new.weight.copy_(old.weight[out][:, inp])
        new.bias.copy_(old.bias[out])
    reset = remap_optimizer(optimizer, dict(old.named_parameters()), dict(new.named_parameters()),
                            {"": KeptIndices(out, inp)})
    assert reset == []
    assert optimizer.param_groups[0]["params"] == [new.weight, new.bias]
    for name, param in new.named_parameters():
        for key, value in optimizer.state[param].items():
            if torch.is_tensor(value) and value.dim() > 0:
                expected = before[name][key][out][:, inp] if name == "weight" else before[name][key][out]
                torch.testing.assert_close(value, expected)
    new(torch.rand(5, 2)).pow(2).sum().backward()
    optimizer.step()  # the optimizer keeps working on the new parameters


def test_module_of_sees_through_nni_wrappers():
    assert module_of("layer.conv._nni_wrapper.weight") == "layer.conv" and module_of("fc.bias") == "fc"


def _run(net_cls, shrink_every, epochs=6, hparams=FAST):
    import conftest

    torch.manual_seed(0)
    model = getattr(conftest, net_cls)()
    train_loader, test_loader = digits_loaders(64, seed=0)
    losses: list[float] = []

    def step(batch, m):
        loss = classification_step(batch, m)
        losses.append(float(loss.detach()))
        return loss

    optimizer = nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3)
    scheduler = nni.trace(torch.optim.lr_scheduler.StepLR)(optimizer, step_size=2, gamma=0.5)
    lrs: list[float] = []

    def record_lr(m, epoch):
        lrs.append(pruner.evaluator._optimizers[0].param_groups[0]["lr"])

    train = make_training_func(train_loader, progress=False, on_epoch_end=record_lr)
    evaluator = TorchEvaluator(train, optimizer, step, scheduler, dummy_input=torch.rand(4, 1, 8, 8))
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=epochs,
                        steps_per_epoch=len(train_loader), hparams=hparams, shrink_every=shrink_every)
    pruner.shrink_policy.always = True  # every shrink, to compare with the masked run epoch by epoch
    model, _ = pruner.compress()
    pruner.unwrap_model()
    costs = {n: c.params_kept for n, c in layer_costs(model, torch.rand(2, 1, 8, 8)).items()}
    history = [{n: s["neurons_kept"] for n, s in h["layers"].items()} for h in pruner.history]
    assert lrs == pytest.approx([3e-3 * 0.5 ** ((e + 1) // 2) for e in range(epochs)])  # the scheduler works
    return pruner, model, evaluate_accuracy(model, test_loader), history, costs, losses, len(train_loader)


def test_shrinking_ann_gives_the_same_masks_and_accuracy():
    plain = _run("TinyANN", None)
    shrunk = _run("TinyANN", 1)
    assert shrunk[0].shrinks >= 2 and plain[0].shrinks == 0
    assert shrunk[3] == plain[3]  # kept units of every layer after every epoch
    assert shrunk[4] == plain[4]  # effective parameters per layer
    assert shrunk[2] == pytest.approx(plain[2], abs=1e-9)
    assert torch.allclose(torch.tensor(shrunk[5]), torch.tensor(plain[5]), atol=1e-4)  # same losses all along
    model = shrunk[1]
    assert model.fc1.out_features == shrunk[3][-1]["fc1"] < 32  # physically smaller
    assert model.conv.out_channels == shrunk[3][-1]["conv"]


def test_shrinking_carries_the_movement_score_over():
    """``unit_order='movement'``: the score is cut with the layer and keeps accumulating on the smaller weights."""
    hparams = {**FAST, "unit_order": "movement"}
    plain, shrunk = _run("TinyANN", None, hparams=hparams), _run("TinyANN", 1, hparams=hparams)
    pruner, model = shrunk[0], shrunk[1]
    assert pruner.shrinks >= 2 and model.fc1.out_features < 32
    for name, layer in pruner.layer_states.items():
        module = model.get_submodule(name)
        assert layer.movement is not None and tuple(layer.movement.shape) == tuple(module.weight.shape[:2])
    # the same run up to rounding: a shrunk layer adds in another order, and a near tie may rank otherwise
    for masked, physical in zip(plain[3], shrunk[3]):
        assert all(abs(masked[n] - physical[n]) <= 1 for n in masked)
    assert abs(shrunk[2] - plain[2]) < 0.03


def test_shrinking_snn_keeps_training():
    pruner, model, accuracy, history, _, losses, steps = _run("TinySNN", 1)
    plain_accuracy = _run("TinySNN", None)[2]
    assert pruner.shrinks >= 2
    assert model.fc1.out_features == history[-1]["fc1"] < 32
    assert model.bn.num_features == model.conv.out_channels == history[-1]["conv"]
    epoch_loss = [sum(losses[i * steps:(i + 1) * steps]) / steps for i in range(len(losses) // steps)]
    first_shrink = next(i for i, h in enumerate(history) if h["fc1"] < 32)
    assert epoch_loss[-1] < epoch_loss[first_shrink + 1]  # the shrunk model keeps learning
    # spikes turn tiny float differences of the smaller matmuls into different spikes now and then,
    # so the two runs drift apart slowly; they stay close
    assert abs(accuracy - plain_accuracy) < 0.05


def test_shrink_needs_an_input(tiny_ann, make_evaluator, digits):
    with pytest.raises(ConfigError, match="dummy_input"):
        DPAPPruner(tiny_ann, [{"op_types": ["Linear"]}], make_evaluator(tiny_ann), epochs=2,
                   steps_per_epoch=len(digits[0]), shrink_every=1)


def test_shrink_policy_weighs_saving_against_cost():
    policy = ShrinkPolicy()
    assert not policy.pays(0.0, 10.0, 5)  # nothing to remove
    assert policy.pays(0.01, 10.0, 5)  # the first shrink measures the cost
    policy.last_cost = 1.0
    assert policy.pays(0.05, 10.0, 2)  # saves 0.05 x 10 s x 2 = 1.0 s >= 1.0 s
    assert not policy.pays(0.04, 10.0, 2) and not policy.pays(0.5, 10.0, 0) and policy.skipped == 2
    policy.always = True
    assert policy.pays(0.001, 1.0, 0)


def test_shrink_policy_learns_what_a_shrink_saves():
    policy = ShrinkPolicy()
    assert policy.observe(2.0) == 2.0 and policy.efficiency == 1.0  # no shrink before: nothing to learn
    assert policy.pays(0.5, 2.0, 10)  # the first shrink is made (it measures the cost)
    policy.last_cost = 0.4
    # the next epoch took 2.0 s, 0.4 s of it the shrink: 1.6 s, 0.4 s saved for half of the weights removed
    assert policy.observe(2.0) == pytest.approx(1.6)
    assert policy.efficiency == pytest.approx(0.4)  # 0.4 s / (2.0 s x 0.5)
    assert not policy.pays(0.1, 1.6, 5) and policy.skipped == 1  # 0.1 x 1.6 x 5 x 0.4 = 0.32 s < 0.4 s
    assert policy.pays(0.5, 1.6, 5)  # 1.6 s >= 0.4 s
    # slower than before the shrink: no saving; the mean 0.2 is held at the floor
    assert policy.observe(2.7) == pytest.approx(2.3)
    assert policy.efficiency == pytest.approx(ShrinkPolicy.MIN_EFFICIENCY)
    assert policy.observe(2.7) == 2.7  # no shrink before this epoch
    # a removal too small to measure (5%) leaves the estimate alone
    assert policy.pays(0.05, 2.3, 100) and policy.observe(3.0) == pytest.approx(2.6)
    assert policy.efficiency == pytest.approx(ShrinkPolicy.MIN_EFFICIENCY)
    assert policy.pays(0.5, 2.6, 10) and policy.observe(1.7) == pytest.approx(1.3)  # 1.3 s saved: 1.0
    assert policy.efficiency == pytest.approx((0.4 + 0.0 + 1.0) / 3)


def test_a_shrink_that_does_not_pay_is_skipped(tiny_ann, make_evaluator, digits):
    pruner = DPAPPruner(tiny_ann, [{"op_types": ["Conv2d", "Linear"]}], make_evaluator(tiny_ann), epochs=4,
                        steps_per_epoch=len(digits[0]), hparams=FAST, shrink_every=1,
                        dummy_input=torch.rand(2, 1, 8, 8))
    pruner.shrink_policy.last_cost = 1e9  # as if shrinking took forever
    pruner.compress()
    assert sum(h["layers"]["fc1"]["neurons_kept"] < 32 for h in pruner.history) > 0  # units were pruned
    assert pruner.shrinks == 0 and pruner.shrink_policy.skipped >= 1
    assert pruner.bound_model.fc1.out_features == 32  # masked, not removed

