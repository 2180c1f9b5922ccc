"""Spatio-temporal pruning: (neuron, time step) pairs, their masks, energy, and the offline event digits."""

from __future__ import annotations

import nni
import pytest
import torch
from nni.compression import TorchEvaluator
from torch import nn

from nni_dpap import DPAPPruner
from nni_dpap.data import load_data, make_loaders
from nni_dpap.errors import ConfigError
from nni_dpap.data.event_digits import make_event_digits
from nni_dpap.policy import SurvivalRule, SurvivalState, get_preset
from nni_dpap.report import activity_costs
from nni_dpap.snn import LIFNeuron, TimeAverage
from nni_dpap.speedup import speedup
from nni_dpap.training import classification_step, make_training_func

T = 4
HP = {"relative_schedule": True, "conv_eta": 1.0, "linear_eta": 1.0, "time_eta": 1.0, "conv_start_epoch": 0.0,
      "linear_start_epoch": 0.0, "time_start_epoch": 0.0, "conv_eps": 0.5, "linear_eps": 0.5, "time_eps": 1.0,
      "time_bonus": 1.0, "time_beta": 0.5}


class FrameSNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.sn1 = nn.Conv2d(2, 6, 3, padding=1), LIFNeuron(T, v_threshold=0.5)
        self.fc1, self.sn2 = nn.Linear(6 * 16, 16), LIFNeuron(T, v_threshold=0.5)
        self.fc2, self.decoder = nn.Linear(16, 3), TimeAverage(T)

    def forward(self, x):
        x = self.sn1(self.conv(x)).flatten(1)
        return self.decoder(self.fc2(self.sn2(self.fc1(x))))


def _frames(n: int, seed: int):
    """[T*B, 2, 4, 4] folded frames whose last time step is always empty; 3 classes by intensity."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    frames = torch.rand(T, n, 2, 4, 4, generator=g) * (1 + labels.view(1, n, 1, 1, 1))
    frames[-1] = 0
    return [(frames[:, i:i + 8].flatten(0, 1), labels[i:i + 8]) for i in range(0, n, 8)]


def _pruned(temporal: bool = True):
    torch.manual_seed(0)
    model = FrameSNN()
    data = _frames(64, 0)
    evaluator = TorchEvaluator(make_training_func(data, progress=False),
                               nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3), classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=4, steps_per_epoch=len(data),
                        hparams=HP, temporal=temporal)
    model, masks = pruner.compress()
    pruner.unwrap_model()
    return pruner, model, masks, data


def test_survival_of_a_step_without_importance():
    state = SurvivalState((3, T), SurvivalRule(eps=1.0, bonus=1.0, eta=1e9, beta=0.5, gamma=1.0), get_preset("paper").update_form)
    importance = torch.rand(3, T) + 1.0
    importance[:, 2] = 0.0
    state.step(importance, 0)
    assert state.mask[:, 2].tolist() == [False] * 3 and bool(state.mask[:, [0, 1, 3]].any())


def test_empty_time_step_is_pruned_and_stays_silent():
    pruner, model, _, data = _pruned()
    assert pruner.time_sparsity() > 0
    for neuron in (model.sn1, model.sn2):
        assert neuron.time_mask is not None and neuron.time_mask.shape[1] == T
        assert not bool(neuron.time_mask[:, -1].any())  # the always-empty last step is pruned everywhere
    spikes = {}
    model.sn2.register_forward_hook(lambda m, a, out: spikes.setdefault("sn2", out.detach()))
    model.eval()
    model(data[0][0])
    per_step = spikes["sn2"].view(T, -1, spikes["sn2"].shape[-1])
    silenced = model.sn2.time_mask.t() == 0  # [T, C]
    assert float(per_step[:, :, :][silenced.unsqueeze(1).expand_as(per_step)].abs().sum()) == 0
    summary = pruner.summary()
    assert summary["fc1"]["steps_kept"] < summary["fc1"]["steps_total"]
    history = [h["layers"]["fc1"]["steps_kept"] for h in pruner.history if "steps_kept" in h["layers"]["fc1"]]
    assert history == sorted(history, reverse=True)  # pruned pairs never come back


def test_energy_falls_with_time_sparsity():
    _, model, _, data = _pruned()
    x = data[0][0]
    with_masks = sum(c.energy_pj for c in activity_costs(model, x, samples=8).values())
    saved = model.sn1.time_mask, model.sn2.time_mask
    model.sn1.set_time_mask(None)
    model.sn2.set_time_mask(None)
    without = sum(c.energy_pj for c in activity_costs(model, x, samples=8).values())
    model.sn1.set_time_mask(saved[0])
    model.sn2.set_time_mask(saved[1])
    assert with_masks < without


def test_temporal_masks_survive_speedup_and_checkpoints():
    pruner, model, masks, data = _pruned()
    state = pruner.state_dict()
    x = data[0][0]
    model.eval()
    reference = model(x).detach()
    fresh = FrameSNN()
    fresh.load_state_dict(model.state_dict())  # time masks are in the module's state_dict
    assert torch.equal(fresh.sn2.time_mask, model.sn2.time_mask)  # 0/1
    torch.testing.assert_close(fresh.eval()(x), reference)
    kept = int(masks["conv"]["bias"].sum())
    speedup(model, x.reshape(T, 8, 2, 4, 4)[:, :2].flatten(0, 1), masks)
    assert model.conv.out_channels == kept and model.sn1.time_mask.shape == (kept, T)
    assert torch.allclose(model(x), reference, atol=1e-5)
    # a new pruner restores the temporal survival values and the neurons' masks
    torch.manual_seed(0)
    other_model = FrameSNN()
    other = DPAPPruner(other_model, [{"op_types": ["Conv2d", "Linear"]}],
                       TorchEvaluator(make_training_func(data, progress=False),
                                      nni.trace(torch.optim.Adam)(other_model.parameters()), classification_step),
                       epochs=4, steps_per_epoch=len(data), hparams=HP, temporal=True)
    other.load_state_dict(state)
    assert torch.equal(other_model.sn2.time_mask, pruner.layer_states["fc1"].time.mask.float() *
                       pruner.layer_states["fc1"].neuron_mask[:, None].float())
    assert other.time_sparsity() == pytest.approx(pruner.time_sparsity())


def test_temporal_needs_spiking_neurons(tiny_ann, make_evaluator, digits):
    with pytest.raises(ConfigError, match="temporal=True prunes .* spiking neurons.*use temporal=False for ANNs"):
        DPAPPruner(tiny_ann, [{"op_types": ["Conv2d", "Linear"]}], make_evaluator(tiny_ann), epochs=2,
                   steps_per_epoch=len(digits[0]), temporal=True)


def test_event_digits_are_written_as_nmnist_and_read_back(tmp_path):
    root = make_event_digits(tmp_path / "ev")
    files = sorted((root / "NMNIST" / "Train").glob("*/*.bin"))
    assert len(files) == 1437 and len(list((root / "NMNIST" / "Test").glob("*/*.bin"))) == 360
    stamp = (root / "event_digits.json").stat().st_mtime_ns
    assert make_event_digits(tmp_path / "ev") == root and (root / "event_digits.json").stat().st_mtime_ns == stamp
    data = load_data("nmnist", root, T=4)  # the real N-MNIST loader reads them
    same = load_data("event_digits", tmp_path / "ev", T=4)
    frames, label = data.test[0]
    assert frames.shape == (4, 2, 34, 34) and torch.equal(frames, same.test[0][0]) and label == same.test[0][1]
    assert 1000 < float(frames.sum()) < 20000 and bool((frames.sum((0, 1)) > 0).sum() > 100)
    loader = make_loaders(same, batch_size=5)[0]
    assert next(iter(loader))[0].shape == (20, 2, 34, 34)
