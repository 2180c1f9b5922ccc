"""What :class:`~nni_dpap.pruner.DPAPPruner` does around training (NNI glue): the checks of ``shrink_every``,
the set-up before the first step, the lean wrapper forwards and the decision to shrink at an epoch's end."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import _fastwrap
from ._layers import removable_fraction
from ._validate import check_int
from .distributed import mean_over_ranks, world_size
from .errors import ConfigError

DPAPPruner = Any  # nni_dpap.pruner.DPAPPruner (not imported: the pruner imports this module)

__all__ = ["check_shrinking", "before_training", "after_training", "lean_forwards", "movement_tasks", "shrink_due",
           "update_structure"]

_logger = logging.getLogger(__name__)
_STEP_MISMATCH = ("the training function made %d optimizer steps, but epochs * steps_per_epoch = %d * %d = %d: "
                  "DPAP's epochs were not the training loop's epochs. Pass steps_per_epoch=len(train_loader) and "
                  "make the training function respect max_steps / max_epochs.")


def check_shrinking(model: nn.Module, shrink_every: Any, dummy_input: Any) -> int | None:
    """``shrink_every`` as an int (or None), refused for data-parallel models and without an input batch."""
    if shrink_every is None:
        return None
    check_int("shrink_every", shrink_every)
    if isinstance(model, DistributedDataParallel):
        raise ConfigError("shrink_every is not supported for DistributedDataParallel models yet; use "
                          "shrink_every=None and shrink the trained model with nni_dpap.speedup")
    if dummy_input is None:
        raise ConfigError("shrink_every needs an input batch to trace the model: pass dummy_input=... to "
                          "DPAPPruner (or to the TorchEvaluator)")
    return int(shrink_every)


def before_training(pruner: DPAPPruner) -> None:
    """Data-parallel thresholds; refuse ``shrink_every`` when other compressors share the model (NNI fusion)."""
    pruner._epoch_clock = time.perf_counter()
    pruner._collector.collecting = pruner.current_epoch < pruner.dpap_config.final_epoch(pruner.temporal)
    if world_size() > 1:  # data-parallel: the thresholds follow the mean over the ranks, batch by batch (a
        for layer in pruner._layers.values():  # deferred flush would all-reduce wherever one rank reads its stats)
            layer.stats.batch_mean, layer.stats.flush_every = mean_over_ranks, 1
    lean_forwards(pruner)
    if pruner.shrink_every is None:
        return
    own = set(map(id, pruner._module_wrappers.values()))
    foreign = sorted({name for name, module in pruner.bound_model.named_modules() if hasattr(module, "_nni_wrapper")
                      and id(module._nni_wrapper) not in own} | {name for name, w in pruner._module_wrappers.items()
                                                                 if w.quantization_target_spaces
                                                                 or w.distillation_target_spaces})
    if foreign:
        raise ConfigError(f"shrink_every cannot be used when DPAP is fused with another NNI compressor (a quantizer "
                          f"or distiller wraps {foreign}): shrinking replaces the layers and would drop their "
                          "wrappers. Use shrink_every=None and remove the pruned units after training with "
                          "nni_dpap.speedup (or nni_dpap.quantize.shrink_and_quantize)")


def after_training(pruner: DPAPPruner) -> None:
    """NNI's wrapper forwards back, the last batch committed, a warning if the loop's steps were not DPAP's."""
    pruner._fast.remove()
    pruner._collector.commit()
    expected = pruner.epochs * pruner.steps_per_epoch
    if pruner._global_step != expected:
        _logger.warning(_STEP_MISMATCH, pruner._global_step, pruner.epochs, pruner.steps_per_epoch, expected)


def lean_forwards(pruner: DPAPPruner) -> None:
    """NNI's generic wrapper forward replaced by the lean one (:mod:`nni_dpap._fastwrap`), except data-parallel."""
    pruner._fast.remove()
    if not pruner._prefix and world_size() == 1:
        pruner._fast = _fastwrap.install(pruner._module_wrappers, pruner._masked)


def movement_tasks(pruner: DPAPPruner) -> list[Callable[[], None]]:
    """The tasks to run before each optimizer step: with ``unit_order='movement'``, adding that step's
    Movement score to every layer's (read from the gradients, as NNI's ``MovementPruner`` does), as long
    as the structure can still change; none otherwise."""
    layers = [layer for layer in pruner._layers.values() if layer.movement is not None]

    def add_movement() -> None:
        if pruner._collector.collecting:
            for layer in layers:
                layer.add_movement()

    return [add_movement] if layers else []


def shrink_due(pruner: DPAPPruner) -> bool:
    """At the end of an epoch: a shrink is scheduled, something new was pruned and the shrink pays."""
    now, started = time.perf_counter(), pruner._epoch_clock
    pruner._epoch_clock = now
    seconds = pruner.shrink_policy.observe(now - started)  # (and calibrates the saving after a shrink)
    if pruner.shrink_every is None or (pruner.current_epoch + 1) % pruner.shrink_every or \
            not pruner._pruned_since_shrink:
        return False
    return pruner.shrink_policy.pays(removable_fraction(pruner._layers.values()), seconds,
                                     pruner.epochs - pruner.current_epoch - 1)


def update_structure(pruner: DPAPPruner) -> None:
    """At the end of an epoch: survival update and new masks, unless the structure is already final.

    Before every rule's ``start_epoch`` the statistics are only checked (a diverged run is reported
    at once): no survival value could change, so the importance and the update are skipped. Once
    no rule will update a survival value (every ``stop_epoch`` passed,
    :meth:`~nni_dpap.policy.DPAPConfig.final_epoch`), the statistics, their epoch-end products and the
    update are skipped, and the hooks stop recording for the rest of the run (their results could no
    longer change anything): the last part of training runs at the plain model's cost.
    """
    final, epoch = pruner.dpap_config.final_epoch(pruner.temporal), pruner.current_epoch
    if epoch < final and not pruner.dpap_config.updates_at(epoch, pruner.temporal):
        pruner._check_finite(pruner._collect_data())
    elif epoch < final:
        kept_before = {n: int(layer.neuron_mask.sum()) for n, layer in pruner._layers.items()}
        masks = pruner.generate_masks()
        pruner.update_masks(masks)
        pruner._pruned_since_shrink |= any(int(layer.neuron_mask.sum()) < kept_before[n]
                                           for n, layer in pruner._layers.items())
        masked = {name for name, targets in masks.items() if not all(bool(m.all()) for m in targets.values())}
        if not masked <= pruner._masked:
            pruner._masked |= masked
            lean_forwards(pruner)  # (gradient masks for the newly masked wrappers)
    pruner._collector.collecting = pruner.current_epoch + 1 < final
