"""SpikingJelly 2.x (``spikingjelly.activation_based``): neurons, time-aware layers, containers.

Neurons (``LIFNode``, ``ParametricLIFNode``, ``IFNode``... any ``BaseNode``) in single-step
mode (``[N, ...]`` per call) and multi-step mode (``[T, N, ...]``); the stateless layer
wrappers (``layer.Conv2d``, ``layer.BatchNorm2d``, ``layer.Linear``...) are kept whole
when tracing; ``layer.SeqToANNContainer`` is traced through a traceable forward. Nothing
here imports SpikingJelly unless one of its modules is met.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from torch import Tensor, nn

from .base import NeuronAdapter, mro_names
from ._gate import install_time_mask, reset_step

__all__ = ["SpikingJellyAdapter"]

_ROOT = "spikingjelly.activation_based"


def _from_spikingjelly(module: nn.Module, class_name: str) -> bool:
    return any(path.startswith(_ROOT) and name == class_name for path, name in mro_names(module))


def _multi_step(module: nn.Module) -> bool:
    return getattr(module, "step_mode", "s") == "m"


class SpikingJellyAdapter(NeuronAdapter):
    name = "spikingjelly"

    def matches(self, module: nn.Module) -> bool:
        return _from_spikingjelly(module, "BaseNode")

    def split_steps(self, module: nn.Module, output: Any) -> Tensor:
        return output if _multi_step(module) else output.unsqueeze(0)

    def reset(self, module: nn.Module) -> None:
        module.reset()  # type: ignore[operator]  # MemoryModule.reset restores the initial state
        reset_step(module)

    def set_time_mask(self, module: nn.Module, mask: Tensor | None) -> None:
        install_time_mask(module, mask, _multi_step)

    def time_major(self, module: nn.Module) -> bool:
        """Multi-step SpikingJelly modules take ``[T, N, ...]``."""
        return _from_spikingjelly(module, "StepModule") and _multi_step(module)

    def is_leaf(self, module: nn.Module) -> bool:
        """The stateless wrappers of torch layers with a ``step_mode`` (``layer.Conv2d``...)."""
        cls = type(module)
        return cls.__module__.startswith(_ROOT + ".layer") and _from_spikingjelly(module, "StepModule") \
            and any(c.__module__.startswith("torch.nn") for c in cls.__mro__[1:])

    def trace_forward(self, module: nn.Module) -> Callable[..., Any] | None:
        """``SeqToANNContainer``: fold ``[T, N, ...]``, run the children, unfold — in traceable form."""
        if not _from_spikingjelly(module, "SeqToANNContainer"):
            return None

        def forward(x: Any) -> Any:
            y = x.flatten(0, 1)
            for child in module.children():
                y = child(y)
            return y.unflatten(0, (x.shape[0], x.shape[1]))

        return forward

    @contextmanager
    def single_step(self, model: nn.Module) -> Iterator[None]:
        """Every SpikingJelly step module of ``model`` in single-step mode, restored afterwards."""
        # by name: speedup replaces modules while this is active
        saved = [(n, m.step_mode) for n, m in model.named_modules() if _from_spikingjelly(m, "StepModule")
                 and not _from_spikingjelly(m, "MultiStepModule")]
        try:
            for name, _ in saved:
                model.get_submodule(name).step_mode = "s"  # type: ignore[assignment]
            yield
        finally:
            for name, mode in saved:
                model.get_submodule(name).step_mode = mode
