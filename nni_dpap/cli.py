"""The ``nni-dpap`` command: ``prune``, ``report``, ``speedup`` and ``hpo``.

This module only parses arguments, calls the library (:mod:`nni_dpap.run`,
:mod:`nni_dpap.artifacts`, :mod:`nni_dpap.hpo`) and prints; it is the only place that
configures logging. Every error a user can cause is one paragraph on stderr, without a
traceback, and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, DPAPError

__all__ = ["main", "build_parser"]

_logger = logging.getLogger("nni_dpap.cli")


def _json_object(text: str) -> dict[str, Any]:
    """``--hparams``: a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg} at character {exc.pos}): {text!r}; write "
                                         "e.g. '{\"conv_eps\": 0.8}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object such as '{{\"conv_eps\": 0.8}}', got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .run import DEFAULTS

    parser = argparse.ArgumentParser(prog="nni-dpap", description="DPAP pruning for spiking and artificial networks")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        type=str.upper, help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="train a zoo model with DPAP, pruning while it trains",
                       description="Train a zoo model from scratch with DPAP. Values not given come from --config, "
                                   "then from the defaults shown.")
    s = argparse.SUPPRESS  # unset flags stay unset, so --config values are not overridden by defaults
    d = DEFAULTS
    p.add_argument("--config", help="JSON file of the options below (e.g. a run's config.json)")
    p.add_argument("--model", default=s, help=f"zoo model name (default {d['model']}); see README")
    p.add_argument("--data", default=s, help="digits, mnist5k, mnist, fashion_mnist, cifar10, cifar100, nmnist, "
                                               f"dvs_gesture, cifar10_dvs, event_digits (default {d['data']})")
    p.add_argument("--data-dir", default=s, help="folder with the data set files (not needed for digits, mnist5k)")
    p.add_argument("--download", action="store_true", default=s, help="download missing data (needs internet)")
    p.add_argument("--epochs", type=int, default=s, help=f"training epochs; DPAP's schedule spans them "
                                                           f"(default {d['epochs']})")
    p.add_argument("--preset", choices=["braincog", "paper"], default=s, help=f"DPAP rule (default {d['preset']})")
    p.add_argument("--hparams", type=_json_object, default=s,
                   help="JSON object of DPAP hyper-parameters, e.g. '{\"conv_eps\": 0.8}' (default: the library's "
                        "schedule relative to --epochs, see README)")
    p.add_argument("--paper-settings", action="store_true", default=s,
                   help="use the released per-experiment settings and exclusions of this zoo model (long runs)")
    p.add_argument("--T", type=int, default=s, help="SNN time steps, and frames of event data (default: the model's)")
    p.add_argument("--batch-size", type=int, default=s, help=f"training batch size (default {d['batch_size']})")
    p.add_argument("--lr", type=float, default=s, help=f"learning rate (default {d['lr']})")
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default=s, help="optimizer (default adam)")
    p.add_argument("--weight-decay", type=float, default=s, help=f"weight decay (default {d['weight_decay']})")
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
    p.add_argument("--quantize", choices=["int8"], default=s,
                   help="fuse NNI's QATQuantizer with DPAP and also save the shrunk int8 model (model_int8.pth)")
    p.add_argument("--num-workers", type=int, default=s, help="data loader workers (default 0)")
    p.add_argument("--no-progress", action="store_true", default=s, help="hide the progress bar")
    p.add_argument("--return-freed-memory", dest="keep_freed_memory", action="store_false", default=s,
                   help="let glibc return freed CPU memory to the OS (default: kept in the process, which "
                        "avoids page faults on every batch; nni_dpap.allocator)")

    r = sub.add_parser("report", help="parameters, FLOPs, synaptic operations and energy of a saved model")
    r.add_argument("model_file", help="model.pt written by 'nni-dpap prune'")
    r.add_argument("--data-dir", default=None, help="folder of the model's data set, to measure firing rates on it")
    r.add_argument("--json", default=None, help="also write the report to this (new) JSON file")

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
    h.add_argument("--weight", type=float, default=0.1, help="objective = accuracy + WEIGHT x sparsity (default 0.1)")
    h.add_argument("--output", default="runs/hpo", help="results and trial logs (default runs/hpo)")

    u = sub.add_parser("speedup", help="physically remove the pruned units of a saved model")
    u.add_argument("model_file", help="model.pt written by 'nni-dpap prune'")
    u.add_argument("--output", required=True, help="where to save the shrunk model (a new file; torch.save of the "
                                                   "module)")
    return parser


def _prune(args: argparse.Namespace) -> None:
    from .run import DEFAULTS, Run, resolve_settings

    settings = resolve_settings({k: v for k, v in vars(args).items() if k in DEFAULTS}, args.config)
    run = Run(settings)
    metrics = run.execute()
    logdir = Path(settings["logdir"])
    if "stopped_at" in metrics:
        print(f"stopped after epoch {metrics['stopped_at']} of {settings['epochs']}; continue with: "
              f"nni-dpap prune --config {logdir / 'config.json'} --resume")
        return
    print(f"\n{settings['model']} on {settings['data']}: test accuracy {metrics['accuracy']:.2%}, prunable params "
          f"kept {metrics['params_kept']:.1%}, FLOPs kept {metrics['flops_kept']:.1%}, energy "
          f"{metrics['energy_ratio']:.1%} of dense\n")
    print(run.table)
    if "int8" in metrics:
        int8 = metrics["int8"]
        print(f"\nint8 (shrunk, NNI QAT): test accuracy {int8['accuracy']:.2%}, {int8['bytes']:,} bytes "
              f"({int8['float_shrunk_bytes'] / int8['bytes']:.1f}x smaller than the shrunk float model): "
              f"{int8['path']}")
    print(f"\nrun folder: {logdir} (tensorboard --logdir {logdir})")


def _report(args: argparse.Namespace) -> None:
    from .artifacts import report_artifact, write_new
    from .report import format_table

    if args.json and Path(args.json).exists():
        raise ConfigError(f"--json {args.json} already exists: choose another path (existing files are never replaced)")
    structure, artifact = report_artifact(args.model_file, args.data_dir)
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
        write_new(args.json, lambda tmp: Path(tmp).write_text(json.dumps(structure, indent=2)), "--json")


def _speedup(args: argparse.Namespace) -> None:
    from .artifacts import speedup_artifact

    result = speedup_artifact(args.model_file, args.output)
    before, after = result["params_before"], result["params_after"]
    print(f"parameters {before:,} -> {after:,} ({after / before:.1%}); max output difference "
          f"{result['difference']:.2e}; saved to {result['output']} (torch.load(path, weights_only=False))")


def _hpo(args: argparse.Namespace) -> None:
    from .hpo import run_experiment, summary_table

    try:
        gpus = [int(g) for g in str(args.gpus).split(",") if g.strip()] if args.gpus else []
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    command = {"prune": _prune, "report": _report, "hpo": _hpo, "speedup": _speedup}[args.command]
    try:
        command(args)
    except DPAPError as exc:
        print(f"nni-dpap {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a folder that cannot be written, a full disk...
        print(f"nni-dpap {args.command}: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
