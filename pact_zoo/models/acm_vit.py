"""ACM ViT / DeiT: timm's VisionTransformer with Adaptive Computation Modules in place of its MLP blocks (Wójcik et
al. 2023, arXiv:2312.10193), and optionally of its attention projections.

Every key outside the ACM modules is timm's own. ``pretrained=True`` loads timm's checkpoint of the base model and
converts each MLP on load (its hidden units split into the K learners, :func:`pact_zoo.acm.convert.split_ffn`; the
projections by SVD), so the ACMized model starts equal to the pretrained one at full width; the three phases of
:mod:`pact_zoo.acm` then train the learners and gates.
"""
from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs, get_pretrained_cfg, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ..acm.convert import acm_modules, acmize_structure, split_ffn, split_linear
from ..halting.deprecation import renamed_kwarg
from ._checkpoint import build_model
from ._helpers import RecordsMethodByName, record_input_shape

__all__ = ["AcmVisionTransformer"]

#: ``acmize`` settings a model builder takes (the rest goes to timm's VisionTransformer).
ACM_ARGS = ("num_learners", "method", "attention", "width_factor", "attention_min_learners", "gate_hidden",
            "gate_depth", "threshold", "temperature", "rule", "baseline", "target_rate", "lambda_b", "lambda_e",
            "lambda_v", "tau")


class AcmVisionTransformer(RecordsMethodByName, VisionTransformer):
    """timm ``VisionTransformer`` whose block MLPs are :class:`~pact_zoo.acm.AdaptiveWidth` modules.

    Args:
        num_learners, method, attention, width_factor, attention_min_learners, gate_hidden, gate_depth and the
            method's knobs: see :func:`pact_zoo.acm.acmize` (``gating=``, the former name of ``method``, still works
            with a DeprecationWarning; old saved ``model_args`` hold it).
        **kwargs: timm ``VisionTransformer`` arguments.
    """

    renamed_model_args = {"gating": "method"}

    def __init__(self, num_learners: int = 4, method: str = "acm", attention: bool = False, **kwargs: Any) -> None:
        method = renamed_kwarg(kwargs, "gating", "method", method, "acm", type(self).__name__)
        acm = {k: kwargs.pop(k) for k in ACM_ARGS if k in kwargs}
        super().__init__(**kwargs)
        acmize_structure(self, num_learners=num_learners, method=method, attention=attention, init="random", **acm)

    def forward_features(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        record_input_shape(self, x)  # pact_zoo.halting_report profiles one such sample
        return super().forward_features(x, *args, **kwargs)


def _convert_checkpoint(state_dict: dict[str, torch.Tensor], model: AcmVisionTransformer) -> dict[str, torch.Tensor]:
    """timm's ViT checkpoint -> ACM keys: each MLP (fc1/fc2) and projection split into learners; gates keep the
    model's init. An ACM checkpoint (a saved ACM model, a conversion phase's output) keeps its own learners and
    gates."""
    state_dict = checkpoint_filter_fn(state_dict, model)
    for name, module in acm_modules(model):
        if f"{name}.fc1.weight" in state_dict:
            split_ffn(module, state_dict.pop(f"{name}.fc1.weight"), state_dict.pop(f"{name}.fc1.bias", None),
                      state_dict.pop(f"{name}.fc2.weight"), state_dict.pop(f"{name}.fc2.bias", None))
        elif f"{name}.weight" in state_dict:
            split_linear(module, state_dict.pop(f"{name}.weight"), state_dict.pop(f"{name}.bias", None))
        for key, value in module.state_dict().items():
            state_dict.setdefault(f"{name}.{key}", value)
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> AcmVisionTransformer:
    out_indices = kwargs.pop("out_indices", 3)  # as timm's ViT: the last 3 blocks (every block keeps its depth)
    return build_model(AcmVisionTransformer, variant, pretrained, pretrained_filter_fn=_convert_checkpoint,
                                feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def _timm_cfg(name: str) -> dict[str, Any]:
    """The pretrained config of timm's base model (hub id, preprocessing), loaded without custom (npz) loading."""
    cfg = get_pretrained_cfg(name).to_dict()
    cfg.pop("architecture", None)
    cfg.pop("tag", None)
    cfg["custom_load"] = False
    return cfg


default_cfgs = generate_default_cfgs({
    "acm_vit_tiny_patch16_224.augreg_in21k_ft_in1k": _timm_cfg("vit_tiny_patch16_224.augreg_in21k_ft_in1k"),
    "acm_vit_small_patch16_224.augreg_in21k_ft_in1k": _timm_cfg("vit_small_patch16_224.augreg_in21k_ft_in1k"),
    "acm_deit_small_patch16_224.fb_in1k": _timm_cfg("deit_small_patch16_224.fb_in1k"),
})


@register_model
def acm_vit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> AcmVisionTransformer:
    """ViT-Ti/16 (timm ``vit_tiny_patch16_224``) with ACM MLPs."""
    args = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
    return _create("acm_vit_tiny_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def acm_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> AcmVisionTransformer:
    """ViT-S/16 (timm ``vit_small_patch16_224``) with ACM MLPs."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create("acm_vit_small_patch16_224", pretrained, **dict(args, **kwargs))


@register_model
def acm_deit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> AcmVisionTransformer:
    """DeiT-S/16 (timm ``deit_small_patch16_224``) with ACM MLPs."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return _create("acm_deit_small_patch16_224", pretrained, **dict(args, **kwargs))
