"""Halting methods as objects: the base class, the registry and the per-forward record.

A :class:`HaltingMethod` owns everything that differs between halting methods: its knobs and their validation,
the training-time behaviour (a dense mixture over every unit, or a sampled path), the eval stop rule (take the
state where a row stops, or accumulate a weighted sum), its cost / loss term, and whether it has a threshold.
:class:`~pact_zoo.halting.AdaptiveStage` runs one compact loop and one dense loop and asks the method at every
unit; it never compares method names. A new method is one module that subclasses :class:`HaltingMethod` and calls
:func:`register_halting_method` (from inside or outside the package).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Optional

import numpy
import torch
from torch import nn

__all__ = [
    "HALTING_METHODS", "HaltingMethod", "HaltingRecord", "Knob", "Mixture", "OVER_TIME_TERMS", "StopDecision",
    "get_halting_method", "register_halting_method", "check_number", "check_choice", "check_threshold",
    "logit_threshold", "float32",
]


# --------------------------------------------------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------------------------------------------------
def check_number(minimum: Optional[float] = None, maximum: Optional[float] = None, *, min_open: bool = False,
                 max_open: bool = False, optional: bool = False) -> Callable[[str, Any], Any]:
    """A validator for a real-valued knob in [minimum, maximum] (open ends where asked); returns a float."""

    def check(name: str, value: Any) -> Optional[float]:
        if optional and value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and minimum is not None:
            ok = value > minimum if min_open else value >= minimum
        if ok and maximum is not None:
            ok = value < maximum if max_open else value <= maximum
        if not ok:
            low = "(-inf" if minimum is None else ("(" if min_open else "[") + f"{minimum:g}"
            high = "inf)" if maximum is None else f"{maximum:g}" + (")" if max_open else "]")
            raise ValueError(f"{name} must be a finite number in {low}, {high}{' or None' if optional else ''}, "
                             f"got {value!r}")
        return float(value)

    return check


def check_choice(*choices: str) -> Callable[[str, Any], str]:
    """A validator for a knob that takes one of ``choices``."""

    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        return value

    return check


#: Thresholds of deterministic stop rules: h_n >= threshold, threshold in (0, 1]; 1.0 never stops (full depth).
check_threshold = check_number(0.0, 1.0, min_open=True)


def logit_threshold(threshold: float) -> float:
    """logit(threshold): ``sigmoid(a) >= t`` is evaluated as ``a >= logit(t)`` (no sigmoid; ``t = 1`` -> +inf, so a
    threshold of 1.0 runs every unit even where a float32 sigmoid rounds to 1)."""
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold) - math.log1p(-threshold)


def float32(value: float) -> float:
    """``value`` rounded to float32, as a comparison of a float32 tensor with the Python number ``value`` rounds it
    (``logits >= value`` compares ``logits >= float32(value)``)."""
    return float(numpy.float32(value))


@dataclass(frozen=True)
class Knob:
    """One knob of a halting method: its default, a validator ``check(name, value) -> value`` and a short doc."""

    default: Any
    check: Callable[[str, Any], Any]
    doc: str = ""


# --------------------------------------------------------------------------------------------------------------------
# What a method hands back to the stage
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Mixture:
    """Dense-path result: ``weights`` ``[B, L]`` over the unit outputs (rows sum to 1), ``units_executed`` ``[B]``
    long, ``cost`` ``[B]`` float (what ``tau`` multiplies) or None, ``log_prob`` ``[B]`` or None, and ``terms``:
    extra loss terms (scalars, already weighted) such as an entropy bonus."""

    weights: torch.Tensor
    units_executed: torch.Tensor
    cost: Optional[torch.Tensor]
    log_prob: Optional[torch.Tensor] = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class StopDecision:
    """Compact-path decision after one unit for the ``A`` running rows: ``stop`` ``[A]`` bool, and for methods
    that accumulate (``accumulates = True``) the weight ``[A]`` of this unit's state in the output."""

    stop: torch.Tensor
    weight: Optional[torch.Tensor] = None


#: How :meth:`HaltingRecord.over_time` combines the per-step loss terms of a recurrent layer.
OVER_TIME_TERMS = ("sum", "mean")


@dataclass
class HaltingRecord:
    """What one forward of an adaptive stage did: the one record that losses and reports read.

    Attributes:
        units_executed: ``[B]`` long units run per sample, or ``[B, T]`` when the stage ran T times per sample
            (a recurrent model: one application per time step, 0 where a step was padding).
        cost: ``[B]`` float per-sample cost that ``tau`` multiplies (summed over applications), or None.
        log_prob: ``[B]`` log-probability of the sampled halting decisions (sampled-path methods), or None.
        num_units: L, units of the stage.
        method: the method that produced the record (it computes the loss term).
        terms: method-specific scalars for the loss (e.g. regularisers), already reduced over the batch.
        touch: a zero-valued scalar that depends on every parameter of the stage, or None. Sampled-path training
            skips units no sample reached; adding it to the loss gives every parameter a (zero) gradient, which
            DistributedDataParallel needs.
        heads_ran: True when the stage's heads ran after every executed unit but the last (the report counts their
            FLOPs); False for full, truncated and anytime forwards.
        weights: ``[B, L]`` the method's weights over the unit outputs (dense path), or None.
        unit_outputs: the L unit outputs ``[B, ...]`` of a dense forward, kept only where the stage is asked to
            (``AdaptiveStage.keep_unit_outputs``), else None.
    """

    units_executed: torch.Tensor
    cost: Optional[torch.Tensor]
    num_units: int
    method: Optional["HaltingMethod"] = None
    log_prob: Optional[torch.Tensor] = None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    touch: Optional[torch.Tensor] = None
    heads_ran: bool = False
    weights: Optional[torch.Tensor] = None
    unit_outputs: Optional[list[torch.Tensor]] = None

    @property
    def batch_size(self) -> int:
        return self.units_executed.shape[0]

    @classmethod
    def over_time(cls, steps: list[tuple[Optional[torch.Tensor], "HaltingRecord"]], batch_size: int,
                  terms: str = "sum") -> "HaltingRecord":
        """One record for a stage applied once per time step (a recurrent layer).

        Args:
            steps: per time step, ``(rows, record)``: ``rows`` None when every row of the batch ran, else the
                ``[B_t]`` rows that did (padding rows run nothing); ``record`` the stage's record of that step.
            batch_size: B.
            terms: how the per-step loss terms (PACT's entropy bonus, policy gradient's regularisers) combine:
                ``"sum"`` over the steps (a term keeps its ratio to the per-step cost ``tau`` whatever the sequence
                length) or ``"mean"`` over them (one term per sequence, as the task loss of a sequence label;
                :data:`OVER_TIME_TERMS`).

        Returns:
            units ``[B, T]`` (0 where a row did not run); cost and log-prob ``[B]`` summed over the steps (Graves
            2016 eq. 11: the ponder cost of a sequence is the sum of its steps' costs); the loss terms as ``terms``
            says.
        """
        if terms not in OVER_TIME_TERMS:
            raise ValueError(f"terms must be one of {OVER_TIME_TERMS}, got {terms!r}")
        first = steps[0][1]
        device = first.units_executed.device
        units = torch.zeros(batch_size, len(steps), dtype=torch.long, device=device)
        sums: dict[str, Optional[torch.Tensor]] = {"cost": None, "log_prob": None}
        summed: dict[str, torch.Tensor] = {}
        for t, (rows, record) in enumerate(steps):
            if rows is None:
                units[:, t] = record.units_executed
            else:
                units[:, t].index_copy_(0, rows, record.units_executed)
            for key in sums:
                value = getattr(record, key)
                if value is None:
                    continue
                value = value.float()
                if rows is not None:
                    value = value.new_zeros(batch_size).index_add(0, rows, value)
                sums[key] = value if sums[key] is None else sums[key] + value
            for key, term in record.terms.items():
                summed[key] = summed.get(key, 0.0) + term
        if terms == "mean":
            summed = {key: term / len(steps) for key, term in summed.items()}
        touch = next((record.touch for _, record in steps if record.touch is not None), None)
        return cls(units_executed=units, cost=sums["cost"], num_units=first.num_units, method=first.method,
                   log_prob=sums["log_prob"], terms=summed, touch=touch,
                   heads_ran=any(record.heads_ran for _, record in steps))

    @property
    def total_units(self) -> torch.Tensor:
        """``[B]`` units run per sample, summed over applications."""
        units = self.units_executed
        return units.sum(dim=1) if units.dim() == 2 else units


# --------------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------------
class _MethodRegistry(Mapping):
    """Name -> :class:`HaltingMethod` subclass. ``list(HALTING_METHODS)`` gives the registered names (live)."""

    def __init__(self) -> None:
        self._methods: dict[str, type[HaltingMethod]] = {}

    def __getitem__(self, name: str) -> type["HaltingMethod"]:
        return self._methods[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)

    def __repr__(self) -> str:
        return f"HALTING_METHODS({', '.join(self._methods)})"


#: The registered halting methods: a live mapping name -> class; ``tuple(HALTING_METHODS)`` lists the names.
HALTING_METHODS = _MethodRegistry()


def register_halting_method(cls: type["HaltingMethod"]) -> type["HaltingMethod"]:
    """Register a :class:`HaltingMethod` subclass under ``cls.name`` (usable as a class decorator).

    Re-registering a name replaces the previous class (so that reloading a module works).
    """
    if not (isinstance(cls, type) and issubclass(cls, HaltingMethod)):
        raise TypeError(f"register_halting_method expects a HaltingMethod subclass, got {cls!r}")
    if not (isinstance(cls.name, str) and cls.name.isidentifier()):
        raise ValueError(f"{cls.__name__}.name must be an identifier-like string, got {cls.name!r}")
    HALTING_METHODS._methods[cls.name] = cls
    return cls


def resolve_method(method: Any, knobs: Optional[Mapping[str, Any]] = None) -> tuple[Any, dict[str, Any]]:
    """A method given as a registered name, a registered :class:`HaltingMethod` subclass or an instance of one, as
    ``(name, knobs)``: what a model's config saves. An instance's knob values join ``knobs`` (the same knob given
    both ways with different values raises ValueError); a name passes through unchecked (:func:`get_halting_method`
    checks it)."""
    knobs = dict(knobs or {})
    if isinstance(method, HaltingMethod):
        for key, value in method.knob_values().items():
            if key in knobs and knobs[key] != value:
                raise ValueError(f"method {method!r} has {key}={value!r}, and {key}={knobs[key]!r} was given too; "
                                 f"give the knob once")
            knobs[key] = value
        method_cls: type = type(method)
    elif isinstance(method, type) and issubclass(method, HaltingMethod):
        method_cls = method
    else:
        return method, knobs
    if HALTING_METHODS._methods.get(method_cls.name) is not method_cls:
        raise ValueError(f"method {method_cls.__name__} is not registered: decorate the class with "
                         f"@pact_zoo.register_halting_method (a saved model names its method)")
    return method_cls.name, knobs


def get_halting_method(name: str) -> type["HaltingMethod"]:
    """The registered class of ``name``; ValueError that lists the registered names otherwise."""
    try:
        return HALTING_METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"method must be one of the registered halting methods {tuple(HALTING_METHODS)}, "
                         f"got {name!r}") from None


# --------------------------------------------------------------------------------------------------------------------
# Base class
# --------------------------------------------------------------------------------------------------------------------
class HaltingMethod:
    """How a stage of L units decides, per sample, how many units run.

    Class attributes a subclass sets:
        name: registry name.
        knobs: ``{knob: Knob}``; instances get one attribute per knob.
        uses_heads: False for methods that never halt (no halting heads, every unit runs).
        reads_exits: the stage's heads are the model's *exit classifiers* (``[A, C]`` class logits per row, e.g. the
            early-exit rules of :mod:`pact_zoo.halting.exits`) instead of learned halting heads; the method learns no
            head of its own, and a family without exit classifiers refuses it.
        accumulates: the output is sum_n p_n x_n over the units run (ACT) instead of the state where a row stops.
        dense_training: training runs every unit for every row and mixes them (:meth:`mixture`); False: training
            runs the compact loop with sampled stops (:meth:`decide` in ``"sample"`` mode), so it saves compute.
        anytime_training: training forwards run the stage's anytime path (a uniform depth per row, no head, no
            cost): for rules that learn nothing and need every exit trained (the early-exit rules).
        needs_task_loss: :meth:`loss` needs the per-sample task loss (REINFORCE).
        cost_knob: the knob that weighs the record's ``cost`` in the loss (``"tau"``), or None when the method has no
            cost term; :attr:`cost_weight` reads it.
        paper: the paper the method comes from (shown in reports and docs).
        stochastic: the compact loop can sample the stops (``"sample"`` mode) instead of the deterministic rule.

    The stage calls :meth:`mixture` on the dense path (training of dense methods, masked eval, profiling) and
    :meth:`start`, :meth:`decide`, :meth:`finish` on the compact path (eval of every method, sampled training).
    """

    name: ClassVar[str] = ""
    knobs: ClassVar[dict[str, Knob]] = {}
    uses_heads: ClassVar[bool] = True
    reads_exits: ClassVar[bool] = False
    accumulates: ClassVar[bool] = False
    dense_training: ClassVar[bool] = True
    anytime_training: ClassVar[bool] = False
    needs_task_loss: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    cost_knob: ClassVar[Optional[str]] = "tau"
    paper: ClassVar[str] = ""

    def __init__(self, **knobs: Any) -> None:
        for key, value in self.validate_knobs(knobs).items():
            setattr(self, key, value)

    # -- knobs ---------------------------------------------------------------------------------------------------------
    @classmethod
    def validate_knobs(cls, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults filled in and every value checked; an unknown knob raises ValueError naming the method's knobs."""
        unknown = sorted(set(knobs) - set(cls.knobs))
        if unknown:
            raise ValueError(f"halting method {cls.name!r} has no knob {', '.join(map(repr, unknown))}; its knobs: "
                             f"{', '.join(cls.knobs) or 'none'}")
        return {key: knob.check(key, knobs.get(key, knob.default)) for key, knob in cls.knobs.items()}

    def set_knob(self, key: str, value: Any) -> None:
        """Change one knob after construction (validated)."""
        if key not in self.knobs:
            raise ValueError(f"halting method {self.name!r} has no knob {key!r}; its knobs: "
                             f"{', '.join(self.knobs) or 'none'}")
        setattr(self, key, self.knobs[key].check(key, value))

    def knob_values(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.knobs}

    @property
    def cost_weight(self) -> float:
        """The weight of the record's ``cost`` in the loss: the value of :attr:`cost_knob` (0 without one)."""
        return float(getattr(self, self.cost_knob)) if self.cost_knob in self.knobs else 0.0

    @property
    def needs_rollout(self) -> bool:
        """True when training needs the self-critical baseline forward (:func:`~pact_zoo.halting.
        self_critical_baseline`); False by default."""
        return False

    @property
    def has_threshold(self) -> bool:
        """True when the eval rule has a ``threshold`` knob (the budget knob of :func:`~pact_zoo.set_threshold`)."""
        return "threshold" in self.knobs

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in self.knob_values().items())
        return f"{type(self).__name__}({knobs})"

    def for_stage(self, num_units: int) -> "HaltingMethod":
        """The method a stage of ``num_units`` units uses (called once by the stage). Default: ``self``; a method whose
        rule depends on the stage's depth returns a bound copy."""
        return self

    # -- learnable state -----------------------------------------------------------------------------------------------
    def make_state(self) -> Optional[nn.Module]:
        """Parameters the method learns besides the heads (e.g. a learned baseline), owned by the stage; or None."""
        return None

    # -- dense path ----------------------------------------------------------------------------------------------------
    def mixture(self, halting_logits: torch.Tensor, training: bool) -> Mixture:
        """Weights over the L unit outputs from the ``[B, L-1]`` halting logits of every head."""
        raise NotImplementedError

    def rule_mixture(self, halting_logits: torch.Tensor) -> Mixture:
        """The deterministic eval rule (:meth:`decide` in ``"greedy"`` mode) applied to every row at once: one-hot
        weights on the unit where each row stops. ``halting_logits``: ``[B, L-1]`` (or ``[B, L-1, C]`` exit logits).
        A method whose rule is :meth:`decide` alone can return this from :meth:`mixture` in eval."""
        batch_size, num_heads = halting_logits.shape[0], halting_logits.shape[1]
        device = halting_logits.device
        carry = self.start(batch_size, device, "greedy")
        steps = torch.full((batch_size,), num_heads + 1, dtype=torch.long, device=device)
        running = torch.ones(batch_size, dtype=torch.bool, device=device)
        log: dict[str, list] = {}
        for n in range(num_heads):
            stop = self.decide(n, halting_logits[:, n], carry, "greedy", log).stop & running
            steps = torch.where(stop, torch.full_like(steps, n + 1), steps)
            running = running & ~stop
        weights = torch.nn.functional.one_hot(steps - 1, num_heads + 1).to(torch.float32)
        return Mixture(weights=weights, units_executed=steps, cost=steps.to(torch.float32))

    # -- compact path --------------------------------------------------------------------------------------------------
    def start(self, batch_size: int, device: torch.device, mode: str) -> dict[str, torch.Tensor]:
        """Per-row carry ``{name: [B] tensor}`` of the compact loop; the stage compacts it with the rows.
        ``mode`` is ``"greedy"`` (the deterministic eval rule) or ``"sample"`` (sampled-path training)."""
        return {}

    def decide(self, index: int, logits: torch.Tensor, carry: dict[str, torch.Tensor], mode: str,
               log: dict[str, list]) -> StopDecision:
        """Stop decision for the ``A`` running rows after unit ``index`` (0-based, < L-1) from their ``[A]``
        halting logits. May replace entries of ``carry`` (``[A]`` tensors) and append batch-level statistics to
        ``log`` (read back by :meth:`terms`)."""
        raise NotImplementedError

    def lone_row_threshold(self, mode: str) -> Optional[float]:
        """The halting logit at and above which a row stops, for a rule that in ``mode`` is exactly ``stop = logits
        >= c`` on the float32 logits with no carry (PACT and policy gradient in ``"greedy"`` mode): c, already rounded
        as the tensor comparison rounds it (:func:`float32`). The stage then decides a lone running row with one
        Python comparison instead of tensor operators. None (the default): the stage calls :meth:`decide`."""
        return None

    def last_weight(self, carry: dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
        """Accumulating methods: ``[A]`` weight of the last unit's state for the rows that reach it."""
        return None

    def finish(self, units: int, carry: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-row record values of the ``rows`` (local indices) that stop after ``units`` units: ``cost`` ``[H]``
        and, for sampled paths, ``log_prob`` ``[H]``. Default cost: the units run."""
        return {"cost": torch.full((rows.shape[0],), float(units), device=rows.device)}

    def terms(self, log: dict[str, list], rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch-level loss terms (scalars) from what :meth:`decide` logged during sampled training and the
        per-row values of :meth:`finish` (``[B]`` each); none by default."""
        return {}

    # -- loss ----------------------------------------------------------------------------------------------------------
    def loss(self, record: HaltingRecord, task_loss: Optional[torch.Tensor] = None,
             baseline_loss: Optional[torch.Tensor] = None, cost_scale: float = 1.0) -> torch.Tensor:
        """The stage's term of :func:`~pact_zoo.halting_loss`, a scalar. Default: ``cost_scale * tau * mean(cost)``
        plus the record's extra terms.

        Args:
            record: the stage's record of the forward.
            task_loss: ``[B]`` per-sample task loss of the same forward (methods with ``needs_task_loss``).
            baseline_loss: ``[B]`` per-sample loss of a baseline path (self-critical REINFORCE), or None.
            cost_scale: multiplies ``tau`` (the training loop's tau warm-up).
        """
        total = record.units_executed.new_zeros((), dtype=torch.float32)
        if record.cost is not None:
            total = total + cost_scale * self.cost_weight * record.cost.float().mean()
        for term in record.terms.values():
            total = total + term
        if record.touch is not None:
            total = total + record.touch
        return total
