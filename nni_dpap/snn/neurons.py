"""Leaky integrate-and-fire neurons, multi-step by default.

Time layout
-----------
nni-dpap folds time into the batch dimension, **time-major**: a multi-step tensor
holds ``T * B`` samples along dim 0 and sample ``t * B + b`` is time step ``t`` of
example ``b`` (``x.view(T, B, ...)`` recovers ``[T, B, ...]``). Every stateless torch
layer (``Conv2d``, ``BatchNorm2d``, pooling, ``Flatten``, ``Linear``) works on this
layout unchanged, so NNI's wrappers, counters and ``ModelSpeedup`` see ordinary
layers with the batch at dim 0. Only the neurons need ``T`` to unfold it.

Each neuron follows the charge -> fire -> reset template::

    H[t] = charge(V[t-1], X[t])               # LIF: V + (X - (V - V_reset)) / tau
    S[t] = Heaviside(H[t] - V_threshold)      # surrogate gradient in backward
    V[t] = H[t] * (1 - S[t]) + V_reset * S[t] # hard reset

In multi-step mode (``step_mode='m'``, the default) the membrane starts at
``V_reset`` on every call, so no state leaks from one batch to the next and no
reset is ever needed. In single-step mode (``step_mode='s'``, for models that loop
over time themselves) the membrane persists between calls until :meth:`reset`;
:func:`nni_dpap.auto_reset` resets a whole model at the start of every forward.

Backends
--------
A multi-step call runs either the Python loop over time steps above (``backend='torch'``,
the reference) or, by default (``backend='fused'``), one fused kernel for all steps,
forward and backward: C++ on the CPU (:mod:`nni_dpap.snn.fused`), Triton on CUDA
(:mod:`nni_dpap.snn.fused_triton`), which gives the same spikes and gradients several
times faster. The fused backend covers :class:`LIFNeuron` and :class:`PLIFNeuron` as
they are, on float tensors; everything else (subclasses that override the charge, fire
or reset steps, custom surrogates, per-channel PLIF ``w``, ...) silently runs the loop.
:func:`set_backend` switches a whole model. Single-step mode always runs the Python code.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import ConfigError, ShapeError
from . import fused, fused_triton
from .surrogate import ATanSurrogate, SigmoidSurrogate, SurrogateFunction

__all__ = ["BaseNeuron", "LIFNeuron", "PLIFNeuron", "StepMode", "Backend", "BACKENDS", "set_backend"]

StepMode = Literal["s", "m"]
Backend = Literal["torch", "fused"]
BACKENDS: tuple[Backend, ...] = ("torch", "fused")
_FUSED_SURROGATES: dict[type[SurrogateFunction], str] = {ATanSurrogate: "atan", SigmoidSurrogate: "sigmoid"}


class BaseNeuron(nn.Module):
    """Base class of spiking neurons (charge / fire / reset template).

    Parameters
    ----------
    T
        Number of time steps folded into dim 0 in multi-step mode. Required for
        ``step_mode='m'``; ignored in single-step mode.
    v_threshold
        Firing threshold ``V_threshold``.
    v_reset
        Reset (and resting) potential of the hard reset.
    detach_reset
        Detach the spike used in the reset from the autograd graph.
    surrogate
        Surrogate-gradient function; ``None`` builds a fresh :class:`ATanSurrogate`.
    step_mode
        ``'m'``: input ``[T*B, ...]`` (time-major fold), one call runs all steps.
        ``'s'``: input ``[B, ...]``, one call is one time step, state persists.
    store_v
        Keep ``h_seq`` (potential before firing) and ``v_seq`` (after reset) of the
        last multi-step call, in the folded layout, for inspection.
    backend
        Multi-step implementation: ``'fused'`` (default) runs one fused kernel for all
        time steps where :meth:`fused_supported` says it applies and the Python loop
        elsewhere; ``'torch'`` always runs the Python loop.
    """

    def __init__(
        self,
        T: int | None = None,
        v_threshold: float = 1.0,
        v_reset: float = 0.0,
        detach_reset: bool = False,
        surrogate: SurrogateFunction | None = None,
        step_mode: StepMode = "m",
        store_v: bool = False,
        backend: Backend = "fused",
    ) -> None:
        super().__init__()
        if T is not None and (not isinstance(T, int) or T < 1):
            raise ConfigError(f"T must be a positive int, got {T!r}")
        self.T = T
        self.v_threshold = float(v_threshold)
        self.v_reset = float(v_reset)
        self.detach_reset = detach_reset
        self.surrogate = surrogate if surrogate is not None else ATanSurrogate()
        self.step_mode = step_mode
        self.backend = backend
        self.store_v = store_v
        self.v: Tensor | None = None
        self.h_seq: Tensor | None = None
        self.v_seq: Tensor | None = None
        self._step = 0  # time step of the next single-step call
        # [C, T] 0/1: channel c may fire at step t (temporal pruning); None: always. Channel-first,
        # so that removing channels (speedup) slices it like any per-channel buffer.
        self.register_buffer("time_mask", None)

    # -- step mode -------------------------------------------------------------------
    @property
    def step_mode(self) -> StepMode:
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        if value not in ("s", "m"):
            raise ConfigError(f"step_mode must be 's' (single step) or 'm' (multi step), got {value!r}")
        self._step_mode: StepMode = value  # type: ignore[assignment]

    @property
    def backend(self) -> Backend:
        """``'fused'`` or ``'torch'`` (see the class docstring)."""
        return getattr(self, "_backend", "fused")  # modules pickled before backends existed

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {value!r}")
        self._backend: Backend = value

    @property
    def steps_per_call(self) -> int:
        """Time steps carried by one call's input/output (``T`` or 1)."""
        if self.step_mode == "s":
            return 1
        if self.T is None:
            raise ConfigError(
                f"{type(self).__name__} is in multi-step mode but T is not set; "
                "pass T=... or call nni_dpap.snn.set_time_steps(model, T)"
            )
        return self.T

    def extra_repr(self) -> str:
        return (
            f"T={self.T}, v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
            f"detach_reset={self.detach_reset}, step_mode={self.step_mode!r}"
        )

    # -- template --------------------------------------------------------------------
    def neuronal_charge(self, v: Tensor, x: Tensor) -> Tensor:
        raise NotImplementedError

    def neuronal_fire(self, h: Tensor) -> Tensor:
        return self.surrogate(h - self.v_threshold)

    def neuronal_reset(self, h: Tensor, spike: Tensor) -> Tensor:
        s = spike.detach() if self.detach_reset else spike
        return h * (1.0 - s) + self.v_reset * s

    def reset(self) -> None:
        """Forget the membrane state (single-step mode) and stored sequences."""
        if self.v is None and self.h_seq is None and self.v_seq is None and self._step == 0:
            return  # (nothing to forget; nn.Module's __setattr__ is slow and this runs on every batch)
        self.v = None
        self.h_seq = None
        self.v_seq = None
        self._step = 0

    def set_time_mask(self, mask: Tensor | None) -> None:
        """Silence channel ``c`` at time step ``t`` wherever ``mask[c, t] == 0`` (``None``: no mask).

        A silenced neuron does not fire at that step (and is therefore not reset by a
        spike); its membrane keeps integrating.
        """
        if mask is not None and mask.dim() != 2:
            raise ShapeError(f"time_mask must be [channels, T], got shape {tuple(mask.shape)}")
        self.time_mask = None if mask is None else mask.detach().to(torch.float32).clone()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        key = prefix + "time_mask"
        if key in state_dict:  # the buffer's shape is only known once a mask was set: take the saved one
            self.time_mask = state_dict[key].detach().clone()
        elif self.time_mask is not None:
            self.time_mask = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def _gate(self, spike: Tensor, t: int) -> Tensor:
        if self.time_mask is None:
            return spike
        if t >= self.time_mask.shape[1] or spike.dim() < 2 or spike.shape[1] != self.time_mask.shape[0]:
            raise ShapeError(
                f"{type(self).__name__} has a time mask for {self.time_mask.shape[0]} channels and "
                f"{self.time_mask.shape[1]} steps but got step {t} of an input with shape {tuple(spike.shape)}"
            )
        gate = self.time_mask[:, t].to(spike.dtype)
        return spike * gate.view(1, -1, *([1] * (spike.dim() - 2)))

    # -- forward ---------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self.step_mode == "s":
            return self._single_step(x)
        return self._multi_step(x)

    def _single_step(self, x: Tensor) -> Tensor:
        if self.v is None:
            self.v = torch.full_like(x, self.v_reset)
        elif self.v.shape != x.shape:
            raise ShapeError(
                f"{type(self).__name__} in single-step mode holds a state of shape {tuple(self.v.shape)} "
                f"but got input {tuple(x.shape)}: reset the network between batches "
                "(nni_dpap.reset_net(model) or install nni_dpap.auto_reset(model) once)"
            )
        h = self.neuronal_charge(self.v, x)
        spike = self._gate(self.neuronal_fire(h), self._step)
        self._step += 1
        self.v = self.neuronal_reset(h, spike)
        return spike

    def _multi_step(self, x: Tensor) -> Tensor:
        T = self.steps_per_call
        if x.dim() == 0 or x.shape[0] % T != 0:
            raise ShapeError(
                f"{type(self).__name__} expects a time-major folded input [T*B, ...] with T={T}, "
                f"got shape {tuple(x.shape)}; encode static inputs with nni_dpap.snn.DirectEncoder(T)"
            )
        if self.backend == "fused" and self.fused_supported(x):
            result = self._fused_multi_step(x, T)
            if result is not None:
                return result
        return self._loop_multi_step(x, T)

    def _loop_multi_step(self, x: Tensor, T: int) -> Tensor:
        xs = x.reshape(T, x.shape[0] // T, *x.shape[1:])
        v = torch.full_like(xs[0], self.v_reset)
        spikes, hs, vs = [], [], []
        for t in range(T):
            h = self.neuronal_charge(v, xs[t])
            s = self._gate(self.neuronal_fire(h), t)
            v = self.neuronal_reset(h, s)
            spikes.append(s)
            if self.store_v:
                hs.append(h.detach())
                vs.append(v.detach())
        if self.store_v:
            self.h_seq = torch.cat(hs, 0)
            self.v_seq = torch.cat(vs, 0)
        return torch.cat(spikes, 0)

    # -- fused backend ---------------------------------------------------------------
    def _fused_charge(self) -> bool:
        """Whether ``neuronal_charge`` is one the fused kernel implements (see :meth:`_fused_decay`)."""
        return False

    def _fused_decay(self) -> tuple[float | None, Tensor | None]:
        """``(tau, None)`` for LIF's ``/ tau`` or ``(None, k)`` for PLIF's ``* k`` (``k = sigmoid(w)``)."""
        raise NotImplementedError

    def fused_supported(self, x: Tensor) -> bool:
        """Whether a multi-step call on ``x`` can run the fused kernel (else the Python loop runs).

        It can for :class:`LIFNeuron` and :class:`PLIFNeuron` (and subclasses that do not override
        ``neuronal_charge``, ``neuronal_fire``, ``neuronal_reset`` or ``_gate``) with an
        :class:`ATanSurrogate` or :class:`SigmoidSurrogate` in spiking mode, a scalar PLIF ``w``, a
        time mask matching ``x``, on a plain float32/float64 CPU tensor or a floating-point CUDA tensor,
        outside tracing and ``torch.compile``. Whether the kernel could be built is checked separately
        (on first use).
        """
        cls = type(self)
        if (cls.neuronal_fire is not BaseNeuron.neuronal_fire or cls.neuronal_reset is not BaseNeuron.neuronal_reset
                or cls._gate is not BaseNeuron._gate):
            return False
        if type(self.surrogate) not in _FUSED_SURROGATES or not self.surrogate.spiking:
            return False
        if not (fused.plain_cpu_tensor(x) or fused_triton.supports(x)):
            return False
        return self._fused_mask_fits(x) and self._fused_charge()

    def _fused_mask_fits(self, x: Tensor) -> bool:
        mask = self.time_mask
        if mask is None:
            return True
        # otherwise the loop raises the ShapeError that explains the mismatch
        return x.dim() >= 2 and x.shape[1] == mask.shape[0] and mask.shape[1] >= self.steps_per_call

    def fused_config(self, T: int) -> tuple[fused.FusedConfig, Tensor | None]:
        """The kernel's settings for ``T`` steps and PLIF's decay ``sigmoid(w)`` (``None`` for LIF).

        Only meaningful where :meth:`fused_supported` holds.
        """
        tau, k = self._fused_decay()
        cfg = fused.FusedConfig(T=T, v_threshold=self.v_threshold, v_reset=self.v_reset,
                                detach_reset=self.detach_reset, surrogate=_FUSED_SURROGATES[type(self.surrogate)],
                                alpha=self.surrogate.alpha, tau=tau)
        return cfg, k

    def _fused_multi_step(self, x: Tensor, T: int) -> Tensor | None:
        cfg, k = self.fused_config(T)
        result = None
        if fused.plain_cpu_tensor(x):
            result = fused.lif_multi_step(x, cfg, k, self.time_mask, need_h=self.store_v)
        if result is None and fused_triton.supports(x):
            result = fused_triton.lif_multi_step(x, cfg, k, self.time_mask, need_h=self.store_v)
        if result is None:
            return None
        spikes, h = result
        if self.store_v:
            assert h is not None
            with torch.no_grad():
                s = spikes.detach()
                self.h_seq = h.detach()
                self.v_seq = h * (1.0 - s) + self.v_reset * s  # BaseNeuron.neuronal_reset, as the loop stores it
        return spikes


class LIFNeuron(BaseNeuron):
    """Leaky integrate-and-fire neuron.

    ``H = V + (X - (V - V_reset)) / tau``; with ``tau = 2`` and ``V_reset = 0`` this is
    BrainCog's ``LIFNode`` (``u <- u + (x - u) / 2``).

    Parameters
    ----------
    tau
        Membrane time constant (> 1 keeps the update a contraction).
    **kwargs
        See :class:`BaseNeuron`.
    """

    def __init__(self, T: int | None = None, tau: float = 2.0, **kwargs) -> None:
        super().__init__(T, **kwargs)
        if not tau >= 1.0:
            raise ConfigError(f"tau must be >= 1, got {tau!r}")
        self.tau = float(tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}, " + super().extra_repr()

    def neuronal_charge(self, v: Tensor, x: Tensor) -> Tensor:
        return v + (x - (v - self.v_reset)) / self.tau

    def _fused_charge(self) -> bool:
        return type(self).neuronal_charge is LIFNeuron.neuronal_charge

    def _fused_decay(self) -> tuple[float | None, Tensor | None]:
        return self.tau, None


class PLIFNeuron(BaseNeuron):
    """Parametric LIF (Fang et al., 2021): ``1 / tau = sigmoid(w)`` with a learnable ``w``.

    ``H = V + (X - (V - V_reset)) * sigmoid(w)``, ``w`` initialised to
    ``-log(init_tau - 1)`` so that ``tau = init_tau`` at the start.

    Parameters
    ----------
    init_tau
        Initial time constant (> 1).
    **kwargs
        See :class:`BaseNeuron`.
    """

    def __init__(self, T: int | None = None, init_tau: float = 2.0, **kwargs) -> None:
        super().__init__(T, **kwargs)
        if not init_tau > 1.0:
            raise ConfigError(f"init_tau must be > 1, got {init_tau!r}")
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    @property
    def tau(self) -> float:
        return float(1.0 / torch.sigmoid(self.w.detach()))

    def extra_repr(self) -> str:
        return f"tau={self.tau:.4g} (learnable), " + super().extra_repr()

    def neuronal_charge(self, v: Tensor, x: Tensor) -> Tensor:
        return v + (x - (v - self.v_reset)) * torch.sigmoid(self.w)

    def _fused_charge(self) -> bool:
        return type(self).neuronal_charge is PLIFNeuron.neuronal_charge and self.w.numel() == 1

    def _fused_decay(self) -> tuple[float | None, Tensor | None]:
        return None, torch.sigmoid(self.w).reshape(())


def set_backend(model: nn.Module, backend: Backend) -> None:
    """Set the multi-step ``backend`` (``'fused'`` or ``'torch'``) of every nni-dpap neuron in ``model``."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    for module in model.modules():
        if isinstance(module, BaseNeuron):
            module.backend = backend
