"""The ``nni-dpap`` command: ``prune``, ``report`` and ``speedup``.

``nni-dpap prune`` trains a zoo model with DPAP on a data set and writes a run folder
(``--logdir``): ``config.json`` (the full configuration; ``--config`` re-runs it),
``model.pt`` (weights, masks and what is needed to rebuild the model), ``metrics.json``,
TensorBoard events and ``checkpoint.pt`` (updated after every epoch; ``--resume``
continues an interrupted run to the same result). This module only parses arguments,
calls library functions and prints; it is the only place that configures logging.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .errors import CheckpointError, ConfigError, DPAPError

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("nni_dpap.cli")

# A short-run schedule: eta and the start epoch relative to --epochs, so that 5-60 epoch runs
# go through the whole developmental schedule (the released values assume 100-300 epochs).
SHORT_RUN_HPARAMS = {
    "relative_schedule": True, "conv_eta": 0.2, "linear_eta": 0.2, "conv_start_epoch": 0.2,
    "linear_start_epoch": 0.2, "conv_eps": 0.6, "linear_eps": 2.0,
}
PRUNE_DEFAULTS: dict[str, Any] = {
    "model": "snn_mnist", "data": "digits", "data_dir": None, "download": False, "epochs": 30,
    "preset": "braincog", "hparams": None, "paper_settings": False, "T": None, "batch_size": 64, "lr": 3e-3,
    "optimizer": "adam", "weight_decay": 0.0, "scheduler": "none", "device": "cpu", "seed": 0, "logdir": None,
    "checkpoint": None, "resume": False, "stop_after": None, "speedup": False, "no_progress": False,
    "num_workers": 0,
}
# what must be equal for a checkpoint to be resumed
_IDENTITY_KEYS = ("model", "data", "epochs", "preset", "hparams", "paper_settings", "T", "batch_size", "lr",
                  "optimizer", "weight_decay", "scheduler", "seed")
ARTIFACT_FORMAT = "nni-dpap-model/1"


# ---------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nni-dpap", description="DPAP pruning for spiking and artificial networks")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="train a zoo model with DPAP, pruning while it trains",
                       description="Train a zoo model from scratch with DPAP. Values not given come from --config, "
                                   "then from the defaults shown.")
    s = argparse.SUPPRESS  # unset flags stay unset, so --config values are not overridden by defaults
    p.add_argument("--config", help="JSON file of the options below (e.g. a run's config.json)")
    p.add_argument("--model", default=s, help=f"zoo model name (default {PRUNE_DEFAULTS['model']}); see README")
    p.add_argument("--data", default=s, help="digits, mnist5k, mnist, fashion_mnist, cifar10, cifar100, nmnist, "
                                               "dvs_gesture, cifar10_dvs (default digits, embedded)")
    p.add_argument("--data-dir", default=s, help="folder with the data set files (not needed for digits, mnist5k)")
    p.add_argument("--download", action="store_true", default=s, help="download missing data (needs internet)")
    p.add_argument("--epochs", type=int, default=s, help="training epochs; DPAP's schedule spans them (default 30)")
    p.add_argument("--preset", choices=["braincog", "paper"], default=s, help="DPAP rule (default braincog)")
    p.add_argument("--hparams", type=json.loads, default=s,
                   help="JSON object of DPAP hyper-parameters, e.g. '{\"conv_eps\": 0.8}' (default: a short-run "
                        "schedule relative to --epochs, see README)")
    p.add_argument("--paper-settings", action="store_true", default=s,
                   help="use the released per-experiment settings and exclusions of this zoo model (long runs)")
    p.add_argument("--T", type=int, default=s, help="SNN time steps, and frames of event data (default: the model's)")
    p.add_argument("--batch-size", type=int, default=s, help="training batch size (default 64)")
    p.add_argument("--lr", type=float, default=s, help="learning rate (default 3e-3)")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=s, help="optimizer (default adam)")
    p.add_argument("--weight-decay", type=float, default=s, help="weight decay (default 0)")
    p.add_argument("--scheduler", choices=["none", "cosine"], default=s, help="LR schedule over the epochs")
    p.add_argument("--device", default=s, help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seed", type=int, default=s, help="seed of the initial weights and the shuffling (default 0)")
    p.add_argument("--logdir", default=s, help="run folder: TensorBoard events, config, model, metrics "
                                               "(default runs/<model>-<data>-<time>)")
    p.add_argument("--checkpoint", default=s, help="checkpoint file (default <logdir>/checkpoint.pt)")
    p.add_argument("--resume", action="store_true", default=s, help="continue the run saved in --checkpoint")
    p.add_argument("--stop-after", type=int, default=s,
                   help="stop after this many epochs of this invocation (resume later with --resume)")
    p.add_argument("--speedup", action="store_true", default=s, help="also save the physically shrunk model")
    p.add_argument("--num-workers", type=int, default=s, help="data loader workers (default 0)")
    p.add_argument("--no-progress", action="store_true", default=s, help="hide the progress bar")

    r = sub.add_parser("report", help="parameters, FLOPs, synaptic operations and energy of a saved model")
    r.add_argument("model_file", help="model.pt written by 'nni-dpap prune'")
    r.add_argument("--data-dir", default=None, help="folder of the model's data set, to measure firing rates on it")
    r.add_argument("--json", default=None, help="also write the report to this JSON file")

    h = sub.add_parser("hpo", help="search DPAP's hyper-parameters with an NNI HPO experiment",
                       description="Launch an NNI experiment whose trials run 'prune' with the hyper-parameters the "
                                   "tuner proposes; prints the trials best first and exports them.")
    h.add_argument("space", help="NNI search space JSON over DPAP's hyper-parameters (see search_spaces/)")
    h.add_argument("--trials", type=int, default=4, help="number of trials (default 4)")
    h.add_argument("--concurrency", type=int, default=1, help="trials run at the same time (default 1)")
    h.add_argument("--tuner", default="TPE", help="TPE, Random or Anneal (default TPE)")
    h.add_argument("--epochs", type=int, default=5, help="training epochs of every trial (default 5)")
    h.add_argument("--model", default="snn_mnist", help="zoo model (default snn_mnist)")
    h.add_argument("--data", default="digits", help="data set (default digits, embedded)")
    h.add_argument("--data-dir", default=None, help="folder of the data set files")
    h.add_argument("--T", type=int, default=None, help="SNN time steps (default: the model's)")
    h.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    h.add_argument("--seed", type=int, default=0, help="seed of every trial (default 0)")
    h.add_argument("--gpus", default=None, help="GPU indices for the trials, e.g. 0,1 (one GPU per trial)")
    h.add_argument("--weight", type=float, default=0.1,
                   help="objective = accuracy + WEIGHT x sparsity (default 0.1)")
    h.add_argument("--output", default="runs/hpo", help="results and trial logs (default runs/hpo)")

    u = sub.add_parser("speedup", help="physically remove the pruned units of a saved model")
    u.add_argument("model_file", help="model.pt written by 'nni-dpap prune'")
    u.add_argument("--output", required=True, help="where to save the shrunk model (torch.save of the module)")
    return parser


def resolve_prune_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults < ``--config`` file < flags given on the command line."""
    config = dict(PRUNE_DEFAULTS)
    if getattr(args, "config", None):
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read --config {args.config}: {exc}") from exc
        unknown = sorted(set(loaded) - set(PRUNE_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"--config {args.config} has unknown keys {unknown}; valid keys: {sorted(PRUNE_DEFAULTS)}")
        config.update(loaded)
    config.update({k: v for k, v in vars(args).items() if k in PRUNE_DEFAULTS})
    for key in ("epochs", "batch_size"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be a positive int, got {config[key]!r}")
    if config["stop_after"] is not None and config["stop_after"] < 1:
        raise ConfigError(f"--stop-after must be >= 1, got {config['stop_after']}")
    if config["logdir"] is None:
        config["logdir"] = str(Path("runs") / f"{config['model']}-{config['data']}-{time.strftime('%Y%m%d-%H%M%S')}")
    if config["checkpoint"] is None:
        config["checkpoint"] = str(Path(config["logdir"]) / "checkpoint.pt")
    return config


# ---------------------------------------------------------------------------------------
# prune
# ---------------------------------------------------------------------------------------
def _dpap_settings(config: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from .models import model_spec

    spec = model_spec(config["model"])
    entry: dict[str, Any] = {"op_types": ["Conv2d", "Linear"]}
    if config["paper_settings"]:
        hparams = dict(spec.hparams)
        if spec.exclude:
            entry["exclude_op_names"] = list(spec.exclude)
    else:
        hparams = dict(SHORT_RUN_HPARAMS)
        # A unit at the bottom every epoch loses about 1.58 * eta * eps in a whole run; below 60 epochs the
        # initial survival value (10) would outlast that, so it shrinks with the run length (not below 2.5,
        # so that one bad epoch of a barely trained network cannot remove a layer).
        scale = min(1.0, max(config["epochs"], 15) / 60)
        hparams.update(conv_beta=round(10.0 * scale, 3), linear_beta=round(10.0 * scale, 3))
    hparams.update(config["hparams"] or {})
    return hparams, [entry]


def _optimizer(config: dict[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    import nni

    params = model.parameters()
    if config["optimizer"] == "sgd":
        return nni.trace(torch.optim.SGD)(params, lr=config["lr"], momentum=0.9, weight_decay=config["weight_decay"])
    cls = torch.optim.AdamW if config["optimizer"] == "adamw" else torch.optim.Adam
    return nni.trace(cls)(params, lr=config["lr"], weight_decay=config["weight_decay"])


class _FiringRates:
    """Mean spike rate of every spiking neuron module during an evaluation pass."""

    def __init__(self, model: nn.Module) -> None:
        from .adapters import is_neuron

        self.sums: dict[str, list[float]] = {}
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in model.named_modules() if is_neuron(m)]

    def _hook(self, name: str):
        def record(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            entry = self.sums.setdefault(name, [0.0, 0.0])
            entry[0] += float(output.detach().float().sum())
            entry[1] += output.numel()
        return record

    def rates(self) -> dict[str, float]:
        return {n: s / max(c, 1) for n, (s, c) in self.sums.items()}

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def _structure(model: nn.Module, example: torch.Tensor, prunable: Sequence[str],
               time_steps: int | None = None) -> dict[str, Any]:
    from .report import activity_costs, layer_costs, totals

    costs = layer_costs(model, _take(example, 2, time_steps))
    samples = example.shape[0] // time_steps if time_steps else None
    activity = activity_costs(model, example, samples=samples)
    all_totals, prunable_totals = totals(costs), totals(costs, prunable)
    energy = sum(a.energy_pj for a in activity.values())
    dense_energy = sum(a.dense_energy_pj for a in activity.values())
    return {
        "params_kept": prunable_totals["params_fraction"],
        "flops_kept": all_totals["macs_fraction"],
        "sops_per_sample": sum(a.ops for a in activity.values() if a.spiking_input),
        "energy_uj_per_sample": energy * 1e-6,
        "energy_ratio": energy / dense_energy if dense_energy else 1.0,
        "layers": {n: {"units": f"{c.units_kept}/{c.units_total}", "params_kept": c.params_kept,
                       "params_total": c.params_total, "macs_kept": c.macs_kept, "macs_total": c.macs_total,
                       "input_rate": activity[n].input_rate, "spiking_input": activity[n].spiking_input}
                   for n, c in costs.items()},
    }


def run_prune(config: dict[str, Any], on_epoch: Any = None) -> dict[str, Any]:
    """Run ``nni-dpap prune`` with a resolved config; returns the final metrics.

    ``on_epoch(record)`` is called after every epoch with its loss and test accuracy
    (the HPO trials report it to NNI).
    """
    from nni.compression import TorchEvaluator
    from torch.utils.tensorboard import SummaryWriter

    from .checkpoint import load_checkpoint, save_checkpoint
    from .data import load_data, make_loaders
    from .models import get_model, model_spec
    from .pruner import DPAPPruner
    from .report import format_table
    from .training import classification_step, evaluate_accuracy, make_training_func, seed_everything

    logdir, checkpoint = Path(config["logdir"]), Path(config["checkpoint"])
    identity = {k: config[k] for k in _IDENTITY_KEYS}
    resumed: dict[str, Any] | None = None
    if config["resume"]:
        resumed = load_checkpoint(checkpoint, identity)
    elif checkpoint.exists():
        raise CheckpointError(f"{checkpoint} already exists: pass --resume to continue that run, or choose another "
                              "--logdir / --checkpoint (an existing checkpoint is never overwritten by a new run)")
    device = torch.device(config["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available on this machine; use --device cpu")

    seed_everything(config["seed"])
    spec = model_spec(config["model"])
    data = load_data(config["data"], config["data_dir"], config["download"], T=config["T"] or spec.T or 10)
    train_loader, test_loader = make_loaders(data, config["batch_size"], config["seed"], config["num_workers"])
    extra: dict[str, Any] = {}
    if data.time_steps is not None:
        if not spec.spiking:
            raise ConfigError(f"{config['data']} is event data (frames over time); use a spiking model, "
                              f"not {config['model']!r}")
        extra = {"encode": False}  # the frames are already the T time steps
    model = get_model(config["model"], data.input_shape, data.num_classes, data.time_steps or config["T"],
                      **extra).to(device)
    hparams, config_list = _dpap_settings(config)
    logdir.mkdir(parents=True, exist_ok=True)
    (logdir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    writer = SummaryWriter(str(logdir))
    example = _take(next(iter(test_loader))[0], 64, data.time_steps).to(device)

    optimizer = _optimizer(config, model)
    scheduler = None
    if config["scheduler"] == "cosine":
        import nni

        scheduler = nni.trace(torch.optim.lr_scheduler.CosineAnnealingLR)(optimizer, T_max=config["epochs"])
    history: list[dict[str, Any]] = list(resumed["history"]) if resumed else []
    losses: list[float] = []
    start_epoch = int(resumed["epoch"]) if resumed else 0
    state: dict[str, Any] = {}

    def training_step(batch: Any, m: nn.Module) -> torch.Tensor:
        loss = classification_step(batch, m)
        losses.append(float(loss.detach()))
        return loss

    def on_train_start(m: nn.Module, opt: torch.optim.Optimizer, schedulers: list[Any]) -> None:
        state["optimizer"], state["schedulers"] = opt, schedulers
        if resumed:
            opt.load_state_dict(resumed["optimizer"])
            for sched, saved in zip(schedulers, resumed["schedulers"]):
                sched.load_state_dict(saved)
            train_loader.generator.set_state(resumed["generator"])
            torch.set_rng_state(resumed["rng"])

    def on_epoch_end(m: nn.Module, local_epoch: int) -> None:
        epoch = start_epoch + local_epoch
        rates = _FiringRates(m)
        try:
            accuracy = evaluate_accuracy(m, test_loader)
        finally:
            rates.close()
        loss = sum(losses) / max(len(losses), 1)
        losses.clear()
        record = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "firing_rates": rates.rates()}
        history.append(record)
        writer.add_scalar("train/loss", loss, epoch)
        writer.add_scalar("test/accuracy", accuracy, epoch)
        for name, rate in record["firing_rates"].items():
            writer.add_scalar(f"snn/firing_rate/{name}", rate, epoch)
        writer.flush()
        save_checkpoint(checkpoint, {
            "identity": identity, "epoch": epoch + 1, "model": m.state_dict(), "pruner": pruner.state_dict(),
            "optimizer": state["optimizer"].state_dict(),
            "schedulers": [s.state_dict() for s in state["schedulers"]],
            "generator": train_loader.generator.get_state(), "rng": torch.get_rng_state(), "history": history,
        })
        _logger.info("epoch %d: loss %.4f, test accuracy %.2f%%", epoch, loss, 100 * accuracy)
        if on_epoch is not None:
            on_epoch(record)
        if config["stop_after"] is not None and local_epoch + 1 >= config["stop_after"] \
                and epoch + 1 < config["epochs"]:
            raise _StopRun(epoch + 1)

    train = make_training_func(train_loader, progress=not config["no_progress"], on_epoch_end=on_epoch_end,
                               on_train_start=on_train_start)
    evaluator = TorchEvaluator(train, optimizer, training_step, scheduler,
                               dummy_input=_take(example, 2, data.time_steps))
    pruner = DPAPPruner(model, config_list, evaluator, epochs=config["epochs"], steps_per_epoch=len(train_loader),
                        preset=config["preset"], hparams=hparams, writer=writer)
    if resumed:
        try:
            model.load_state_dict(resumed["model"])
            pruner.load_state_dict(resumed["pruner"])
        except (RuntimeError, ConfigError) as exc:
            raise CheckpointError(f"{checkpoint} does not fit this model: {exc}") from exc
        _logger.info("resuming %s at epoch %d of %d", checkpoint, start_epoch, config["epochs"])
    try:
        model, masks = pruner.compress()
    except _StopRun as stop:
        writer.close()
        _logger.info("stopped after epoch %d as asked; continue with --resume", stop.epoch)
        print(f"stopped after epoch {stop.epoch} of {config['epochs']}; continue with: "
              f"nni-dpap prune --config {logdir / 'config.json'} --resume")
        return {"stopped_at": stop.epoch}
    finally:
        if evaluator.model is not None:  # stopped inside training: NNI did not unbind
            evaluator.unbind_model()
    pruner.unwrap_model()

    accuracy = evaluate_accuracy(model, test_loader)
    structure = _structure(model, example, list(pruner.layers), data.time_steps)
    metrics = {"accuracy": accuracy, "epochs": config["epochs"], **structure, "history": history}
    for key in ("params_kept", "flops_kept", "energy_ratio"):
        writer.add_scalar(f"cost/{key}", structure[key], config["epochs"])
    rows = [[n, layer["units"], f"{layer['params_kept']:,}/{layer['params_total']:,}",
             f"{layer['input_rate']:.3f}"] for n, layer in structure["layers"].items()]
    table = format_table(rows, ["layer", "units kept", "params kept", "input rate"])
    writer.add_text("structure", table)
    writer.close()
    torch.save({"format": ARTIFACT_FORMAT, "model": config["model"], "input_shape": list(data.input_shape),
                "num_classes": data.num_classes, "T": data.time_steps or config["T"], "data": config["data"],
                "time_steps": data.time_steps, "data_dir": config["data_dir"],
                "state_dict": model.state_dict(), "masks": {m: dict(t) for m, t in masks.items()},
                "prunable": list(pruner.layers)},
               logdir / "model.pt")
    (logdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if config["speedup"]:
        from .speedup import speedup

        speedup(model, _take(example, 2, data.time_steps), masks)
        torch.save(model, logdir / "model_speedup.pth")
    print(f"\n{spec.description} on {config['data']}: test accuracy {accuracy:.2%}, prunable params kept "
          f"{structure['params_kept']:.1%}, FLOPs kept {structure['flops_kept']:.1%}, "
          f"energy {structure['energy_ratio']:.1%} of dense\n")
    print(table)
    print(f"\nrun folder: {logdir} (tensorboard --logdir {logdir})")
    return metrics


def _take(batch: torch.Tensor, n: int, time_steps: int | None) -> torch.Tensor:
    """The first ``n`` samples of a batch; folded event batches ``[T*B, ...]`` keep all T steps of each."""
    if time_steps is None:
        return batch[:n]
    return batch.unflatten(0, (time_steps, -1))[:, :n].flatten(0, 1)


class _StopRun(Exception):
    def __init__(self, epoch: int) -> None:
        super().__init__(f"stopped after epoch {epoch}")
        self.epoch = epoch


# ---------------------------------------------------------------------------------------
# report / speedup
# ---------------------------------------------------------------------------------------
def load_artifact(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by ``nni-dpap prune`` (weights and masks included)."""
    from .models import get_model

    path = Path(path)
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no model file at {path}") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable nni-dpap model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise CheckpointError(f"{path} is not a model.pt written by 'nni-dpap prune' (format {ARTIFACT_FORMAT})")
    extra = {"encode": False} if artifact.get("time_steps") else {}
    model = get_model(artifact["model"], tuple(artifact["input_shape"]), artifact["num_classes"], artifact["T"],
                      **extra)
    try:
        model.load_state_dict(artifact["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the zoo model {artifact['model']!r}: {exc}") from exc
    return model.eval(), artifact


def _example_batch(artifact: dict[str, Any], data_dir: str | None) -> torch.Tensor:
    from .data import load_data, make_loaders

    steps = artifact.get("time_steps")
    try:
        data = load_data(artifact["data"], data_dir or artifact.get("data_dir"), T=steps or 10)
        return _take(next(iter(make_loaders(data, 64)[1]))[0], 64, steps)
    except DPAPError as exc:
        _logger.warning("cannot read %s (%s); measuring activity on random inputs", artifact["data"], exc)
        return torch.rand(16 * (steps or 1), *artifact["input_shape"])


def run_report(args: argparse.Namespace) -> dict[str, Any]:
    from .report import format_table

    model, artifact = load_artifact(args.model_file)
    example = _example_batch(artifact, args.data_dir)
    structure = _structure(model, example, artifact["prunable"], artifact.get("time_steps"))
    rows = [[n, "yes" if n in artifact["prunable"] else "no", layer["units"],
             f"{layer['params_kept']:,}/{layer['params_total']:,}", f"{layer['macs_kept']:,}/{layer['macs_total']:,}",
             f"{layer['input_rate']:.3f}", "AC" if layer["spiking_input"] else "MAC"]
            for n, layer in structure["layers"].items()]
    print(f"{args.model_file}: {artifact['model']} on {artifact['data']}")
    print(f"prunable params kept {structure['params_kept']:.1%}, FLOPs kept {structure['flops_kept']:.1%}, "
          f"synaptic ops/sample {structure['sops_per_sample']:,.0f}, energy {structure['energy_uj_per_sample']:.3f} "
          f"uJ/sample ({structure['energy_ratio']:.1%} of dense)\n")
    print(format_table(rows, ["layer", "pruned", "units kept", "params kept", "MACs kept (per step)", "input rate",
                              "op"]))
    if args.json:
        Path(args.json).write_text(json.dumps(structure, indent=2))
    return structure


def run_speedup(args: argparse.Namespace) -> nn.Module:
    from .speedup import speedup

    model, artifact = load_artifact(args.model_file)
    example = _example_batch(artifact, None)
    before = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        reference = model(example)
    speedup(model, _take(example, 2, artifact.get("time_steps")), artifact["masks"])
    with torch.no_grad():
        difference = float((model(example) - reference).abs().max())
    after = sum(p.numel() for p in model.parameters())
    torch.save(model, args.output)
    print(f"parameters {before:,} -> {after:,} ({after / before:.1%}); max output difference {difference:.2e}; "
          f"saved to {args.output} (torch.load(path, weights_only=False))")
    return model


def run_hpo(args: argparse.Namespace) -> list[dict[str, Any]]:
    from .hpo import run_experiment, summary_table

    gpus: list[int] = []
    if args.gpus:
        try:
            gpus = [int(g) for g in str(args.gpus).split(",") if g.strip()]
        except ValueError:
            raise ConfigError(f"--gpus must be comma-separated GPU indices such as 0,1, got {args.gpus!r}") from None
    rows = run_experiment(args.space, trials=args.trials, concurrency=args.concurrency, tuner=args.tuner,
                          model=args.model, data=args.data, data_dir=args.data_dir, epochs=args.epochs, T=args.T,
                          batch_size=args.batch_size, seed=args.seed, gpus=gpus, weight=args.weight,
                          output=args.output)
    print()
    print(summary_table(rows))
    best = next((r for r in rows if r.get("default") is not None), None)
    if best is None:
        print("\nno trial finished: see the trial logs under", Path(args.output) / "trials")
    else:
        print(f"\nbest trial {best['trial']}: accuracy {best['accuracy']:.2%}, sparsity {best['sparsity']:.1%}, "
              f"energy {best['energy_ratio']:.1%} of dense; hyper-parameters {json.dumps(best['parameters'])}")
    print(f"results: {Path(args.output) / 'results.json'}, {Path(args.output) / 'results.csv'}; "
          f"tensorboard --logdir {Path(args.output) / 'trials'}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "prune":
            run_prune(resolve_prune_config(args))
        elif args.command == "report":
            run_report(args)
        elif args.command == "hpo":
            run_hpo(args)
        else:
            run_speedup(args)
    except DPAPError as exc:
        print(f"nni-dpap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
