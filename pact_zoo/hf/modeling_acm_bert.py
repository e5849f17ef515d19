# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""ACM-BERT: transformers' BERT with ACM modules in place of its FFN blocks (Wójcik et al. 2023), saved and loaded
with ``save_pretrained`` / ``from_pretrained`` and the Auto classes (safetensors).

Build one from a pretrained BERT with :func:`pact_zoo.acm.acmize` (the learners start from the pretrained FFN); the
keys outside the ACM modules are BERT's own. ``halting_profile_inputs`` makes ``pact_zoo.halting_report`` work.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from transformers import BertForSequenceClassification, BertModel, BertPreTrainedModel, PreTrainedModel

from ..acm.convert import acm_modules, acmize_structure, register_acm_converter
from ..acm.module import GATING_CLASSES
from .configuration_acm_bert import AcmBertConfig
from .halting_model import ConfigHaltingView

__all__ = ["AcmBertModel", "AcmBertForSequenceClassification", "acm_bert_from_pretrained_model"]

#: Sequence length of the FLOPs profile before the model has seen an input.
DEFAULT_PROFILE_LENGTH = 8


class _AcmBertMixin:
    """Structure, FLOPs-profile input and knob sync shared by the ACM-BERT heads."""

    def _acmize(self, config: AcmBertConfig) -> None:
        acmize_structure(self, init="random", **config.acmize_kwargs())
        self._profile_length = DEFAULT_PROFILE_LENGTH

    @property
    def halting_cfg(self) -> ConfigHaltingView:
        """The ACM method (``config.acm_method``) and its knobs (``config.acm_knobs``, defaults filled in) as a
        ``HaltingConfig``; ``pact_zoo.set_threshold`` keeps ``config.acm_knobs`` in step through it."""
        return ConfigHaltingView(self.config, "acm_method", "acm_knobs", None, GATING_CLASSES.__getitem__)

    def _remember_length(self, input_ids, inputs_embeds) -> None:
        source = input_ids if input_ids is not None else inputs_embeds
        if source is not None:
            self._profile_length = source.shape[1]

    def halting_profile_inputs(self) -> tuple[tuple, dict[str, Any]]:
        """One-sample input of the last forward's length (pact_zoo.halting_report profiles it once)."""
        device = next(self.parameters()).device
        return (), {"input_ids": torch.zeros(1, self._profile_length, dtype=torch.long, device=device)}


class AcmBertModel(_AcmBertMixin, BertModel):
    config_class = AcmBertConfig

    def __init__(self, config: AcmBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config, add_pooling_layer=add_pooling_layer)
        self._acmize(config)

    def forward(self, input_ids=None, *args, inputs_embeds=None, **kwargs):
        self._remember_length(input_ids, inputs_embeds)
        return super().forward(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)


class AcmBertForSequenceClassification(_AcmBertMixin, BertForSequenceClassification):
    config_class = AcmBertConfig

    def __init__(self, config: AcmBertConfig) -> None:
        super().__init__(config)
        self._acmize(config)

    def forward(self, input_ids=None, *args, inputs_embeds=None, **kwargs):
        self._remember_length(input_ids, inputs_embeds)
        return super().forward(input_ids, *args, inputs_embeds=inputs_embeds, **kwargs)


_CLASSES = ((BertForSequenceClassification, AcmBertForSequenceClassification), (BertModel, AcmBertModel))


def acm_bert_from_pretrained_model(model: BertPreTrainedModel, **acm_kwargs) -> BertPreTrainedModel:
    """An ACM-BERT model holding ``model``'s weights with its FFN blocks ACMized (``model`` is left as it is)."""
    target = next((acm for plain, acm in _CLASSES if isinstance(model, plain)), None)
    if target is None:
        raise ValueError(f"model must be a BertModel or BertForSequenceClassification to ACMize, got "
                         f"{type(model).__name__}")
    if isinstance(model, target):
        raise ValueError("model is already ACMized")
    converted = acmize_structure(copy.deepcopy(model), **acm_kwargs)
    first = acm_modules(converted)[0][1]
    config_dict = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    config = AcmBertConfig(
        acm_num_learners=first.num_learners, acm_method=first.method.name,
        acm_attention=acm_kwargs.get("attention", False),
        acm_width_factor=acm_kwargs.get("width_factor", 1.0),
        acm_attention_min_learners=acm_kwargs.get("attention_min_learners", 1),
        acm_gate_hidden=acm_kwargs.get("gate_hidden", 16), acm_gate_depth=acm_kwargs.get("gate_depth", 2),
        acm_knobs=first.method.knob_values(), architectures=[target.__name__], **config_dict)
    acm = target(config).to(next(model.parameters()).device)
    acm.load_state_dict(converted.state_dict())
    return acm.train(model.training)


def _is_bert(model: nn.Module) -> bool:
    return isinstance(model, PreTrainedModel) and getattr(model.config, "model_type", None) in ("bert", "acm_bert")


register_acm_converter(_is_bert, acm_bert_from_pretrained_model)
