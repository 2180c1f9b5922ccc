"""Checkpoints that survive interruptions and refuse to be mixed up.

A checkpoint holds everything needed to continue a DPAP run exactly where it
stopped: the (wrapped) model, the optimizer and LR scheduler, DPAP's whole state
(traces, BCM sums, sliding thresholds, survival values, masks, epoch), the random
number generators and the run's identity (model, data, hyper-parameters, seed). It
is written to a temporary file and moved into place only once complete, so an
existing checkpoint is never replaced by a half-written one, and it is read with
``torch.load(weights_only=True)`` (no code is unpickled).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import CheckpointError

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint"]

FORMAT = "nni-dpap-checkpoint/1"


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` atomically to ``path`` (temporary file, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        torch.save({"format": FORMAT, **payload}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint, checking its format and, if given, that it belongs to this run.

    Parameters
    ----------
    path
        The checkpoint file.
    identity
        What must match (model, data, hyper-parameters, seed...); every differing key is
        named in the error.

    Raises
    ------
    CheckpointError
        Missing, unreadable, of another format or of another run.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: nothing to resume (drop --resume to start a new run)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__}: {exc}); it may be truncated or corrupt"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} is not an nni-dpap checkpoint (format {found!r}, expected {FORMAT!r})")
    missing = [k for k in ("identity", "epoch", "model", "pruner") if k not in payload]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {missing}")
    if identity is not None:
        saved = payload["identity"]
        differ = sorted(k for k in set(identity) | set(saved) if saved.get(k) != identity.get(k))
        if differ:
            details = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs this run {identity.get(k)!r}" for k in differ)
            raise CheckpointError(f"{path} belongs to another run ({details}); resume with the same settings")
    return payload
