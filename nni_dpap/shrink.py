"""Carry training state across a physical shrink: optimizer parameters and their state.

After :func:`nni_dpap.speedup.speedup_with_indices` has replaced layers by smaller
ones, the optimizer still points at the old parameters. :func:`remap_optimizer`
swaps them for the new ones, in place (so the training loop and the LR scheduler,
which hold the optimizer object, keep working), and slices every state tensor shaped
like its parameter (Adam/AdamW moments, SGD momentum) to the kept units.
"""

from __future__ import annotations

import logging
from typing import Mapping

import torch
from torch import Tensor, nn

from .slicing import KeptIndices, slice_to

__all__ = ["remap_optimizer", "module_of"]

_logger = logging.getLogger(__name__)


def module_of(param_name: str) -> str:
    """The module that owns ``param_name``, seen through NNI wrappers (``conv._nni_wrapper.weight`` -> ``conv``)."""
    owner = param_name.rpartition(".")[0]
    return owner[: -len("._nni_wrapper")] if owner.endswith("._nni_wrapper") else owner


@torch.no_grad()
def remap_optimizer(
    optimizer: torch.optim.Optimizer,
    old_params: Mapping[str, nn.Parameter],
    new_params: Mapping[str, nn.Parameter],
    kept: Mapping[str, KeptIndices],
) -> list[str]:
    """Point ``optimizer`` at the new parameters and slice their state, in place.

    Parameters
    ----------
    optimizer
        The optimizer used by the training loop.
    old_params, new_params
        ``{name: parameter}`` of the model before and after the shrink (same names).
    kept
        Kept indices per module, from :func:`~nni_dpap.speedup.speedup_with_indices`.

    Returns
    -------
    list[str]
        Parameters whose state could not be sliced and was reset (logged as a warning).
    """
    name_of = {id(p): name for name, p in old_params.items()}
    reset: list[str] = []
    for group in optimizer.param_groups:
        params = []
        for param in group["params"]:
            name = name_of.get(id(param))
            if name is None or name not in new_params:
                params.append(param)
                continue
            new = new_params[name]
            state = optimizer.state.pop(param, None)
            if state:
                moved: dict[str, object] = {}
                for key, value in state.items():
                    if isinstance(value, Tensor) and value.shape == param.shape and value.dim() > 0:
                        value = slice_to(value, kept.get(module_of(name)), new.shape)
                        if value is None:
                            break
                        moved[key] = value.clone()
                    else:
                        moved[key] = value
                else:
                    optimizer.state[new] = moved
                    params.append(new)
                    continue
                reset.append(name)
            params.append(new)
        group["params"] = params
    if reset:
        _logger.warning("optimizer state of %s could not be sliced and starts afresh", ", ".join(reset))
    return reset

