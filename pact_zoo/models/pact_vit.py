"""Adaptive vision transformers: per-sample depth over the blocks of timm's ViT / DeiT (PACT, ACT, policy gradient).

The backbone is timm's :class:`timm.models.vision_transformer.VisionTransformer` (same patch embedding, blocks,
norms, head and module names). Its ``blocks`` become one :class:`~pact_zoo.models.adaptive.SequentialAdaptiveStage`
over the transformer blocks: the first block always runs, and after every block but the last a halting head decides
per sample whether the image stops there; a halted sample's tokens keep their state and go to the final norm and
the classifier. In eval (compact execution) halted samples leave the batch, so every later block costs nothing for
them.

Halting head (:class:`TokenHaltingHead`): the class token of the block output (or, for models without a class token,
``class_token=False``, the mean of the patch tokens) -> BatchNorm -> Linear(D -> 1), bias -3 as the conv heads, so
that at the start every block runs.

State-dict layout: every backbone key is timm's (``blocks.5.attn.qkv.weight``); the heads are the new keys
``blocks.heads.<n>.{norm,fc}.*``. timm's pretrained weights (hub tag or a local file through
``pretrained_cfg_overlay=dict(file=...)``) load with fresh heads; :func:`pact_zoo.make_adaptive` converts a timm
``VisionTransformer`` in place; both run :meth:`AdaptiveVisionTransformer.add_halting`.

Features: the blocks are one adaptive stage, so there is one feature point, ``blocks`` (the tokens after the
sample's last block, before the final norm): ``features_only=True`` / ``forward_intermediates`` return it.

Papers:
* PACT: Figurnov, Sobolev, Vetrov, "Probabilistic Adaptive Computation Time", arXiv:1712.00386.
* ViT: Dosovitskiy et al., arXiv:2010.11929. DeiT: Touvron et al., arXiv:2012.12877.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple, Union

import torch
from timm.layers import get_act_layer
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from ..halting import HaltingConfig, HaltingHead
from ._helpers import add_halting_heads_filter, begin_forward, is_tracing
from .adaptive import (
    SequentialAdaptiveStage, adaptive_from_timm, backbone_pretrained_cfg, head_device_dtype, register_adaptive_family,
)

__all__ = ["AdaptiveVisionTransformer", "TokenHaltingHead", "ViTExit"]


class TokenHaltingHead(HaltingHead):
    """Halting head on transformer tokens: class token (or the mean of the patch tokens) -> BN -> act -> Linear.

    Args:
        embed_dim: token width D.
        num_prefix_tokens: class / register tokens in front of the patch tokens.
        use_class_token: pool with the class token (token 0); False: mean of the patch tokens.
        act_layer, bias_init, device, dtype: as :class:`~pact_zoo.halting.HaltingHead`.

    Shape: ``[B, N, D]`` -> ``[B]`` halting logits.
    """

    def __init__(self, embed_dim: int, num_prefix_tokens: int, use_class_token: bool, **kwargs: Any) -> None:
        super().__init__(embed_dim, **kwargs)
        self.num_prefix_tokens = num_prefix_tokens
        self.use_class_token = use_class_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x[:, 0] if self.use_class_token else x[:, self.num_prefix_tokens:].mean(dim=1)
        return super().forward(pooled[:, :, None, None])  # HaltingHead pools [B, D, 1, 1] to [B, D]


class ViTExit(nn.Module):
    """The exit after a block for the early-exit rules (``confidence``, ``entropy``, ``patience``): the model's own
    final norm and head (timm's ``forward_head``, pooled as ``global_pool`` says) on the block's tokens. It owns no
    weights: the model is referenced, not registered.

    Shape: ``[B, N, D]`` -> ``[B, num_classes]`` logits.
    """

    is_exit = True

    def __init__(self, model: VisionTransformer) -> None:
        super().__init__()
        self.__dict__["model"] = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.__dict__["model"]
        return model.forward_head(model.norm(x))


class AdaptiveVisionTransformer(VisionTransformer):
    """timm's VisionTransformer whose blocks form one adaptive stage with a halting head after every block but the
    last.

    Build it with a registered name (``pact_vit_tiny_patch16_224`` ...) or convert a timm instance with
    :func:`pact_zoo.make_adaptive`; the constructor takes ``method``, ``halting_act_layer``, the halting knobs and
    the arguments of :class:`timm.models.vision_transformer.VisionTransformer`.

    Shape: ``[B, in_chans, H, W]`` -> ``[B, num_classes]`` (H, W as the patch embedding expects).
    """

    def __init__(self, method: str = "pact", halting_act_layer: Optional[str] = None, **kwargs: Any) -> None:
        halting_cfg = HaltingConfig.from_kwargs(method, kwargs)
        super().__init__(**kwargs)
        self.add_halting(halting_cfg, halting_act_layer)

    def add_halting(self, halting_cfg: HaltingConfig, halting_act_layer: Optional[str] = None) -> None:
        """Replace ``blocks`` by an adaptive stage with fresh halting heads (shared by the builders and
        :func:`pact_zoo.make_adaptive`)."""
        if not isinstance(self.blocks, nn.Sequential) or len(self.blocks) < 1:
            raise ValueError("model.blocks must be a non-empty nn.Sequential of transformer blocks")
        head_act = get_act_layer(halting_act_layer) if halting_act_layer else None
        dd = head_device_dtype(self)
        units = list(self.blocks)
        heads = None
        if halting_cfg.reads_exits:  # early-exit rules: every block's exit is the model's own norm + head
            heads = [ViTExit(self) for _ in range(len(units) - 1)]
        elif halting_cfg.adaptive:
            # the heads pool as the classifier does (timm's global_pool): the class token for "token", else the
            # mean of the patch tokens
            use_class_token = self.has_class_token and getattr(self, "global_pool", "token") in ("token", "")
            heads = [TokenHaltingHead(self.embed_dim, self.num_prefix_tokens, use_class_token, act_layer=head_act,
                                      bias_init=halting_cfg.halting_bias_init, **dd)
                     for _ in range(len(units) - 1)]
        self.blocks = SequentialAdaptiveStage(units, heads, method=halting_cfg)
        reduction = self.feature_info[-1]["reduction"]
        self.feature_info = [dict(module="blocks", num_chs=self.embed_dim, reduction=reduction)]
        self.halting_cfg = halting_cfg
        self.min_input_size = max(self.patch_embed.patch_size)
        self.grad_checkpointing = False

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise lr decay; halting head ``n`` joins block ``n`` (the block it follows)."""
        matcher = super().group_matcher(coarse)
        matcher["blocks"] = [(r"^blocks\.heads\.(\d+)", None)] + list(matcher["blocks"])
        return matcher

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block in training (the stage runs the blocks one by one)."""
        self.blocks.grad_checkpointing = enable
        if hasattr(self.patch_embed, "set_grad_checkpointing"):
            self.patch_embed.set_grad_checkpointing(enable)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, N, D]`` tokens before the blocks; checks and records the input."""
        begin_forward(self, x)
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        return self.norm_pre(x)

    @staticmethod
    def _no_mask(attn_mask: Optional[torch.Tensor], is_causal: bool) -> None:
        if is_tracing(attn_mask) or is_tracing(is_causal):  # FX placeholders of the unused arguments
            return
        if attn_mask is not None or is_causal:
            raise ValueError("attn_mask / is_causal are not supported by the adaptive blocks (per-sample depth); "
                             "got a mask")

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
            output_dict: bool = False,
            attn_mask: Optional[torch.Tensor] = None,
            is_causal: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The one feature point ``blocks`` (index 0): tokens after each sample's last block, as timm's
        ``forward_intermediates`` formats them (``NCHW`` or ``NLC``, prefix tokens split off)."""
        self._no_mask(attn_mask, is_causal)
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        if output_dict:
            raise ValueError("output_dict=True is not supported by the adaptive ViT; use the list output")
        take_indices, _ = feature_take_indices(len(self.feature_info), indices)
        height, width = x.shape[-2:]
        x = self.blocks(self._embed(x))
        feat = self.norm(x) if norm else x
        prefix, spatial = feat[:, :self.num_prefix_tokens], feat[:, self.num_prefix_tokens:]
        if output_fmt == "NCHW":
            grid_h, grid_w = self.patch_embed.dynamic_feat_size((height, width))
            spatial = spatial.reshape(spatial.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous()
        feature: Any = (spatial, prefix) if return_prefix_tokens and self.num_prefix_tokens else spatial
        intermediates = [feature for _ in take_indices]
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """The blocks are one feature point: nothing to cut; the norm and head are pruned as in timm."""
        take_indices, _ = feature_take_indices(len(self.feature_info), indices)
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                         is_causal: bool = False) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, N, D]`` normalised tokens (each sample after its last block)."""
        self._no_mask(attn_mask, is_causal)
        return self.norm(self.blocks(self._embed(x)))

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_classes]`` logits. The halting cost is in
        :func:`pact_zoo.halting_loss`, the per-sample account in :func:`pact_zoo.halting_report`."""
        return self.forward_head(self.forward_features(x, attn_mask=attn_mask, is_causal=is_causal))


register_adaptive_family(VisionTransformer, AdaptiveVisionTransformer)


def _filter_fn(state_dict: dict, model: AdaptiveVisionTransformer) -> dict:
    """timm's ViT checkpoint conversion (position-embedding resampling, npz layouts), then fresh halting heads."""
    return add_halting_heads_filter(checkpoint_filter_fn(state_dict, model), model)


#: registered name -> (timm backbone, backbone weights tag)
_BACKBONES = {
    "pact_vit_tiny_patch16_224": ("vit_tiny_patch16_224", "augreg_in21k_ft_in1k"),
    "pact_vit_small_patch16_224": ("vit_small_patch16_224", "augreg_in21k_ft_in1k"),
    "pact_vit_base_patch16_224": ("vit_base_patch16_224", "augreg2_in21k_ft_in1k"),
    "pact_deit_small_patch16_224": ("deit_small_patch16_224", "fb_in1k"),
}
#: Smallest accepted input side: one 16-pixel patch.
MIN_INPUT_SIZE = 16


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> AdaptiveVisionTransformer:
    backbone, _ = _BACKBONES[variant]

    def model_cls(**model_kwargs: Any) -> AdaptiveVisionTransformer:
        return adaptive_from_timm(backbone, **model_kwargs)

    return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=_filter_fn,
                                feature_cfg=dict(out_indices=(0,), feature_cls="getter"), **kwargs)


default_cfgs = generate_default_cfgs({
    f"{name}.{tag}": backbone_pretrained_cfg(f"{backbone}.{tag}", "pact", MIN_INPUT_SIZE)
    for name, (backbone, tag) in _BACKBONES.items()
})


@register_model
def pact_vit_tiny_patch16_224(pretrained: bool = False, **kwargs: Any) -> AdaptiveVisionTransformer:
    """ViT-Ti/16 (timm ``vit_tiny_patch16_224``) with per-sample depth over its 12 blocks."""
    return _create("pact_vit_tiny_patch16_224", pretrained, **kwargs)


@register_model
def pact_vit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> AdaptiveVisionTransformer:
    """ViT-S/16 (timm ``vit_small_patch16_224``) with per-sample depth over its 12 blocks."""
    return _create("pact_vit_small_patch16_224", pretrained, **kwargs)


@register_model
def pact_vit_base_patch16_224(pretrained: bool = False, **kwargs: Any) -> AdaptiveVisionTransformer:
    """ViT-B/16 (timm ``vit_base_patch16_224``) with per-sample depth over its 12 blocks."""
    return _create("pact_vit_base_patch16_224", pretrained, **kwargs)


@register_model
def pact_deit_small_patch16_224(pretrained: bool = False, **kwargs: Any) -> AdaptiveVisionTransformer:
    """DeiT-S/16 (timm ``deit_small_patch16_224``) with per-sample depth over its 12 blocks."""
    return _create("pact_deit_small_patch16_224", pretrained, **kwargs)
