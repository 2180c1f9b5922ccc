"""One DPAP run as a user starts it: settings, model + data + optimizer, the training loop, the run folder.

Used by the ``nni-dpap prune`` command, the HPO trials and the examples alike:

>>> from nni_dpap.run import resolve_settings, prune
>>> metrics = prune(resolve_settings({"model": "snn_mnist", "data": "digits", "epochs": 20, "logdir": "runs/x"}))

:func:`resolve_settings` merges the defaults (:data:`DEFAULTS`), a JSON settings file and
explicit values, and checks every value. :class:`Run` owns the run: it builds the model,
the data and the optimizer, trains with DPAP and, after every epoch, evaluates, records
firing rates, writes TensorBoard, saves the checkpoint and stops when asked. The run
folder receives ``config.json``, ``checkpoint.pt``, TensorBoard events and, at the end,
``model.pt`` (:mod:`nni_dpap.artifacts`) and ``metrics.json``. Nothing that exists is
overwritten by a new run: a folder that holds another run, an existing checkpoint and a
finished run are refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ._validate import check_bool, check_choice, check_float, check_int
from .allocator import keep_freed_memory
from .artifacts import save_artifact
from .checkpoint import load_checkpoint, save_checkpoint
from .data import DATASETS, load_data, make_loaders
from .data.split import take_samples
from .errors import CheckpointError, ConfigError, TrainingError
from .models import MODELS, get_model, model_spec
from .pipeline import QUANTIZE_CHOICES, export_int8, fused_pruner, load_quantizer_state_dict, quantizer_state_dict
from .policy import DPAPConfig, get_preset
from .policy.defaults import default_hparams
from .report import FiringRates, format_table, structure
from .training import classification_step, evaluate_accuracy, make_training_func, seed_everything

__all__ = ["DEFAULTS", "IDENTITY_KEYS", "resolve_settings", "dpap_settings", "Run", "prune"]

_logger = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "model": "snn_mnist", "data": "digits", "data_dir": None, "download": False, "epochs": 30,
    "preset": "braincog", "hparams": None, "paper_settings": False, "T": None, "batch_size": 64, "lr": 3e-3,
    "optimizer": "adam", "weight_decay": 0.0, "scheduler": "none", "device": "cpu", "seed": 0, "logdir": None,
    "checkpoint": None, "resume": False, "stop_after": None, "speedup": False, "no_progress": False,
    "num_workers": 0, "keep_freed_memory": True,  # glibc keeps freed CPU memory (nni_dpap.allocator)
    "quantize": None,  # "int8": DPAP fused with NNI's QATQuantizer, int8 model written (nni_dpap.pipeline)
}
# what must be equal for a checkpoint to be resumed
IDENTITY_KEYS = ("model", "data", "epochs", "preset", "hparams", "paper_settings", "T", "batch_size", "lr",
                 "optimizer", "weight_decay", "scheduler", "seed", "quantize")
_RUN_FILES = ("config.json", "model.pt", "metrics.json")


def _check_device(value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    try:
        device = torch.device(value)
    except RuntimeError:
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {value!r} was asked for but CUDA is not available on this machine; use cpu")
    return value


def _optional(check: Callable[..., Any]) -> Callable[..., Any]:
    return lambda name, value: None if value is None else check(name, value)


def _check_path(name: str, value: Any) -> str:
    if not isinstance(value, (str, Path)) or not str(value):
        raise ConfigError(f"{name} must be a path, got {value!r}")
    return str(value)


def _check_hparams(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"hparams must be a JSON object of DPAP hyper-parameters such as {{\"conv_eps\": 0.8}}, "
                          f"got {value!r}")
    DPAPConfig().with_params(dict(value))  # names, types and ranges, each error naming the fix
    return dict(value)


def _check_name(kind: str, known: Any) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in known:
            raise ConfigError(f"unknown {kind} {value!r}; choose one of {sorted(known)}")
        return value
    return check


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "model": _check_name("model", MODELS), "data": _check_name("data set", DATASETS),
    "data_dir": _optional(_check_path), "download": check_bool, "epochs": check_int,
    "preset": lambda n, v: check_choice(n, v, ["braincog", "paper"]), "hparams": _optional(_check_hparams),
    "paper_settings": check_bool, "T": _optional(check_int), "batch_size": check_int,
    "lr": lambda n, v: check_float(n, v, minimum=0.0, strict_minimum=True),
    "optimizer": lambda n, v: check_choice(n, v, ["adam", "adamw", "sgd"]),
    "weight_decay": lambda n, v: check_float(n, v, minimum=0.0),
    "scheduler": lambda n, v: check_choice(n, v, ["none", "cosine"]), "device": lambda n, v: _check_device(v),
    "seed": lambda n, v: check_int(n, v, minimum=0), "logdir": _optional(_check_path),
    "checkpoint": _optional(_check_path), "resume": check_bool, "stop_after": _optional(check_int),
    "speedup": check_bool, "no_progress": check_bool, "num_workers": lambda n, v: check_int(n, v, minimum=0),
    "keep_freed_memory": check_bool,
    "quantize": _optional(lambda n, v: check_choice(n, v, list(QUANTIZE_CHOICES))),
}


def resolve_settings(given: Mapping[str, Any] | None = None, config_file: str | Path | None = None
                     ) -> dict[str, Any]:
    """:data:`DEFAULTS` < ``config_file`` (JSON, e.g. a run's ``config.json``) < ``given``; every value checked.

    Raises
    ------
    ConfigError
        An unreadable file, unknown keys or a bad value (named, with what is allowed).
    """
    settings = dict(DEFAULTS)
    if config_file is not None:
        try:
            loaded = json.loads(Path(config_file).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the settings file {config_file}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"the settings file {config_file} must hold a JSON object, got {type(loaded).__name__}")
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"{config_file} has unknown keys {unknown}; valid keys: {sorted(DEFAULTS)}")
        settings.update(loaded)
    unknown = sorted(set(given or {}) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown settings {unknown}; valid keys: {sorted(DEFAULTS)}")
    settings.update(given or {})
    for key, check in _CHECKS.items():
        settings[key] = check(key, settings[key])
    if settings["logdir"] is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        settings["logdir"] = str(Path("runs") / f"{settings['model']}-{settings['data']}-{stamp}")
    if settings["checkpoint"] is None:
        settings["checkpoint"] = str(Path(settings["logdir"]) / "checkpoint.pt")
    dpap_settings(settings)  # the DPAP configuration these settings give must be valid too
    return settings


def dpap_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The flat DPAP hyper-parameters and the NNI config list a run with ``settings`` uses.

    The library's defaults for the run's length and the zoo model's kind
    (:func:`~nni_dpap.policy.defaults.default_hparams`), or with
    ``paper_settings`` the released per-experiment values and exclusions of the zoo model; ``hparams``
    override either.
    """
    spec = model_spec(settings["model"])
    entry: dict[str, Any] = {"op_types": ["Conv2d", "Linear"]}
    if settings["paper_settings"]:
        hparams = dict(spec.hparams)
        if spec.exclude:
            entry["exclude_op_names"] = list(spec.exclude)
    else:
        hparams = default_hparams(settings["epochs"], settings["preset"], spiking=spec.spiking)
    hparams.update(settings["hparams"] or {})
    get_preset(settings["preset"], **hparams).resolve(settings["epochs"])
    return hparams, [entry]


def _optimizer(settings: Mapping[str, Any], model: nn.Module) -> torch.optim.Optimizer:
    import nni

    params = model.parameters()
    if settings["optimizer"] == "sgd":
        return nni.trace(torch.optim.SGD)(params, lr=settings["lr"], momentum=0.9,
                                          weight_decay=settings["weight_decay"])
    cls = torch.optim.AdamW if settings["optimizer"] == "adamw" else torch.optim.Adam
    return nni.trace(cls)(params, lr=settings["lr"], weight_decay=settings["weight_decay"])


class _StopRun(Exception):
    def __init__(self, epoch: int) -> None:
        super().__init__(f"stopped after epoch {epoch}")
        self.epoch = epoch


def _check_run_folder(logdir: Path, checkpoint: Path, resume: bool) -> None:
    """Refuse to write into a folder that is a file or holds another run (nothing is overwritten)."""
    if logdir.exists() and not logdir.is_dir():
        raise ConfigError(f"logdir {logdir} is a file, not a folder: choose another --logdir")
    if checkpoint.exists() and checkpoint.is_dir():
        raise ConfigError(f"checkpoint {checkpoint} is a folder: give a file path")
    if not resume:
        if checkpoint.exists():
            raise CheckpointError(f"{checkpoint} already exists: pass --resume to continue that run, or choose "
                                  "another --logdir / --checkpoint (an existing checkpoint is never overwritten by a "
                                  "new run)")
        taken = [name for name in _RUN_FILES if (logdir / name).exists()]
        if taken:
            raise ConfigError(f"{logdir} already holds a run ({', '.join(taken)}): choose another --logdir, or "
                              f"--resume that run (nothing of it is overwritten)")


class Run:
    """A DPAP training run with ``settings`` (from :func:`resolve_settings`).

    ``on_epoch(record)`` is called after every epoch with its loss, test accuracy and
    firing rates (the HPO trials report it to NNI).
    """

    def __init__(self, settings: Mapping[str, Any], on_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.settings = dict(settings)
        self.on_epoch = on_epoch
        self.logdir, self.checkpoint = Path(self.settings["logdir"]), Path(self.settings["checkpoint"])
        self.identity = {k: self.settings[k] for k in IDENTITY_KEYS}
        self.history: list[dict[str, Any]] = []
        self.losses: list[torch.Tensor] = []

    def execute(self) -> dict[str, Any]:
        """Train with DPAP; return the final metrics (or ``{'stopped_at': epoch}`` when stopped early)."""
        from nni.compression import TorchEvaluator
        from torch.utils.tensorboard import SummaryWriter

        s = self.settings
        _check_run_folder(self.logdir, self.checkpoint, s["resume"])
        resumed = load_checkpoint(self.checkpoint, self.identity) if s["resume"] else None
        if resumed is not None and int(resumed["epoch"]) >= s["epochs"]:
            raise CheckpointError(f"{self.checkpoint} is a finished run ({resumed['epoch']} of {s['epochs']} epochs): "
                                  "nothing to resume")
        self.device = torch.device(s["device"])
        if s["keep_freed_memory"]:
            keep_freed_memory()
        seed_everything(s["seed"])
        spec = model_spec(s["model"])
        data = load_data(s["data"], s["data_dir"], s["download"], T=s["T"] or spec.T or 10)
        self.data = data
        self.train_loader, self.test_loader = make_loaders(data, s["batch_size"], s["seed"], s["num_workers"])
        if data.time_steps is not None and not spec.spiking:
            raise ConfigError(f"{s['data']} is event data (frames over time); use a spiking model, not {s['model']!r}")
        extra = {"encode": False} if data.time_steps is not None else {}  # the frames are already the T steps
        model = get_model(s["model"], data.input_shape, data.num_classes, data.time_steps or s["T"], **extra)
        model = model.to(self.device)
        hparams, config_list = dpap_settings(s)
        self.logdir.mkdir(parents=True, exist_ok=True)
        (self.logdir / "config.json").write_text(json.dumps(s, indent=2, sort_keys=True))
        self.writer = SummaryWriter(str(self.logdir))
        self.example = take_samples(next(iter(self.test_loader))[0], 64, data.time_steps).to(self.device)
        optimizer = _optimizer(s, model)
        scheduler = None
        if s["scheduler"] == "cosine":
            import nni

            scheduler = nni.trace(torch.optim.lr_scheduler.CosineAnnealingLR)(optimizer, T_max=s["epochs"])
        self.resumed = resumed
        self.history = list(resumed["history"]) if resumed else []
        self.start_epoch = int(resumed["epoch"]) if resumed else 0
        train = make_training_func(self.train_loader, progress=not s["no_progress"], on_epoch_end=self._end_of_epoch,
                                   on_train_start=self._start_of_training)
        evaluator = TorchEvaluator(train, optimizer, self._training_step, scheduler,
                                   dummy_input=take_samples(self.example, 2, data.time_steps))
        self.pruner, self.quantizer = fused_pruner(model, config_list, evaluator, quantize=s["quantize"],
                                                   epochs=s["epochs"], steps_per_epoch=len(self.train_loader),
                                                   preset=get_preset(s["preset"]), hparams=hparams,
                                                   writer=self.writer)  # hparams: the whole merge, as given
        if resumed:
            try:
                if self.quantizer is not None:  # NNI's scales must exist before the model's state is loaded
                    load_quantizer_state_dict(self.quantizer, resumed["quantizer"])
                model.load_state_dict(resumed["model"])
                self.pruner.load_state_dict(resumed["pruner"])
            except (RuntimeError, ConfigError) as exc:
                raise CheckpointError(f"{self.checkpoint} does not fit this model: {exc}") from exc
            _logger.info("resuming %s at epoch %d of %d", self.checkpoint, self.start_epoch, s["epochs"])
        try:
            model, masks = self.pruner.compress()
        except _StopRun as stop:
            self.writer.close()
            _logger.info("stopped after epoch %d as asked; continue with --resume", stop.epoch)
            return {"stopped_at": stop.epoch}
        finally:
            if evaluator.model is not None:  # stopped inside training: NNI did not unbind
                evaluator.unbind_model()
        self.pruner.unwrap_model()
        return self._finish(model, masks)

    # -- callbacks of the training loop -------------------------------------------------
    def _training_step(self, batch: Any, model: nn.Module) -> torch.Tensor:
        loss = classification_step(batch, model)
        self.losses.append(loss.detach())  # summed once per epoch: no wait for the device at every step
        return loss

    def _start_of_training(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedulers: list[Any]) -> None:
        self.optimizer, self.schedulers = optimizer, schedulers
        if self.resumed:
            optimizer.load_state_dict(self.resumed["optimizer"])
            for scheduler, saved in zip(schedulers, self.resumed["schedulers"]):
                scheduler.load_state_dict(saved)
            self.train_loader.generator.set_state(self.resumed["generator"])
            torch.set_rng_state(self.resumed["rng"])

    def _end_of_epoch(self, model: nn.Module, local_epoch: int) -> None:
        epoch = self.start_epoch + local_epoch
        loss = float(torch.stack(self.losses).mean()) if self.losses else float("nan")
        self.losses.clear()
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged at epoch {epoch}: the mean loss is {loss}. Lower the learning rate (--lr "
                f"{self.settings['lr']}) or check the data; the checkpoint {self.checkpoint} keeps the last good "
                f"epoch ({epoch}) and nothing else was written")
        with FiringRates(model) as rates:
            accuracy = evaluate_accuracy(model, self.test_loader)
        firing = rates.rates()
        record = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "firing_rates": firing}
        self.history.append(record)
        self.writer.add_scalar("train/loss", loss, epoch)
        self.writer.add_scalar("test/accuracy", accuracy, epoch)
        for name, rate in firing.items():
            self.writer.add_scalar(f"snn/firing_rate/{name}", rate, epoch)
        self.writer.flush()
        save_checkpoint(self.checkpoint, {
            "identity": self.identity, "epoch": epoch + 1, "model": model.state_dict(),
            "pruner": self.pruner.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedulers": [s.state_dict() for s in self.schedulers],
            "generator": self.train_loader.generator.get_state(), "rng": torch.get_rng_state(),
            "history": self.history,
            **({"quantizer": quantizer_state_dict(self.quantizer)} if self.quantizer is not None else {}),
        })
        _logger.info("epoch %d: loss %.4f, test accuracy %.2f%%", epoch, loss, 100 * accuracy)
        if self.on_epoch is not None:
            self.on_epoch(record)
        stop_after = self.settings["stop_after"]
        if stop_after is not None and local_epoch + 1 >= stop_after and epoch + 1 < self.settings["epochs"]:
            raise _StopRun(epoch + 1)

    def _finish(self, model: nn.Module, masks: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
        s, data = self.settings, self.data
        accuracy = evaluate_accuracy(model, self.test_loader)
        cost = structure(model, self.example, list(self.pruner.layers), data.time_steps)
        metrics = {"accuracy": accuracy, "epochs": s["epochs"], **cost, "history": self.history}
        for key in ("params_kept", "flops_kept", "energy_ratio"):
            self.writer.add_scalar(f"cost/{key}", cost[key], s["epochs"])
        self.table = format_table([[n, layer["units"], f"{layer['params_kept']:,}/{layer['params_total']:,}",
                                    f"{layer['input_rate']:.3f}"] for n, layer in cost["layers"].items()],
                                  ["layer", "units kept", "params kept", "input rate"])
        self.writer.add_text("structure", self.table)
        self.writer.close()
        save_artifact(self.logdir / "model.pt", model, masks, list(self.pruner.layers), s, data)
        if self.quantizer is not None:
            metrics["int8"] = export_int8(model, masks, self.quantizer, take_samples(self.example, 2, data.time_steps),
                                          self.test_loader, self.logdir / "model_int8.pth")
        (self.logdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if s["speedup"]:
            from .speedup import speedup

            speedup(model, take_samples(self.example, 2, data.time_steps), masks)
            torch.save(model, self.logdir / "model_speedup.pth")
        self.model = model
        return metrics


def prune(settings: Mapping[str, Any], on_epoch: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run DPAP with resolved ``settings`` (:func:`resolve_settings`); return the final metrics."""
    return Run(settings, on_epoch).execute()
