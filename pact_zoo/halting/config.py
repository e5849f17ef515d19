"""Halting knobs shared by every adaptive model family, validated in one place."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["HaltingConfig", "HALTING_METHODS", "COST_ESTIMATORS", "validate_threshold"]

#: ``"pact"``: Figurnov et al. 2018; ``"act"``: Graves 2016 / SACT 2017; ``"none"``: every unit runs.
HALTING_METHODS = ("pact", "act", "none")
#: PACT cost term: ``"relaxed"`` = sum_n n * w_n on Concrete samples, ``"expected"`` = exact E_q[z] (DESIGN §1).
COST_ESTIMATORS = ("relaxed", "expected")

# Defaults of DESIGN §1. tau = 0.01 is the SACT README's CIFAR-10 value (pact_method.md §2.3).
DEFAULT_TAU = 0.01
DEFAULT_TEMPERATURE = 0.5
DEFAULT_THRESHOLD = 0.5
DEFAULT_ACT_EPS = 0.01
DEFAULT_HALTING_BIAS_INIT = -3.0


def validate_threshold(threshold: float) -> float:
    """Return ``threshold`` as float, or raise ValueError unless it lies in (0, 1]."""
    threshold = float(threshold)
    if not (0.0 < threshold <= 1.0):
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    return threshold


@dataclass
class HaltingConfig:
    """What an adaptive stage needs to know about halting.

    Args:
        method: ``"pact"``, ``"act"`` or ``"none"``.
        tau: cost per executed unit (PACT: prior log-scale time penalty; ACT: ponder-cost weight), >= 0.
        temperature: Concrete relaxation temperature lambda (PACT training), > 0.
        threshold: deterministic PACT rule, stop at the first unit with h_n >= threshold, in (0, 1].
        act_eps: ACT halts once the cumulative halting probability reaches 1 - act_eps, in (0, 1).
        halting_bias_init: initial bias of every halting head (SACT: -3, so all units run at first).
        cost_estimator: PACT training cost, ``"relaxed"`` (sum_n n w_n) or ``"expected"`` (E_q[z]).
    """

    method: str = "pact"
    tau: float = DEFAULT_TAU
    temperature: float = DEFAULT_TEMPERATURE
    threshold: float = DEFAULT_THRESHOLD
    act_eps: float = DEFAULT_ACT_EPS
    halting_bias_init: float = DEFAULT_HALTING_BIAS_INIT
    cost_estimator: str = "relaxed"

    def __post_init__(self) -> None:
        if self.method not in HALTING_METHODS:
            raise ValueError(f"method must be one of {HALTING_METHODS}, got {self.method!r}")
        if not (isinstance(self.tau, (int, float)) and math.isfinite(self.tau) and self.tau >= 0):
            raise ValueError(f"tau must be a finite number >= 0, got {self.tau!r}")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        self.threshold = validate_threshold(self.threshold)
        if not (isinstance(self.act_eps, (int, float)) and 0.0 < self.act_eps < 1.0):
            raise ValueError(f"act_eps must be in (0, 1), got {self.act_eps!r}")
        if not (isinstance(self.halting_bias_init, (int, float)) and math.isfinite(self.halting_bias_init)):
            raise ValueError(f"halting_bias_init must be a finite number, got {self.halting_bias_init!r}")
        if self.cost_estimator not in COST_ESTIMATORS:
            raise ValueError(f"cost_estimator must be one of {COST_ESTIMATORS}, got {self.cost_estimator!r}")
        self.tau, self.temperature = float(self.tau), float(self.temperature)
        self.act_eps, self.halting_bias_init = float(self.act_eps), float(self.halting_bias_init)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def adaptive(self) -> bool:
        """True when the method halts (has halting heads)."""
        return self.method != "none"
