"""Event digits: scikit-learn's digits seen by a simulated event camera, saved as N-MNIST files.

N-MNIST was recorded by moving an event camera in three saccades (a triangle, about
100 ms each) in front of MNIST digits. Here each 8x8 digit is upsampled to 28x28,
placed on a 34x34 field and moved along the same kind of triangular path; at every
simulated instant each pixel compares its log intensity with the level at its last
event and emits an ON (brighter) or OFF (darker) event per contrast threshold crossed,
as a DVS pixel does. The streams are written in N-MNIST's ``.bin`` format and layout
(``NMNIST/{Train,Test}/<digit>/<id>.bin``), so :func:`nni_dpap.data.load_data` reads
them with the same loader as real N-MNIST (``load_data("nmnist", folder)``) and they
work offline. The split is the digits split of :func:`nni_dpap.data.digits_datasets`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .events import EVENT_DTYPE, write_nmnist_bin
from .static import digits_datasets

__all__ = ["simulate_saccades", "make_event_digits", "default_cache_dir"]

_logger = logging.getLogger(__name__)
_VERSION = 1


def default_cache_dir() -> Path:
    """``$NNI_DPAP_CACHE`` or ``~/.cache/nni-dpap``."""
    return Path(os.environ.get("NNI_DPAP_CACHE", Path.home() / ".cache" / "nni-dpap"))


def _path(steps: int, amplitude: float) -> np.ndarray:
    """Offsets (dx, dy) along three saccades: right-down, left, back up to the start."""
    corners = np.array([[0.0, 0.0], [amplitude, amplitude], [-amplitude, amplitude], [0.0, 0.0]])
    points = []
    for a, b in zip(corners[:-1], corners[1:]):
        s = np.linspace(0.0, 1.0, steps, endpoint=False)[:, None]
        points.append(a + s * (b - a))
    return np.concatenate(points)


@torch.no_grad()
def simulate_saccades(images: torch.Tensor, size: int = 34, digit_size: int = 28, steps_per_saccade: int = 40,
                      saccade_us: int = 100_000, amplitude: float = 2.5, threshold: float = 0.25,
                      seed: int = 0) -> list[np.ndarray]:
    """Event streams of ``images`` (``[N, H, W]`` in ``[0, 1]``) seen by a moving DVS.

    Parameters
    ----------
    images
        Static grey images.
    size, digit_size
        Sensor side and the side the image is scaled to (N-MNIST: 34 and 28).
    steps_per_saccade, saccade_us
        Simulated instants per saccade and saccade duration (microseconds).
    amplitude
        Saccade amplitude in pixels.
    threshold
        Log-intensity contrast per event.
    seed
        Seed of the timestamp jitter inside each simulation step.

    Returns
    -------
    list of numpy structured arrays (``x``, ``y``, ``p``, ``t``), sorted by time.
    """
    rng = np.random.default_rng(seed)
    n = images.shape[0]
    scaled = F.interpolate(images[:, None].float(), size=(digit_size, digit_size), mode="bilinear",
                           align_corners=False)
    pad = (size - digit_size) // 2
    canvas = F.pad(scaled, (pad, size - digit_size - pad, pad, size - digit_size - pad))
    path = _path(steps_per_saccade, amplitude)
    dt = saccade_us / steps_per_saccade
    base = torch.stack(torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="xy"), -1)
    log = lambda frame: torch.log(frame + 0.1)  # noqa: E731
    reference = log(canvas[:, 0])
    chunks: list[list[np.ndarray]] = [[] for _ in range(n)]
    for index, (dx, dy) in enumerate(path[1:], start=1):
        grid = base - torch.tensor([dx, dy], dtype=torch.float32) * (2.0 / (size - 1))  # content moves by (dx, dy)
        frame = F.grid_sample(canvas, grid.expand(n, size, size, 2), mode="bilinear", padding_mode="zeros",
                              align_corners=True)[:, 0]
        level = log(frame)
        crossings = torch.trunc((level - reference) / threshold)  # signed number of thresholds crossed
        reference = reference + crossings * threshold
        sample, ys, xs = torch.nonzero(crossings, as_tuple=True)
        if sample.numel() == 0:
            continue
        counts = crossings[sample, ys, xs].abs().long()
        polarity = (crossings[sample, ys, xs] > 0).to(torch.int8)
        repeat = lambda v: torch.repeat_interleave(v, counts).numpy()  # noqa: E731
        s, y, x, p = repeat(sample), repeat(ys), repeat(xs), repeat(polarity)
        t = ((index - 1) * dt + rng.uniform(0, dt, size=len(s))).astype(np.int64)
        events = np.empty(len(s), dtype=EVENT_DTYPE)
        events["x"], events["y"], events["p"], events["t"] = x, y, p, t
        order = np.argsort(s, kind="stable")
        bounds = np.searchsorted(s[order], np.arange(n + 1))
        for i in range(n):
            if bounds[i + 1] > bounds[i]:
                chunks[i].append(events[order[bounds[i]:bounds[i + 1]]])
    streams = []
    for parts in chunks:
        stream = np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)
        streams.append(stream[np.argsort(stream["t"], kind="stable")])
    return streams


def make_event_digits(folder: str | Path | None = None, split_seed: int = 0, seed: int = 0) -> Path:
    """Write (once) the event digits under ``folder`` (default :func:`default_cache_dir`) and return the root.

    The root holds ``NMNIST/Train`` and ``NMNIST/Test``; a ``event_digits.json`` stamp
    records the settings, so a later call with the same settings reuses the files.
    """
    root = Path(folder) if folder is not None else default_cache_dir() / "event_digits"
    stamp = root / "event_digits.json"
    settings = {"version": _VERSION, "split_seed": split_seed, "seed": seed}
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == settings:
                return root
        except (OSError, json.JSONDecodeError):
            pass
    _logger.info("simulating event digits into %s (once)", root)
    train, test = digits_datasets(seed=split_seed)
    for split, dataset in (("Train", train), ("Test", test)):
        images, labels = dataset.tensors
        streams = simulate_saccades(images[:, 0], seed=seed + (0 if split == "Train" else 1))
        counters: dict[int, int] = {}
        for events, label in zip(streams, labels.tolist()):
            number = counters.get(label, 0)
            counters[label] = number + 1
            write_nmnist_bin(root / "NMNIST" / split / str(label) / f"{number:05d}.bin", events)
    stamp.write_text(json.dumps(settings))
    return root
