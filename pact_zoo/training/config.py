"""Typed training configuration: a YAML recipe (``hub_configs/<variant>/train.yaml``) plus command-line overrides."""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import yaml

from ..acm.phases import DEFAULT_BUDGET_WEIGHT, DEFAULT_ERROR_FACTOR

__all__ = ["TrainConfig", "ConfigError", "load_config", "read_yaml_mapping", "add_config_arguments", "config_from_args",
           "FIELD_HELP", "MERGED_FIELDS", "YamlLoader", "check_fractions"]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("step", "cosine", "constant")
MIXED_PRECISION = ("no", "bf16", "fp16")
#: what a run trains towards: the task (plus halting and distillation terms), or one of the ACM conversion phases
#: (Wójcik et al. 2023, §3.3), which train only the learners or only the gates against the original model
OBJECTIVES = ("task", "module_distillation", "gate_labels")


class YamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``2e-3`` / ``1e5`` as floats (YAML 1.1 wants a dot: ``2.0e-3``; YAML 1.2
    and every user do not)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))

#: a number written as text (a float field given "2e-3" through the Python API)
_NUMBER_TEXT = re.compile(r"^[-+]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


#: mapping fields that a recipe and its overrides merge key by key (an override value of null removes the key)
MERGED_FIELDS = ("model_kwargs", "dataset_kwargs", "data_files")
#: keys of older run folders' train_config.json that are no longer config fields (ignored on load)
RETIRED_KEYS = ("debug_kill_at_step",)

#: one line of help per field (``pact-zoo train --help``)
FIELD_HELP = {
    "model": "registered timm model name (pact_zoo.list_models()), pact_lstm, pact_encoder or acm_bert",
    "model_kwargs": "model / halting-method kwargs, merged into the recipe's ({tau: 0.02}; {key: null} removes a key)",
    "pretrained": "load the model's registered pretrained weights (hub: needs the network or a cache)",
    "pretrained_file": "backbone checkpoint (.safetensors / .pth) loaded offline; halting heads start fresh",
    "dataset": "digits, imagefolder:<dir> (<dir>/train/<class>/*.png, <dir>/test/<class>/*.png), parquet:<dir or "
               "file>, a hub id (org/name), or a generated task",
    "data_dir": "folder of the dataset (instead of the part after ':')",
    "data_files": "parquet files per split, {train: a.parquet, test: b.parquet} (merged into the recipe's)",
    "train_split": "name of the training split",
    "eval_split": "name of the evaluation split (default: test, then validation)",
    "image_column": "image column (default: image / img / pixel_values)",
    "label_column": "label column (default: label / labels / fine_label)",
    "image_size": "image side in pixels for training and evaluation (default: the model's pretrained input size); "
                  "the whole image is resized, no centre crop",
    "augment": "training augmentation: cifar, crop, timm or none",
    "max_train_samples": "use only the first N training rows",
    "max_eval_samples": "use only the first N evaluation rows",
    "dataset_kwargs": "options of a generated sequence task (merged into the recipe's)",
    "epochs": "training epochs",
    "max_steps": "train exactly this many optimiser steps instead of whole epochs: the run takes the epochs it needs, "
                 "the last one cut short, and the learning-rate schedule spans these steps (null: epochs decides)",
    "batch_size": "training batch size per process",
    "bucket_batches": "batches of similar lengths: each epoch's shuffled rows are sorted by length in chunks of this "
                      "many batches, then the batches shuffled (less padding; needs a length column, as sequence "
                      "tasks have); 1: plain shuffled batches",
    "eval_batch_size": "evaluation batch size",
    "optimizer": "sgd or adamw",
    "lr": "peak learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay (not on norms and biases)",
    "schedule": "learning-rate schedule: step, cosine or constant",
    "lr_milestones": "step schedule: fractions of training where the rate is multiplied by lr_gamma",
    "lr_gamma": "step schedule: factor at each milestone",
    "warmup_epochs": "linear learning-rate warm-up, in epochs",
    "head_lr_mult": "learning-rate multiplier of the halting heads",
    "grad_accum_steps": "micro-batches per optimiser step",
    "max_grad_norm": "clip the gradient norm to this value",
    "mixed_precision": "no, bf16 or fp16",
    "tau_warmup_epochs": "ramp the halting cost weight from 0 over this many epochs",
    "anytime": "train one model for every budget (random per-sample depths on some batches)",
    "anytime_prob": "share of anytime batches, in (0, 1] (1: every batch)",
    "freeze_backbone": "train only the weights new to this model (halting heads, exits, a new classifier); the "
                       "source's weights stay unchanged",
    "freeze_exits": "with freeze_backbone: also keep the classifier and exit classifiers fixed (train the halting "
                    "heads only)",
    "distill_weight": "weight of the distillation term: KL from the teacher's output to every halted or truncated "
                      "output, times distill_temperature^2 (0: off)",
    "distill_temperature": "softmax temperature of the distillation term, > 0",
    "teacher": "teacher model folder for distillation (default: this model at full depth, without gradient); the "
               "original model of the ACM objectives",
    "objective": "task (the task loss, plus halting and distillation terms), or an ACM conversion phase: "
                 "module_distillation (the learners regress the teacher's replaced modules) or gate_labels (the gates "
                 "learn the learner count each token needs)",
    "acm_budget": "ACM models: target fraction of the ACM modules' FLOPs, in (0, 1]; adds the budget loss (acm "
                  "gating) or sets the target rate (condnet gating); null: no budget term",
    "acm_budget_weight": "weight of the ACM budget loss, >= 0",
    "gate_error_factor": "objective gate_labels: a token's label is the smallest learner count after which one more "
                         "learner cuts the error by less than this factor, >= 1",
    "seed": "random seed",
    "eval_thresholds": "thresholds evaluated after training, each in (0, 1]",
    "output_dir": "run folder: checkpoints, metrics, model/",
    "keep_checkpoints": "checkpoints kept in output_dir/checkpoints",
    "num_workers": "data-loader worker processes",
    "diagnose_every": "every N optimiser steps, log the halting diagnostics of a fixed training batch (loss terms, the "
                      "gradient each sends to the halting heads, the weights over units) to diagnostics.jsonl, "
                      "without changing the run (0: off)",
    "log_every_steps": "when the output is not a terminal (a log file), print a progress line every N optimiser "
                       "steps (0: only the per-epoch lines)",
}


class ConfigError(ValueError):
    """A recipe or override that does not describe a valid training run."""


def check_fractions(where: str, key: str, values: Any) -> List[float]:
    """``values`` as floats if it is a list of numbers in (0, 1] (thresholds, FLOPs budgets); else a one-line
    ConfigError naming ``where`` and ``key``."""
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and 0 < v <= 1 for v in values):
        raise ConfigError(f"{where}: {key} must be a list of numbers in (0, 1], got {values!r}")
    return [float(v) for v in values]


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
    image_size: Optional[int] = None  # resize images to this side (default: the model's pretrained_cfg input size)
    augment: str = "cifar"
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    dataset_kwargs: Dict[str, Any] = field(default_factory=dict)  # generated sequence tasks
    # optimisation
    epochs: int = 10
    max_steps: Optional[int] = None  # a step budget instead of epochs (the last epoch is cut short)
    batch_size: int = 128  # per process
    bucket_batches: int = 1  # > 1: length-bucketed batches (chunks of this many batches sorted by length)
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
    freeze_backbone: bool = False  # train only the new weights (frozen-backbone conversion)
    freeze_exits: bool = False  # with freeze_backbone: the halting heads only
    distill_weight: float = 0.0  # KL(teacher || student) weight, times T^2
    distill_temperature: float = 1.0
    teacher: Optional[str] = None  # teacher folder; default: the model itself at full depth
    objective: str = "task"  # or an ACM phase: module_distillation, gate_labels
    acm_budget: Optional[float] = None  # ACM: target fraction of the ACM modules' FLOPs
    acm_budget_weight: float = DEFAULT_BUDGET_WEIGHT
    gate_error_factor: float = DEFAULT_ERROR_FACTOR
    seed: int = 0
    # evaluation and output
    eval_thresholds: List[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    output_dir: str = "out/run"
    keep_checkpoints: int = 2
    num_workers: int = 0
    log_every_steps: int = 50  # progress line every N steps when not on a terminal (0: off)
    diagnose_every: int = 0  # halting diagnostics of a fixed training batch every N steps (0: off)

    def __post_init__(self) -> None:
        self._check_types()
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        for name in ("epochs", "batch_size", "bucket_batches", "eval_batch_size", "grad_accum_steps",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "head_lr_mult"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.anytime_prob <= 1.0:
            raise ConfigError(f"anytime_prob must be in (0, 1], got {self.anytime_prob}")
        if self.distill_weight < 0:
            raise ConfigError(f"distill_weight must be >= 0, got {self.distill_weight}")
        if self.distill_temperature <= 0:
            raise ConfigError(f"distill_temperature must be > 0, got {self.distill_temperature}")
        self._check_objective()
        if self.freeze_exits and not self.freeze_backbone:
            raise ConfigError("freeze_exits needs freeze_backbone: true (it narrows what a frozen-backbone run trains)")
        if any(not 0 < t <= 1 for t in self.eval_thresholds):
            raise ConfigError(f"eval_thresholds must lie in (0, 1], got {self.eval_thresholds}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image_size must be >= 1 pixel (or null for the model's input size), "
                              f"got {self.image_size}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (or null for every row), got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 optimiser step (or null: epochs decides), got {self.max_steps}")
        for name in ("weight_decay", "warmup_epochs", "tau_warmup_epochs", "num_workers", "log_every_steps",
                     "diagnose_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ConfigError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ConfigError(f"lr_milestones must be fractions of training in (0, 1), got {self.lr_milestones}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ConfigError(f"max_grad_norm must be > 0 (or null), got {self.max_grad_norm}")
        from ..data.images import AUGMENTATIONS

        if self.augment not in AUGMENTATIONS:
            raise ConfigError(f"augment must be one of {AUGMENTATIONS}, got {self.augment!r}")
        if not self.output_dir:
            raise ConfigError("output_dir must be a folder path, got an empty string")

    def _check_objective(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.acm_budget is not None and not 0.0 < self.acm_budget <= 1.0:
            raise ConfigError(f"acm_budget must be in (0, 1] (or null: no budget term), got {self.acm_budget}")
        if self.acm_budget_weight < 0:
            raise ConfigError(f"acm_budget_weight must be >= 0, got {self.acm_budget_weight}")
        if self.gate_error_factor < 1.0:
            raise ConfigError(f"gate_error_factor must be >= 1, got {self.gate_error_factor}")
        if self.objective == "task":
            return
        if self.teacher is None:
            raise ConfigError(f"objective: {self.objective} needs teacher: the folder of the original model whose "
                              f"modules the ACM modules replace (in a conversion recipe, teacher: source)")
        clashes = [name for name, on in (("freeze_backbone", self.freeze_backbone), ("anytime", self.anytime),
                                         ("distill_weight", self.distill_weight > 0),
                                         ("acm_budget", self.acm_budget is not None)) if on]
        if clashes:
            raise ConfigError(f"objective: {self.objective} decides what trains and against what; remove "
                              f"{', '.join(clashes)} (they belong to objective: task)")

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
        if isinstance(value, str) and _NUMBER_TEXT.match(value.strip()):
            return float(value.strip().replace("_", ""))  # '2e-3' from YAML 1.1 or the Python API
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _INVALID
    if tp is str:
        return value if isinstance(value, str) else _INVALID
    return value


def _field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def read_yaml_mapping(path: str) -> Dict[str, Any]:
    """The mapping a YAML recipe file holds (empty file: ``{}``); a missing file, bad YAML or another type raises."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path) as handle:
        try:
            loaded = yaml.load(handle, Loader=YamlLoader) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, got {type(loaded).__name__}")
    return loaded


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None,
                merge: bool = False) -> TrainConfig:
    """Read a YAML recipe and apply ``overrides``; unknown keys and wrong types raise :class:`ConfigError`.

    With ``merge`` (the command line), a mapping override of :data:`MERGED_FIELDS` changes only the keys it names
    (a null value removes a key); without it an override replaces the recipe's value.
    """
    values: Dict[str, Any] = read_yaml_mapping(path) if path is not None else {}
    for key in RETIRED_KEYS:
        values.pop(key, None)
    for key, value in (overrides or {}).items():
        if merge and key in MERGED_FIELDS and isinstance(value, dict) and isinstance(values.get(key), dict):
            value = {**values[key], **value}  # an override changes some keys of the recipe's mapping
        if merge and key in MERGED_FIELDS and isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        values[key] = value
    unknown = sorted(set(values) - set(_field_names()))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys: {', '.join(_field_names())}")
    return TrainConfig(**values)


def parse_yaml_value(text: str) -> Any:
    """Command-line values are YAML scalars/lists/mappings: ``3``, ``0.1``, ``[0.5, 0.75]``, ``{tau: 0.02}``.

    Raises ``argparse.ArgumentTypeError`` (argparse names the flag) on malformed YAML."""
    try:
        return yaml.load(text, Loader=YamlLoader)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise argparse.ArgumentTypeError(f"not valid YAML ({problem}): {text!r}; "
                                         f"examples: 3, 0.1, [0.5, 0.7], '{{tau: 0.02}}'") from None


def parse_yaml_mapping(text: str) -> Dict[str, Any]:
    """A YAML (or JSON) mapping from the command line, ``{tau: 0.02}``; anything else raises
    ``argparse.ArgumentTypeError``."""
    value = parse_yaml_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{tau: 0.02}}', got {text!r}")
    return value


def add_config_arguments(parser: argparse.ArgumentParser, fields: Optional[Sequence[str]] = None,
                         title: str = "recipe overrides") -> None:
    """``--config FILE`` plus one ``--<field>`` override per config field in ``fields`` (default: all), values
    parsed as YAML."""
    parser.add_argument("--config", help="YAML training recipe, e.g. hub_configs/pact_resnet32.digits/train.yaml")
    group = parser.add_argument_group(f"{title} (values are YAML: 3, 0.1, [0.5, 0.7], '{{tau: 0.02}}')")
    hints = typing.get_type_hints(TrainConfig)
    for name in fields or _field_names():
        text = hints[name] in (str, Optional[str])  # paths and names stay text: 'parquet:' or '2024' are not YAML
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, metavar=name.upper(),
                           type=str if text else parse_yaml_value, default=argparse.SUPPRESS, help=FIELD_HELP[name])


def config_from_args(args: argparse.Namespace, extra: Optional[Dict[str, Any]] = None) -> TrainConfig:
    """The recipe of ``args.config`` with the ``--<field>`` overrides of ``args`` (then ``extra``) applied."""
    overrides = {name: getattr(args, name) for name in _field_names() if hasattr(args, name)}
    return load_config(args.config, {**overrides, **(extra or {})}, merge=True)
