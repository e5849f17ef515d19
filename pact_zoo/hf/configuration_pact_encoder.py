# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""PACT-Encoder configuration: a pretrained transformer encoder (BERT, RoBERTa, ELECTRA, DistilBERT) whose depth
each sample chooses.

A halting head after every encoder layer decides per sample how many layers run (PACT, Figurnov, Sobolev, Vetrov
2018, arXiv:1712.00386; ACT, Graves 2016, arXiv:1603.08983; or any registered halting method). The backbone's own
configuration is nested whole (``encoder``, like ``EncoderDecoderConfig``), so its weights load unchanged.

This file travels with checkpoints as remote code (``trust_remote_code=True``), so it imports the halting core
from ``pact_zoo.halting`` when pact_zoo is installed and from the copy saved next to it otherwise.
"""
from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

try:  # the one halting core (pact_zoo/halting)
    from pact_zoo.halting.config import HaltingConfig
    from pact_zoo.halting.deprecation import deprecated_alias
except ModuleNotFoundError as error:  # remote code without pact_zoo: the core files are saved next to this file
    if error.name is None or not error.name.startswith("pact_zoo"):
        raise
    from .config import HaltingConfig
    from .deprecation import deprecated_alias

_HALTING_DEFAULTS = HaltingConfig()

#: Backbone ``model_type`` -> (path of the encoder's layer list in the base model, whether the embeddings take
#: ``token_type_ids``, optional projection after the embeddings, whether the base model has a [CLS] pooler).
#: Adding an architecture is one row here.
SUPPORTED_ENCODERS: dict[str, tuple[str, bool, str | None, bool]] = {
    "bert": ("encoder.layer", True, None, True),
    "roberta": ("encoder.layer", True, None, True),
    "electra": ("encoder.layer", True, "embeddings_project", False),
    "distilbert": ("transformer.layer", False, None, False),
}


#: How heads and classifier read a layer's ``[B, T, H]`` state: the [CLS] token (through the backbone's pooler where it
#: has one), or the masked mean / max over the real tokens. ``"auto"`` resolves when the model is built from a backbone
#: folder (a sentence-transformers ``1_Pooling/config.json`` decides; otherwise [CLS]).
POOLING_MODES = ("auto", "cls", "mean", "max")
#: ``"shared"``: one classifier reads every exit; ``"per_layer"``: each layer has its own (DeeBERT, PABEE).
EXIT_CLASSIFIERS = ("shared", "per_layer")
#: What a learned halting head reads: the pooled state, or the pooled state and its exit's certainty (largest
#: softmax probability and 1 - normalised entropy, detached).
HALTING_FEATURES = ("state", "state_and_exit")


def check_encoder_type(model_type: str) -> None:
    """Raise ValueError unless ``model_type`` is a supported backbone architecture."""
    if model_type not in SUPPORTED_ENCODERS:
        raise ValueError(f"unsupported backbone architecture {model_type!r}: pact_encoder supports "
                         f"{', '.join(SUPPORTED_ENCODERS)}")


class PactEncoderConfig(PreTrainedConfig):
    r"""Configuration of :class:`PactEncoderModel` and its heads.

    Args:
        encoder (`PreTrainedConfig` or `dict`, *optional*):
            The backbone's configuration (``BertConfig``, ``RobertaConfig``, ``ElectraConfig``, ``DistilBertConfig``
            or its ``to_dict()``); defaults to a ``BertConfig``.
        method (`str`, defaults to ``"pact"``):
            A registered halting method (``pact_zoo.halting.HALTING_METHODS``); ``"none"`` is the plain encoder.
            The name timm models use too (``method=``); ``halting_method``, its former name, is still accepted
            (and read from old ``config.json`` files) with a DeprecationWarning.
        halting_bias_init (`float`, defaults to -3.0):
            Initial bias of every halting head (negative: every layer runs at the start of fine-tuning).
        halting_knobs (`dict`, *optional*):
            The method's knobs (PACT: ``tau``, ``temperature``, ``threshold``, ``cost_estimator``; ACT: ``tau``,
            ``act_eps``; ...); missing ones take the method's defaults. Knobs may also be passed flat
            (``PactEncoderConfig(tau=0.01)``); a knob of another method raises. The loss adds
            ``tau * mean_batch(rho)`` with rho the per-sample number of layers (Graves 2016 eq. 11; PACT's prior
            gives the same term with rho = E_q[z]).
        classifier_dropout (`float`, *optional*):
            Dropout before the classifier; defaults to the backbone's hidden dropout.
        pooling (`str`, defaults to ``"auto"``):
            ``"cls"``, ``"mean"``, ``"max"`` (masked by the attention mask) or ``"auto"``: the backbone folder's
            sentence-transformers pooling when :meth:`PactEncoderPreTrainedModel.from_backbone` finds one, else
            ``"cls"``. Heads, exits and classifier read the pooled state.
        exit_classifiers (`str`, defaults to ``"shared"``):
            ``"shared"`` (one classifier for every exit) or ``"per_layer"`` (a classifier per layer; the last is
            ``classifier``).
        halting_features (`str`, defaults to ``"state"``):
            What learned halting heads read: ``"state"`` (the pooled state) or ``"state_and_exit"`` (plus the
            certainty of the layer's exit).
        new_weights (`list[str]`, *optional*):
            State-dict keys added on top of the source model (halting heads, exit classifiers, a new classifier):
            what ``freeze_backbone`` training updates. Set by ``from_backbone`` and ``convert_from``.
        backbone_source (`str`, *optional*):
            The folder or hub id ``from_backbone`` read the backbone from (kept by ``convert_from``): where
            ``save_pretrained(..., adapter_only=True)`` points the adapter.
    """

    model_type = "pact_encoder"
    sub_configs_defaults = {"encoder": SubConfigSpec(config_class=AutoConfig, model_type="bert")}

    encoder: PreTrainedConfig | dict | None = None
    method: str = _HALTING_DEFAULTS.method
    halting_bias_init: float = _HALTING_DEFAULTS.halting_bias_init
    halting_knobs: dict | None = None
    classifier_dropout: float | None = None
    pooling: str = "auto"
    exit_classifiers: str = "shared"
    halting_features: str = "state"
    new_weights: list | None = None
    backbone_source: str | None = None

    def __post_init__(self, **kwargs) -> None:
        for name, choices in (("pooling", POOLING_MODES), ("exit_classifiers", EXIT_CLASSIFIERS),
                              ("halting_features", HALTING_FEATURES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        # ``halting_method``, the former name of ``method``, still read (old config.json files hold it)
        self.method, self.halting_knobs = HaltingConfig.read_method(self.method, self.halting_knobs, kwargs,
                                                                    "PactEncoderConfig")
        if self.halting_knobs is not None and not isinstance(self.halting_knobs, dict):
            raise ValueError(f"halting_knobs must be a dict or None, got {type(self.halting_knobs).__name__}")
        if self.classifier_dropout is not None and not (
                isinstance(self.classifier_dropout, (int, float)) and 0.0 <= self.classifier_dropout < 1.0):
            raise ValueError(f"classifier_dropout must be in [0, 1) or None, got {self.classifier_dropout!r}")
        flat = HaltingConfig.pop_knob_kwargs(kwargs)  # knobs passed flat, such as tau=...
        halting = HaltingConfig(self.method, self.halting_bias_init,
                                **dict(self.halting_knobs or {}, **flat))  # validates (ValueError names the knob)
        self.halting_knobs, self.halting_bias_init = halting.knobs, halting.halting_bias_init
        super().__post_init__(**kwargs)
        check_encoder_type(self.encoder.model_type)
        if getattr(self.encoder, "is_decoder", False):
            raise ValueError("encoder must be a bidirectional encoder config (is_decoder=False)")

    # the backbone's sizes (DistilBERT maps them to dim / n_layers), read by pipelines and trainers
    @property
    def hidden_size(self) -> int:
        return self.encoder.hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return self.encoder.num_hidden_layers

    @property
    def resolved_pooling(self) -> str:
        """The pooling in use: ``pooling``, with ``"auto"`` read as ``"cls"``."""
        return "cls" if self.pooling == "auto" else self.pooling

    #: deprecated name of :attr:`method` (reads and writes ``method``, with a DeprecationWarning)
    halting_method = deprecated_alias("method", "halting_method", "PactEncoderConfig")

    @property
    def halting_config(self) -> HaltingConfig:
        """The halting method and knobs as the halting core's validated :class:`HaltingConfig`."""
        return HaltingConfig(self.method, self.halting_bias_init, **(self.halting_knobs or {}))

    def set_halting_knob(self, key: str, value) -> None:
        """Change one halting knob (validated); saved with the config."""
        self.halting_knobs = HaltingConfig(self.method, self.halting_bias_init,
                                           **dict(self.halting_knobs or {}, **{key: value})).knobs


__all__ = ["EXIT_CLASSIFIERS", "HALTING_FEATURES", "POOLING_MODES", "PactEncoderConfig", "SUPPORTED_ENCODERS",
           "check_encoder_type"]
