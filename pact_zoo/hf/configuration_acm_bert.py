# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""ACM-BERT configuration: a BERT encoder whose FFN blocks (and optionally attention projections) are Adaptive
Computation Modules (Wójcik et al. 2023, arXiv:2312.10193) or Bengio et al. 2016 block-gated layers."""
from __future__ import annotations

from typing import Any, Optional

from transformers import BertConfig

from ..halting.deprecation import deprecated_alias, renamed_kwarg

__all__ = ["AcmBertConfig", "ACMIZE_FIELDS", "POOLINGS"]

#: ``acmize`` keyword -> the :class:`AcmBertConfig` field that stores it (the other keywords are the method's knobs)
ACMIZE_FIELDS = {"num_learners": "acm_num_learners", "method": "acm_method", "attention": "acm_attention",
                 "width_factor": "acm_width_factor", "attention_min_learners": "acm_attention_min_learners",
                 "gate_hidden": "acm_gate_hidden", "gate_depth": "acm_gate_depth"}
#: ``acmize`` keywords that only say how a conversion starts (no field: a saved model has its weights)
CONVERSION_ONLY = ("init",)
#: How the sequence classifier reads the ``[B, T, H]`` token states: BERT's [CLS] pooler, or the masked mean / max of
#: the real tokens (the pooling a sentence-transformers model such as all-MiniLM-L6-v2 was trained with).
POOLINGS = ("cls", "mean", "max")


class AcmBertConfig(BertConfig):
    r"""Configuration of :class:`~pact_zoo.hf.AcmBertModel` and its heads: a :class:`~transformers.BertConfig` plus

    Args:
        acm_num_learners (`int`, defaults to 4): K learners per ACM module.
        acm_method (`str`, defaults to ``"acm"``): ``"acm"`` or ``"condnet"``: ``acmize``'s ``method`` (every ACM
            field carries the ``acm_`` prefix, apart from BERT's own). ``acm_gating``, its former name, is still
            accepted (and read from old ``config.json`` files) with a DeprecationWarning.
        acm_attention (`bool`, defaults to False): the attention projections are ACM modules too.
        acm_width_factor (`float`, defaults to 1.0): total learner width relative to the original block.
        acm_attention_min_learners (`int`, defaults to 1): learners every token runs in a projection.
        acm_gate_hidden (`int`, defaults to 16), acm_gate_depth (`int`, defaults to 2): gate MLP size.
        acm_knobs (`dict`, *optional*): the method's knobs (``threshold``, ...); kept in step by
            ``pact_zoo.set_threshold``.
        acm_source_prefix (`str`, *optional*): where the BERT encoder sits in the model this one was converted from
            (``"pact_encoder.backbone."`` for a PACT-Encoder; None: the same names as this model's). Each ACM module
            names the modules it replaced there (``source``), which the conversion phases read on the original.
        pooling (`str`, defaults to ``"cls"``): what the sequence classifier reads (:data:`POOLINGS`): BERT's [CLS]
            pooler, or the masked mean / max of the token states (no pooler).
    """

    model_type = "acm_bert"

    def __init__(self, acm_num_learners: int = 4, acm_method: str = "acm", acm_attention: bool = False,
                 acm_width_factor: float = 1.0, acm_attention_min_learners: int = 1, acm_gate_hidden: int = 16,
                 acm_gate_depth: int = 2, acm_knobs: Optional[dict[str, Any]] = None,
                 acm_source_prefix: Optional[str] = None, pooling: str = "cls", **kwargs) -> None:
        from pact_zoo.acm.module import GATINGS
        if not (isinstance(acm_num_learners, int) and not isinstance(acm_num_learners, bool)
                and acm_num_learners >= 1):
            raise ValueError(f"acm_num_learners must be an int >= 1, got {acm_num_learners!r}")
        acm_method = renamed_kwarg(kwargs, "acm_gating", "acm_method", acm_method, "acm", "AcmBertConfig")
        if acm_method not in GATINGS:
            raise ValueError(f"acm_method must be one of {GATINGS}, got {acm_method!r}")
        self.acm_num_learners = acm_num_learners
        self.acm_method = acm_method
        self.acm_attention = bool(acm_attention)
        self.acm_width_factor = float(acm_width_factor)
        self.acm_attention_min_learners = acm_attention_min_learners
        self.acm_gate_hidden = acm_gate_hidden
        self.acm_gate_depth = acm_gate_depth
        self.acm_knobs = dict(acm_knobs or {})
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.acm_source_prefix = acm_source_prefix
        self.pooling = pooling
        super().__init__(**kwargs)

    def acmize_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`pact_zoo.acm.acmize_structure` that rebuild the structure."""
        return {**{key: getattr(self, field) for key, field in ACMIZE_FIELDS.items()}, **self.acm_knobs}

    @staticmethod
    def fields_of(acmize_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The config fields that ``acmize`` keyword arguments set: the structure's (:data:`ACMIZE_FIELDS`) and, if
        any other keyword is given, ``acm_knobs`` (conversion-only keywords such as ``init`` are left out)."""
        fields = {ACMIZE_FIELDS[key]: value for key, value in acmize_kwargs.items() if key in ACMIZE_FIELDS}
        knobs = {key: value for key, value in acmize_kwargs.items()
                 if key not in ACMIZE_FIELDS and key not in CONVERSION_ONLY}
        if knobs:
            fields["acm_knobs"] = knobs
        return fields

    #: deprecated name of :attr:`acm_method` (reads and writes it, with a DeprecationWarning)
    acm_gating = deprecated_alias("acm_method", "acm_gating", "AcmBertConfig")

    def set_halting_knob(self, key: str, value: Any) -> None:
        """Keep a knob changed on the modules (``pact_zoo.set_threshold``) in the saved config."""
        self.acm_knobs[key] = value
