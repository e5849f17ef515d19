# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""ACM-BERT: transformers' BERT with ACM modules in place of its FFN blocks (Wójcik et al. 2023), saved and loaded
with ``save_pretrained`` / ``from_pretrained`` and the Auto classes (safetensors).

Build one from a pretrained BERT with :func:`pact_zoo.acm.acmize` (the learners start from the pretrained FFN); the
keys outside the ACM modules are BERT's own. ``acmize`` also takes a plain PACT-Encoder classifier over a BERT
backbone (``method="none"``, e.g. a ``pact-zoo train`` fine-tune of all-MiniLM-L6-v2): its embeddings, layers,
pooling (``config.pooling``: [CLS] or the masked mean / max) and classifier carry over, so at full width the ACM model
computes what the source computes. A model carries its tokenizer (``model.tokenizer``), saved with the weights.
``halting_profile_inputs`` and ``halting_sample_lengths`` make ``pact_zoo.halting_report`` work; it counts what
PACT-Encoder counts (each sample at its own length, padding excluded, attention's matmuls included), so the two
families' FLOPs compare.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Optional, Union

import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertPreTrainedModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from ..acm.convert import acm_modules, acmize_structure, register_acm_converter
from ..acm.module import GATING_CLASSES
from ..halting.flops import current_profiler, self_attention_flops
from .backbones import folder_tokenizer, pool_tokens
from .configuration_acm_bert import ACMIZE_FIELDS, AcmBertConfig
from .configuration_pact_encoder import PactEncoderConfig
from .halting_model import ConfigHaltingView
from .losses import classification_loss, problem_type

__all__ = ["AcmBertModel", "AcmBertForSequenceClassification", "acm_bert_from_pretrained_model",
           "acm_bert_from_pact_encoder"]

#: Sequence length of the FLOPs profile before the model has seen an input.
DEFAULT_PROFILE_LENGTH = 8


class _AcmBertMixin:
    """Structure, FLOPs-profile input and knob sync shared by the ACM-BERT heads."""

    def _acmize(self, config: AcmBertConfig) -> None:
        acmize_structure(self, init="random", **config.acmize_kwargs())
        self._profile_length = DEFAULT_PROFILE_LENGTH
        self.tokenizer: Any = None  # saved with the weights when set
        if config.acm_source_prefix is not None:  # the replaced modules' names in the model converted from
            own = "" if self.base_model is self else f"{self.base_model_prefix}."
            for _, module in acm_modules(self):
                module.source = tuple(config.acm_source_prefix + name[len(own):] for name in module.source)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *args: Any, **kwargs: Any):
        """``PreTrainedModel.from_pretrained``; a local folder's saved tokenizer is attached
        (:func:`~pact_zoo.hf.backbones.folder_tokenizer`)."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model.tokenizer = folder_tokenizer(str(pretrained_model_name_or_path), model.config)
        return model

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args: Any, **kwargs: Any) -> None:
        """``PreTrainedModel.save_pretrained`` and the tokenizer, if set."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True) and self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)

    @property
    def halting_cfg(self) -> ConfigHaltingView:
        """The ACM method (``config.acm_method``) and its knobs (``config.acm_knobs``, defaults filled in) as a
        ``HaltingConfig``; ``pact_zoo.set_threshold`` keeps ``config.acm_knobs`` in step through it."""
        return ConfigHaltingView(self.config, "acm_method", "acm_knobs", None, GATING_CLASSES.__getitem__)

    def _remember_inputs(self, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor],
                         attention_mask: Optional[torch.Tensor]) -> None:
        """Before a forward: its length and each sample's real tokens (``attention_mask`` ``[B, T]``), which the
        FLOPs report counts (padding is not counted, as for PACT-Encoder); while the report profiles one sample,
        attention's matmuls, which no module runs."""
        source = input_ids if input_ids is not None else inputs_embeds
        if source is None:
            return
        profiler = current_profiler()
        if profiler is not None:
            layers, width = self.config.num_hidden_layers, self.config.hidden_size
            profiler.add(layers * self_attention_flops(source.shape[1], width))
            return
        self._profile_length = source.shape[1]
        self.__dict__["_sample_lengths"] = None if attention_mask is None else attention_mask.sum(1)
        for _, module in acm_modules(self):
            module.counted_tokens = attention_mask

    def halting_profile_inputs(self, length: Optional[int] = None) -> tuple[tuple, dict[str, Any]]:
        """One sample of ``length`` real tokens (default: the last forward's length), for pact_zoo.halting_report
        to profile."""
        device = next(self.parameters()).device
        length = length if length is not None else self._profile_length
        return (), {"input_ids": torch.zeros(1, length, dtype=torch.long, device=device),
                    "attention_mask": torch.ones(1, length, dtype=torch.long, device=device)}

    def halting_sample_lengths(self) -> Optional[torch.Tensor]:
        """``[B]`` real tokens per sample of the last forward (None without an attention mask): the report counts
        each sample's FLOPs at its own length."""
        return self.__dict__.get("_sample_lengths")


class AcmBertModel(_AcmBertMixin, BertModel):
    config_class = AcmBertConfig

    def __init__(self, config: AcmBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        self._acmize(config)

    def forward(self, input_ids=None, *args, inputs_embeds=None, **kwargs):
        self._remember_inputs(input_ids, inputs_embeds, kwargs.get("attention_mask", args[0] if args else None))
        return super().forward(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)


class AcmBertForSequenceClassification(_AcmBertMixin, BertForSequenceClassification):
    config_class = AcmBertConfig

    def __init__(self, config: AcmBertConfig) -> None:
        super().__init__(config)
        if config.pooling != "cls":  # the classifier reads the masked mean / max of the token states instead
            self.bert.pooler = None
        self._acmize(config)

    def forward(self, input_ids=None, *args, inputs_embeds=None, **kwargs):
        """BERT's forward; with ``config.pooling`` mean or max the classifier reads the token states pooled over
        the real tokens of ``attention_mask`` ``[B, T]`` (keyword arguments only). Logits ``[B, num_labels]``."""
        self._remember_inputs(input_ids, inputs_embeds, kwargs.get("attention_mask", args[0] if args else None))
        if self.config.pooling == "cls":
            return super().forward(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)
        if args:
            raise TypeError(f"pass the inputs after input_ids by keyword with pooling={self.config.pooling!r}")
        return self._pooled_forward(input_ids, inputs_embeds=inputs_embeds, **kwargs)

    def _pooled_forward(self, input_ids: Optional[torch.Tensor], attention_mask: Optional[torch.Tensor] = None,
                        labels: Optional[torch.Tensor] = None, **kwargs: Any) -> SequenceClassifierOutput:
        """``input_ids`` / ``attention_mask`` ``[B, T]`` -> logits ``[B, num_labels]`` of the pooled ``[B, H]`` token
        states, and the loss of ``labels`` (BERT's problem types)."""
        outputs = self.bert(input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        pooled = pool_tokens(outputs.last_hidden_state, attention_mask, self.config.pooling)  # [B, H]
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels.to(logits.device), problem_type(self.config, labels),
                                       self.num_labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


_CLASSES = ((BertForSequenceClassification, AcmBertForSequenceClassification), (BertModel, AcmBertModel))


def acm_bert_from_pretrained_model(model: BertPreTrainedModel, **acm_kwargs: Any) -> BertPreTrainedModel:
    """An ACM-BERT model holding ``model``'s weights with its FFN blocks ACMized (``model`` is left as it is)."""
    return _convert(model, acm_kwargs)


def _convert(model: BertPreTrainedModel, acm_kwargs: dict[str, Any], tokenizer: Any = None,
             **config_fields: Any) -> BertPreTrainedModel:
    """:func:`acm_bert_from_pretrained_model` with ``tokenizer`` and further :class:`AcmBertConfig` fields
    (``pooling``, ``acm_source_prefix``)."""
    target = next((acm for plain, acm in _CLASSES if isinstance(model, plain)), None)
    if target is None:
        raise ValueError(f"model must be a BertModel or BertForSequenceClassification to ACMize, got "
                         f"{type(model).__name__}")
    if isinstance(model, target):
        raise ValueError("model is already ACMized")
    converted = acmize_structure(copy.deepcopy(model), **acm_kwargs)
    first = acm_modules(converted)[0][1]
    config_dict = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    fields = AcmBertConfig.fields_of({key: value for key, value in acm_kwargs.items() if key in ACMIZE_FIELDS})
    fields.update(acm_num_learners=first.num_learners, acm_method=first.method.name,
                  acm_knobs=first.method.knob_values())
    config = AcmBertConfig(**fields, **config_fields, architectures=[target.__name__], **config_dict)
    acm = target(config).to(next(model.parameters()).device)
    acm.load_state_dict(converted.state_dict())
    acm.tokenizer = tokenizer
    return acm.train(model.training)


def acm_bert_from_pact_encoder(model: PreTrainedModel, **acm_kwargs: Any) -> AcmBertForSequenceClassification:
    """An ACM-BERT classifier from a plain PACT-Encoder classifier (``method="none"``, one classifier) over a BERT
    backbone: the backbone's embeddings and layers, its pooling (``config.pooling``) and classifier carry over, its
    tokenizer too; ``acm_source_prefix`` names where the backbone sits in ``model``, so that the conversion phases
    find the replaced modules there. ``model`` is left as it is."""
    config = model.config
    encoder = config.encoder
    if encoder.model_type != "bert" or config.method != "none" or config.exit_classifiers != "shared":
        raise ValueError(f"acmize takes a plain PACT-Encoder classifier over a BERT backbone (method 'none', shared "
                         f"classifier); got a {encoder.model_type} backbone, method {config.method!r}, "
                         f"exit_classifiers {config.exit_classifiers!r}")
    if config.resolved_pooling == "cls" and getattr(model, "pooler", None) is not None:
        raise ValueError("acmize: the PACT-Encoder's [CLS] pooler is its own, not BERT's; ACM-BERT reads BERT's")
    prefix, backbone = model.adapter_backbone()
    labels = dict(num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id,
                  classifier_dropout=config.classifier_dropout, problem_type=config.problem_type)
    plain = BertForSequenceClassification(BertConfig(**{**encoder.to_dict(), **labels}))
    if config.resolved_pooling != "cls":
        plain.bert.pooler = None
    plain.bert.load_state_dict(backbone.state_dict())
    plain.classifier.load_state_dict(model.classifier.state_dict())
    return _convert(plain.train(model.training), acm_kwargs, getattr(model, "tokenizer", None),
                    pooling=config.resolved_pooling, acm_source_prefix=prefix)


def _is_bert(model: nn.Module) -> bool:
    return isinstance(model, PreTrainedModel) and getattr(model.config, "model_type", None) in (
        BertConfig.model_type, AcmBertConfig.model_type)


def _is_pact_encoder(model: nn.Module) -> bool:
    return isinstance(model, PreTrainedModel) and getattr(model.config, "model_type", None) == \
        PactEncoderConfig.model_type


register_acm_converter(_is_bert, acm_bert_from_pretrained_model)
register_acm_converter(_is_pact_encoder, acm_bert_from_pact_encoder)
