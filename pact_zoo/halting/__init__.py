"""The halting core: PACT and ACT math, halting heads, adaptive stages and per-forward reports.

Every model family in :mod:`pact_zoo.models` and :mod:`pact_zoo.hf` builds on this package; none re-implements
the halting math.
"""
from .act import ACTHalting, act_halting
from .config import COST_ESTIMATORS, HALTING_METHODS, HaltingConfig, validate_threshold
from .distributions import StoppingDistribution, TruncatedGeometricPrior, logistic_noise, stick_breaking
from .flops import FlopsProfiler, module_flops_per_sample, recurrent_cell_flops
from .heads import HaltingHead, VectorHaltingHead
from .report import (
    INPUT_SHAPE_ATTR, HaltingReport, adaptive_stages, halting_loss, halting_report, set_execution, set_threshold,
)
from .stage import EXECUTION_MODES, AdaptiveStage
from .calibrate import ThresholdCalibration, calibrate_threshold

__all__ = [
    "ACTHalting", "AdaptiveStage", "COST_ESTIMATORS", "EXECUTION_MODES", "FlopsProfiler", "HALTING_METHODS",
    "HaltingConfig", "HaltingHead", "HaltingReport", "INPUT_SHAPE_ATTR", "StoppingDistribution",
    "ThresholdCalibration", "TruncatedGeometricPrior", "VectorHaltingHead", "act_halting", "adaptive_stages",
    "calibrate_threshold", "halting_loss",
    "halting_report", "logistic_noise", "module_flops_per_sample", "recurrent_cell_flops", "set_execution",
    "set_threshold",
    "stick_breaking", "validate_threshold",
]
