"""Typed training configuration: a YAML recipe (``hub_configs/<variant>/train.yaml``) plus command-line overrides."""
from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml

__all__ = ["TrainConfig", "ConfigError", "load_config", "add_config_arguments", "config_from_args"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")


class ConfigError(ValueError):
    """A recipe or override that does not describe a valid training run."""


@dataclass
class TrainConfig:
    """One training run. Every field can come from YAML and be overridden on the command line."""

    # model
    model: str = "pact_resnet32"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False  # load the model's registered pretrained weights (hub; needs the network or a cache)
    pretrained_file: Optional[str] = None  # backbone checkpoint (.safetensors / .pth), loaded offline
    # data
    dataset: str = "digits"
    data_dir: Optional[str] = None
    data_files: Optional[Dict[str, Any]] = None
    train_split: str = "train"
    eval_split: Optional[str] = None
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    augment: str = "cifar"
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    dataset_kwargs: Dict[str, Any] = field(default_factory=dict)  # generated sequence tasks
    # optimisation
    epochs: int = 10
    batch_size: int = 128  # per process
    eval_batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    schedule: str = "step"
    lr_milestones: List[float] = field(default_factory=lambda: [0.6, 0.75, 0.9])  # fractions of training
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    head_lr_mult: float = 1.0  # learning-rate multiplier of the halting heads
    grad_accum_steps: int = 1
    max_grad_norm: Optional[float] = None
    mixed_precision: str = "no"
    tau_warmup_epochs: float = 0.0  # linear warm-up of the halting cost weight from 0
    anytime: bool = False  # one model for every budget: some batches train random per-sample depths
    anytime_prob: float = 0.5  # share of anytime batches (with anytime: true)
    seed: int = 0
    # evaluation and output
    eval_thresholds: List[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    output_dir: str = "out/run"
    keep_checkpoints: int = 2
    num_workers: int = 0
    debug_kill_at_step: Optional[int] = None  # fault injection for the resume test: SIGKILL at this step

    def __post_init__(self) -> None:
        self._check_types()
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        for name in ("epochs", "batch_size", "eval_batch_size", "grad_accum_steps", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "head_lr_mult"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.anytime_prob < 1.0:
            raise ConfigError(f"anytime_prob must be in (0, 1), got {self.anytime_prob}")
        if any(not 0 < t <= 1 for t in self.eval_thresholds):
            raise ConfigError(f"eval_thresholds must lie in (0, 1], got {self.eval_thresholds}")

    def _check_types(self) -> None:
        hints = typing.get_type_hints(TrainConfig)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            coerced = _coerce(value, hints[f.name])
            if coerced is _INVALID:
                raise ConfigError(f"{f.name} must be {_type_name(hints[f.name])}, got {value!r} "
                                  f"({type(value).__name__})")
            setattr(self, f.name, coerced)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


_INVALID = object()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` (ints widen to floats), or ``_INVALID``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            coerced = _coerce(value, option)
            if coerced is not _INVALID:
                return coerced
        return _INVALID
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            return _INVALID
        (item_type,) = typing.get_args(tp)
        items = [_coerce(v, item_type) for v in value]
        return _INVALID if any(i is _INVALID for i in items) else items
    if origin in (dict, Dict):
        return dict(value) if isinstance(value, dict) else _INVALID
    if tp is bool:
        return value if isinstance(value, bool) else _INVALID
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _INVALID
    if tp is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _INVALID
    if tp is str:
        return value if isinstance(value, str) else _INVALID
    return value


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """Read a YAML recipe and apply ``overrides``; unknown keys and wrong types raise :class:`ConfigError`."""
    values: Dict[str, Any] = {}
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path) as handle:
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded)
    values.update(overrides or {})
    unknown = sorted(set(values) - set(_field_names()))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(_field_names())}")
    return TrainConfig(**values)


def _parse_override(text: str) -> Any:
    """Command-line values are YAML scalars/lists/mappings: ``3``, ``0.1``, ``[0.5, 0.75]``, ``{tau: 0.02}``."""
    return yaml.safe_load(text)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` plus one ``--<field>`` override per config field (values parsed as YAML)."""
    parser.add_argument("--config", help="YAML training recipe, e.g. hub_configs/pact_resnet32.digits/train.yaml")
    group = parser.add_argument_group("overrides (values are YAML: 3, 0.1, [0.5, 0.7], {tau: 0.02})")
    for name in _field_names():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_parse_override, default=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = {name: getattr(args, name) for name in _field_names() if hasattr(args, name)}
    return load_config(args.config, overrides)
