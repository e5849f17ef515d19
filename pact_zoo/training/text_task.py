"""The text-classification task of the shared training loop: PACT-Encoder models fine-tuned from a pretrained
encoder folder (``pretrained_file``) on a text dataset, tokenised with that folder's tokenizer."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import torch
from torch import nn

from ..data.text import DEFAULT_MAX_LENGTH, TextCollator, load_text_dataset, tokenize_split
from .config import ConfigError, TrainConfig
from .tasks import ImageClassificationTask, TaskData, _limit, register_task

__all__ = ["TextClassificationTask", "TEXT_DATASET_KWARGS"]
#: Keys a text recipe may set in ``dataset_kwargs``.
TEXT_DATASET_KWARGS = ("max_length", "text_column")


@register_task
class TextClassificationTask:
    """``pact_encoder`` on a text dataset (``parquet:<dir>`` or a hub id with ``text`` and ``label`` columns).

    ``pretrained_file`` is a plain encoder folder (BERT, RoBERTa, ELECTRA, DistilBERT, with its tokenizer), built
    with ``PactEncoderForSequenceClassification.from_backbone(..., **model_kwargs)``, or a saved PACT-Encoder folder
    (loaded as it is, or converted to the settings in ``model_kwargs`` with ``convert_from``).
    ``dataset_kwargs``: ``max_length`` (tokens per sample, default 128) and ``text_column``.
    """

    kind = "text"

    @classmethod
    def handles(cls, config: TrainConfig) -> bool:
        from ..hf import PactEncoderConfig

        return config.model == PactEncoderConfig.model_type

    def __init__(self, config: TrainConfig) -> None:
        if not config.pretrained_file:
            raise ConfigError("model 'pact_encoder' needs pretrained_file: a pretrained encoder folder or hub id "
                              "with its tokenizer (e.g. data/all-MiniLM-L6-v2)")
        unknown = sorted(set(config.dataset_kwargs) - set(TEXT_DATASET_KWARGS))
        if unknown:
            raise ConfigError(f"unknown dataset_kwargs {unknown} for a text dataset; valid: {TEXT_DATASET_KWARGS}")
        self.config = config
        self._splits = None

    def _load_splits(self):
        if self._splits is None:
            c = self.config
            self._splits = load_text_dataset(c.dataset, data_dir=c.data_dir, data_files=c.data_files,
                                             train_split=c.train_split, eval_split=c.eval_split,
                                             text_column=c.dataset_kwargs.get("text_column"),
                                             label_column=c.label_column)
        return self._splits

    def num_classes(self) -> int:
        return self._load_splits().num_classes

    def build_model(self, num_classes: int) -> nn.Module:
        from ..hf import PactEncoderConfig, PactEncoderForSequenceClassification

        path = self.config.pretrained_file
        config_file = Path(path) / "config.json"
        if (config_file.is_file()
                and json.loads(config_file.read_text()).get("model_type") == PactEncoderConfig.model_type):
            if self.config.model_kwargs:  # conversion: the source's weights, the new settings' fresh weights
                return PactEncoderForSequenceClassification.convert_from(path, **self.config.model_kwargs)
            return PactEncoderForSequenceClassification.from_pretrained(path)
        names = self._load_splits().class_names
        return PactEncoderForSequenceClassification.from_backbone(
            path, num_labels=num_classes, id2label=dict(enumerate(names)), **self.config.model_kwargs)

    def load_data(self, model: nn.Module) -> TaskData:
        c, splits = self.config, self._load_splits()
        tokenizer = model.tokenizer
        max_length = c.dataset_kwargs.get("max_length", DEFAULT_MAX_LENGTH)
        train = tokenize_split(_limit(splits.train, c.max_train_samples), tokenizer, splits.text_column,
                               splits.label_column, max_length)
        evaluation = tokenize_split(_limit(splits.eval, c.max_eval_samples), tokenizer, splits.text_column,
                                    splits.label_column, max_length)
        return TaskData(train=train, eval=evaluation, collate_fn=TextCollator(tokenizer),
                        class_names=splits.class_names)

    @staticmethod
    def forward(model: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, num_labels]``."""
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits

    report = staticmethod(ImageClassificationTask.report)
