"""The halting core: halting methods as objects, adaptive stages, compaction, per-forward records and reports.

Every model family in :mod:`pact_zoo.models` and :mod:`pact_zoo.hf` builds on this package; none re-implements
the halting math. Methods: ``"pact"`` (Figurnov et al. 2018), ``"act"`` (Graves 2016), ``"policy_gradient"``
(Bengio et al. 2016), the early-exit rules ``"confidence"``, ``"entropy"`` (DeeBERT) and ``"patience"`` (PABEE)
on a model's exit classifiers, and ``"none"``; add one with :func:`register_halting_method`.

This package stays flat with single-dot imports: remote-code checkpoints copy its files next to the model code.
"""
from .method import (
    HALTING_METHODS, HaltingMethod, HaltingRecord, Knob, Mixture, StopDecision, check_choice, check_number,
    check_threshold, get_halting_method, register_halting_method, resolve_method,
)
from .act import ACTHalting, ACTMethod, act_halting
from .pact import PACTMethod
from .policy_gradient import PolicyGradientMethod
from .exits import ConfidenceExit, EntropyExit, ExitRule, PatienceExit, exit_certainty
from .none import NoHalting
from .config import COST_ESTIMATORS, HaltingConfig, validate_threshold
from .compaction import ActiveRows, RowCollector, count_true, empty_rows, split_rows, take_rows
from .distributions import StoppingDistribution, TruncatedGeometricPrior, logistic_noise, stick_breaking
from .flops import FlopsProfiler, module_flops_per_sample, recurrent_cell_flops
from .heads import HaltingHead, VectorHaltingHead
from .protocols import FlopsAccountedModule, LengthProfiledModel, ProfiledModel, record_input_shape
from .report import (
    HaltingReport, TrainingLoss, adaptive_stages, anytime_depth, eval_mode,
    training_loss, full_depth, halting_cost, halting_loss,
    halting_report, needs_rollout, needs_task_loss, self_critical_baseline, set_decision, set_execution,
    set_threshold, truncated_depth,
)
from .adaptive_module import AdaptiveModule
from .stage import DECISION_MODES, EXECUTION_MODES, AdaptiveStage
from .compiled import set_unit_compile
from .calibrate import FlopsTally, ThresholdCalibration, calibrate_threshold, measure_flops, run_model
from .synthetic import calibrate_batchnorm, synthesize_halting

__all__ = [
    "act_halting", "ACTHalting", "ActiveRows", "ACTMethod", "adaptive_stages", "AdaptiveModule", "AdaptiveStage",
    "anytime_depth", "calibrate_batchnorm", "calibrate_threshold", "check_choice", "check_number",
    "check_threshold", "ConfidenceExit", "COST_ESTIMATORS", "count_true", "DECISION_MODES", "empty_rows",
    "EntropyExit", "eval_mode", "EXECUTION_MODES", "exit_certainty", "ExitRule", "FlopsAccountedModule",
    "FlopsProfiler", "FlopsTally", "full_depth", "get_halting_method", "halting_cost", "halting_loss",
    "HALTING_METHODS", "halting_report", "HaltingConfig", "HaltingHead", "HaltingMethod", "HaltingRecord",
    "HaltingReport", "Knob", "LengthProfiledModel", "logistic_noise", "measure_flops", "Mixture",
    "module_flops_per_sample", "needs_rollout", "needs_task_loss", "NoHalting", "PACTMethod", "PatienceExit",
    "PolicyGradientMethod", "ProfiledModel", "record_input_shape", "recurrent_cell_flops",
    "register_halting_method", "resolve_method", "RowCollector", "run_model", "self_critical_baseline",
    "set_decision", "set_execution", "set_threshold", "set_unit_compile", "split_rows", "stick_breaking",
    "StopDecision",
    "StoppingDistribution", "synthesize_halting", "take_rows", "ThresholdCalibration", "training_loss",
    "TrainingLoss", "truncated_depth", "TruncatedGeometricPrior", "validate_threshold", "VectorHaltingHead",
]


def __getattr__(name: str):
    """Deprecated names of the report's hooks (:mod:`.report`), with a DeprecationWarning."""
    from . import report

    return getattr(report, name)
