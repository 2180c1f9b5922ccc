"""The ``model.pt`` a run writes, and what ``report`` and ``speedup`` do with it.

``model.pt`` holds the weights, the masks and what is needed to rebuild the zoo model
(``torch.load(..., weights_only=True)`` reads it: no code is unpickled). Files are
written to a temporary name and moved into place, and an existing file is never
replaced.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .data import load_data, make_loaders
from .data.split import DataSplit, take_samples
from .errors import CheckpointError, ConfigError, DPAPError
from .models import get_model
from .report import structure

__all__ = ["FORMAT", "save_artifact", "load_artifact", "example_batch", "report_artifact", "speedup_artifact",
           "write_new"]

_logger = logging.getLogger(__name__)
FORMAT = "nni-dpap-model/1"


def write_new(path: str | Path, write: Any, what: str = "file") -> None:
    """Write a new file atomically with ``write(tmp_path)``; an existing ``path`` is refused, never replaced."""
    path = Path(path)
    if path.exists():
        raise ConfigError(f"{path} already exists: choose another {what} path (existing files are never replaced)")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(tmp)
        if path.exists():  # appeared meanwhile
            raise ConfigError(f"{path} appeared while it was being written: choose another {what} path")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_artifact(path: str | Path, model: nn.Module, masks: Mapping[str, Mapping[str, torch.Tensor]],
                  prunable: Sequence[str], settings: Mapping[str, Any], data: DataSplit) -> None:
    """Write ``model.pt`` for a finished run (refusing to replace an existing file)."""
    payload = {"format": FORMAT, "model": settings["model"], "input_shape": list(data.input_shape),
               "num_classes": data.num_classes, "T": data.time_steps or settings["T"], "data": settings["data"],
               "time_steps": data.time_steps, "data_dir": settings["data_dir"], "state_dict": model.state_dict(),
               "masks": {m: dict(t) for m, t in masks.items()}, "prunable": list(prunable)}
    write_new(path, lambda tmp: torch.save(payload, tmp), "model")


def load_artifact(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by ``nni-dpap prune`` (weights and masks included), in eval mode."""
    path = Path(path)
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no model file at {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder; give the model.pt inside it") from None
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable nni-dpap model file ({type(exc).__name__}: {exc}); "
                              "give the model.pt that 'nni-dpap prune' wrote") from exc
    if not isinstance(artifact, dict) or artifact.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a model.pt written by 'nni-dpap prune' (format {FORMAT})")
    extra = {"encode": False} if artifact.get("time_steps") else {}
    model = get_model(artifact["model"], tuple(artifact["input_shape"]), artifact["num_classes"], artifact["T"],
                      **extra)
    try:
        model.load_state_dict(artifact["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not match the zoo model {artifact['model']!r}: {exc}") from exc
    return model.eval(), artifact


def example_batch(artifact: Mapping[str, Any], data_dir: str | None = None, samples: int = 64) -> torch.Tensor:
    """A test batch of the model's data set (random inputs, with a warning, if the data cannot be read)."""
    steps = artifact.get("time_steps")
    try:
        data = load_data(artifact["data"], data_dir or artifact.get("data_dir"), T=steps or 10)
        return take_samples(next(iter(make_loaders(data, samples)[1]))[0], samples, steps)
    except DPAPError as exc:
        _logger.warning("cannot read %s (%s); measuring on random inputs", artifact["data"], exc)
        return torch.rand(16 * (steps or 1), *artifact["input_shape"])


def report_artifact(path: str | Path, data_dir: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parameters, FLOPs, synaptic operations and energy of a saved model; returns ``(structure, artifact)``."""
    model, artifact = load_artifact(path)
    example = example_batch(artifact, data_dir)
    return structure(model, example, artifact["prunable"], artifact.get("time_steps")), artifact


def speedup_artifact(path: str | Path, output: str | Path) -> dict[str, Any]:
    """Shrink a saved model physically and save the module to ``output`` (a new file).

    Returns the parameters before and after and the largest output difference between
    the masked and the shrunk model on a test batch.
    """
    from .speedup import speedup

    path, output = Path(path), Path(output)
    if output.resolve() == path.resolve():
        raise ConfigError(f"--output {output} is the model file itself: give a new file (the artifact is kept)")
    if output.exists():
        raise ConfigError(f"--output {output} already exists: choose another path (existing files are never "
                          "replaced)")
    model, artifact = load_artifact(path)
    example = example_batch(artifact)
    before = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        reference = model(example)
    speedup(model, take_samples(example, 2, artifact.get("time_steps")), artifact["masks"])
    with torch.no_grad():
        difference = float((model(example) - reference).abs().max())
    write_new(output, lambda tmp: torch.save(model, tmp), "--output")
    return {"params_before": before, "params_after": sum(p.numel() for p in model.parameters()),
            "difference": difference, "output": str(output)}
