# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""PACT-Encoder: a pretrained transformer encoder (BERT, RoBERTa, ELECTRA, DistilBERT) whose depth each sample
chooses, with per-sample early exit inside a batch.

The backbone's encoder layers are the units of one :class:`~pact_zoo.halting.AdaptiveStage`; a halting head after
every layer but the last reads the [CLS] state (position 0) and gives a halting logit per sample. In training the
classifier reads the method's mixture of the layer outputs (PACT: the Concrete relaxation of the stopping
distribution, Figurnov, Sobolev, Vetrov 2018, arXiv:1712.00386; ACT: Graves 2016's mean-field weights,
arXiv:1603.08983); in evaluation each sample stops at its own layer and halted samples leave the batch: their hidden
states **and** their attention-mask rows (the stage's per-row ``context``), so the layers that follow run on the
samples still going only, each sub-batch cut to its own longest row (``AdaptiveStage.trim_padding``: short reviews
do not pay for the batch's longest one; padding positions of the output are zero there). The halting math is the
core's (``pact_zoo.halting``): this file wires the backbone's embeddings and layers into it.

Why [CLS]: the halting head sees the state only (the stage hands the mask to the units, not to the heads), and the
classifier reads [CLS] too, so the head judges the very vector the prediction comes from.

Remote code: :meth:`PactEncoderPreTrainedModel.save_pretrained` writes this file, ``configuration_pact_encoder.py``
and the modules they import (the halting core, copied flat) next to the weights, with an ``auto_map``; such a folder
loads with ``trust_remote_code=True`` where pact_zoo is not installed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel
from transformers import initialization as init
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput, logging

try:  # the one halting core (pact_zoo/halting)
    from pact_zoo.halting.config import HaltingConfig
    from pact_zoo.halting.deprecation import renamed_kwarg
    from pact_zoo.halting.exits import NUM_CERTAINTY_FEATURES, exit_certainty_features
    from pact_zoo.halting.flops import current_profiler, self_attention_flops
    from pact_zoo.halting.heads import VectorHaltingHead
    from pact_zoo.halting.report import halting_loss
    from pact_zoo.halting.stage import AdaptiveStage, zero_touch
except ModuleNotFoundError as error:  # remote code without pact_zoo: the core files are saved next to this file
    if error.name is None or not error.name.startswith("pact_zoo"):
        raise
    from .config import HaltingConfig
    from .deprecation import renamed_kwarg
    from .exits import NUM_CERTAINTY_FEATURES, exit_certainty_features
    from .flops import current_profiler, self_attention_flops
    from .heads import VectorHaltingHead
    from .report import halting_loss
    from .stage import AdaptiveStage, zero_touch
from .configuration_pact_encoder import SUPPORTED_ENCODERS, PactEncoderConfig, check_encoder_type
from .backbones import folder_tokenizer, load_backbone, pool_tokens, sentence_transformers_pooling
from .halting_model import HaltingModelMixin, UnitsExecutedOutput
from .losses import IGNORE_INDEX, check_labels, problem_type, sequence_loss, token_loss
from .remote_code import remote_code_files as shared_remote_code_files

logger = logging.get_logger(__name__)

#: Auto classes written to ``config.json`` (``auto_map``) by :meth:`PactEncoderPreTrainedModel.save_pretrained`.
AUTO_MAP_CLASSES = {
    "AutoModel": "PactEncoderModel",
    "AutoModelForSequenceClassification": "PactEncoderForSequenceClassification",
    "AutoModelForTokenClassification": "PactEncoderForTokenClassification",
}


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class PactEncoderModelOutput(UnitsExecutedOutput, ModelOutput):
    """Output of :class:`PactEncoderModel`.

    Args:
        last_hidden_state: ``[B, T, H]`` state where each sample stopped (training: the method's mixture over layers).
        ponder_cost: ``[B]`` per-sample halting cost (PACT: relaxed sum_n n w_n or E_q[z] in training, N in eval;
            ACT: N + R; ``"none"``: layers run, not part of the loss).
        units_executed: ``[B]`` long, encoder layers run per sample (the halting core's name, as in
            ``HaltingRecord`` / ``HaltingReport``; ``layers_executed``, its former name, still reads it with a
            DeprecationWarning).
    """

    former_units_field = "layers_executed"

    last_hidden_state: Optional[torch.FloatTensor] = None
    ponder_cost: Optional[torch.FloatTensor] = None
    units_executed: Optional[torch.LongTensor] = None


@dataclass
class PactEncoderSequenceClassifierOutput(UnitsExecutedOutput, ModelOutput):
    """Output of :class:`PactEncoderForSequenceClassification`.

    Args:
        loss: scalar, task loss + the halting loss (adaptive methods), when ``labels`` are given.
        logits: ``[B, num_labels]`` from the [CLS] state where each sample stopped.
        ponder_cost, units_executed: as in :class:`PactEncoderModelOutput`.
    """

    former_units_field = "layers_executed"

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    ponder_cost: Optional[torch.FloatTensor] = None
    units_executed: Optional[torch.LongTensor] = None


@dataclass
class PactEncoderTokenClassifierOutput(UnitsExecutedOutput, ModelOutput):
    """Output of :class:`PactEncoderForTokenClassification`.

    Args:
        loss: scalar, task loss over the real tokens + the halting loss, when ``labels`` are given.
        logits: ``[B, T, num_labels]``.
        ponder_cost, units_executed: as in :class:`PactEncoderModelOutput`.
    """

    former_units_field = "layers_executed"

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    ponder_cost: Optional[torch.FloatTensor] = None
    units_executed: Optional[torch.LongTensor] = None


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------
class PactEncoderLayerUnit(nn.Module):
    """One backbone encoder layer as a unit of the :class:`AdaptiveStage`: ``(hidden, mask) -> hidden``.

    The layer is looked up in the backbone's layer list at every call, not registered here, so the state dict keeps
    the backbone's own key layout and wrappers that replace the list's entries (FSDP) are called.

    Args:
        layers: the backbone's ``nn.ModuleList`` of encoder layers (referenced, not registered).
        index: this unit's layer.
        encoder_config: the backbone's config (attention implementation for the mask).

    Shapes: ``hidden`` ``[B, T, H]``, ``mask`` ``[B, T]`` (1 = real token, 0 = padding) -> ``[B, T, H]``.
    """

    def __init__(self, layers: nn.ModuleList, index: int, encoder_config) -> None:
        super().__init__()
        self.__dict__["layers"] = layers
        self.__dict__["encoder_config"] = encoder_config
        self.index = index
        self.attention_width = encoder_config.hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        profiler = current_profiler()
        if profiler is not None:  # attention matmuls are not modules: count them for the one profiled sample
            profiler.add(self_attention_flops(hidden.shape[1], self.attention_width))
        attention_mask = create_bidirectional_mask(config=self.encoder_config, inputs_embeds=hidden,
                                                   attention_mask=mask)
        return self.layers[self.index](hidden, attention_mask)

    def extra_repr(self) -> str:
        return f"layer={self.index}"


class _ExitReader:
    """Mixin of the heads that read the model's exit classifiers: the classification model binds its
    ``exit_logits(layer, hidden, mask)`` after building them (kept out of the module tree: no state-dict keys)."""

    def bind_exit(self, exit_logits) -> None:
        self.__dict__["_exit_logits"] = exit_logits

    def _exit(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        exit_logits = self.__dict__.get("_exit_logits")
        if exit_logits is None:
            raise ValueError("this head reads an exit classifier: use PactEncoderForSequenceClassification (the "
                             "base PactEncoderModel has none)")
        return exit_logits(self.layer, x, mask)


class PactEncoderHaltingHead(_ExitReader, VectorHaltingHead):
    """Halting head on the pooled state: h = sigmoid(W pool(s) + b) (Graves 2016 eq. 6), pooled as the classifier
    pools (``pooling``); with ``exit_features`` it also reads the certainty of the layer's exit (largest softmax
    probability and 1 - normalised entropy, detached).

    Shape: ``[B, T, H]`` state and ``[B, T]`` attention mask -> ``[B]`` halting logits.
    """

    uses_context = True
    #: certainty features of the exit read with ``exit_features``
    NUM_EXIT_FEATURES = NUM_CERTAINTY_FEATURES

    def __init__(self, hidden_size: int, pooling: str = "cls", layer: int = 1, exit_features: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(hidden_size + (self.NUM_EXIT_FEATURES if exit_features else 0), **kwargs)
        self.pooling, self.layer, self.exit_features = pooling, layer, exit_features

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        features = pool_tokens(x, mask, self.pooling)
        if self.exit_features:
            certainty = exit_certainty_features(self._exit(x, mask))
            features = torch.cat([features, certainty.to(features.dtype)], dim=-1)
        return super().forward(features)


class PactEncoderExit(_ExitReader, nn.Module):
    """The exit classifier of one layer as a head of the adaptive stage, for the early-exit rules (``confidence``,
    ``entropy``, ``patience``): ``[B, T, H]`` state and ``[B, T]`` mask -> ``[B, num_labels]`` class logits. It owns
    no weights: the classification model's exit classifiers are bound to it."""

    is_exit = True
    uses_context = True

    def __init__(self, layer: int) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._exit(x, mask)

    def extra_repr(self) -> str:
        return f"layer={self.layer}"


class PactEncoderPooler(nn.Module):
    """[CLS] pooler for backbones without one (RoBERTa-style ``dense -> tanh``). ``[B, T, H]`` -> ``[B, H]``."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))


# --------------------------------------------------------------------------------------------------------------------
# Pretrained base
# --------------------------------------------------------------------------------------------------------------------
def remote_code_files() -> list[Path]:
    """Source files a checkpoint needs to load with ``trust_remote_code=True`` without pact_zoo: this file, its
    configuration, the shared helpers beside them and the halting core they import (copied flat)."""
    return shared_remote_code_files(
        anchors=(PactEncoderConfig, PactEncoderModel),
        core=(HaltingConfig, exit_certainty_features, current_profiler, VectorHaltingHead, AdaptiveStage, halting_loss))


class PactEncoderPreTrainedModel(HaltingModelMixin, PreTrainedModel):
    """Weight init, ``from_backbone`` and ``convert_from`` shared by the PACT-Encoder models; halting knobs, losses and
    remote-code saving come from :class:`HaltingModelMixin`."""

    config: PactEncoderConfig
    config_class = PactEncoderConfig
    base_model_prefix = "pact_encoder"
    main_input_name = "input_ids"
    input_modalities = ("text",)
    _no_split_modules = ["BertLayer", "RobertaLayer", "ElectraLayer", "TransformerBlock"]
    _supports_sdpa = True
    supports_gradient_checkpointing = False
    #: class-name suffix of a plain model whose ``classifier`` this head can take over in :meth:`from_backbone`
    _head_suffix: Optional[str] = None

    def __init__(self, config: PactEncoderConfig, *inputs, **kwargs) -> None:
        super().__init__(config, *inputs, **kwargs)
        self.tokenizer = None  # saved with the weights when set (from_backbone, from_pretrained of a folder with one)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """transformers' default, with the backbone's ``initializer_range``; halting heads: bias =
        ``halting_bias_init`` (set on the head's ``nn.Linear``: transformers skips custom modules without
        parameters of their own)."""
        std = getattr(self.config.encoder, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
            if any(module is head.fc for head in self.modules() if isinstance(head, VectorHaltingHead)):
                init.constant_(module.bias, self.config.halting_bias_init)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    # -- building from a plain pretrained encoder ---------------------------------------------------------------------
    @classmethod
    def from_backbone(cls, backbone: Union[str, os.PathLike, PreTrainedModel], num_labels: int = 2,
                      method: str = "pact", tokenizer: Any = None,
                      **kwargs: Any) -> "PactEncoderPreTrainedModel":
        """An adaptive model from a plain pretrained encoder (a folder / hub id, or a loaded model).

        The backbone's weights are copied unchanged (bit-identical); the halting heads, and the pooler and
        classifier where the backbone has none, are new: their names are in ``model.new_weights`` (and logged). A
        BERT-style ``*ForSequenceClassification`` model with ``num_labels`` labels gives its classifier too. The
        tokenizer (loaded from a folder, or passed) is saved with the model.

        Args:
            backbone: path, hub id, or a ``PreTrainedModel`` of a supported architecture (``SUPPORTED_ENCODERS``).
                With ``pooling="auto"`` (default) a sentence-transformers folder's pooling is used (all-MiniLM-L6-v2:
                masked mean), else [CLS].
            num_labels: classes of the new classifier.
            method: a registered halting method (``"none"``: the plain encoder); ``halting_method=``, its former
                name, still works with a DeprecationWarning.
            tokenizer: a tokenizer to save with the model (default: the backbone folder's).
            **kwargs: halting knobs (``tau=...``, ``threshold=...``, ``halting_bias_init=...``) and other
                :class:`PactEncoderConfig` fields (``classifier_dropout``, ``id2label``, ...).
        """
        if not (isinstance(num_labels, int) and not isinstance(num_labels, bool) and num_labels >= 1):
            raise ValueError(f"num_labels must be an int >= 1 (classes of the new classifier), got {num_labels!r}")
        method = renamed_kwarg(kwargs, "halting_method", "method", method, "pact", f"{cls.__name__}.from_backbone")
        if kwargs.get("pooling", "auto") == "auto":
            found = (sentence_transformers_pooling(backbone) if isinstance(backbone, (str, os.PathLike))
                     and Path(backbone).is_dir() else None)
            kwargs["pooling"] = found or "cls"
        source_name = str(backbone) if isinstance(backbone, (str, os.PathLike)) else None
        if isinstance(backbone, (str, os.PathLike)):
            source = str(backbone)
            backbone = load_backbone(source)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(source)
        if not isinstance(backbone, PreTrainedModel):
            raise ValueError(f"backbone must be a path, a hub id or a transformers PreTrainedModel, "
                             f"got {type(backbone).__name__}")
        base = backbone.base_model
        check_encoder_type(base.config.model_type)
        kwargs.setdefault("backbone_source", source_name)
        config = PactEncoderConfig(encoder=base.config.to_dict(), num_labels=num_labels,
                                   method=method, **kwargs)
        model = cls(config)
        loaded = model._copy_backbone(base)
        classifier, own = getattr(backbone, "classifier", None), getattr(model, "classifier", None)
        same_head = type(backbone).__name__.endswith(cls._head_suffix) if cls._head_suffix else False
        if cls._head_suffix == "ForSequenceClassification":  # BERT-style: pooler -> dropout -> classifier
            same_head = (same_head and getattr(base, "pooler", None) is not None and model.pooler is None
                         and config.resolved_pooling == "cls")
        if (same_head and isinstance(classifier, nn.Linear) and isinstance(own, nn.Linear)
                and classifier.weight.shape == own.weight.shape):
            own.load_state_dict(classifier.state_dict())
            loaded |= {f"classifier.{key}" for key in classifier.state_dict()}
        model.new_weights = sorted(key for key in model.state_dict() if key not in loaded)
        model.config.new_weights = model.new_weights
        logger.warning(f"{cls.__name__}.from_backbone: new weights (train them): {model.new_weights}")
        model.tokenizer = tokenizer
        return model

    def _copy_backbone(self, base: PreTrainedModel) -> set[str]:
        """Copy a plain encoder's weights (its base model) into this model's backbone, unchanged; returns their names
        in this model's state dict. The pooler is left out where this model reads none."""
        target = self.base_model.backbone
        source = base.state_dict()
        if getattr(target, "pooler", None) is None:  # heads that do not read the pooler (token classification)
            source = {key: value for key, value in source.items() if not key.startswith("pooler.")}
        try:
            result = target.load_state_dict(source, strict=False)
        except RuntimeError as exc:  # a tensor of another shape
            raise ValueError(f"backbone weights do not fit this {base.config.model_type} encoder: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        if result.unexpected_keys:
            raise ValueError(f"backbone weights do not fit a {base.config.model_type} encoder: unexpected "
                             f"{result.unexpected_keys[:5]}")
        prefix = self.adapter_backbone()[0]
        return {prefix + key for key in source}

    def adapter_backbone(self) -> tuple[str, nn.Module]:
        """``(prefix, module)``: the pretrained encoder inside this model and its state-dict prefix."""
        prefix = f"{self.base_model_prefix}.backbone." if self.base_model is not self else "backbone."
        return prefix, self.base_model.backbone

    def load_adapter_backbone(self, source: str) -> None:
        """Load the plain encoder at ``source`` (folder or hub id) into this model's backbone; its tokenizer, if it
        has one, becomes the model's."""
        backbone = load_backbone(source)
        check_encoder_type(backbone.base_model.config.model_type)
        self._copy_backbone(backbone.base_model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError):  # a backbone saved without its tokenizer
            self.tokenizer = None

    @classmethod
    def convert_from(cls, source: Union[str, os.PathLike], **overrides: Any) -> "PactEncoderPreTrainedModel":
        """An adaptive model from a saved PACT-Encoder folder (e.g. a plain fine-tune, ``method="none"``)
        with other halting settings: every weight of the source is kept unchanged, the weights the new settings add
        (halting heads, exit classifiers) start fresh and are listed in ``model.new_weights`` (with the source's
        own new weights, if it records them). Source weights the new model has no place for (e.g. the heads of
        another method) are dropped.

        Args:
            source: a folder written by ``save_pretrained``.
            **overrides: :class:`PactEncoderConfig` fields (``method``, ``exit_classifiers``,
                ``halting_features``, ...) and halting knobs (``tau=...``, ``threshold=...``). Changing
                ``method`` starts from that method's default knobs (``halting_method``: its deprecated name).
        """
        from safetensors.torch import load_file

        folder = Path(source)
        weights_file = folder / "model.safetensors"
        if not weights_file.is_file():
            raise FileNotFoundError(f"source must be a saved PACT-Encoder folder with model.safetensors: {folder}")
        config = PactEncoderConfig.from_pretrained(folder)
        fields = config.to_dict()
        knobs = dict(config.halting_knobs or {})
        if "halting_method" in overrides:
            overrides["method"] = renamed_kwarg(overrides, "halting_method", "method", overrides.get("method"), None,
                                                f"{cls.__name__}.convert_from")
        if overrides.get("method", config.method) != config.method:
            knobs = {}
        knobs.update(HaltingConfig.pop_knob_kwargs(overrides))
        for key in ("halting_knobs", "auto_map", "architectures", "transformers_version", "model_type",
                    "new_weights"):
            fields.pop(key, None)
        fields.update(overrides)
        new_config = PactEncoderConfig(**fields, halting_knobs=knobs)
        model = cls(new_config)
        state = load_file(str(weights_file))
        own = model.state_dict()
        fitting = {key: value for key, value in state.items() if key in own and own[key].shape == value.shape}
        model.load_state_dict(fitting, strict=False)
        previous = set(config.new_weights or [])
        model.new_weights = sorted(key for key in own if key not in fitting or key in previous)
        model.config.new_weights = model.new_weights
        dropped = sorted(set(state) - set(fitting))
        if dropped:
            logger.warning(f"{cls.__name__}.convert_from: source weights without a place in the new model: {dropped}")
        saved = folder_tokenizer(folder, config)
        if saved is not None:  # else the backbone's, if any
            model.tokenizer = saved
        return model

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``; a local folder's saved tokenizer is attached (saved again with the
        model; :func:`~pact_zoo.hf.backbones.folder_tokenizer`)."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        if isinstance(model, PactEncoderPreTrainedModel) and model.config.new_weights is not None:
            model.new_weights = list(model.config.new_weights)
        saved = folder_tokenizer(str(pretrained_model_name_or_path), model.config)
        if saved is not None:  # else the one a halting adapter's backbone brought, if any
            model.tokenizer = saved
        return model

    auto_map_classes = AUTO_MAP_CLASSES

    @classmethod
    def remote_code_files(cls) -> list[Path]:
        return remote_code_files()

    def halting_profile_inputs(self, length: int = 1) -> tuple[tuple, dict]:
        """A one-sample forward of ``length`` real tokens, for ``pact_zoo.halting_report`` to profile the FLOPs of
        every layer and head at that length."""
        device = next(self.parameters()).device
        return (), {"input_ids": torch.zeros(1, length, dtype=torch.long, device=device),
                    "attention_mask": torch.ones(1, length, dtype=torch.long, device=device)}

    def halting_sample_lengths(self) -> Optional[torch.Tensor]:
        """``[B]`` real tokens per sample of the last forward (``pact_zoo.halting_report`` counts each sample's FLOPs
        at its own length, padding excluded)."""
        return self.base_model.__dict__.get("_sample_lengths")

    # -- remote code --------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs) -> None:
        """:meth:`HaltingModelMixin.save_pretrained` (weights, config with ``auto_map``, remote code) and the
        tokenizer, if set."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True) and self.tokenizer is not None:
            self.tokenizer.save_pretrained(save_directory)


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------
class PactEncoderModel(PactEncoderPreTrainedModel):
    """The backbone's embeddings, then its encoder layers as one adaptive stage.

    Inputs: ``input_ids`` ``[B, T]`` or ``inputs_embeds`` ``[B, T, E]``; ``attention_mask`` ``[B, T]`` (1 = real
    token, 0 = padding; right padding: the first token, [CLS], is real in every row); ``token_type_ids`` and
    ``position_ids`` ``[B, T]`` where the backbone takes them.
    """

    def __init__(self, config: PactEncoderConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        check_encoder_type(config.encoder.model_type)
        layer_path, self._token_types, projection, pooled = SUPPORTED_ENCODERS[config.encoder.model_type]
        self.backbone = AutoModel.from_config(config.encoder, **({"add_pooling_layer": add_pooling_layer}
                                                                  if pooled else {}))
        self._projection = projection
        layers = self.backbone.get_submodule(layer_path)
        halting: HaltingConfig = config.halting_config
        units = [PactEncoderLayerUnit(layers, n, self.backbone.config) for n in range(len(layers))]
        heads = None
        if halting.reads_exits and len(units) > 1:
            heads = [PactEncoderExit(layer) for layer in range(1, len(units))]
        elif halting.adaptive and len(units) > 1:
            exit_features = config.halting_features == "state_and_exit"
            heads = [PactEncoderHaltingHead(config.hidden_size, pooling=config.resolved_pooling, layer=layer,
                                            exit_features=exit_features, bias_init=halting.halting_bias_init)
                     for layer in range(1, len(units))]
        self.stage = AdaptiveStage(units, heads, method=halting if heads is not None else "none")
        # compact eval cuts every sub-batch to its own longest row (the layers attend under the mask only)
        self.stage.trim_padding = True
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.backbone.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.backbone.set_input_embeddings(value)

    def _check_inputs(self, input_ids, inputs_embeds, attention_mask, token_type_ids) -> tuple[int, int]:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
                raise ValueError(f"input_ids must be an integer tensor [batch, seq_len], got {input_ids.dtype} "
                                 f"{tuple(input_ids.shape)}")
            vocab = self.config.encoder.vocab_size
            if input_ids.device.type != "meta" and input_ids.numel() and (
                    int(input_ids.min()) < 0 or int(input_ids.max()) >= vocab):
                raise ValueError(f"input_ids must lie in [0, vocab_size={vocab})")
            shape = tuple(input_ids.shape)
        else:
            if inputs_embeds.dim() != 3 or not inputs_embeds.dtype.is_floating_point:
                raise ValueError(f"inputs_embeds must be a float tensor [batch, seq_len, embedding], got "
                                 f"{inputs_embeds.dtype} {tuple(inputs_embeds.shape)}")
            shape = tuple(inputs_embeds.shape[:2])
        if shape[0] < 1 or shape[1] < 1:
            raise ValueError(f"input sequences must hold at least one token (batch, seq_len) = {shape}")
        if token_type_ids is not None and not self._token_types:
            raise ValueError(f"token_type_ids: a {self.config.encoder.model_type} backbone has no token types")
        if attention_mask is not None:
            if tuple(attention_mask.shape) != shape:
                raise ValueError(f"attention_mask must be [batch, seq_len] = {shape}, got "
                                 f"{tuple(attention_mask.shape)}")
            if attention_mask.device.type != "meta":
                if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                    raise ValueError("attention_mask must hold 0 (padding) and 1 (real token) only")
                if self.config.resolved_pooling == "cls" and not bool(attention_mask[:, 0].bool().all()):
                    raise ValueError("attention_mask must mark the first token ([CLS]) of every sequence as real "
                                     "(empty sequences and left padding are not supported with pooling='cls')")
                if not bool(attention_mask.bool().any(1).all()):
                    raise ValueError("attention_mask must mark at least one real token in every sequence")
        return shape

    def forward(
            self,
            input_ids: Optional[torch.LongTensor] = None,
            attention_mask: Optional[torch.Tensor] = None,
            token_type_ids: Optional[torch.LongTensor] = None,
            position_ids: Optional[torch.LongTensor] = None,
            inputs_embeds: Optional[torch.FloatTensor] = None,
            return_dict: Optional[bool] = None,
            **kwargs: Any,
    ) -> Union[PactEncoderModelOutput, tuple]:
        """Returns :class:`PactEncoderModelOutput` (``last_hidden_state`` ``[B, T, H]``, ``ponder_cost`` ``[B]``,
        ``units_executed`` ``[B]``), or its tuple with ``return_dict=False``."""
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        batch_size, seq_len = self._check_inputs(input_ids, inputs_embeds, attention_mask, token_type_ids)
        device = (input_ids if input_ids is not None else inputs_embeds).device
        if attention_mask is None:
            attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=device)
        embed_kwargs = dict(input_ids=input_ids, position_ids=position_ids, inputs_embeds=inputs_embeds)
        if self._token_types:
            embed_kwargs["token_type_ids"] = token_type_ids
        hidden = self.backbone.embeddings(**embed_kwargs)
        if self._projection is not None and hasattr(self.backbone, self._projection):
            hidden = getattr(self.backbone, self._projection)(hidden)
        profiling = current_profiler() is not None
        if not profiling:  # a profiling forward leaves the last forward's lengths alone
            self.__dict__["_sample_lengths"] = attention_mask.sum(1)
        hidden = self.stage(hidden, attention_mask)
        ponder_cost, layers = None, None
        if not profiling:
            record = self.stage.record
            layers = record.units_executed
            ponder_cost = record.cost if record.cost is not None else layers.float()
            if record.touch is not None:  # layers no sampled row reached still join the graph (DDP)
                record.touch = zero_touch(self)
        output = PactEncoderModelOutput(last_hidden_state=hidden, ponder_cost=ponder_cost, units_executed=layers)
        return output if return_dict else output.to_tuple()


def _classifier_dropout(config: PactEncoderConfig) -> float:
    """``config.classifier_dropout``, else the backbone's hidden dropout (BERT ``hidden_dropout_prob``,
    DistilBERT ``dropout``)."""
    if config.classifier_dropout is not None:
        return config.classifier_dropout
    return getattr(config.encoder, "hidden_dropout_prob", getattr(config.encoder, "dropout", 0.0))


class PactEncoderForSequenceClassification(PactEncoderPreTrainedModel):
    """PACT-Encoder with a classifier on the pooled state where each sample stopped. ``pooling="cls"``: the [CLS]
    state through the backbone's pooler where it has one (BERT), else a new ``dense -> tanh`` pooler; ``"mean"`` /
    ``"max"``: the masked mean / max of the token states. Then dropout and a linear layer: one shared by every exit,
    or with ``exit_classifiers="per_layer"`` one per layer (``exit_classifiers.<n>``, layers 1..L-1, and
    ``classifier`` for layer L), each sample read by the classifier of the layer where it stopped."""

    _head_suffix = "ForSequenceClassification"

    def __init__(self, config: PactEncoderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pooling = config.resolved_pooling
        self.pact_encoder = PactEncoderModel(config, add_pooling_layer=self.pooling == "cls")
        has_pooler = getattr(self.pact_encoder.backbone, "pooler", None) is not None
        self.pooler = PactEncoderPooler(config.hidden_size) if self.pooling == "cls" and not has_pooler else None
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        stage = self.pact_encoder.stage
        self.exit_classifiers = None
        if config.exit_classifiers == "per_layer":  # layers 1..L-1; layer L reads ``classifier``
            self.exit_classifiers = nn.ModuleList(nn.Linear(config.hidden_size, config.num_labels)
                                                  for _ in range(stage.num_units - 1))
            if stage.adaptive and stage.method.accumulates:
                raise ValueError(f"exit_classifiers='per_layer' needs a method that takes the state where a sample "
                                 f"stops; {stage.method.name!r} accumulates states (use exit_classifiers='shared')")
            stage.keep_unit_outputs = True  # dense training mixes the exits' logits
        for head in stage.heads or []:
            if isinstance(head, _ExitReader):
                head.bind_exit(self.exit_logits)
        self.post_init()

    def _pool(self, hidden: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, T, H]`` -> ``[B, H]``: [CLS] through the pooler, or the masked mean / max (``pooling``)."""
        if self.pooling != "cls":
            return pool_tokens(hidden, mask, self.pooling)
        pooler = self.pooler if self.pooler is not None else self.pact_encoder.backbone.pooler
        return pooler(hidden)

    def exit_logits(self, layer: int, hidden: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """``[B, num_labels]`` logits of the exit after encoder layer ``layer`` (1-based) on its ``[B, T, H]`` state:
        pooled, dropout, then the layer's classifier (``classifier`` for the last layer or a shared exit)."""
        classifier = self.classifier
        if self.exit_classifiers is not None and layer < len(self.exit_classifiers) + 1:
            classifier = self.exit_classifiers[layer - 1]
        return classifier(self.dropout(self._pool(hidden, mask)))

    def _classify(self, hidden: torch.Tensor, mask: torch.Tensor, layers: Optional[torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, num_labels]`` of each sample's exit: the shared classifier, or with per-layer exits the
        classifier of the layer where each sample stopped (dense training: the method's mixture of every exit's
        logits, the Concrete relaxation applied to the output)."""
        num_layers = self.pact_encoder.stage.num_units
        if self.exit_classifiers is None or layers is None:
            return self.exit_logits(num_layers, hidden, mask)
        record = self.pact_encoder.stage.record
        if record.unit_outputs is not None and record.weights is not None:
            weights = record.weights
            logits = None
            for n, state in enumerate(record.unit_outputs):
                term = self.exit_logits(n + 1, state, mask) * weights[:, n:n + 1].to(state.dtype)
                logits = term if logits is None else logits + term
            return logits
        depths = layers.unique().tolist()
        if len(depths) == 1:
            return self.exit_logits(int(depths[0]), hidden, mask)
        logits = hidden.new_zeros(hidden.shape[0], self.num_labels)
        for depth in depths:
            rows = torch.nonzero(layers == depth).view(-1)
            part = self.exit_logits(int(depth), hidden.index_select(0, rows), mask.index_select(0, rows))
            logits = logits.index_copy(0, rows, part.to(logits.dtype))
        return logits

    def forward(
            self,
            input_ids: Optional[torch.LongTensor] = None,
            attention_mask: Optional[torch.Tensor] = None,
            token_type_ids: Optional[torch.LongTensor] = None,
            position_ids: Optional[torch.LongTensor] = None,
            inputs_embeds: Optional[torch.FloatTensor] = None,
            labels: Optional[torch.Tensor] = None,
            return_dict: Optional[bool] = None,
            **kwargs: Any,
    ) -> Union[PactEncoderSequenceClassifierOutput, tuple]:
        r"""
        labels: ``[B]`` class ids (single-label), ``[B, num_labels]`` (multi-label / regression) or ``[B]``
            (regression with ``num_labels == 1``).

        Returns :class:`PactEncoderSequenceClassifierOutput` (``logits`` ``[B, num_labels]``).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      position_ids=position_ids, inputs_embeds=inputs_embeds)
        if labels is not None:  # bad labels fail before any forward
            check_labels(labels, problem_type(self.config, labels), self.num_labels,
                          (input_ids if input_ids is not None else inputs_embeds).shape[:1])
        baseline = self._rollout_baseline(labels, lambda: self._task_loss(self(**inputs).logits, labels, rows=True))
        outputs = self.pact_encoder(**inputs, return_dict=True)
        mask = attention_mask
        if mask is None:
            shape = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
            mask = torch.ones(shape, dtype=torch.long, device=outputs.last_hidden_state.device)
        logits = self._classify(outputs.last_hidden_state, mask.to(outputs.last_hidden_state.device),
                                outputs.units_executed)
        loss = None
        if labels is not None:
            loss = self._total_loss(partial(self._task_loss, logits, labels), baseline)
        output = PactEncoderSequenceClassifierOutput(loss=loss, logits=logits, ponder_cost=outputs.ponder_cost,
                                                     units_executed=outputs.units_executed)
        return output if return_dict else output.to_tuple()

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor, rows: bool = False) -> torch.Tensor:
        return sequence_loss(self.config, logits, labels, rows)


class PactEncoderForTokenClassification(PactEncoderPreTrainedModel):
    """PACT-Encoder with a linear classifier on every token of the state where its sample stopped."""

    _head_suffix = "ForTokenClassification"

    def __init__(self, config: PactEncoderConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        if config.halting_config.reads_exits or config.exit_classifiers != "shared":
            raise ValueError(f"method={config.method!r} / exit_classifiers="
                             f"{config.exit_classifiers!r}: exit classifiers are built for sequence "
                             "classification; token classification halts with learned heads only")
        self.pact_encoder = PactEncoderModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.pooler = None
        self.post_init()

    def forward(
            self,
            input_ids: Optional[torch.LongTensor] = None,
            attention_mask: Optional[torch.Tensor] = None,
            token_type_ids: Optional[torch.LongTensor] = None,
            position_ids: Optional[torch.LongTensor] = None,
            inputs_embeds: Optional[torch.FloatTensor] = None,
            labels: Optional[torch.Tensor] = None,
            return_dict: Optional[bool] = None,
            **kwargs: Any,
    ) -> Union[PactEncoderTokenClassifierOutput, tuple]:
        r"""
        labels: ``[B, T]`` class ids (``-100`` ignored) or ``[B, T, num_labels]``; padding never counts.

        Returns :class:`PactEncoderTokenClassifierOutput` (``logits`` ``[B, T, num_labels]``).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                      position_ids=position_ids, inputs_embeds=inputs_embeds)
        baseline = self._rollout_baseline(labels, lambda: self._task_loss(self(**inputs).logits, labels,
                                                                          attention_mask, rows=True))
        outputs = self.pact_encoder(**inputs, return_dict=True)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = self._total_loss(partial(self._task_loss, logits, labels, attention_mask), baseline)
        output = PactEncoderTokenClassifierOutput(loss=loss, logits=logits, ponder_cost=outputs.ponder_cost,
                                                  units_executed=outputs.units_executed)
        return output if return_dict else output.to_tuple()

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor, attention_mask: Optional[torch.Tensor],
                   rows: bool = False) -> torch.Tensor:
        return token_loss(self.config, logits, labels, attention_mask, rows)


__all__ = [
    "IGNORE_INDEX", "PactEncoderExit", "PactEncoderHaltingHead", "pool_tokens", "sentence_transformers_pooling",
    "PactEncoderForSequenceClassification", "PactEncoderForTokenClassification", "PactEncoderModel",
    "PactEncoderModelOutput", "PactEncoderPreTrainedModel", "PactEncoderSequenceClassifierOutput",
    "PactEncoderTokenClassifierOutput", "remote_code_files",
]
