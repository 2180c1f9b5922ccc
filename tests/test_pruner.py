from __future__ import annotations

import logging

import nni
import pytest
import torch
from nni.compression import TorchEvaluator

from nni_dpap import DPAPPruner
from nni_dpap.errors import ConfigError, TrainingError
from nni_dpap.models import SpikingConvNet
from nni_dpap.training import classification_step, evaluate_accuracy, make_training_func
from helpers import PRESET_RULE

# Short runs: schedule relative to the run length, aggressive eps so that a few epochs prune.
FAST = {**PRESET_RULE, "relative_schedule": True, "conv_eta": 0.3, "linear_eta": 0.3, "conv_start_epoch": 0.0,
        "linear_start_epoch": 0.0, "conv_eps": 1.2, "linear_eps": 2.0, "conv_beta": 2.0, "linear_beta": 2.0}
CONFIG = [{"op_types": ["Conv2d", "Linear"]}]


def _spy_masks(pruner: DPAPPruner) -> list[dict[str, dict[str, torch.Tensor]]]:
    recorded: list[dict[str, dict[str, torch.Tensor]]] = []
    update = pruner.update_masks

    def spy(masks):
        recorded.append({m: {t: v.clone() for t, v in targets.items()} for m, targets in masks.items()})
        update(masks)

    pruner.update_masks = spy  # type: ignore[method-assign]
    return recorded


def _check_run(pruner, recorded, model, epochs):
    assert len(recorded) == epochs and pruner.current_epoch == epochs
    for masks in recorded:
        for targets in masks.values():
            for mask in targets.values():
                assert set(mask.unique().tolist()) <= {0.0, 1.0}
    for before, after in zip(recorded, recorded[1:]):  # pruned units never revive
        for module, targets in after.items():
            for target, mask in targets.items():
                assert torch.all(mask <= before[module][target])
    final = recorded[-1]
    for module, targets in final.items():
        for target, mask in targets.items():
            param = getattr(model.get_submodule(module), target)
            assert torch.all(param[mask == 0] == 0), f"{module}.{target} has non-zero pruned entries"
    return final


def test_snn_end_to_end(tiny_snn, make_evaluator, digits):
    epochs = 6
    pruner = DPAPPruner(tiny_snn, CONFIG, make_evaluator(tiny_snn), epochs=epochs,
                        steps_per_epoch=len(digits[0]), hparams=FAST)
    assert pruner.output_layers == ("fc2",)
    assert {n: link.neuron for n, link in pruner.layers.items()} == {"conv": "sn1", "fc1": "sn2"}
    recorded = _spy_masks(pruner)
    fc2_before = tiny_snn.fc2.weight.detach().clone()
    model, masks = pruner.compress()
    pruner.unwrap_model()
    final = _check_run(pruner, recorded, model, epochs)
    assert set(final) == {"conv", "bn", "fc1"}  # BN masked with its conv's channels
    channels = final["conv"]["weight"].flatten(1).ne(0).any(1).float()  # the conv's live output channels
    assert 0 < int(channels.sum()) < 8  # some channels are pruned, so the comparison below means something
    for target in ("weight", "bias"):  # BN masked with its conv's channels, as is the conv's bias
        assert torch.equal(final["bn"][target], channels) and torch.equal(final["conv"]["bias"], channels)
    assert set(masks) == {"conv", "bn", "fc1"}
    summary = pruner.summary()
    assert summary["fc1"]["weights_kept"] < summary["fc1"]["weights_total"]
    assert summary["fc1"]["neurons_kept"] >= 1 and summary["conv"]["neurons_kept"] >= 1
    # output layer: trained but never masked
    assert float((model.fc2.weight.detach() - fc2_before).abs().max()) > 1e-3 and bool(model.fc2.weight.ne(0).all())
    assert evaluate_accuracy(model, digits[1]) > 0.5


def test_ann_end_to_end_with_exclusion(tiny_ann, make_evaluator, digits):
    epochs = 5
    config = [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["conv"]}]
    pruner = DPAPPruner(tiny_ann, config, make_evaluator(tiny_ann), epochs=epochs,
                        steps_per_epoch=len(digits[0]), preset="paper", hparams=dict(FAST, linear_eps=1.0, linear_eta=0.5))
    assert set(pruner.layers) == {"fc1"} and pruner.layers["fc1"].neuron == "relu2"
    assert not pruner.layers["fc1"].spiking
    recorded = _spy_masks(pruner)
    model, _ = pruner.compress()
    pruner.unwrap_model()
    _check_run(pruner, recorded, model, epochs)
    assert bool(model.conv.weight.ne(0).all()) and bool(model.fc2.weight.ne(0).all())
    assert pruner.summary()["fc1"]["weights_kept"] < 32 * 128
    assert evaluate_accuracy(model, digits[1]) > 0.7


def _run_recording_statistics(hparams, monkeypatch, final_epoch=None):
    """A 4-epoch TinySNN run (fresh, seeded batches) and the epochs in which the layer statistics got rows."""
    from conftest import TinySNN

    from nni_dpap.data import digits_loaders
    from nni_dpap.metrics import LayerStatistics
    from nni_dpap.policy import DPAPConfig

    train_loader, _ = digits_loaders(batch_size=64, seed=0)
    torch.manual_seed(0)
    model = TinySNN()
    evaluator = TorchEvaluator(make_training_func(train_loader, progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, CONFIG, evaluator, epochs=4, steps_per_epoch=len(train_loader), hparams=hparams)
    epochs_seen: list[int] = []
    add_pre = LayerStatistics.add_pre

    def spy(stats, chunk):
        epochs_seen.append(pruner.current_epoch)
        add_pre(stats, chunk)

    with monkeypatch.context() as patch:
        patch.setattr(LayerStatistics, "add_pre", spy)
        if final_epoch is not None:
            patch.setattr(DPAPConfig, "final_epoch", lambda self, temporal=False: final_epoch)
        model, masks = pruner.compress()
    pruner.unwrap_model()
    return model, masks, sorted(set(epochs_seen)), pruner


def _assert_same_pruned_run(model, masks, ref_model, ref_masks) -> None:
    """Something was pruned, and both runs ended with the same masks and weights."""
    assert any(not bool(m.all()) for targets in masks.values() for m in targets.values())
    for name, targets in ref_masks.items():
        for target, mask in targets.items():
            torch.testing.assert_close(masks[name][target], mask, rtol=0, atol=1e-5)
    for (name, param), ref_param in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(param, ref_param, rtol=1e-5, atol=1e-5, msg=name)


def test_statistics_stop_once_the_structure_is_final(monkeypatch):
    hparams = dict(FAST, conv_stop_epoch=0.5, linear_stop_epoch=0.5)  # 4 epochs: epochs 0 and 1 update F
    model, masks, seen, pruner = _run_recording_statistics(hparams, monkeypatch)
    assert pruner.dpap_config.final_epoch() == 2 and seen == [0, 1]
    assert not pruner._collector.collecting
    # the same run recording statistics to the end: the same structure and weights (recording changes nothing)
    ref_model, ref_masks, ref_seen, ref = _run_recording_statistics(hparams, monkeypatch, final_epoch=float("inf"))
    assert ref_seen == [0, 1, 2, 3]
    _assert_same_pruned_run(model, masks, ref_model, ref_masks)
    assert [h["epoch"] for h in pruner.history] == [h["epoch"] for h in ref.history] == [0, 1, 2, 3]
    # pruning that never stops records to the end
    _, _, seen, _ = _run_recording_statistics(dict(FAST, conv_stop_epoch=None, linear_stop_epoch=None), monkeypatch)
    assert seen == [0, 1, 2, 3]


def test_no_importance_before_the_window_opens(monkeypatch):
    """Before every start_epoch the epoch end computes no importance and no update (nothing could change), and
    that skip changes nothing: the same masks and weights as a run computing them every epoch."""
    from nni_dpap._layers import LayerState
    from nni_dpap.policy import DPAPConfig

    hparams = dict(FAST, conv_start_epoch=0.5, linear_start_epoch=0.5)  # 4 epochs: epochs 2 and 3 update F
    update = LayerState.update
    runs = []
    for always in (False, True):
        epochs: list[int] = []

        def spy(layer, importance, epoch, keep_at_least):
            epochs.append(epoch)
            update(layer, importance, epoch, keep_at_least)

        with monkeypatch.context() as patch:
            patch.setattr(LayerState, "update", spy)
            if always:
                patch.setattr(DPAPConfig, "updates_at", lambda self, epoch, temporal=False: True)
            model, masks, _, _ = _run_recording_statistics(hparams, monkeypatch)
        runs.append((model, masks, sorted(set(epochs))))
    (model, masks, seen), (ref_model, ref_masks, ref_seen) = runs
    assert seen == [2, 3] and ref_seen == [0, 1, 2, 3]
    _assert_same_pruned_run(model, masks, ref_model, ref_masks)


def _kept_weights(eps: float, make_evaluator, steps: int) -> int:
    torch.manual_seed(0)
    from conftest import TinyANN

    model = TinyANN()
    hparams = dict(FAST, conv_eps=eps, linear_eps=eps)
    pruner = DPAPPruner(model, CONFIG, make_evaluator(model), epochs=4, steps_per_epoch=steps, hparams=hparams)
    torch.manual_seed(1)
    pruner.compress()
    return sum(s["weights_kept"] for s in pruner.summary().values())


def test_larger_epsilon_prunes_at_least_as_much(make_evaluator, digits):
    kept = [_kept_weights(eps, make_evaluator, len(digits[0])) for eps in (0.8, 1.4, 2.0)]
    assert kept[0] >= kept[1] >= kept[2]
    assert kept[0] > kept[2]


def test_digits_snn_accuracy_floor(digits):
    """The paper's MNIST SNN on digits, 20 epochs, T=4, with the library's defaults and nothing else:
    measured 96.7% keeping 11.9% of the pruned layers' weights (dense: 97.8%); floor 93%, at most 25% kept."""
    torch.manual_seed(0)
    model = SpikingConvNet(1, 8, 10, T=4)
    train = make_training_func(digits[0], progress=False)
    evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, CONFIG, evaluator, epochs=20, steps_per_epoch=len(digits[0]))
    model, _ = pruner.compress()
    pruner.unwrap_model()
    kept = sum(s["weights_kept"] for s in pruner.summary().values()) / sum(
        s["weights_total"] for s in pruner.summary().values())
    assert kept < 0.25
    assert evaluate_accuracy(model, digits[1]) >= 0.93


def test_paper_preset_has_its_own_calibration_and_does_not_collapse(digits):
    """The ``paper`` rule (min-max Norm) with the ``braincog`` eps removed 97% and fell to 47% (40 epochs); with
    its own calibration, 10 epochs, seed 0: measured 90.6% keeping 27.1% of the pruned layers' weights."""
    torch.manual_seed(0)
    model = SpikingConvNet(1, 8, 10, T=4)
    evaluator = TorchEvaluator(make_training_func(digits[0], progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, CONFIG, evaluator, epochs=10, steps_per_epoch=len(digits[0]), preset="paper")
    model, _ = pruner.compress()
    pruner.unwrap_model()
    kept = sum(s["weights_kept"] for s in pruner.summary().values()) / sum(
        s["weights_total"] for s in pruner.summary().values())
    assert 0.1 < kept < 0.5
    assert evaluate_accuracy(model, digits[1]) >= 0.85


def test_movement_order_reads_every_step_s_gradient_and_prunes(tiny_ann, digits):
    """``unit_order='movement'``: before every optimizer step each layer adds ``-w * dL/dw`` (summed over a
    kernel slice) to its score, through NNI's patched optimizer step; the run prunes like any other."""
    train_loader, steps, epochs = digits[0], len(digits[0]), 3
    expected: dict[str, torch.Tensor] = {}
    holder: dict[str, DPAPPruner] = {}

    def train(model, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=None):
        for _ in range(max_epochs):
            for batch in train_loader:
                optimizer.zero_grad()
                training_step(batch, model).backward()
                for name, layer in holder["pruner"].layer_states.items():  # what the hook should add, by hand
                    step = -(layer.weight.detach() * layer.weight.grad)
                    step = step.flatten(2).sum(-1) if step.dim() > 2 else step
                    expected[name] = expected.get(name, torch.zeros_like(step)) + step
                optimizer.step()

    evaluator = TorchEvaluator(train, nni.trace(torch.optim.Adam)(tiny_ann.parameters(), lr=3e-3), classification_step)
    pruner = holder["pruner"] = DPAPPruner(tiny_ann, CONFIG, evaluator, epochs=epochs, steps_per_epoch=steps,
                                           hparams={**FAST, "unit_order": "movement"})
    recorded = _spy_masks(pruner)
    model, _ = pruner.compress()
    assert set(expected) == {"conv", "fc1"}
    for name, layer in pruner.layer_states.items():
        assert layer.movement is not None and float(layer.movement.abs().max()) > 0
        torch.testing.assert_close(layer.movement, expected[name], rtol=1e-4, atol=1e-5)
    pruner.unwrap_model()
    _check_run(pruner, recorded, model, epochs)
    summary = pruner.summary()
    assert summary["fc1"]["weights_kept"] < summary["fc1"]["weights_total"]
    assert evaluate_accuracy(model, digits[1]) > 0.5  # (3 epochs, aggressive eps)


def test_state_dict_round_trip(tiny_ann, make_evaluator, digits):
    pruner = DPAPPruner(tiny_ann, CONFIG, make_evaluator(tiny_ann), epochs=3, steps_per_epoch=len(digits[0]),
                        hparams=FAST)
    pruner.compress()
    state = pruner.state_dict()
    torch.manual_seed(0)
    from conftest import TinyANN

    other_model = TinyANN()
    other = DPAPPruner(other_model, CONFIG, make_evaluator(other_model), epochs=3,
                       steps_per_epoch=len(digits[0]), hparams=FAST)
    other.load_state_dict(state)
    assert other.current_epoch == 3
    for name, masks in pruner.get_masks().items():
        for target, mask in masks.items():
            assert torch.equal(other.get_masks()[name][target], mask)
    with pytest.raises(ConfigError, match="does not match"):
        other.load_state_dict({"layers": {"nope": {}}})


def test_step_mismatch_warning_and_writer(tiny_ann, make_evaluator, digits, caplog):
    class Recorder:
        def __init__(self):
            self.scalars, self.histograms = [], []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

        def add_histogram(self, tag, values, step):
            self.histograms.append((tag, step))

    writer = Recorder()
    pruner = DPAPPruner(tiny_ann, CONFIG, make_evaluator(tiny_ann), epochs=2,
                        steps_per_epoch=len(digits[0]) + 5, hparams=FAST, writer=writer)
    with caplog.at_level(logging.WARNING, logger="nni_dpap.pruner"):
        pruner.compress()
    assert "optimizer steps" in caplog.text and "steps_per_epoch" in caplog.text
    assert pruner.current_epoch == 1  # the loop ran 2 real epochs = fewer steps than 2 * (len + 5)
    first = pruner.history[0]["layers"]["fc1"]
    kept_units = [(v, s) for t, v, s in writer.scalars if t == "dpap/kept_units/fc1"]
    assert kept_units == [(first["neurons_kept"] / first["neurons_total"], 0)]
    kept_weights = [(v, s) for t, v, s in writer.scalars if t == "dpap/kept_weights/fc1"]
    assert kept_weights == [(first["weights_kept"] / first["weights_total"], 0)] and kept_weights[0][0] < 1
    assert ("dpap/survival_units/conv", 0) in writer.histograms


def test_taylor_style_script_works_with_dpap_swapped_in(digits):
    """The structure of NNI's TaylorPruner example, unchanged except for the pruner line."""
    from nni.compression.pruning import TaylorPruner

    train_loader = digits[0]

    def training(model, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=None):
        model.train()
        total_epochs = max_epochs if max_epochs else 1
        total_steps = max_steps if max_steps else 1_000_000
        current = 0
        for _ in range(total_epochs):
            for batch in train_loader:
                loss = training_step(batch, model)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                current += 1
                if current >= total_steps:
                    return
            if lr_scheduler is not None:
                lr_scheduler.step()

    def script(make_pruner):
        torch.manual_seed(0)
        from conftest import TinyANN

        model = TinyANN()
        optimizer = nni.trace(torch.optim.SGD)(model.parameters(), lr=0.05, momentum=0.9)
        scheduler = nni.trace(torch.optim.lr_scheduler.StepLR)(optimizer, step_size=1, gamma=0.9)
        evaluator = TorchEvaluator(training, optimizer, classification_step, scheduler,
                                   dummy_input=torch.rand(2, 1, 8, 8), evaluating_func=lambda m: evaluate_accuracy(m, digits[1]))
        pruner = make_pruner(model, evaluator)
        _, masks = pruner.compress()
        pruner.unwrap_model()
        return model, masks

    _, taylor_masks = script(lambda m, ev: TaylorPruner(m, [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}], ev,
                                                        training_steps=10))
    model, dpap_masks = script(lambda m, ev: DPAPPruner(m, [{"op_types": ["Conv2d", "Linear"]}], ev, epochs=3,
                                                        steps_per_epoch=len(train_loader), hparams=FAST))
    assert set(taylor_masks) == {"conv"} and "fc1" in dpap_masks
    assert evaluate_accuracy(model, digits[1]) > 0.5


def test_bad_input_errors(tiny_ann, make_evaluator, digits):
    """The pruner's own arguments (the config list is tested in test_config_list.py)."""
    ev = make_evaluator(tiny_ann)
    steps = len(digits[0])
    with pytest.raises(ConfigError, match="steps_per_epoch must be a positive int"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=2, steps_per_epoch=0)
    with pytest.raises(ConfigError, match="epochs must be a positive int"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=-1, steps_per_epoch=steps)
    with pytest.raises(ConfigError, match="epochs must be a positive int"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=True, steps_per_epoch=steps)
    with pytest.raises(ConfigError, match="needs an evaluator"):
        DPAPPruner(tiny_ann, CONFIG, None, epochs=2, steps_per_epoch=steps)  # type: ignore[arg-type]
    no_optimizer = TorchEvaluator(make_training_func(digits[0], progress=False), [], classification_step)
    with pytest.raises(ConfigError, match="has no optimizer"):
        DPAPPruner(tiny_ann, CONFIG, no_optimizer, epochs=2, steps_per_epoch=steps)
    with pytest.raises(ConfigError, match="unknown DPAP hyper-parameter"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=2, steps_per_epoch=steps, hparams={"eps": 1.0})
    with pytest.raises(ConfigError, match="hparams must be a dict"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=2, steps_per_epoch=steps, hparams="conv_eps=0.8")
    with pytest.raises(ConfigError, match="relative_schedule must be true or false"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=2, steps_per_epoch=steps, hparams={"relative_schedule": "false"})
    with pytest.raises(ConfigError, match=r"beta \(initial survival\) must be a number > 0, got -1"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=2, steps_per_epoch=steps, hparams={"conv_beta": -1.0})
    with pytest.raises(ConfigError, match="keep_at_least must be an int >= 0"):
        DPAPPruner(tiny_ann, CONFIG, ev, epochs=2, steps_per_epoch=steps, keep_at_least=-1)
    with pytest.raises(ConfigError, match=r"model must be an nn.Module, got OrderedDict \(a state_dict"):
        DPAPPruner(tiny_ann.state_dict(), CONFIG, ev, epochs=2, steps_per_epoch=steps)  # type: ignore[arg-type]
    pruner = DPAPPruner(tiny_ann, CONFIG, ev, epochs=2, steps_per_epoch=steps)
    with pytest.raises(ConfigError, match="already wrapped by an NNI compressor"):
        DPAPPruner(tiny_ann, CONFIG, make_evaluator(tiny_ann), epochs=2, steps_per_epoch=steps)
    with pytest.raises(ConfigError, match="instead of passing max_steps"):
        pruner.compress(max_steps=10)


def test_diverging_training_stops_with_a_clear_error(tiny_ann, digits):
    """Statistics that are NaN must not silently keep (or prune) every unit."""
    def diverging(batch, model):
        return classification_step(batch, model) * float("nan")

    evaluator = TorchEvaluator(make_training_func(digits[0], progress=False),
                               nni.trace(torch.optim.Adam)(tiny_ann.parameters(), lr=3e-3), diverging)
    late = dict(FAST, conv_start_epoch=0.5, linear_start_epoch=0.5)  # (epoch 0 updates nothing: still checked)
    pruner = DPAPPruner(tiny_ann, CONFIG, evaluator, epochs=2, steps_per_epoch=len(digits[0]), hparams=late)
    with pytest.raises(TrainingError, match=r"statistics of '(conv|fc1)' are not finite at epoch 0: training "
                                            "diverged"):
        pruner.compress()
    assert all(bool(layer.neuron_mask.all()) for layer in pruner.layer_states.values())  # no mask was changed
