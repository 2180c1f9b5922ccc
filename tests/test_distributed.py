"""Data-parallel DPAP: two CPU processes (gloo) agree with each other and with one process on the union."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nni
import pytest
import torch
from nni.compression import TorchEvaluator
from torch.utils.data import DataLoader, DistributedSampler

from nni_dpap import DPAPPruner
from nni_dpap.data import digits_datasets
from nni_dpap.distributed import mean_over_ranks, sum_over_ranks, world_size
from nni_dpap.models import LeNetANN
from nni_dpap.training import classification_step, seed_everything

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3
HPARAMS = {"relative_schedule": True, "conv_eta": 0.2, "linear_eta": 0.2, "conv_start_epoch": 0.0,
           "linear_start_epoch": 0.0, "conv_eps": 0.6, "linear_eps": 2.0, "conv_beta": 2.5, "linear_beta": 2.5}


def _torchrun(*args: str) -> str:
    torchrun = Path(sys.executable).parent / "torchrun"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2",
                           str(ROOT / "examples" / "ddp_digits.py"), "--model", "ann", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _single_process(epochs: int, state: dict | None = None):
    """One process, each batch the union of what the two ranks' DistributedSamplers give."""
    seed_everything(0)
    train, _ = digits_datasets()
    samplers = [DistributedSampler(train, num_replicas=2, rank=r, shuffle=True, seed=0) for r in range(2)]
    model = LeNetANN(1, 8, 10)
    if state is not None:
        model.load_state_dict(state["weights"])
    steps = len(DataLoader(train, batch_size=32, sampler=samplers[0]))
    start = {"epoch": 0}

    def training(m, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=None):
        for epoch in range(start["epoch"], start["epoch"] + max_epochs):
            loaders = []
            for sampler in samplers:
                sampler.set_epoch(epoch)
                loaders.append(DataLoader(train, batch_size=32, sampler=sampler))
            m.train()
            for (x0, y0), (x1, y1) in zip(*loaders):
                loss = training_step((torch.cat([x0, x1]), torch.cat([y0, y1])), m)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    evaluator = TorchEvaluator(training, nni.trace(torch.optim.Adam)(model.parameters(), lr=3e-3),
                               classification_step)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=epochs,
                        steps_per_epoch=steps, hparams=HPARAMS)
    if state is not None:
        pruner.load_state_dict(state["pruner"])
        start["epoch"] = pruner.current_epoch
    _, masks = pruner.compress()
    return pruner, masks


def test_two_processes_agree_with_each_other_and_with_the_union(tmp_path):
    out = tmp_path / "ddp.pt"
    stdout = _torchrun("--epochs", str(EPOCHS), "--out", str(out))
    assert "2 processes" in stdout
    rank0, rank1 = (torch.load(f"{out}.rank{r}", weights_only=True) for r in range(2))
    single_pruner, single = _single_process(EPOCHS)
    pruned = 0
    for module, targets in rank0.items():
        for target, mask in targets.items():
            assert torch.equal(mask, rank1[module][target]), (module, target)  # identical on both ranks
            reference = single[module][target]
            agree = float((mask == reference).float().mean())
            assert agree >= 0.999, (module, target, agree)  # equal to one process on the union (float tolerance)
            pruned += int((mask == 0).sum())
    assert pruned > 0

    # a checkpoint of the data-parallel run resumes in one process (names without DDP's "module.")
    saved = torch.load(out, weights_only=True)
    assert set(saved["pruner"]["layers"]) == {"conv1", "conv2", "fc1"}
    resumed_pruner, resumed = _single_process(EPOCHS + 1, saved)
    assert resumed_pruner.current_epoch == EPOCHS + 1
    for module, targets in saved["masks"].items():
        for target, mask in targets.items():
            assert torch.all(resumed[module][target] <= mask)  # continues from the saved masks

    # and a single-process checkpoint resumes in two processes
    single_file = tmp_path / "single.pt"
    single_pruner.unwrap_model()
    torch.save({"pruner": single_pruner.state_dict(), "weights": single_pruner.bound_model.state_dict()},
               single_file)
    stdout = _torchrun("--epochs", str(EPOCHS + 1), "--resume", str(single_file), "--out", str(tmp_path / "again.pt"))
    assert f"epochs {EPOCHS}..{EPOCHS + 1}" in stdout
    again = torch.load(tmp_path / "again.pt", weights_only=True)["masks"]
    for module, targets in single.items():
        for target, mask in targets.items():
            assert torch.all(again[module][target] <= mask)


def test_collectives_are_identities_in_one_process():
    x = torch.arange(3.0)
    assert world_size() == 1
    torch.testing.assert_close(sum_over_ranks(x), x)
    torch.testing.assert_close(mean_over_ranks(x), x)
    assert sum_over_ranks(x) is not x


@pytest.mark.parametrize("shrink", [1])
def test_shrinking_a_ddp_model_is_refused(shrink):
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from nni_dpap.errors import ConfigError

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        model = DistributedDataParallel(LeNetANN(1, 8, 10))
        evaluator = TorchEvaluator(lambda *a, **k: None, nni.trace(torch.optim.Adam)(model.parameters()),
                                   classification_step)
        with pytest.raises(ConfigError, match="shrink_every is not supported for DistributedDataParallel"):
            DPAPPruner(model, [{"op_types": ["Linear"]}], evaluator, epochs=1, steps_per_epoch=1,
                       shrink_every=shrink, dummy_input=torch.rand(1, 1, 8, 8))
        pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=1, steps_per_epoch=1)
        assert set(pruner.layers) == {"module.conv1", "module.conv2", "module.fc1"}
        assert set(pruner.state_dict()["layers"]) == {"conv1", "conv2", "fc1"}
    finally:
        dist.destroy_process_group()
