"""The text-classification task for ACM-BERT (``model: acm_bert``): the ACM conversion (Wójcik et al. 2023, §3.3) of
a trained text classifier run as phases of ``pact-zoo convert``, on the text datasets of the text task.

``pretrained_file`` is the model folder of the phase's start. The first phase starts from the source classifier (a
``pact-zoo train`` fine-tune: a plain PACT-Encoder over a BERT backbone, or a transformers BERT classifier), which
:func:`pact_zoo.acm.acmize` turns into an ACM-BERT with ``model_kwargs`` as its arguments (``num_learners``,
``method``, ...; the learners start as the source's FFN split K ways); every later phase starts from the ACM-BERT
folder the previous phase wrote, rebuilt with the same ``model_kwargs`` over its weights. Data, batches and logits
are the text task's; the tokenizer is the source's, saved with every phase's model. Example:
``hub_configs/acm_minilm.rotten_tomatoes/convert.yaml``.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..acm.convert import acmize
from ..hf import AcmBertConfig, AcmBertForSequenceClassification
from ..hf.backbones import folder_tokenizer
from .config import ConfigError, TrainConfig
from .io import folder_model_name, load_model_folder
from .tasks import register_task
from .text_task import TextClassificationTask

__all__ = ["AcmBertTextTask"]


@register_task
class AcmBertTextTask(TextClassificationTask):
    """``acm_bert`` on a text dataset: an ACM-BERT converted from the classifier folder ``pretrained_file``, or the
    ACM-BERT saved there."""

    @classmethod
    def handles(cls, config: TrainConfig) -> bool:
        return config.model == AcmBertConfig.model_type

    def __init__(self, config: TrainConfig) -> None:
        if not config.pretrained_file:
            raise ConfigError(f"model {config.model!r} needs pretrained_file: the folder of the text classifier to "
                              f"convert (source: in a conversion recipe) or of an ACM-BERT model")
        super().__init__(config)

    def build_model(self, num_classes: int) -> nn.Module:
        path = self.config.pretrained_file
        if folder_model_name(path) == AcmBertConfig.model_type:
            model = AcmBertForSequenceClassification.from_pretrained(path, config=self._saved_config(path))
        else:
            model = acmize(load_model_folder(path), **self.config.model_kwargs)
            if model.tokenizer is None:  # a transformers classifier folder: its own tokenizer files
                model.tokenizer = folder_tokenizer(path, model.config)
        if model.config.num_labels != num_classes:
            raise ConfigError(f"{path} classifies {model.config.num_labels} classes, dataset {self.config.dataset!r} "
                              f"has {num_classes}: convert a model trained on this dataset")
        if model.tokenizer is None:
            raise ConfigError(f"{path} holds no tokenizer (tokenizer_config.json / vocab.txt): save the source's "
                              f"tokenizer with it")
        return model

    def _saved_config(self, path: str) -> AcmBertConfig:
        """The folder's config with the ACM settings of ``model_kwargs`` (structure and knobs; the folder's knobs
        stay unless the method changes)."""
        config = AcmBertConfig.from_pretrained(path)
        fields: dict[str, Any] = AcmBertConfig.fields_of(dict(self.config.model_kwargs))
        knobs = fields.pop("acm_knobs", {})
        if fields.get("acm_method", config.acm_method) == config.acm_method:
            knobs = {**config.acm_knobs, **knobs}
        for key, value in {**fields, "acm_knobs": knobs}.items():
            setattr(config, key, value)
        return config
