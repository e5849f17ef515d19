"""What the training loop needs to know about a model family: how to build it, feed it and read its report.

The loop itself (:mod:`pact_zoo.training.loop`) is shared; a task adapts one kind of model and data to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import torch
from torch import nn

from ..data import (
    SEQUENCE_CLASSIFICATION_DATASETS, collate_images, collate_sequences, image_transforms, load_image_dataset,
    load_sequence_splits, with_image_transform,
)
from ..data.tokens import (PAD_ID, TOKEN_REMAP_ATTR, TOKEN_REMAP_FILE, load_token_remap, remap_token_split,
                           token_remap)
from ..data.uea import UEA_PREFIX, load_uea_classification
from ..acm.convert import acm_modules
from ..halting import HaltingHead, VectorHaltingHead, adaptive_stages, halting_report
from .config import ConfigError, TrainConfig
from .io import _folder_config

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["TaskData", "ImageClassificationTask", "SequenceClassificationTask", "TASKS", "register_task",
           "build_task", "load_weights_fresh_heads"]

#: The training loop's tasks besides timm image classification (the fallback), tried in order: each class's
#: ``handles(config)`` says whether it trains ``config.model``. A family with a task of its own joins with
#: :func:`register_task`.
TASKS: list[type] = []


def register_task(task_cls: type) -> type:
    """Class decorator: :func:`build_task` builds ``task_cls(config)`` for every config ``task_cls.handles``
    accepts."""
    if not callable(getattr(task_cls, "handles", None)):
        raise TypeError(f"task class {task_cls.__name__} needs a classmethod handles(config) -> bool")
    TASKS.append(task_cls)
    return task_cls


@dataclass
class TaskData:
    train: Any  # torch Dataset
    eval: Any
    collate_fn: Callable
    class_names: list[str]
    raw_eval: Any = None  # (untransformed eval split, image column, label column), for image grids


def _limit(split, max_samples: Optional[int]):
    """The first ``max_samples`` rows of a ``datasets.Dataset`` split (all of them when ``None``)."""
    return split.select(range(min(max_samples, len(split)))) if max_samples else split


class ImageClassificationTask:
    """timm image classifiers (every ``pact_zoo`` model and any timm model) on image datasets."""

    input_key = "pixel_values"
    kind = "image"

    def __init__(self, config: TrainConfig) -> None:
        import timm

        self.config = config
        if config.model not in timm.list_models():
            import pact_zoo

            raise ConfigError(f"unknown model {config.model!r}; pact_zoo models: {', '.join(pact_zoo.list_models())} "
                              f"(any timm model name also works)")
        #: the checkpoint file of ``pretrained_file`` (a model folder's weights); the config keeps what was written,
        #: so that a resumed run's recipe still matches the saved one
        self.pretrained_path: Optional[str] = config.pretrained_file
        if config.pretrained_file is not None:
            import os

            from .io import WEIGHTS_FILE, check_safetensors

            if os.path.isdir(config.pretrained_file):  # a model folder (a run's model/, a conversion phase's source)
                self.pretrained_path = os.path.join(config.pretrained_file, WEIGHTS_FILE)
            if not os.path.isfile(self.pretrained_path):
                raise FileNotFoundError(f"pretrained_file not found: {self.pretrained_path}")
            if self.pretrained_path.endswith(".safetensors"):
                check_safetensors(self.pretrained_path, "pretrained_file ")
        self._splits = None

    def _load_splits(self):
        if self._splits is None:
            c = self.config
            self._splits = load_image_dataset(c.dataset, data_dir=c.data_dir, data_files=c.data_files,
                                              train_split=c.train_split, eval_split=c.eval_split,
                                              image_column=c.image_column, label_column=c.label_column)
        return self._splits

    def num_classes(self) -> int:
        return self._load_splits().num_classes

    def build_model(self, num_classes: int) -> nn.Module:
        import timm

        kwargs = dict(self.config.model_kwargs)
        kwargs.setdefault("num_classes", num_classes)
        try:
            if self.pretrained_path:
                overlay = dict(file=self.pretrained_path)
                folder = Path(self.pretrained_path).parent
                if (folder / "config.json").is_file():  # a model folder: its classifier is kept when the classes match
                    saved_classes = _folder_config(folder).get("num_classes")
                    if saved_classes is not None:
                        overlay["num_classes"] = saved_classes
                return timm.create_model(self.config.model, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
            return timm.create_model(self.config.model, pretrained=self.config.pretrained, **kwargs)
        except TypeError as exc:  # a keyword the model's builder does not take
            if "keyword argument" not in str(exc):
                raise
            raise ConfigError(f"model_kwargs {self.config.model_kwargs}: {self.config.model} rejects them "
                              f"({exc})") from None
        except KeyError as exc:  # a checkpoint whose keys do not match the model (add_halting_heads_filter)
            raise ConfigError(f"pretrained_file {self.pretrained_path}: {exc.args[0] if exc.args else exc}") \
                from None

    def load_data(self, model: nn.Module) -> TaskData:
        from timm.data import resolve_data_config

        c = self.config
        splits = self._load_splits()
        data_config = resolve_data_config(model=model)
        if c.image_size is not None:  # the whole image at this side: resize only (crop_pct 1)
            data_config = dict(data_config, input_size=(data_config["input_size"][0], c.image_size, c.image_size),
                               crop_pct=1.0)
        in_chans = data_config["input_size"][0]
        train, evaluation = splits.train, splits.eval
        train, evaluation = _limit(train, c.max_train_samples), _limit(evaluation, c.max_eval_samples)
        return TaskData(
            train=with_image_transform(train, splits.image_column, splits.label_column,
                                       image_transforms(data_config, c.augment, is_training=True), in_chans),
            eval=with_image_transform(evaluation, splits.image_column, splits.label_column,
                                      image_transforms(data_config, c.augment, is_training=False), in_chans),
            collate_fn=collate_images,
            class_names=splits.class_names,
            raw_eval=(evaluation, splits.image_column, splits.label_column),
        )

    @staticmethod
    def forward(model: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return model(batch["pixel_values"])

    @staticmethod
    def report(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample FLOPs ``[B]``, units executed ``[B, S]`` (summed over time steps for sequence models) and
        full-depth FLOPs ``[B]`` of the last forward, from :func:`~pact_zoo.halting_report`."""
        report = halting_report(model)
        return report.flops, report.units_executed, report.sample_full_flops


#: dataset_kwargs of a text dataset read as token ids by :class:`SequenceClassificationTask`
TOKEN_DATASET_KWARGS = ("tokenizer", "max_length", "min_count", "text_column")
#: tokens per text (special tokens included) unless ``dataset_kwargs.max_length`` says
DEFAULT_TOKEN_MAX_LENGTH = 64


def _sequence_source(dataset: str) -> str:
    """How :class:`SequenceClassificationTask` reads ``dataset``: ``generated``, ``uea`` or ``tokens`` (text)."""
    if dataset in SEQUENCE_CLASSIFICATION_DATASETS:
        return "generated"
    if dataset.startswith(UEA_PREFIX) and len(dataset) > len(UEA_PREFIX):
        return "uea"
    if dataset.startswith("parquet:") or ("/" in dataset and ":" not in dataset):
        return "tokens"
    raise ValueError(f"unknown dataset {dataset!r} for pact_lstm; valid choices: "
                     f"{', '.join(SEQUENCE_CLASSIFICATION_DATASETS)}, {UEA_PREFIX}<name> (a UEA set, extra uea) or a "
                     f"text dataset (parquet:<dir> or a hub id) read as token ids with dataset_kwargs.tokenizer")


@register_task
class SequenceClassificationTask:
    """Hugging Face PACT-LSTM classifiers on sequence data: generated tasks (parity, MNIST-1D), UEA sets
    (``uea:JapaneseVowels``; ``eval_split`` test or validation, the stratified holdout of
    :func:`~pact_zoo.data.uea.load_uea_classification` with ``dataset_kwargs`` ``validation_fraction``,
    ``split_seed``; ``data_dir``: a folder of ``.ts`` files instead of the sktime wheel) and text datasets as token
    ids for the model's embedding (``dataset_kwargs``: ``tokenizer`` folder or hub id, ``max_length``,
    ``min_count``, ``text_column``; the ids are remapped to those seen in training, :mod:`pact_zoo.data.tokens`, and
    the remap travels with the model)."""

    kind = "sequence"

    @classmethod
    def handles(cls, config: TrainConfig) -> bool:
        from ..hf import PactLSTMConfig

        return config.model == PactLSTMConfig.model_type

    def __init__(self, config: TrainConfig) -> None:
        self.source = _sequence_source(config.dataset)
        if self.source == "tokens":
            unknown = sorted(set(config.dataset_kwargs) - set(TOKEN_DATASET_KWARGS))
            if unknown or "tokenizer" not in config.dataset_kwargs:
                raise ConfigError(f"dataset_kwargs of a text dataset read as token ids take {TOKEN_DATASET_KWARGS} "
                                  f"and need tokenizer (a tokenizer folder or hub id); got {config.dataset_kwargs}")
        self.config = config
        self._splits = None
        self.tokenizer = None

    def _load_splits(self):
        if self._splits is None:
            c = self.config
            try:
                if self.source == "uea":
                    self._splits = load_uea_classification(c.dataset[len(UEA_PREFIX):], eval_split=c.eval_split,
                                                           folder=c.data_dir, **c.dataset_kwargs)
                elif self.source == "tokens":
                    self._splits = self._token_splits()
                else:  # a seed in dataset_kwargs is the data's own (MNIST-1D's fixed set); else the run's seed
                    self._splits = load_sequence_splits(c.dataset, **{"seed": c.seed, **c.dataset_kwargs})
            except TypeError as exc:  # an option the loader does not take
                if "keyword argument" not in str(exc):
                    raise
                raise ConfigError(f"dataset_kwargs {c.dataset_kwargs} do not fit {c.dataset!r} ({exc})") from None
        return self._splits

    def _token_splits(self):
        """Train and eval splits of the text dataset as the tokenizer's ids (not yet remapped; rows limited by
        ``max_train_samples`` / ``max_eval_samples``), and the class names."""
        from transformers import AutoTokenizer

        from ..data.text import load_text_dataset, tokenize_split

        c, options = self.config, self.config.dataset_kwargs
        splits = load_text_dataset(c.dataset, data_dir=c.data_dir, data_files=c.data_files,
                                   train_split=c.train_split, eval_split=c.eval_split,
                                   text_column=options.get("text_column"), label_column=c.label_column)
        self.tokenizer = AutoTokenizer.from_pretrained(options["tokenizer"])
        max_length = options.get("max_length", DEFAULT_TOKEN_MAX_LENGTH)
        train, evaluation = (tokenize_split(_limit(split, limit), self.tokenizer, splits.text_column,
                                            splits.label_column, max_length)
                             for split, limit in ((splits.train, c.max_train_samples),
                                                  (splits.eval, c.max_eval_samples)))
        return train, evaluation, splits.class_names

    def num_classes(self) -> int:
        return len(self._load_splits()[2])

    def build_model(self, num_classes: int) -> nn.Module:
        from ..hf import PactLSTMConfig, PactLSTMForSequenceClassification

        train, _, class_names = self._load_splits()
        fields = dict(id2label=dict(enumerate(class_names)), **self.config.model_kwargs)
        remap = None
        if self.source == "tokens":  # a warm start keeps its folder's remap (its embedding rows follow it)
            clash = sorted({"vocab_size", "pad_token_id"} & set(self.config.model_kwargs))
            if clash:
                raise ConfigError(f"model_kwargs {clash}: a text dataset's token remap sets them; remove them")
            folder = self.config.pretrained_file
            remap = load_token_remap(folder) if folder else None
            if remap is None:
                remap = token_remap(train["input_ids"], len(self.tokenizer), self.tokenizer.pad_token_id,
                                    self.config.dataset_kwargs.get("min_count", 1))
            fields.update(vocab_size=int(remap.max()) + 1, pad_token_id=PAD_ID)
        else:
            fields["input_size"] = len(train[0]["inputs_embeds"][0])
        model = PactLSTMForSequenceClassification(PactLSTMConfig(**fields))
        if remap is not None:
            setattr(model, TOKEN_REMAP_ATTR, remap)  # saved beside the weights (save_model_folder)
        if self.config.pretrained_file:  # a saved model folder: its weights, the recipe's architecture
            load_weights_fresh_heads(model, self.config.pretrained_file)
        return model

    def load_data(self, model: nn.Module) -> TaskData:
        train, evaluation, class_names = self._load_splits()
        if self.source == "tokens":
            remap = getattr(model, TOKEN_REMAP_ATTR, None)
            if remap is None or len(remap) != len(self.tokenizer):
                name = self.config.dataset_kwargs["tokenizer"]
                raise ConfigError(f"the model has no token remap for the tokenizer {name!r} ({len(self.tokenizer)} "
                                  f"ids): a token-id pact_lstm folder holds {TOKEN_REMAP_FILE} from its training run, "
                                  f"made with that tokenizer")
            train, evaluation = remap_token_split(train, remap), remap_token_split(evaluation, remap)
        else:
            train = _limit(train, self.config.max_train_samples)
            evaluation = _limit(evaluation, self.config.max_eval_samples)
        return TaskData(train=train, eval=evaluation, collate_fn=collate_sequences, class_names=class_names)

    def sample_properties(self) -> Dict[str, torch.Tensor]:
        """Per-sample properties of the evaluation split (``max_eval_samples`` applied), in loader order, ``[N]``
        each: every integer column besides the labels, and ``length`` (time steps or tokens). Parity:
        ``num_nonzero``, the k of Graves 2016 Fig. 3 (arXiv:1603.08983); UEA sets and token ids: ``length``."""
        _, evaluation, _ = self._load_splits()
        evaluation = _limit(evaluation, self.config.max_eval_samples)
        properties = {name: torch.as_tensor(evaluation[name]) for name, feature in evaluation.features.items()
                      if name != "labels" and getattr(feature, "dtype", None) in ("int32", "int64")}
        if "length" not in properties and "input_ids" in evaluation.column_names:
            properties["length"] = torch.tensor([len(row) for row in evaluation["input_ids"]])
        return properties

    @staticmethod
    def forward(model: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, num_labels]`` of ``inputs_embeds`` ``[B, T, F]`` or ``input_ids`` ``[B, T]``."""
        key = "input_ids" if "input_ids" in batch else "inputs_embeds"
        return model(**{key: batch[key]}, attention_mask=batch["attention_mask"]).logits

    report = staticmethod(ImageClassificationTask.report)


def build_task(config: TrainConfig):
    """The task for ``config.model``: the first of :data:`TASKS` that handles it, else timm image
    classification."""
    for task_cls in TASKS:
        if task_cls.handles(config):
            return task_cls(config)
    return ImageClassificationTask(config)


def load_weights_fresh_heads(model: PreTrainedModel, folder: str) -> list[str]:
    """Load the weights of the Hugging Face model folder ``folder`` (a saved model of ``model``'s class, such as an
    earlier run's ``model/``) into ``model``, except the halting heads of either model: ``model``'s keep their
    fresh init (the halting bias of ``model``'s config). Returns the state-dict keys left at init; a folder whose
    other weights do not fit ``model`` raises :class:`ConfigError`."""
    import os

    if not os.path.isdir(folder):
        raise FileNotFoundError(f"pretrained_file not found: {folder} (a saved {type(model).__name__} folder)")
    try:
        source = type(model).from_pretrained(folder)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"pretrained_file {folder}: not a {type(model).__name__} folder "
                          f"({' '.join(str(exc).split())[:200]})") from None

    def head_keys(module: nn.Module) -> set[str]:
        heads = halting_head_parameters(module)
        return {name for name, param in module.named_parameters() if id(param) in heads}

    fresh = head_keys(model)
    state = {k: v for k, v in source.state_dict().items() if k not in head_keys(source)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape that differs
        raise ConfigError(f"pretrained_file {folder} does not fit model_kwargs {dict(model.config.to_diff_dict())}: "
                          f"{' '.join(str(exc).split())[:300]}") from None
    misfit = sorted(set(result.missing_keys) - fresh) + sorted(result.unexpected_keys)
    if misfit:
        raise ConfigError(f"pretrained_file {folder} does not fit the model: keys {misfit} missing or unexpected "
                          f"(only halting heads may differ)")
    return sorted(result.missing_keys)


def halting_head_parameters(model: nn.Module) -> set[int]:
    """``id`` of every halting-head parameter, ACM gates included (they may get their own learning rate)."""
    heads = [m for m in model.modules() if isinstance(m, (HaltingHead, VectorHaltingHead))]
    heads += [module.gate for _, module in acm_modules(model)]
    for _, stage in adaptive_stages(model):  # AdaptiveStage: its heads and method state (ACM modules have neither)
        heads += [part for part in (getattr(stage, "heads", None), getattr(stage, "method_state", None))
                  if part is not None]
    return {id(p) for head in heads for p in head.parameters()}
