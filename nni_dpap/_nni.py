"""Small pieces of NNI glue the pruner needs: evaluator checks and a forward-pre-hook object."""

from __future__ import annotations

from typing import Any, Callable

import torch
from nni.compression import TorchEvaluator
from torch import nn
from nni.compression.utils.evaluator import Evaluator, ModuleHook

from .errors import ConfigError

__all__ = ["ForwardPreHook", "check_model", "check_evaluator", "evaluator_optimizers"]


class ForwardPreHook(ModuleHook):
    """NNI-style hook object for ``register_forward_pre_hook`` (NNI 3.0 has none)."""

    def _register(self, hook_func: Callable[..., Any]) -> torch.utils.hooks.RemovableHandle:
        return self.target.register_forward_pre_hook(hook_func)


def check_model(model: Any, existed_wrappers: Any = None) -> None:
    """An ``nn.Module`` that no other compressor wraps (unless the wrappers are handed over)."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be an nn.Module, got {type(model).__name__} (a state_dict? load it into "
                          "the model first)")
    if existed_wrappers is None and any(hasattr(m, "_nni_wrapper") for m in model.modules()):
        raise ConfigError("the model is already wrapped by an NNI compressor: call unwrap_model() on it first, "
                          "or fuse the compressors with DPAPPruner.from_compressor(other, ...)")


def check_evaluator(evaluator: Any) -> None:
    """An NNI evaluator that can train: it has a training function and an optimizer."""
    if evaluator is None:
        raise ConfigError(
            "DPAPPruner prunes while it trains and needs an evaluator: pass "
            "nni.compression.TorchEvaluator(training_func, nni.trace(torch.optim.Adam)(model.parameters()), "
            "training_step)"
        )
    if not isinstance(evaluator, Evaluator):
        raise ConfigError(
            f"evaluator must be an nni.compression Evaluator (e.g. TorchEvaluator), got {type(evaluator).__name__}"
        )
    if isinstance(evaluator, TorchEvaluator):
        optimizers = getattr(evaluator, "_tmp_optimizers", None)
        if optimizers is None:
            optimizers = getattr(evaluator, "_optimizer_helpers", None)
        if not optimizers:
            raise ConfigError(
                "the evaluator has no optimizer: DPAP trains the model, so build it with one, e.g. "
                "TorchEvaluator(training_func, nni.trace(torch.optim.Adam)(model.parameters(), lr=1e-3), training_step)"
            )


def evaluator_optimizers(evaluator: Evaluator) -> list[torch.optim.Optimizer]:
    """The optimizers the evaluator trains with (after it was bound to the model)."""
    return list(getattr(evaluator, "_optimizers", None) or [])
