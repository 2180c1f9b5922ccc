"""DPAP's adaptive pruning rule: survival functions, schedule and presets.

Pure torch, no NNI. For every prunable unit ``u`` (conv channel, conv kernel slice,
FC neuron, FC synapse, (neuron, time step) pair) DPAP keeps a survival value ``F_u``,
initialised to ``beta``. After each epoch ``e`` (from the start epoch on), with ``x``
the unit's importance:

.. math::

    \\delta = 2\\,\\mathrm{Norm}(x) - \\epsilon                                \\quad (9)

    \\Delta F = \\delta + C \\text{ if } \\delta \\ge 0 \\text{ else } \\delta   \\quad (10)

    F \\leftarrow \\gamma F + e^{-e/\\eta}\\, \\Delta F                           \\quad (11)

and the unit is pruned, permanently, once ``F < 0``. Units that are rarely the
most useful ones lose a little survival every epoch ("use it or lose it, gradually
decay"); any epoch in which a unit is above the ``eps/2`` normalised level earns it
the bonus ``C``. The schedule factor shrinks the updates, so the structure settles.

Two presets implement the paper and the released code (``../shared/dpap-spec.md``
sections 2 and 7):

================================  =============================  =====================================
aspect                            ``paper``                      ``braincog``
================================  =============================  =====================================
Norm(x)                           min-max over the layer         pnorm_{min,P75}: clip((x-min)/(P75-min))
positive branch (Eq. 10)          delta >= 0                     delta > 0
schedule                          exp(-(e - e0)/eta)             exp(-floor((e - e0)/eta))
start epoch e0                    0                              5
BCM / trace window (Eq. 6)        per epoch (reset each epoch)   cumulative since epoch 0
D factors (Eq. 7)                 raw product                    each factor min-max normalised
beta, gamma                       10, 0.999                      10, 0.999
conv: eps, C, eta                 0.65, 5, 12                    0.65, 5, 12
linear: eps, C, eta               1.5, 2, 13                     1.5, 2, 13
================================  =============================  =====================================

The paper gives no values for eps, eta and beta; the ``paper`` preset borrows the
released CIFAR-10 SNN values so that the two presets differ only in the rule.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import torch
from torch import Tensor

from .errors import ConfigError

__all__ = [
    "SurvivalRule",
    "DPAPConfig",
    "SurvivalState",
    "LayerKind",
    "normalize",
    "survival_increment",
    "schedule_factor",
    "update_survival",
    "get_preset",
    "PRESETS",
]

LayerKind = Literal["conv", "linear", "time"]
Normalization = Literal["minmax", "percentile"]
Schedule = Literal["exp", "step"]
Accumulation = Literal["epoch", "cumulative"]


# ---------------------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------------------
def normalize(
    x: Tensor,
    method: Normalization = "minmax",
    percentiles: tuple[float | None, float] = (None, 75.0),
    extra_zeros: int = 0,
) -> Tensor:
    """Map importance values of one layer into ``[0, 1]`` ("Normalized" of Eq. 9).

    Parameters
    ----------
    x
        Importance of every unit of a layer (any shape; normalised over all entries).
    method
        ``'minmax'``: ``(x - min) / (max - min)``. ``'percentile'``: percentile-clipped
        min-max ``clip((x - P_lo) / (P_hi - P_lo), 0, 1)`` as in the released code.
    percentiles
        ``(lo, hi)`` in percent for ``'percentile'``; ``lo=None`` means the minimum.
    extra_zeros
        Units that were physically removed from the layer and count with importance 0,
        exactly what they contribute while they are only masked (a masked unit is
        silent, so its trace, BCM and D are 0); this keeps a shrunk layer's scale equal
        to the masked layer's.

    Returns
    -------
    Tensor
        Same shape as ``x``; 0.5 everywhere when the range is zero.
    """
    flat = x.detach().float().flatten()
    if extra_zeros:
        flat = torch.cat([flat, flat.new_zeros(extra_zeros)])
    if method == "minmax":
        lo, hi = flat.min(), flat.max()
    elif method == "percentile":
        p_lo, p_hi = percentiles
        lo = flat.min() if p_lo is None else torch.quantile(flat, p_lo / 100.0)
        hi = torch.quantile(flat, p_hi / 100.0)
    else:
        raise ConfigError(f"unknown normalization {method!r}; use 'minmax' or 'percentile'")
    if not bool(hi > lo):
        return torch.full_like(x, 0.5, dtype=torch.float32)
    return ((x.float() - lo) / (hi - lo)).clamp_(0.0, 1.0)


def survival_increment(normalized: Tensor, eps: float, bonus: float, strict: bool = False) -> Tensor:
    """Eqs. (9)-(10): ``delta = 2 * Norm(x) - eps``; ``dF = delta + C`` where delta is positive.

    ``strict=False`` rewards ``delta >= 0`` (paper), ``strict=True`` only ``delta > 0`` (code).
    """
    delta = 2.0 * normalized - eps
    positive = delta > 0 if strict else delta >= 0
    return torch.where(positive, delta + bonus, delta)


def schedule_factor(epoch: int, eta: float, start_epoch: float = 0.0, kind: Schedule = "exp") -> float:
    """Weight of epoch ``epoch``'s update in Eq. (11); 0 before ``start_epoch``.

    ``'exp'``: ``exp(-(e - e0) / eta)`` (the paper's ``exp(-e/eta)`` for ``e0 = 0``);
    ``'step'``: ``exp(-floor((e - e0) / eta))`` (the released code).
    """
    if epoch < start_epoch:
        return 0.0
    age = (epoch - start_epoch) / eta
    if kind == "step":
        age = math.floor(age)
    elif kind != "exp":
        raise ConfigError(f"unknown schedule {kind!r}; use 'exp' or 'step'")
    return math.exp(-age)


def update_survival(value: Tensor, increment: Tensor, gamma: float, factor: float) -> Tensor:
    """Eq. (11): ``F <- gamma * F + factor * dF``."""
    return gamma * value + factor * increment


# ---------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SurvivalRule:
    """Hyper-parameters of the survival function of one kind of unit.

    Parameters
    ----------
    eps
        Decay value epsilon of Eq. (9): units whose normalised importance is below
        ``eps / 2`` lose survival.
    bonus
        The constant ``C`` of Eq. (10) added in epochs where ``delta`` is positive.
    eta
        Decay rate of the schedule in Eq. (11), in epochs (or as a fraction of the
        planned epochs when :attr:`DPAPConfig.relative_schedule` is set).
    start_epoch
        First epoch (0-based) whose statistics update ``F`` (same unit as ``eta``).
    gamma
        Multiplicative decay of ``F`` per update.
    beta
        Initial survival value.
    """

    eps: float
    bonus: float
    eta: float
    start_epoch: float = 0.0
    gamma: float = 0.999
    beta: float = 10.0

    def __post_init__(self) -> None:
        for name in ("eps", "bonus", "eta", "start_epoch", "gamma", "beta"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"SurvivalRule.{name} must be a finite number, got {value!r}")
        if self.eta <= 0:
            raise ConfigError(f"SurvivalRule.eta must be > 0, got {self.eta}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"SurvivalRule.gamma must be in (0, 1], got {self.gamma}")
        if self.start_epoch < 0:
            raise ConfigError(f"SurvivalRule.start_epoch must be >= 0, got {self.start_epoch}")
        if self.bonus < 0:
            raise ConfigError(f"SurvivalRule.bonus (C) must be >= 0, got {self.bonus}")


_RULE_FIELDS = tuple(f.name for f in dataclasses.fields(SurvivalRule))


@dataclass(frozen=True)
class DPAPConfig:
    """All of DPAP's hyper-parameters; build one with :func:`get_preset`.

    Parameters
    ----------
    name
        Preset name (informative).
    conv, linear
        Survival rules of conv units (channels, kernel slices) and FC units (neurons,
        synapses).
    time
        Survival rule of (neuron, time step) pairs; ``None`` uses the layer kind's rule.
    normalization, percentiles
        ``Norm`` of Eq. (9), see :func:`normalize`.
    strict_positive
        Positive branch of Eq. (10) for ``delta > 0`` only.
    schedule
        ``'exp'`` or ``'step'``, see :func:`schedule_factor`.
    accumulation
        ``'epoch'``: BCM and trace sums restart every epoch (Eq. 6);
        ``'cumulative'``: they accumulate from the first batch (released code).
    normalize_spine_factors
        Min-max normalise both factors of Eq. (7) before multiplying.
    trace_tau
        Decay of the spiking trace, Eq. (1).
    relative_schedule
        Interpret ``eta`` and ``start_epoch`` of every rule as fractions of the planned
        number of epochs (for short runs; ``resolve(epochs)`` turns them into epochs).
    prune_conv_channels, prune_conv_kernels, prune_linear_neurons, prune_linear_synapses
        Which kinds of units are pruned.
    """

    name: str = "custom"
    conv: SurvivalRule = field(default_factory=lambda: SurvivalRule(eps=0.65, bonus=5.0, eta=12.0))
    linear: SurvivalRule = field(default_factory=lambda: SurvivalRule(eps=1.5, bonus=2.0, eta=13.0))
    time: SurvivalRule | None = None
    normalization: Normalization = "minmax"
    percentiles: tuple[float | None, float] = (None, 75.0)
    strict_positive: bool = False
    schedule: Schedule = "exp"
    accumulation: Accumulation = "epoch"
    normalize_spine_factors: bool = False
    trace_tau: float = 0.5
    relative_schedule: bool = False
    prune_conv_channels: bool = True
    prune_conv_kernels: bool = False
    prune_linear_neurons: bool = True
    prune_linear_synapses: bool = True

    def __post_init__(self) -> None:
        if self.normalization not in ("minmax", "percentile"):
            raise ConfigError(f"normalization must be 'minmax' or 'percentile', got {self.normalization!r}")
        lo, hi = self.percentiles
        if not (0 <= (0 if lo is None else lo) < hi <= 100):
            raise ConfigError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentiles!r}")
        if self.schedule not in ("exp", "step"):
            raise ConfigError(f"schedule must be 'exp' or 'step', got {self.schedule!r}")
        if self.accumulation not in ("epoch", "cumulative"):
            raise ConfigError(f"accumulation must be 'epoch' or 'cumulative', got {self.accumulation!r}")
        if not 0 <= self.trace_tau <= 1:
            raise ConfigError(f"trace_tau must be in [0, 1], got {self.trace_tau}")
        for kind in ("conv", "linear", "time"):
            rule = getattr(self, kind)
            if rule is not None and not isinstance(rule, SurvivalRule):
                raise ConfigError(f"DPAPConfig.{kind} must be a SurvivalRule, got {type(rule).__name__}")
            if self.relative_schedule and rule is not None and not (
                0 < rule.eta <= 10 and rule.start_epoch < 1
            ):
                raise ConfigError(
                    f"with relative_schedule=True, {kind}.eta and {kind}.start_epoch are fractions of the "
                    f"planned epochs (eta in (0, 10], start_epoch in [0, 1)), got eta={rule.eta}, "
                    f"start_epoch={rule.start_epoch}"
                )

    # -- access ------------------------------------------------------------------------
    def rule(self, kind: LayerKind, layer_kind: Literal["conv", "linear"] = "linear") -> SurvivalRule:
        """The rule for ``kind``; ``'time'`` falls back to ``layer_kind``'s rule."""
        if kind == "time":
            return self.time if self.time is not None else getattr(self, layer_kind)
        return getattr(self, kind)

    def resolve(self, epochs: int) -> DPAPConfig:
        """Return a copy with an absolute schedule for a run of ``epochs`` epochs."""
        if not self.relative_schedule:
            return self
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1 to resolve a relative schedule, got {epochs}")

        def scale(rule: SurvivalRule | None) -> SurvivalRule | None:
            if rule is None:
                return None
            return dataclasses.replace(rule, eta=rule.eta * epochs, start_epoch=round(rule.start_epoch * epochs))

        return dataclasses.replace(
            self,
            conv=scale(self.conv),  # type: ignore[arg-type]
            linear=scale(self.linear),  # type: ignore[arg-type]
            time=scale(self.time),
            relative_schedule=False,
        )

    # -- flat parameters (for HPO and the command line) --------------------------------
    @classmethod
    def flat_keys(cls) -> list[str]:
        """Names accepted by :meth:`with_params`, e.g. ``conv_eps``, ``linear_eta``, ``schedule``."""
        keys = [f"{kind}_{name}" for kind in ("conv", "linear", "time") for name in _RULE_FIELDS]
        keys += [f.name for f in dataclasses.fields(cls) if f.name not in ("conv", "linear", "time")]
        return keys

    def with_params(self, params: Mapping[str, Any] | None = None, **kwargs: Any) -> DPAPConfig:
        """Return a copy with flat overrides, e.g. ``with_params(conv_eps=0.8, linear_eta=0.15)``.

        Unknown names raise :class:`ConfigError` listing the valid ones.
        """
        values = {**(params or {}), **kwargs}
        rules: dict[str, dict[str, Any]] = {"conv": {}, "linear": {}, "time": {}}
        top: dict[str, Any] = {}
        valid = set(self.flat_keys())
        for key, value in values.items():
            if key not in valid:
                raise ConfigError(f"unknown DPAP hyper-parameter {key!r}; valid names: {', '.join(sorted(valid))}")
            kind, _, name = key.partition("_")
            if kind in rules and name in _RULE_FIELDS:
                rules[kind][name] = value
            else:
                top[key] = tuple(value) if key == "percentiles" else value
        for kind, changes in rules.items():  # conv, linear, then time
            if not changes:
                continue
            base = getattr(self, kind)
            if base is None:  # the time rule starts from the (updated) linear rule's values
                base = top.get("linear", self.linear)
            top[kind] = dataclasses.replace(base, **changes)
        return dataclasses.replace(self, **top)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (round-trips through :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DPAPConfig:
        data = dict(data)
        for kind in ("conv", "linear", "time"):
            if isinstance(data.get(kind), Mapping):
                data[kind] = SurvivalRule(**data[kind])
        if "percentiles" in data:
            data["percentiles"] = tuple(data["percentiles"])
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown DPAPConfig fields {sorted(unknown)}; valid fields: {sorted(names)}")
        return cls(**data)


PRESETS: dict[str, DPAPConfig] = {
    "paper": DPAPConfig(
        name="paper",
        conv=SurvivalRule(eps=0.65, bonus=5.0, eta=12.0, start_epoch=0),
        linear=SurvivalRule(eps=1.5, bonus=2.0, eta=13.0, start_epoch=0),
        normalization="minmax",
        strict_positive=False,
        schedule="exp",
        accumulation="epoch",
        normalize_spine_factors=False,
    ),
    "braincog": DPAPConfig(
        name="braincog",
        conv=SurvivalRule(eps=0.65, bonus=5.0, eta=12.0, start_epoch=5),
        linear=SurvivalRule(eps=1.5, bonus=2.0, eta=13.0, start_epoch=5),
        normalization="percentile",
        percentiles=(None, 75.0),
        strict_positive=True,
        schedule="step",
        accumulation="cumulative",
        normalize_spine_factors=True,
    ),
}


def get_preset(name: str | DPAPConfig = "braincog", **params: Any) -> DPAPConfig:
    """A named preset (``'paper'`` or ``'braincog'``), optionally with flat overrides.

    Examples
    --------
    >>> cfg = get_preset("braincog", conv_eps=0.8, linear_eps=2.0)
    >>> cfg.conv.eps, cfg.linear.eps
    (0.8, 2.0)
    """
    if isinstance(name, DPAPConfig):
        base = name
    else:
        try:
            base = PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown DPAP preset {name!r}; choose one of {sorted(PRESETS)}") from None
    return base.with_params(params) if params else base


# ---------------------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------------------
class SurvivalState:
    """Survival values ``F`` and the permanent 0/1 mask of one group of units.

    Parameters
    ----------
    shape
        Shape of the unit group, e.g. ``(C_out,)`` for channels, ``(N_out, N_in)`` for synapses.
    rule
        Its :class:`SurvivalRule` (absolute schedule).
    config
        The :class:`DPAPConfig` supplying normalisation, branch and schedule kind.
    """

    def __init__(self, shape: tuple[int, ...], rule: SurvivalRule, config: DPAPConfig,
                 device: torch.device | str | None = None) -> None:
        self.rule = rule
        self.config = config
        self.value = torch.full(shape, float(rule.beta), device=device)
        self.mask = torch.ones(shape, dtype=torch.bool, device=device)

    def step(self, importance: Tensor, epoch: int, keep_at_least: int = 0, extra_zeros: int = 0) -> int:
        """Update ``F`` with this epoch's importance (Eqs. 9-11) and prune where ``F < 0``.

        Parameters
        ----------
        importance
            Importance of every unit, same shape as the state.
        epoch
            0-based epoch whose statistics ``importance`` summarises.
        keep_at_least
            Never let fewer than this many units survive (the ones with the highest
            ``F`` are kept); 0 disables the guard.
        extra_zeros
            Units of the layer that were removed physically (see :func:`normalize`).

        Returns
        -------
        int
            Number of units pruned by this step.
        """
        factor = schedule_factor(epoch, self.rule.eta, self.rule.start_epoch, self.config.schedule)
        if factor == 0.0:
            return 0
        norm = normalize(importance.to(self.value.device), self.config.normalization, self.config.percentiles,
                         extra_zeros)
        increment = survival_increment(norm, self.rule.eps, self.rule.bonus, self.config.strict_positive)
        self.value = update_survival(self.value, increment, self.rule.gamma, factor)
        alive_before = int(self.mask.sum())
        new_mask = self.mask & (self.value >= 0)
        if keep_at_least and int(new_mask.sum()) < min(keep_at_least, alive_before):
            ranked = torch.where(self.mask, self.value, torch.full_like(self.value, -math.inf)).flatten()
            keep = ranked.topk(min(keep_at_least, alive_before)).indices
            new_mask = new_mask.flatten()
            new_mask[keep] = True
            new_mask = new_mask.view_as(self.mask)
        self.mask = new_mask
        return alive_before - int(new_mask.sum())

    def state_dict(self) -> dict[str, Tensor]:
        return {"value": self.value.clone(), "mask": self.mask.clone()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        for key in ("value", "mask"):
            if key not in state or tuple(state[key].shape) != tuple(self.value.shape):
                raise ConfigError(
                    f"survival state {key!r} missing or of the wrong shape "
                    f"(expected {tuple(self.value.shape)}): the checkpoint does not match this model"
                )
        self.value = state["value"].to(self.value.device, torch.float32).clone()
        self.mask = state["mask"].to(self.mask.device, torch.bool).clone()
