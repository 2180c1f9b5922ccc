"""Searching DPAP's hyper-parameters with NNI's HPO (``nni.experiment.Experiment('local')``).

DPAP has no target sparsity: how much it prunes follows from ``eps``, ``C``, ``eta``,
the start epoch... :func:`run_experiment` launches an NNI experiment whose trials each
run ``nni-dpap prune`` with the parameters NNI proposes (``nni.get_next_parameter()``),
report the test accuracy every epoch and, at the end, a result holding accuracy,
sparsity, energy ratio and the scalar objective

    ``objective = accuracy + weight * (1 - prunable parameters kept)``

that the tuner maximises (``weight`` 0.1 by default: ten points of sparsity are worth
one point of accuracy). This is the only module that uses NNI's trial API.

The experiment is always stopped (also on Ctrl-C or an error), so no NNI manager or
trial process is left behind; its web UI listens on 127.0.0.1 only, on a free port.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ._validate import check_float, check_int
from .errors import ConfigError
from .policy import DPAPConfig

__all__ = ["load_search_space", "objective", "run_experiment", "trial_main", "TUNERS"]

_logger = logging.getLogger(__name__)

TUNERS = {"tpe": "TPE", "random": "Random", "anneal": "Anneal"}
_TYPES = {"choice", "randint", "uniform", "quniform", "loguniform", "qloguniform", "normal", "qnormal",
          "lognormal", "qlognormal"}
_DONE = {"DONE", "STOPPED", "ERROR"}  # NO_MORE_TRIAL: the last trials are still running


# ---------------------------------------------------------------------------------------
# search space
# ---------------------------------------------------------------------------------------
def _numbers(name: str, value: Any, count: int | None = None) -> list[float]:
    if not isinstance(value, list) or not value or (count is not None and len(value) < count) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ConfigError(f"search space: {name!r} needs a list of {count or 'some'} finite numbers, got {value!r}")
    return [float(v) for v in value]


def load_search_space(path: str | Path, spiking: bool = True, settings: Mapping[str, Any] | None = None
                      ) -> dict[str, Any]:
    """Read and check an NNI search space over DPAP's flat hyper-parameter names.

    Every name must be one of :meth:`DPAPConfig.flat_keys`, every entry an NNI
    distribution with a valid range, and every value one DPAP accepts: the configuration
    a trial would run (:func:`nni_dpap.run.dpap_settings` of ``settings`` with the
    proposed values) is built at the range's bounds.

    Raises
    ------
    ConfigError
        Unreadable JSON, unknown names, unknown distributions, empty or inverted
        ranges, values DPAP rejects.
    """
    path = Path(path)
    try:
        space = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the search space {path}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"the search space {path} is not valid JSON: {exc}") from exc
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"the search space {path} must be a non-empty JSON object of hyper-parameters")
    valid = set(DPAPConfig.flat_keys())
    unknown = sorted(set(space) - valid)
    if unknown:
        raise ConfigError(f"search space {path}: unknown DPAP hyper-parameters {unknown}; valid names: {sorted(valid)}")
    if not spiking and "trace_tau" in space:
        _logger.warning("trace_tau has no effect on ANNs (their traces have no time)")
    corners: list[dict[str, Any]] = [{}, {}]
    for name, entry in space.items():
        if not isinstance(entry, dict) or entry.get("_type") not in _TYPES or "_value" not in entry:
            raise ConfigError(f"search space: {name!r} must be {{'_type': one of {sorted(_TYPES)}, '_value': [...]}}, "
                              f"got {entry!r}")
        kind, value = entry["_type"], entry["_value"]
        if kind == "choice":
            if not isinstance(value, list) or not value:
                raise ConfigError(f"search space: {name!r} choice needs a non-empty list, got {value!r}")
            corners[0][name], corners[1][name] = value[0], value[-1]
            continue
        bounds = _numbers(name, value, 2)
        if kind in ("uniform", "quniform", "loguniform", "qloguniform", "randint") and not bounds[0] < bounds[1]:
            raise ConfigError(f"search space: {name!r} range {value!r} is empty (low must be below high)")
        if kind in ("loguniform", "qloguniform") and bounds[0] <= 0:
            raise ConfigError(f"search space: {name!r} {kind} needs positive bounds, got {value!r}")
        if kind in ("normal", "qnormal", "lognormal", "qlognormal"):
            continue  # unbounded: checked when a trial builds its configuration
        corners[0][name], corners[1][name] = bounds[0], bounds[1] - (1 if kind == "randint" else 0)
    from .run import DEFAULTS, dpap_settings

    base = {**DEFAULTS, **(settings or {})}
    for corner in corners:
        try:
            dpap_settings({**base, "hparams": {**(base["hparams"] or {}), **corner}})
        except ConfigError as exc:
            raise ConfigError(f"search space {path}: DPAP rejects the values {corner}: {exc}") from exc
    return space


def objective(metrics: Mapping[str, Any], weight: float = 0.1) -> float:
    """The scalar the tuner maximises: ``accuracy + weight * (1 - prunable parameters kept)``."""
    return float(metrics["accuracy"]) + weight * (1.0 - float(metrics["params_kept"]))


# ---------------------------------------------------------------------------------------
# trial side
# ---------------------------------------------------------------------------------------
def trial_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of one trial: ``python -m nni_dpap.hpo trial '<json>'``."""
    import nni

    from .run import prune, resolve_settings

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "trial":
        print("usage: python -m nni_dpap.hpo trial '<json settings>'", file=sys.stderr)
        return 2
    settings = json.loads(args[1])
    params = nni.get_next_parameter() or {}  # {} when run outside an experiment
    trial_id = nni.get_trial_id() if hasattr(nni, "get_trial_id") else os.environ.get("NNI_TRIAL_JOB_ID", "local")
    logdir = Path(settings.pop("root")) / "trials" / str(trial_id)
    weight = float(settings.pop("weight"))
    config = resolve_settings({**settings, "hparams": params, "logdir": str(logdir),
                               "checkpoint": str(logdir / "checkpoint.pt"), "no_progress": True})
    metrics = prune(config, on_epoch=lambda record: nni.report_intermediate_result(record["accuracy"]))
    result = {"default": objective(metrics, weight), "accuracy": metrics["accuracy"],
              "sparsity": 1.0 - metrics["params_kept"], "flops_kept": metrics["flops_kept"],
              "energy_ratio": metrics["energy_ratio"]}
    (logdir / "result.json").write_text(json.dumps({"trial": trial_id, "parameters": params, **result}, indent=2))
    nni.report_final_result(result)
    return 0


# ---------------------------------------------------------------------------------------
# experiment side
# ---------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _loopback_node_options() -> str:
    preload = Path(__file__).with_name("_loopback.js")
    previous = os.environ.get("NODE_OPTIONS", "")
    return f"{previous} --require {shlex.quote(str(preload))}".strip()


def run_experiment(
    space: str | Path,
    *,
    trials: int = 4,
    concurrency: int = 1,
    tuner: str = "TPE",
    model: str = "snn_mnist",
    data: str = "digits",
    data_dir: str | None = None,
    epochs: int = 5,
    T: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    gpus: Sequence[int] = (),
    weight: float = 0.1,
    output: str | Path = "runs/hpo",
    port: int | None = None,
    poll_seconds: float = 1.0,
) -> list[dict[str, Any]]:
    """Run an NNI HPO experiment over DPAP's hyper-parameters; return one row per trial, best first.

    Trial logs (TensorBoard events, config, model) go to ``output/trials/<trial id>``, so
    ``tensorboard --logdir output/trials`` compares trials; ``output/results.json`` and
    ``output/results.csv`` hold every trial's status, parameters and metrics. A failing
    trial is reported with status ``FAILED`` and does not stop the others.
    """
    from nni.experiment import Experiment

    from .data import load_data
    from .models import model_spec
    from .run import resolve_settings

    tuner_name = TUNERS.get(str(tuner).lower())
    if tuner_name is None:
        raise ConfigError(f"unknown tuner {tuner!r}; choose one of {sorted(TUNERS.values())}")
    for name, value in (("trials", trials), ("concurrency", concurrency)):
        check_int(name, value)
    check_float("weight", weight)
    trial = {"model": model, "data": data, "data_dir": data_dir, "epochs": epochs, "T": T, "batch_size": batch_size,
             "seed": seed, "device": "cuda" if gpus else "cpu"}
    resolved = resolve_settings({**trial, "logdir": str(output)})  # every trial's settings, checked once here
    spec = model_spec(model)
    search_space = load_search_space(space, spec.spiking, resolved)
    load_data(data, data_dir, T=T or spec.T or 10)  # the data is there, before any trial starts
    output = Path(output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    settings = {**trial, "root": str(output), "weight": weight}
    command = f"{shlex.quote(sys.executable)} -m nni_dpap.hpo trial {shlex.quote(json.dumps(settings))}"

    experiment = Experiment("local")
    config = experiment.config
    config.experiment_name = f"nni-dpap {model} on {data}"
    config.trial_command = command
    config.trial_code_directory = str(output)
    config.search_space = search_space
    config.tuner.name = tuner_name
    config.tuner.class_args = {"optimize_mode": "maximize"}
    config.max_trial_number = trials
    config.trial_concurrency = concurrency
    config.experiment_working_directory = str(output / "nni-experiments")
    if gpus:
        config.trial_gpu_number = 1
        config.training_service.use_active_gpu = True
        config.training_service.gpu_indices = list(gpus)
    else:
        config.trial_gpu_number = 0

    port = port or _free_port()
    node_options = os.environ.get("NODE_OPTIONS")
    os.environ["NODE_OPTIONS"] = _loopback_node_options()
    started = False
    try:
        experiment.start(port)
        started = True
        print(f"NNI experiment {experiment.id}: web UI at http://127.0.0.1:{port} (loopback only); "
              f"{trials} trials, {concurrency} at a time, tuner {tuner_name}", flush=True)
        while experiment.get_status() not in _DONE:
            time.sleep(poll_seconds)
        jobs = experiment.list_trial_jobs()
    finally:
        if node_options is None:
            os.environ.pop("NODE_OPTIONS", None)
        else:
            os.environ["NODE_OPTIONS"] = node_options
        if started:
            experiment.stop()  # stops the manager and every trial, also on Ctrl-C
    rows = _collect(output, jobs)
    _export(output, rows)
    return rows


def _collect(output: Path, jobs: Sequence[Any]) -> list[dict[str, Any]]:
    rows = []
    for job in jobs:
        trial_id = getattr(job, "trialJobId", None) or getattr(job, "id", None)
        status = str(getattr(job, "status", "UNKNOWN"))
        status = status.split(".")[-1]
        result_file = output / "trials" / str(trial_id) / "result.json"
        row: dict[str, Any] = {"trial": trial_id, "status": status}
        if result_file.is_file():
            row.update(json.loads(result_file.read_text()))
        else:
            params = getattr(job, "hyperParameters", None)
            if params:
                first = params[0]
                row["parameters"] = getattr(first, "parameters", first)
        rows.append(row)
    rows.sort(key=lambda r: (r.get("default") is None, -(r.get("default") or 0.0)))
    return rows


def _export(output: Path, rows: list[dict[str, Any]]) -> None:
    (output / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    keys = ["trial", "status", "default", "accuracy", "sparsity", "flops_kept", "energy_ratio", "parameters"]
    with open(output / "results.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(keys)
        for row in rows:
            writer.writerow([json.dumps(row.get(k)) if k == "parameters" else row.get(k) for k in keys])


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The trials, best first, as a text table."""
    from .report import format_table

    table = []
    for row in rows:
        if row.get("default") is None:
            table.append([row["trial"], row["status"], "-", "-", "-", "-", "-"])
            continue
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in sorted((row.get("parameters") or {}).items()))
        table.append([row["trial"], row["status"], f"{row['default']:.4f}", f"{row['accuracy']:.2%}",
                      f"{row['sparsity']:.1%}", f"{row['energy_ratio']:.1%}", params])
    return format_table(table, ["trial", "status", "objective", "accuracy", "sparsity", "energy", "parameters"])


if __name__ == "__main__":
    sys.exit(trial_main())
