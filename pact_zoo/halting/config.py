"""HaltingConfig: the halting method and its knobs, validated once and handed down whole to every stage."""
from __future__ import annotations

import math
from typing import Any

from .act import ACTMethod
from .deprecation import renamed_kwarg
from .exits import ConfidenceExit, EntropyExit, PatienceExit
from .method import HALTING_METHODS, HaltingMethod, check_threshold, get_halting_method, resolve_method
from .none import NoHalting
from .pact import COST_ESTIMATORS, PACTMethod
from .policy_gradient import PolicyGradientMethod

__all__ = ["HaltingConfig", "HALTING_METHODS", "COST_ESTIMATORS", "BUILTIN_METHODS", "validate_threshold", "resolve_method",
           "DEFAULT_HALTING_BIAS_INIT"]

#: The methods that ship with pact_zoo (registered on import); users add theirs with ``register_halting_method``.
BUILTIN_METHODS = (PACTMethod, ACTMethod, PolicyGradientMethod, ConfidenceExit, EntropyExit, PatienceExit, NoHalting)
#: Initial bias of every halting head (SACT: -3, so that every unit runs at the start of training).
DEFAULT_HALTING_BIAS_INIT = -3.0


def validate_threshold(threshold: Any) -> float:
    """Return ``threshold`` as float, or raise ValueError unless it is a number in (0, 1]."""
    return check_threshold("threshold", threshold)


class HaltingConfig:
    """A halting method's name and knobs, plus the heads' bias init: what a model hands to its stages.

    Args:
        method: a registered method name (``pact_zoo.halting.HALTING_METHODS``), class, or an instance of one (its
            knob values are the knobs).
        halting_bias_init: initial bias of every halting head.
        **knobs: the method's knobs (e.g. PACT: ``tau``, ``temperature``, ``threshold``, ``cost_estimator``);
            missing ones take the method's defaults, unknown ones raise ValueError naming the method's knobs.

    Knobs read as attributes (``config.tau``); :meth:`to_dict` gives the flat ``{method, halting_bias_init,
    **knobs}`` a model's kwargs take.
    """

    def __init__(self, method: str | HaltingMethod | type[HaltingMethod] = "pact",
                 halting_bias_init: float = DEFAULT_HALTING_BIAS_INIT, **knobs: Any) -> None:
        method, knobs = resolve_method(method, knobs)
        self.method_cls: type[HaltingMethod] = get_halting_method(method)
        if not (isinstance(halting_bias_init, (int, float)) and not isinstance(halting_bias_init, bool)
                and math.isfinite(halting_bias_init)):
            raise ValueError(f"halting_bias_init must be a finite number, got {halting_bias_init!r}")
        self.method = method
        self.halting_bias_init = float(halting_bias_init)
        self.knobs = self.method_cls.validate_knobs(knobs)

    def __getattr__(self, name: str) -> Any:
        knobs = self.__dict__.get("knobs", {})
        if name in knobs:
            return knobs[name]
        raise AttributeError(f"HaltingConfig of method {self.__dict__.get('method')!r} has no attribute or knob "
                             f"{name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HaltingConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return "HaltingConfig(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def set_halting_knob(self, key: str, value: Any) -> None:
        """Change one knob (validated by the method)."""
        self.knobs = self.method_cls.validate_knobs(dict(self.knobs, **{key: value}))

    def build(self) -> HaltingMethod:
        """A fresh method instance with these knobs (each stage gets its own)."""
        return self.method_cls(**self.knobs)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "halting_bias_init": self.halting_bias_init, **self.knobs}

    @staticmethod
    def read_method(method: Any, knobs: Any, kwargs: dict[str, Any], where: str) -> tuple[str, Any]:
        """``(name, knobs)`` of a model config's ``method`` field: ``halting_method``, its former name, read out of
        ``kwargs`` (DeprecationWarning); a method class or instance resolved to its registered name, its knob values
        joining ``knobs``. Raises ValueError naming ``method`` unless it is a registered method."""
        method = renamed_kwarg(kwargs, "halting_method", "method", method, "pact", where)
        if not isinstance(method, str):  # a method class or instance: its registered name and knobs
            method, knobs = resolve_method(method, knobs if isinstance(knobs, dict) else {})
        if method not in HALTING_METHODS:
            raise ValueError(f"method must be one of the registered halting methods {tuple(HALTING_METHODS)}, "
                             f"got {method!r}")
        return method, knobs

    @classmethod
    def from_kwargs(cls, method: str, kwargs: dict[str, Any]) -> "HaltingConfig":
        """Pop ``halting_bias_init`` and every registered method's knob names out of ``kwargs`` (a model's keyword
        arguments) and validate them for ``method``: a knob of another method raises a ValueError that names it."""
        return cls(method, **cls.pop_knob_kwargs(kwargs, include_bias_init=True))

    @staticmethod
    def pop_knob_kwargs(kwargs: dict[str, Any], include_bias_init: bool = False) -> dict[str, Any]:
        """Pop the entries of ``kwargs`` named like a knob of any registered method (unvalidated)."""
        names = {k for m in HALTING_METHODS.values() for k in m.knobs}
        if include_bias_init:
            names.add("halting_bias_init")
        return {k: kwargs.pop(k) for k in list(kwargs) if k in names}

    @property
    def adaptive(self) -> bool:
        """True when the method halts (the model builds halting heads)."""
        return self.method_cls.uses_heads

    @property
    def reads_exits(self) -> bool:
        """True when the method decides from the model's exit classifiers (the model builds exits, not heads)."""
        return getattr(self.method_cls, "reads_exits", False)
