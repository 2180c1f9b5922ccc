"""Which layers DPAP prunes: NNI ``config_list`` validation and the layer -> neuron links (NNI glue)."""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

from nni.compression.base.config import select_modules_by_config
from torch import nn

from .distributed import ddp_prefix, strip_prefix, with_prefix
from .errors import ConfigError, UnsupportedModuleError
from .graph import PRUNABLE_TYPES, GraphInfo, link_layers

__all__ = ["select_targets", "resolve_links", "SUPPORTED_OP_TYPES"]

_logger = logging.getLogger("nni_dpap.pruner")

SUPPORTED_OP_TYPES = tuple(t.__name__ for t in PRUNABLE_TYPES)
_SELECT_KEYS = ("op_types", "op_names", "op_names_re")
_ALLOWED_KEYS = set(_SELECT_KEYS) | {"exclude_op_types", "exclude_op_names", "exclude_op_names_re"}
_SPARSITY_KEYS = {
    "sparse_ratio", "sparse_threshold", "max_sparse_ratio", "min_sparse_ratio", "sparsity",
    "sparsity_per_layer", "total_sparsity", "max_sparsity_per_layer", "global_group_id",
    "dependency_group_id", "granularity", "target_names", "target_settings", "apply_method",
    "internal_metric_block", "align", "exclude",
}


def _check_entry(index: int, entry: Any) -> None:
    where = f"config_list[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} must be a dict such as {{'op_types': ['Conv2d', 'Linear']}}, got {entry!r}")
    for key, value in entry.items():
        if key in _SPARSITY_KEYS:
            raise ConfigError(
                f"{where} has {key!r}, which DPAP does not use: DPAP has no target sparsity, the pruning "
                "rate emerges from its survival rule. Remove the key; to prune more or less change the "
                "rule's eps / eta (e.g. DPAPPruner(..., hparams={'conv_eps': 0.8, 'linear_eps': 2.0}))."
            )
        if key not in _ALLOWED_KEYS:
            raise ConfigError(f"{where} has unknown key {key!r}; DPAP accepts {sorted(_ALLOWED_KEYS)}")
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}[{key!r}] must be a list of strings, got {value!r}")
    if not any(entry.get(k) for k in _SELECT_KEYS):
        raise ConfigError(f"{where} selects nothing: give 'op_types', 'op_names' or 'op_names_re'")
    for op_type in entry.get("op_types", []):
        if op_type not in SUPPORTED_OP_TYPES:
            raise ConfigError(
                f"{where}: DPAP cannot prune op type {op_type!r}; supported op types are "
                f"{list(SUPPORTED_OP_TYPES)} (type names are case-sensitive)"
            )
    for pattern in list(entry.get("op_names_re", [])) + list(entry.get("exclude_op_names_re", [])):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"{where}: invalid regular expression {pattern!r}: {exc}") from None


def select_targets(model: nn.Module, config_list: Sequence[dict[str, Any]]) -> list[str]:
    """Validate ``config_list`` and return the names of the modules it selects, in model order.

    Raises
    ------
    ConfigError
        Empty list, unknown or sparsity keys, unsupported op types, unknown module names,
        or a selection that matches no module.
    UnsupportedModuleError
        A module selected by name is not a ``Conv1d``, ``Conv2d`` or ``Linear``.
    """
    if isinstance(config_list, dict):
        raise ConfigError(f"config_list must be a list of dicts (NNI's format), got one dict: wrap it as "
                          f"[{config_list!r}]")
    if not isinstance(config_list, (list, tuple)):
        raise ConfigError(f"config_list must be a list of dicts such as [{{'op_types': ['Conv2d', 'Linear']}}], "
                          f"got {type(config_list).__name__}")
    if len(config_list) == 0:
        raise ConfigError(
            "config_list is empty: give at least one entry such as "
            "[{'op_types': ['Conv2d', 'Linear'], 'exclude_op_names': ['classifier']}]"
        )
    names = dict(model.named_modules())
    selected: set[str] = set()
    for index, entry in enumerate(config_list):
        _check_entry(index, entry)
        for key in ("op_names", "exclude_op_names"):
            missing = [n for n in entry.get(key, []) if n not in names]
            if missing:
                raise ConfigError(
                    f"config_list[{index}][{key!r}] names {missing}, which are not modules of the model; "
                    f"its conv/linear modules are {[n for n, m in names.items() if isinstance(m, PRUNABLE_TYPES)]}"
                )
        modules, _, _ = select_modules_by_config(model, dict(entry))
        selected.update(modules)
    for name in selected:
        if not isinstance(names[name], PRUNABLE_TYPES):
            raise UnsupportedModuleError(
                f"module {name!r} is a {type(names[name]).__name__}; DPAP prunes only {list(SUPPORTED_OP_TYPES)}. "
                "Remove it from op_names or restrict the entry with op_types."
            )
    if not selected:
        raise ConfigError(
            "config_list selects no module of the model; its conv/linear modules are "
            f"{[n for n, m in names.items() if isinstance(m, PRUNABLE_TYPES)]}"
        )
    return [n for n in names if n in selected]


def resolve_links(model: nn.Module, config_list: Sequence[dict[str, Any]], *, temporal: bool,
                  leaf_modules: Sequence[type[nn.Module] | str] = (), concrete_args: dict[str, Any] | None = None,
                  neuron_map: Mapping[str, str] | None = None, prune_first_conv: bool = True) -> GraphInfo:
    """The layers ``config_list`` selects, each linked to the neuron DPAP reads, output layers set apart.

    With ``prune_first_conv=False`` the model's first conv layer (in module order) is left out, as
    the released code does.

    A ``DistributedDataParallel`` model is traced through its module; the names keep DDP's prefix.

    Raises
    ------
    ConfigError
        Bad config list, only output layers selected, or ``temporal`` with a layer not
        followed by a spiking neuron.
    GraphError
        The model cannot be traced or a layer has no neuron after it.
    """
    selected = select_targets(model, config_list)
    prefix = ddp_prefix(model)
    inner: nn.Module = model.module if prefix else model  # type: ignore[assignment]
    neuron_map = {strip_prefix(k, prefix): strip_prefix(v, prefix) for k, v in (neuron_map or {}).items()}

    def links(targets: list[str]) -> GraphInfo:
        return with_prefix(link_layers(inner, [strip_prefix(t, prefix) for t in targets], leaf_modules=leaf_modules,
                                       concrete_args=concrete_args, neuron_map=neuron_map), prefix)

    first = next((n for n, m in model.named_modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    targets = selected if prune_first_conv else [t for t in selected if t != first]
    info = links(targets)
    if targets != selected:
        if info.links:
            _logger.info("%s is the first conv layer: DPAP leaves it unpruned, as the released code does "
                         "(hparams {'prune_first_conv': True} prunes it)", first)
        else:  # it is the only hidden layer selected: prune it after all
            info = links(selected)
    for name in info.output_layers:
        _logger.info("%s is an output layer: DPAP never prunes output layers, it is left untouched", name)
    if not info.links:
        raise ConfigError(
            f"nothing left to prune: the selected layers {targets} are all output layers. "
            "Select hidden conv/linear layers that are followed by a neuron or activation."
        )
    for link in info.links.values():
        if temporal and (not link.spiking or link.neuron is None):
            raise ConfigError(
                f"temporal=True prunes (neuron, time step) pairs of spiking neurons, but layer {link.name!r} "
                f"is followed by {link.neuron or 'a functional activation'}, not a spiking neuron: use "
                "temporal=False for ANNs, or exclude the layer from the config_list"
            )
    return info
