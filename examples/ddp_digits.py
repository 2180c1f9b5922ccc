"""DPAP with DistributedDataParallel: each process trains on its shard of the digits.

    torchrun --standalone --nproc_per_node 2 examples/ddp_digits.py            # CPU, gloo
    torchrun --standalone --nproc_per_node 2 examples/ddp_digits.py --device cuda   # GPUs, nccl

DPAP's statistics are summed (and its BCM thresholds averaged) over the processes,
so every rank computes the same masks, equal to those of one process training on the
union of the shards. Rank 0 prints the result and, with ``--out``, saves the masks, the
pruner's state and the model's weights; ``--resume FILE`` continues from such a file
(written by a data-parallel run or by a single process).
"""

from __future__ import annotations

import argparse
import os

import nni
import torch
import torch.distributed as dist
from nni.compression import TorchEvaluator
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from nni_dpap import DPAPPruner
from nni_dpap.data import digits_datasets
from nni_dpap.distributed import ddp_prefix, strip_prefix
from nni_dpap.models import LeNetANN, SpikingConvNet
from nni_dpap.training import classification_step, evaluate_accuracy, seed_everything

HPARAMS = {"relative_schedule": True, "conv_eta": 0.2, "linear_eta": 0.2, "conv_start_epoch": 0.0,
           "linear_start_epoch": 0.0, "conv_eps": 0.6, "linear_eps": 2.0}


def build(kind: str, T: int) -> torch.nn.Module:
    return SpikingConvNet(1, 8, 10, T=T) if kind == "snn" else LeNetANN(1, 8, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["snn", "ann"], default="snn", help="digits SNN or ANN")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32, help="per process")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beta", type=float, default=None, help="initial survival value (default: by run length)")
    parser.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (nccl, one GPU per process)")
    parser.add_argument("--out", default=None, help="save masks, pruner state and weights here (rank 0), "
                                                    "and each rank's masks to OUT.rank<r>")
    parser.add_argument("--resume", default=None, help="continue from a file written with --out")
    args = parser.parse_args()

    cuda = args.device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)

    seed_everything(args.seed)  # the same initial weights on every rank
    train, test = digits_datasets()
    sampler = DistributedSampler(train, num_replicas=world, rank=rank, shuffle=True, seed=args.seed)
    loader = DataLoader(train, batch_size=args.batch_size, sampler=sampler)
    model = DistributedDataParallel(build(args.model, args.T).to(device))
    start_epoch = 0
    saved = torch.load(args.resume, map_location="cpu", weights_only=True) if args.resume else None
    if saved is not None:
        model.module.load_state_dict(saved["weights"])

    def training(m, optimizer, training_step, lr_scheduler=None, max_steps=None, max_epochs=None):
        for epoch in range(start_epoch, start_epoch + (max_epochs or args.epochs)):
            sampler.set_epoch(epoch)
            m.train()
            for x, y in loader:
                loss = training_step((x.to(device), y.to(device)), m)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    evaluator = TorchEvaluator(training, nni.trace(torch.optim.Adam)(model.parameters(), lr=args.lr),
                               classification_step)
    beta = args.beta if args.beta is not None else round(10.0 * min(1.0, max(args.epochs, 15) / 60), 3)
    pruner = DPAPPruner(model, [{"op_types": ["Conv2d", "Linear"]}], evaluator, epochs=args.epochs,
                        steps_per_epoch=len(loader), hparams={**HPARAMS, "conv_beta": beta, "linear_beta": beta})
    if saved is not None:
        pruner.load_state_dict(saved["pruner"])
        start_epoch = pruner.current_epoch
    _, masks = pruner.compress()
    pruner.unwrap_model()
    plain = model.module
    masks = {strip_prefix(m, ddp_prefix(model)): {t: v.cpu() for t, v in d.items()} for m, d in masks.items()}
    if args.out:
        torch.save(masks, f"{args.out}.rank{rank}")
    if rank == 0:
        accuracy = evaluate_accuracy(plain, DataLoader(test, batch_size=256))
        summary = pruner.summary()
        kept = sum(s["weights_kept"] for s in summary.values()) / sum(s["weights_total"] for s in summary.values())
        print(f"{world} processes: test accuracy {accuracy:.2%}, prunable weights kept {kept:.1%}, "
              f"epochs {start_epoch}..{args.epochs}")
        if args.out:
            torch.save({"masks": masks, "pruner": pruner.state_dict(), "weights": plain.state_dict(),
                        "accuracy": accuracy}, args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
