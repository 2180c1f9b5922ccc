"""Temporal masks for neurons of other libraries: the spikes of pruned (channel, step) pairs are removed
from the neuron's output by a forward hook (the neuron's own reset still happens, unlike nni-dpap's
neurons, which do not fire at all at a silenced step)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

_MASK, _STEP, _HANDLE = "_nni_dpap_time_mask", "_nni_dpap_step", "_nni_dpap_gate_handle"


def _gate(spikes: Tensor, mask: Tensor, step: int | None) -> Tensor:
    """``step=None``: ``spikes`` is ``[T, N, C, ...]``; otherwise one step ``[N, C, ...]``."""
    if step is None:
        gate = mask.t().to(spikes.dtype)  # [T, C]
        return spikes * gate.view(gate.shape[0], 1, gate.shape[1], *([1] * (spikes.dim() - 3)))
    if step >= mask.shape[1]:
        return spikes
    return spikes * mask[:, step].to(spikes.dtype).view(1, -1, *([1] * (spikes.dim() - 2)))


def install_time_mask(module: nn.Module, mask: Tensor | None, multi_step: Any) -> None:
    """Attach (or, with ``mask=None``, detach) a ``[C, T]`` time mask; ``multi_step(module)`` tells the layout."""
    # a non-persistent buffer: speedup slices it with the channels; DPAP's own state restores it
    value = None if mask is None else mask.detach().float().clone()
    if _MASK in module._buffers:
        module._buffers[_MASK] = value
    else:
        module.register_buffer(_MASK, value, persistent=False)
    if mask is None or getattr(module, _HANDLE, None) is not None:
        return

    def hook(mod: nn.Module, args: Any, output: Any) -> Any:
        current = getattr(mod, _MASK, None)
        if current is None:
            return output
        spikes = output[0] if isinstance(output, tuple) else output
        if multi_step(mod):
            gated = _gate(spikes, current.to(spikes.device), None)
        else:
            step = getattr(mod, _STEP, 0)
            setattr(mod, _STEP, step + 1)
            gated = _gate(spikes, current.to(spikes.device), step)
        return (gated, *output[1:]) if isinstance(output, tuple) else gated

    setattr(module, _HANDLE, module.register_forward_hook(hook))


def reset_step(module: nn.Module) -> None:
    setattr(module, _STEP, 0)
