"""One Accelerate training loop for every model family, typed configs and evaluation."""
from .config import ConfigError, TrainConfig, load_config
from ..fileio import atomic_directory, atomic_write_json, atomic_write_text
from .io import load_model_folder, save_model_folder
from .loop import evaluate_model, train
from . import text_task  # noqa: F401  (registers the text-classification task)
from . import acm_text_task  # noqa: F401  (registers the ACM-BERT text task)

__all__ = [
    "ConfigError", "TrainConfig", "atomic_directory", "atomic_write_json", "atomic_write_text", "evaluate_model",
    "load_config", "load_model_folder", "save_model_folder", "train",
]
