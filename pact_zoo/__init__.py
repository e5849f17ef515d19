"""pact_zoo: Probabilistic Adaptive Computation Time (PACT) and ACT for timm and Hugging Face models.

``import pact_zoo`` registers the adaptive models with timm (``timm.create_model("pact_resnet110")``).
"""
from .halting import (
    ACTHalting, AdaptiveStage, HaltingConfig, HaltingHead, HaltingReport, StoppingDistribution,
    TruncatedGeometricPrior, VectorHaltingHead, act_halting, adaptive_stages, halting_loss, halting_report,
    set_execution, set_threshold,
)
from .halting.calibrate import ThresholdCalibration, calibrate_threshold
from . import models  # noqa: F401  (registers the timm models)
from . import hf  # noqa: F401  (registers the transformers models)
from .models import list_models

__version__ = "0.1.0"

__all__ = [
    "ACTHalting", "AdaptiveStage", "HaltingConfig", "HaltingHead", "HaltingReport", "StoppingDistribution",
    "TruncatedGeometricPrior", "VectorHaltingHead", "act_halting", "adaptive_stages", "halting_loss",
    "halting_report", "list_models", "set_execution", "set_threshold", "__version__",
    "ThresholdCalibration", "calibrate_threshold",
]
