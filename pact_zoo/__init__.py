"""pact_zoo: adaptive computation (PACT, ACT, policy-gradient halting) for timm and Hugging Face models.

``import pact_zoo`` registers the adaptive models with timm (``timm.create_model("pact_resnet110")``).
"""
from .halting import (
    HALTING_METHODS, ACTHalting, AdaptiveStage, HaltingConfig, HaltingHead, HaltingMethod, HaltingReport,
    StoppingDistribution, TruncatedGeometricPrior, VectorHaltingHead, act_halting, adaptive_stages, full_depth,
    halting_loss, halting_report, register_halting_method, set_decision, set_execution, set_threshold,
    set_unit_compile, training_loss,
)
from .halting.calibrate import ThresholdCalibration, calibrate_threshold
from . import models  # noqa: F401  (registers the timm models)
from . import hf  # noqa: F401  (registers the transformers models)
from . import acm  # noqa: F401  (per-token adaptive width: pact_zoo.acm)
from .models import list_models
from .models import make_adaptive
from .adapters import load_adapter, save_adapter, shipped_adapter

__version__ = "0.1.0"

__all__ = [
    "ACTHalting", "AdaptiveStage", "HALTING_METHODS", "HaltingConfig", "HaltingHead", "HaltingMethod",
    "HaltingReport", "StoppingDistribution", "TruncatedGeometricPrior", "VectorHaltingHead", "act_halting",
    "adaptive_stages", "full_depth", "halting_loss", "halting_report", "list_models", "register_halting_method",
    "set_decision", "set_execution", "set_threshold", "set_unit_compile", "training_loss", "__version__",
    "ThresholdCalibration", "calibrate_threshold",
    "make_adaptive", "load_adapter", "save_adapter", "shipped_adapter",
]
