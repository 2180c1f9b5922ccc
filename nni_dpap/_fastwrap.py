"""A lean forward for the NNI wrappers of DPAP's layers (NNI glue, speed only).

NNI's ``ModuleWrapper.forward`` is generic: per call it inspects the arguments, deep-copies
every target space's settings to read its ``apply_method``, multiplies each parameter by
its mask (one more tensor and one more autograd node per parameter) and re-registers the
product as a buffer of the module. On a small network this Python work costs as much as
the arithmetic (about a third of a training step of the digits nets).

DPAP does not need the product: its masks only grow, and the pruner zeroes the masked
parameters in place after every optimizer step and whenever a mask changes, so
``weight * mask`` *is* ``weight`` at every forward. :func:`install` therefore hands the
wrapper's parameters to the module as they are and zeroes the gradient of the masked
entries when it is accumulated -- the same values NNI's ``mul`` path gives, forward and
backward (``tests/test_fastwrap.py``); a layer with nothing masked gets no gradient hook.
A wrapper that another compressor also uses (a quantizer or distiller fused through
``existed_wrappers``), or that NNI asks to do more than masking (fused modules, bias
correction, trackers, input/output targets), keeps NNI's own forward; so do data-parallel
models, whose gradient all-reduce must see the masked gradients.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

from nni.compression.base.target_space import TargetType
from nni.compression.base.wrapper import track_target_shape
from torch import Tensor
from torch.utils.hooks import RemovableHandle

__all__ = ["install", "FastForwards"]

_Wrapper = Any  # NNI's ModuleWrapper (mypy sees it as Optional through NNI's untyped package)


def _plain(wrapper: _Wrapper) -> bool:
    """Only parameter pruning targets and nothing else NNI would do in the forward."""
    return (not wrapper.quantization_target_spaces and not wrapper.distillation_target_spaces
            and not wrapper.fused_modules and not getattr(wrapper, "is_bias_correction", False)
            and all(f is track_target_shape for f in wrapper._track_funcs)  # (shapes of non-parameter targets)
            and all(space.type is TargetType.PARAMETER for space in wrapper.pruning_target_spaces.values()))


def _wraps(wrapper: _Wrapper) -> bool:
    """The wrapper is the one in force on its module."""
    return getattr(wrapper.module, "_nni_wrapper", None) is wrapper


def _forward(wrapper: _Wrapper, nni_forward: Callable[..., Any]) -> Callable[..., Any]:
    buffers = wrapper.module._buffers
    names = [name for name, space in wrapper.pruning_target_spaces.items() if space.target is not None]

    def forward(*args: Any, **kwargs: Any) -> Any:
        if wrapper.quantization_target_spaces or wrapper.distillation_target_spaces:  # fused in after installation
            return nni_forward(*args, **kwargs)
        for name in names:  # the parameter itself: its masked entries are already zero
            buffers[name] = getattr(wrapper, name)
        return wrapper.module_forward(*args, **kwargs)

    forward.__wrapped__ = wrapper.module_forward  # type: ignore[attr-defined]  # (inspect.signature: the module's)
    return forward


def _mask_grad(wrapper: _Wrapper, name: str) -> Callable[[Tensor], None]:
    space = wrapper.pruning_target_spaces[name]

    def hook(param: Tensor) -> None:
        if param.grad is not None and space.mask is not None and not wrapper.quantization_target_spaces:
            param.grad.mul_(space.mask)
    return hook


class FastForwards:
    """The lean forwards installed on a set of wrappers; :meth:`remove` restores NNI's."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        self._wrappers: list[_Wrapper] = []

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        for wrapper in self._wrappers:
            if _wraps(wrapper):
                wrapper.module.forward = wrapper.forward
        self._handles, self._wrappers = [], []


def install(wrappers: Mapping[str, _Wrapper], masked: Collection[str] = ()) -> FastForwards:
    """Give every plain, wrapped module of ``wrappers`` the lean forward, and those in ``masked`` (the wrappers
    whose masks hold zeros; any other mask is all ones) their gradient masks."""
    installed = FastForwards()
    for module_name, wrapper in wrappers.items():
        if not _wraps(wrapper) or not _plain(wrapper):
            continue
        wrapper.module.forward = _forward(wrapper, wrapper.forward)
        installed._wrappers.append(wrapper)
        if module_name not in masked:
            continue
        for name, space in wrapper.pruning_target_spaces.items():
            target = space.target
            if target is not None and target.requires_grad:
                installed._handles.append(target.register_post_accumulate_grad_hook(_mask_grad(wrapper, name)))
    return installed
