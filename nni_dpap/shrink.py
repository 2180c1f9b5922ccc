"""Carry training state across a physical shrink (optimizer parameters and their state); decide if one pays.

After :func:`nni_dpap.speedup.speedup_with_indices` has replaced layers by smaller
ones, the optimizer still points at the old parameters. :func:`remap_optimizer`
swaps them for the new ones, in place (so the training loop and the LR scheduler,
which hold the optimizer object, keep working), and slices every state tensor shaped
like its parameter (Adam/AdamW moments, SGD momentum) to the kept units.
:class:`ShrinkPolicy` skips a shrink whose saving would not repay its cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import torch
from torch import Tensor, nn

from .slicing import KeptIndices, slice_to

__all__ = ["remap_optimizer", "module_of", "ShrinkPolicy"]

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



@dataclass
class ShrinkPolicy:
    """Whether a physical shrink pays for itself in wall-clock.

    A shrink costs about the same each time (tracing the model, NNI's re-wrapping, the
    optimizer surgery), whatever it removes; it saves, on every epoch still to come, a share
    of the epoch time. The first shrink is always made (it measures the cost); later ones
    only when ``removable x epoch_seconds x remaining_epochs x efficiency >= last_cost``.
    ``efficiency`` starts at 1 (an epoch's time in proportion to the weights) and is then
    measured: the epoch after each shrink that removed at least :attr:`INFORMATIVE_SHARE` of
    the weights is compared with the one before it (a smaller removal saves less than the
    epochs' noise), so on a small net, whose step time is mostly fixed per-call overhead,
    shrinks that would not pay stop. It never falls below :attr:`MIN_EFFICIENCY`, so one
    unlucky measurement cannot stop every later shrink of a net where shrinking pays.

    Attributes
    ----------
    last_cost
        Seconds the last shrink took (``None`` before the first).
    skipped
        Shrinks skipped so far.
    always
        Shrink whenever new units were pruned, paying or not (e.g. to end training with the
        smallest model; ``nni_dpap.speedup`` after training does the same at once).
    efficiency
        Mean, over the informative shrinks made, of the epoch time saved per unit of the
        removable share (each clipped to [0, 1]; at least :attr:`MIN_EFFICIENCY`).
    """

    INFORMATIVE_SHARE: ClassVar[float] = 0.1
    MIN_EFFICIENCY: ClassVar[float] = 0.25

    last_cost: float | None = None
    skipped: int = 0
    always: bool = False
    _pending: tuple[float, float] | None = None  # (epoch seconds before the last shrink, share it removed)
    _measured: list[float] = field(default_factory=list)

    @property
    def efficiency(self) -> float:
        """See the class docstring (1 until a shrink has been measured)."""
        if not self._measured:
            return 1.0
        return max(self.MIN_EFFICIENCY, sum(self._measured) / len(self._measured))

    def pays(self, removable: float, epoch_seconds: float, remaining_epochs: int) -> bool:
        """Decide for a shrink that would remove ``removable`` (0..1) of the pruned layers' weights."""
        if removable <= 0.0:
            return False
        saving = removable * epoch_seconds * remaining_epochs * self.efficiency
        if self.always or self.last_cost is None or saving >= self.last_cost:
            self._pending = (epoch_seconds, removable)
            return True
        self.skipped += 1
        _logger.info("shrink skipped: it would save about %.2f s (%.1f%% of the weights x %.2f s x %d epochs x "
                     "efficiency %.2f), less than its cost of %.2f s", saving, 100 * removable, epoch_seconds,
                     remaining_epochs, self.efficiency, self.last_cost)
        return False

    def observe(self, epoch_seconds: float) -> float:
        """An epoch ended after ``epoch_seconds``; returns its time without the shrink made just before it.

        After a shrink, the epoch is compared with the one before it to update ``efficiency``.
        """
        if self._pending is None:
            return epoch_seconds
        before, removed = self._pending
        self._pending = None
        clean = max(epoch_seconds - (self.last_cost or 0.0), 0.0)
        if removed >= self.INFORMATIVE_SHARE and before > 0:
            self._measured.append(min(1.0, max(0.0, (before - clean) / (before * removed))))
        return clean
