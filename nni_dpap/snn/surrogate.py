"""Surrogate-gradient spike functions.

The forward pass is the Heaviside step ``S = H(x)`` with ``H(0) = 1``; the backward
pass replaces its derivative (a Dirac delta) with the derivative of a smooth
primitive ``g``. Each surrogate is a small :class:`torch.nn.Module`, so it shows in
``repr`` and can be chosen per neuron.

======================  =======================================  ==========================================
surrogate               primitive ``g(x)``                       ``g'(x)`` used in backward
======================  =======================================  ==========================================
:class:`ATanSurrogate`  ``arctan(pi/2 * alpha * x) / pi + 1/2``   ``alpha / (2 * (1 + (pi/2 * alpha * x)^2))``
:class:`SigmoidSurrogate` ``sigmoid(alpha * x)``                  ``alpha * sigmoid(alpha x) * (1 - sigmoid(alpha x))``
======================  =======================================  ==========================================
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["SurrogateFunction", "ATanSurrogate", "SigmoidSurrogate", "get_surrogate"]


class _HeavisideSpike(torch.autograd.Function):
    """Heaviside step forward, the surrogate's closed-form derivative backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, surrogate: SurrogateFunction) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = surrogate
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad_output * ctx.surrogate.derivative(x), None


class SurrogateFunction(nn.Module):
    """Base class: ``forward(x)`` returns Heaviside spikes with a surrogate gradient.

    Parameters
    ----------
    alpha
        Sharpness of the surrogate; larger values approach the true step.
    spiking
        If ``False`` the smooth primitive ``g(x)`` is returned instead of spikes,
        which is useful to debug a network with ordinary gradients.
    """

    def __init__(self, alpha: float, spiking: bool = True) -> None:
        super().__init__()
        if not alpha > 0:
            raise ConfigError(f"surrogate alpha must be > 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.spiking = spiking

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, spiking={self.spiking}"

    def forward(self, x: Tensor) -> Tensor:
        if self.spiking:
            return _HeavisideSpike.apply(x, self)
        return self.primitive(x)

    def primitive(self, x: Tensor) -> Tensor:
        """The smooth function whose derivative is the surrogate gradient."""
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        """Closed-form surrogate gradient ``g'(x)`` (used by tests and for inspection)."""
        raise NotImplementedError


class ATanSurrogate(SurrogateFunction):
    """Arc-tangent surrogate (Fang et al., 2021), the default of SpikingJelly and BrainCog."""

    def __init__(self, alpha: float = 2.0, spiking: bool = True) -> None:
        super().__init__(alpha, spiking)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5

    def derivative(self, x: Tensor) -> Tensor:
        return self.alpha / 2 / (1 + (math.pi / 2 * self.alpha * x).square())


class SigmoidSurrogate(SurrogateFunction):
    """Sigmoid surrogate: gradient of ``sigmoid(alpha * x)``."""

    def __init__(self, alpha: float = 4.0, spiking: bool = True) -> None:
        super().__init__(alpha, spiking)

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.alpha * x)

    def derivative(self, x: Tensor) -> Tensor:
        sig = torch.sigmoid(self.alpha * x)
        return self.alpha * sig * (1 - sig)


_SURROGATES: dict[str, Any] = {  # name -> class (each has a default alpha)
    "atan": ATanSurrogate,
    "sigmoid": SigmoidSurrogate,
}


def get_surrogate(name: str, alpha: float | None = None) -> SurrogateFunction:
    """Build a fresh surrogate by name (``'atan'`` or ``'sigmoid'``)."""
    try:
        cls = _SURROGATES[name.lower()]
    except KeyError:
        raise ConfigError(
            f"unknown surrogate {name!r}; choose one of {sorted(_SURROGATES)}"
        ) from None
    return cls() if alpha is None else cls(alpha=alpha)
