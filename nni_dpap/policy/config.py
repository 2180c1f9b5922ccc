"""DPAP's configuration: rules per kind of unit, the form of the equations, presets.

Everything DPAP can be told, as one frozen :class:`DPAPConfig`, its flat
hyper-parameter names (``conv_eps``, ``linear_eta``...) for HPO and the command line,
and the two presets. Pure Python, no NNI.

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

from .._validate import check_bool, check_choice, check_float
from ..errors import ConfigError
from .rule import SurvivalRule
from .survival import Normalization, Schedule, SurvivalState, UpdateForm

__all__ = ["DPAPConfig", "LayerKind", "Accumulation", "UNIT_GROUPS", "PRESETS", "get_preset"]

LayerKind = Literal["conv", "linear", "time"]
Accumulation = Literal["epoch", "cumulative"]
Unit = Literal["neurons", "synapses", "time"]
SynapseImportance = Literal["bcm", "bcm_weight"]
SynapseCompetition = Literal["layer", "neuron"]
NeuronImportance = Literal["spine", "spine_weight"]
UnitOrder = Literal["dpap", "movement"]
#: The groups of units DPAP prunes, as named by ``alive_normalization`` (and the ``prune_*`` flags).
UNIT_GROUPS = ("conv_channels", "conv_kernels", "linear_neurons", "linear_synapses", "time")


_RULE_FIELDS = tuple(f.name for f in dataclasses.fields(SurvivalRule))
_TUPLE_FIELDS = ("percentiles", "linear_synapse_percentiles", "alive_normalization")


def _check_percentiles(name: str, percentiles: Any) -> None:
    if not isinstance(percentiles, (tuple, list)) or len(percentiles) != 2:
        raise ConfigError(f"{name} must be [lo, hi] (lo may be null for the minimum), got {percentiles!r}")
    lo = 0.0 if percentiles[0] is None else check_float(f"{name}[0]", percentiles[0])
    hi = check_float(f"{name}[1]", percentiles[1])
    if not 0 <= lo < hi <= 100:
        raise ConfigError(f"{name} must satisfy 0 <= lo < hi <= 100, got {percentiles!r}")


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
    prune_first_conv
        Whether the first conv layer (in model order) is pruned; the released code never prunes
        it (it sees the raw input and has few parameters).
    alive_normalization
        The unit groups (:data:`UNIT_GROUPS`) whose importance is normalised over the units still
        alive, so that the bar a unit must clear rises as its layer shrinks (see :class:`UpdateForm`).
    linear_synapse_percentiles
        ``(lo, hi)`` percentiles used for FC synapses instead of ``percentiles`` (``None``: the same).
    synapse_importance
        ``'bcm'``: the spine importance of Eq. (7) (paper); ``'bcm_weight'``: times the synapse's
        ``|w|`` (summed over a kernel slice), so a synapse must be both active and strong to stay.
    synapse_competition
        ``'layer'``: the synapses of a layer are ranked against each other by one Norm (paper);
        ``'neuron'``: each synapse's importance is first divided by the summed ``|importance|`` of
        its postsynaptic neuron's synapses (its share of the neuron's total), so that synapses
        compete within their neuron (heterosynaptic competition) and every neuron keeps its own
        strongest inputs. A lever, not a default (``benchmarks/README.md``, controls).
    neuron_importance
        ``'spine'``: a neuron's / channel's importance is D of Eq. (7), its trace times the summed
        BCM of its spines (paper); ``'spine_weight'``: each spine's BCM is first scaled by its
        synapse's ``|w|`` (summed over a kernel slice), so a unit must fire and hold strong
        potentiated inputs to stay.
    unit_order
        ``'dpap'``: every unit and synapse keeps its own importance (paper; the presets);
        ``'movement'`` (not the paper's rule; the library's default on top of ``braincog``,
        :mod:`nni_dpap.policy.defaults`): a layer's importance values are handed out again among its
        alive units (and its alive synapses) in the order of Movement pruning's score, ``-sum w dL/dw``
        over the optimizer steps (:mod:`nni_dpap.ordering`): DPAP decides how many go and when, the
        gradient which. (Neuron, time step) pairs keep their own order.
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
    prune_first_conv: bool = True
    alive_normalization: tuple[str, ...] = ()
    linear_synapse_percentiles: tuple[float | None, float] | None = None
    synapse_importance: SynapseImportance = "bcm"
    synapse_competition: SynapseCompetition = "layer"
    neuron_importance: NeuronImportance = "spine"
    unit_order: UnitOrder = "dpap"

    def __post_init__(self) -> None:
        check_choice("normalization", self.normalization, ["minmax", "percentile"])
        check_choice("schedule", self.schedule, ["exp", "step"])
        check_choice("accumulation", self.accumulation, ["epoch", "cumulative"])
        check_choice("synapse_importance", self.synapse_importance, ["bcm", "bcm_weight"])
        check_choice("synapse_competition", self.synapse_competition, ["layer", "neuron"])
        check_choice("neuron_importance", self.neuron_importance, ["spine", "spine_weight"])
        check_choice("unit_order", self.unit_order, ["dpap", "movement"])
        for flag in ("strict_positive", "normalize_spine_factors", "relative_schedule", "prune_conv_channels",
                     "prune_conv_kernels", "prune_linear_neurons", "prune_linear_synapses", "prune_first_conv"):
            check_bool(flag, getattr(self, flag))
        check_float("trace_tau", self.trace_tau, minimum=0.0, maximum=1.0)
        _check_percentiles("percentiles", self.percentiles)
        if self.linear_synapse_percentiles is not None:
            _check_percentiles("linear_synapse_percentiles", self.linear_synapse_percentiles)
        groups = self.alive_normalization
        if isinstance(groups, str) or not isinstance(groups, (tuple, list)) or \
                any(g not in UNIT_GROUPS for g in groups):
            raise ConfigError(f"alive_normalization must be a list of unit groups from {list(UNIT_GROUPS)}, "
                              f"got {groups!r}")
        for kind in ("conv", "linear", "time"):
            rule = getattr(self, kind)
            if rule is not None and not isinstance(rule, SurvivalRule):
                raise ConfigError(f"DPAPConfig.{kind} must be a SurvivalRule, got {type(rule).__name__}")
            if self.relative_schedule and rule is not None and not (
                0 < rule.eta <= 10 and rule.start_epoch < 1 and (rule.stop_epoch is None or rule.stop_epoch <= 1)
            ):
                raise ConfigError(
                    f"with relative_schedule=True, {kind}.eta, {kind}.start_epoch and {kind}.stop_epoch are "
                    f"fractions of the planned epochs (eta in (0, 10], start_epoch in [0, 1), stop_epoch in "
                    f"(start_epoch, 1]), got eta={rule.eta}, start_epoch={rule.start_epoch}, "
                    f"stop_epoch={rule.stop_epoch}"
                )

    # -- access ------------------------------------------------------------------------
    def rule(self, kind: LayerKind, layer_kind: Literal["conv", "linear"] = "linear") -> SurvivalRule:
        """The rule for ``kind``; ``'time'`` falls back to ``layer_kind``'s rule."""
        if kind == "time":
            return self.time if self.time is not None else getattr(self, layer_kind)
        rule: SurvivalRule = getattr(self, kind)
        return rule

    def final_epoch(self, temporal: bool = False) -> float:
        """The first epoch whose statistics change no survival value (``inf`` if pruning never stops).

        From then on the structure is final and DPAP needs no statistics; absolute schedule
        (after :meth:`resolve`).
        """
        return max(math.inf if rule.stop_epoch is None else float(rule.stop_epoch) for rule in self._rules(temporal))

    def updates_at(self, epoch: int, temporal: bool = False) -> bool:
        """Whether the statistics of ``epoch`` update some survival value (absolute schedule): ``False``
        before every rule's ``start_epoch`` and from :meth:`final_epoch` on."""
        return any(rule.start_epoch <= epoch and (rule.stop_epoch is None or epoch < rule.stop_epoch)
                   for rule in self._rules(temporal))

    def _rules(self, temporal: bool) -> list[SurvivalRule]:
        return [self.conv, self.linear] + ([self.time] if temporal and self.time is not None else [])

    @staticmethod
    def unit_group(unit: Unit, layer_kind: Literal["conv", "linear"]) -> str:
        """The :data:`UNIT_GROUPS` name of ``unit`` in a ``layer_kind`` layer, e.g. ``'conv_channels'``."""
        if unit == "time":
            return "time"
        return {("conv", "neurons"): "conv_channels", ("conv", "synapses"): "conv_kernels",
                ("linear", "neurons"): "linear_neurons", ("linear", "synapses"): "linear_synapses"}[(layer_kind, unit)]

    def update_form(self, group: str = "") -> UpdateForm:
        """The variant of Eqs. (9)-(11) this configuration evaluates for the unit group ``group``."""
        percentiles = self.percentiles
        if group == "linear_synapses" and self.linear_synapse_percentiles is not None:
            percentiles = self.linear_synapse_percentiles
        return UpdateForm(self.normalization, tuple(percentiles), self.strict_positive,  # type: ignore[arg-type]
                          self.schedule, group in self.alive_normalization)

    def survival_state(self, shape: tuple[int, ...], unit: Unit, layer_kind: Literal["conv", "linear"],
                       device: Any = None) -> SurvivalState:
        """A fresh :class:`SurvivalState` for ``unit`` (``'neurons'``, ``'synapses'``, ``'time'``) of a
        ``layer_kind`` layer (absolute schedule)."""
        kind: LayerKind = "time" if unit == "time" else layer_kind
        return SurvivalState(shape, self.rule(kind, layer_kind), self.update_form(self.unit_group(unit, layer_kind)),
                             device)

    def resolve(self, epochs: int) -> DPAPConfig:
        """Return a copy with an absolute schedule for a run of ``epochs`` epochs."""
        if not self.relative_schedule:
            return self
        if epochs < 1:
            raise ConfigError(f"epochs must be >= 1 to resolve a relative schedule, got {epochs}")

        def scale(rule: SurvivalRule | None) -> SurvivalRule | None:
            if rule is None:
                return None
            stop = None if rule.stop_epoch is None else max(round(rule.stop_epoch * epochs),
                                                             round(rule.start_epoch * epochs) + 1)
            return dataclasses.replace(rule, eta=rule.eta * epochs, start_epoch=round(rule.start_epoch * epochs),
                                       stop_epoch=stop)

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
                top[key] = tuple(value) if key in _TUPLE_FIELDS and isinstance(value, list) else value
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
        for key in _TUPLE_FIELDS:
            if isinstance(data.get(key), list):
                data[key] = tuple(data[key])
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
