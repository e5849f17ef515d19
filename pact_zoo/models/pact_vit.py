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

Features: as timm's ViT, every block is a feature point (``feature_info``: ``blocks.0`` ... ``blocks.<L-1>``).
A block's tokens exist for every image only when every image runs it, so ``forward_intermediates`` and
``features_only=True`` (timm's ``FeatureGetterNet``, the last 3 blocks by default, ``out_indices`` as in timm) run the
blocks at **full depth**: no halting head runs and the stage's record says every block ran. The normal forward halts
as above. ``prune_intermediate_layers`` keeps the blocks up to the last index; pruning the classifier head (what
``features_only`` does) also removes the halting heads, so the feature model is timm's full-depth backbone.

Papers:
* PACT: Figurnov, Sobolev, Vetrov, "Probabilistic Adaptive Computation Time", arXiv:1712.00386.
* ViT: Dosovitskiy et al., arXiv:2010.11929. DeiT: Touvron et al., arXiv:2012.12877.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.layers import get_act_layer
from timm.models import generate_default_cfgs, register_model
from timm.models._features import FeatureGetterNet, feature_take_indices
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from ..halting import HaltingConfig, HaltingHead, HaltingRecord
from ._checkpoint import build_model
from ._helpers import RecordsMethodByName, add_halting_heads_filter, begin_forward, is_tracing
from .adaptive import (
    SequentialAdaptiveStage, adaptive_from_timm, backbone_pretrained_cfg, head_device_dtype, register_adaptive_family,
)

__all__ = ["AdaptiveVisionTransformer", "EXIT_CLASSIFIERS", "TokenHaltingHead", "ViTExit", "ViTLayerExit"]


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


#: ``"shared"``: every exit is the model's own norm + head; ``"per_layer"``: every block but the last has its own exit
#: classifier (DeeBERT, Xin et al. 2020; PABEE, Zhou et al. 2020), the model's head stays the last exit.
EXIT_CLASSIFIERS = ("shared", "per_layer")


class ViTLayerExit(nn.Module):
    """A block's own exit classifier: LayerNorm -> pool (class token, or the mean of the patch tokens, as the model's
    ``global_pool``) -> Linear(D -> num_classes). Initialised as a copy of the model's final norm and head, so that
    every exit starts as the shared one.

    Shape: ``[B, N, D]`` -> ``[B, num_classes]`` logits.
    """

    is_exit = True

    def __init__(self, model: VisionTransformer, num_classes: int, use_class_token: bool,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.num_prefix_tokens, self.use_class_token = model.num_prefix_tokens, use_class_token
        self.norm = nn.LayerNorm(model.embed_dim, eps=getattr(model.norm, "eps", 1e-6), device=device, dtype=dtype)
        self.head = nn.Linear(model.embed_dim, num_classes, device=device, dtype=dtype)
        with torch.no_grad():
            if isinstance(model.norm, nn.LayerNorm) and model.norm.weight is not None:
                self.norm.load_state_dict(model.norm.state_dict())
            if isinstance(model.head, nn.Linear) and model.head.out_features == num_classes:
                self.head.load_state_dict(model.head.state_dict())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        pooled = x[:, 0] if self.use_class_token else x[:, self.num_prefix_tokens:].mean(dim=1)
        return self.head(pooled)


class AdaptiveVisionTransformer(RecordsMethodByName, VisionTransformer):
    """timm's VisionTransformer whose blocks form one adaptive stage with a halting head after every block but the
    last.

    Build it with a registered name (``pact_vit_tiny_patch16_224`` ...) or convert a timm instance with
    :func:`pact_zoo.make_adaptive`; the constructor takes ``method``, ``halting_act_layer``, the halting knobs and
    the arguments of :class:`timm.models.vision_transformer.VisionTransformer`. ``exit_classifiers``
    (:data:`EXIT_CLASSIFIERS`): with ``"per_layer"`` every block but the last gets its own exit classifier
    (``blocks.exits.<n>.*``) and a sample leaves with the logits of the exit where it stopped.

    Shape: ``[B, in_chans, H, W]`` -> ``[B, num_classes]`` (H, W as the patch embedding expects).
    """

    def __init__(self, method: str = "pact", halting_act_layer: Optional[str] = None,
                 exit_classifiers: str = "shared", **kwargs: Any) -> None:
        halting_cfg = HaltingConfig.from_kwargs(method, kwargs)
        super().__init__(**kwargs)
        self.add_halting(halting_cfg, halting_act_layer, exit_classifiers)

    def add_halting(self, halting_cfg: HaltingConfig, halting_act_layer: Optional[str] = None,
                    exit_classifiers: str = "shared") -> None:
        """Replace ``blocks`` by an adaptive stage with fresh halting heads (shared by the builders and
        :func:`pact_zoo.make_adaptive`); with ``exit_classifiers="per_layer"`` also fresh per-block exits."""
        if not isinstance(self.blocks, nn.Sequential) or len(self.blocks) < 1:
            raise ValueError("model.blocks must be a non-empty nn.Sequential of transformer blocks")
        if exit_classifiers not in EXIT_CLASSIFIERS:
            raise ValueError(f"exit_classifiers must be one of {EXIT_CLASSIFIERS}, got {exit_classifiers!r}")
        if exit_classifiers == "per_layer" and self.num_classes < 1:
            raise ValueError(f"exit_classifiers='per_layer' needs a classifier (num_classes >= 1), got "
                             f"num_classes={self.num_classes}")
        head_act = get_act_layer(halting_act_layer) if halting_act_layer else None
        dd = head_device_dtype(self)
        units = list(self.blocks)
        # heads and exits pool as the classifier does (timm's global_pool): the class token for "token", else the
        # mean of the patch tokens
        use_class_token = self.has_class_token and getattr(self, "global_pool", "token") in ("token", "")
        heads, exits = None, None
        if exit_classifiers == "per_layer":
            exits = [ViTLayerExit(self, self.num_classes, use_class_token, **dd) for _ in range(len(units) - 1)]
            exits.append(ViTExit(self))
        if halting_cfg.reads_exits and exits is None:  # early-exit rules: every block's exit is the model's head
            heads = [ViTExit(self) for _ in range(len(units) - 1)]
        elif halting_cfg.adaptive and not halting_cfg.reads_exits:
            heads = [TokenHaltingHead(self.embed_dim, self.num_prefix_tokens, use_class_token, act_layer=head_act,
                                      bias_init=halting_cfg.halting_bias_init, **dd)
                     for _ in range(len(units) - 1)]
        self.exit_classifiers = exit_classifiers
        self.blocks = SequentialAdaptiveStage(units, heads, method=halting_cfg, exits=exits)
        reduction = self.feature_info[-1]["reduction"]
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=self.embed_dim, reduction=reduction)
                             for i in range(len(units))]  # timm's layout: one point per block
        self.halting_cfg = halting_cfg
        self.min_input_size = max(self.patch_embed.patch_size)
        self.grad_checkpointing = False

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise lr decay; halting head ``n`` joins block ``n`` (the block it follows)."""
        matcher = super().group_matcher(coarse)
        matcher["blocks"] = [(r"^blocks\.(?:heads|exits)\.(\d+)", None)] + list(matcher["blocks"])
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

    def _run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Block ``index`` on every row (full depth), checkpointed as the stage checkpoints its units."""
        block = self.blocks[index]
        if self.blocks.grad_checkpointing and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return block(x)

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
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]], Dict[str, Any]]:
        """timm's ``forward_intermediates`` at **full depth**: every block runs on every image and no halting head
        runs (a block's tokens are defined for every image only then); the stage's record says so.

        Args:
            x: ``[B, in_chans, H, W]`` images.
            indices: blocks to return: the last n blocks for an int, every block for None, else these indices.
            return_prefix_tokens: each intermediate is ``(spatial, prefix)`` with the ``[B, P, D]`` prefix tokens.
            norm: apply the final norm to the intermediates.
            stop_early: stop after the last requested block (the final output is then that block's, normed).
            output_fmt: ``"NCHW"`` (``[B, D, H/p, W/p]``) or ``"NLC"`` (``[B, H/p * W/p, D]``).
            intermediates_only: return the intermediates only.
            output_dict: return ``{"image_intermediates", "image_features", "image_intermediates_prefix"}`` as timm.

        Returns:
            ``(final, intermediates)`` with ``final`` ``[B, N, D]`` (the normed tokens after the last block run), the
            intermediates alone, or the dict.
        """
        self._no_mask(attn_mask, is_causal)
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        height, width = x.shape[-2:]
        x = self._embed(x)
        depth = max_index + 1 if stop_early else len(self.blocks)
        intermediates = []
        for index in range(depth):
            x = self._run_block(index, x)
            if index in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        self.blocks.record = HaltingRecord(  # as the stage's own full-depth forward records it
            units_executed=torch.full((x.shape[0],), depth, dtype=torch.long, device=x.device), cost=None,
            num_units=len(self.blocks), method=self.blocks.method)
        prefix_tokens = [y[:, :self.num_prefix_tokens] for y in intermediates] if self.num_prefix_tokens else None
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == "NCHW":
            grid_h, grid_w = self.patch_embed.dynamic_feat_size((height, width))
            intermediates = [y.reshape(y.shape[0], grid_h, grid_w, -1).permute(0, 3, 1, 2).contiguous()
                             for y in intermediates]
        if output_dict:
            result: Dict[str, Any] = {"image_intermediates": intermediates}
            if prefix_tokens is not None and return_prefix_tokens:
                result["image_intermediates_prefix"] = prefix_tokens
            if not intermediates_only:
                result["image_features"] = self.norm(x)
            return result
        if return_prefix_tokens and prefix_tokens is not None:
            intermediates = list(zip(intermediates, prefix_tokens))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Keep the blocks up to the last of ``indices`` (as timm). ``prune_head`` (what ``features_only`` does)
        also removes the halting heads: the pruned model is a full-depth feature backbone (method ``"none"``);
        with ``prune_head=False`` the kept blocks keep their heads and halt as before."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        if prune_head or max_index + 1 < len(self.blocks):
            self._keep_blocks(max_index + 1, halting=not prune_head)
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.fc_norm = nn.Identity()
            self.reset_classifier(0, "")
        return take_indices

    def _keep_blocks(self, depth: int, halting: bool) -> None:
        """Rebuild the stage over the first ``depth`` blocks, with their halting heads (and the stage's method and
        settings) when ``halting``, else with none (method ``"none"``: full depth)."""
        old = self.blocks
        units = list(old)[:depth]
        if halting:
            heads = list(old.heads)[:depth - 1] if old.heads is not None else None
            exits = list(old.exits)[:depth - 1] + [old.exits[-1]] if old.exits is not None else None
            stage = SequentialAdaptiveStage(units, heads, method=old.method, execution=old.execution, exits=exits)
            if old.method_state is not None and stage.method_state is not None:
                stage.method_state.load_state_dict(old.method_state.state_dict())
            stage.decision = old.decision
        else:
            self.halting_cfg = HaltingConfig("none")
            self.exit_classifiers = "shared"
            stage = SequentialAdaptiveStage(units, None, method=self.halting_cfg, execution=old.execution)
        stage.grad_checkpointing = old.grad_checkpointing
        stage.train(old.training)
        self.blocks = stage

    def forward_features(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                         is_causal: bool = False) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, N, D]`` normalised tokens (each sample after its last block; with
        per-layer exits, where samples leave with their exit's logits, every block runs)."""
        self._no_mask(attn_mask, is_causal)
        if self._per_layer_exits:
            x = self._embed(x)
            for block in self.blocks:
                x = block(x)
            return self.norm(x)
        return self.norm(self.blocks(self._embed(x)))

    @property
    def _per_layer_exits(self) -> bool:
        return getattr(self, "exit_classifiers", "shared") == "per_layer"

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """timm's ``reset_classifier``; per-layer exits are replaced by fresh ones for ``num_classes`` (>= 1)."""
        if self._per_layer_exits and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 with exit_classifiers='per_layer', got {num_classes}")
        super().reset_classifier(num_classes, global_pool)
        if self._per_layer_exits:
            stage, dd = self.blocks, head_device_dtype(self)
            for n in range(stage.num_units - 1):
                stage.exits[n] = ViTLayerExit(self, num_classes, stage.exits[n].use_class_token, **dd)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                is_causal: bool = False) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_classes]`` logits. The halting cost is in
        :func:`pact_zoo.halting_loss`, the per-sample account in :func:`pact_zoo.halting_report`."""
        if self._per_layer_exits:  # the stage ends in the exits, the last of which is the model's head
            self._no_mask(attn_mask, is_causal)
            return self.blocks(self._embed(x))
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


def _check_feature_cls(kwargs: dict) -> None:
    """``features_only`` runs through ``forward_intermediates`` (full depth): timm's ``FeatureGetterNet`` only. Hook-,
    list- and FX-based wrappers would read blocks inside the adaptive stage, where halted images have left the
    batch."""
    feature_cls = kwargs.get("feature_cls", "getter")
    if not kwargs.get("features_only") or feature_cls == "getter" or (
            isinstance(feature_cls, type) and issubclass(feature_cls, FeatureGetterNet)):
        return
    raise ValueError(f"feature_cls must be 'getter' for the adaptive ViT (features_only runs every block at full "
                     f"depth through forward_intermediates), got {feature_cls!r}; for the halted tokens trace the "
                     f"model with return_nodes={{'blocks': ...}}")


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> AdaptiveVisionTransformer:
    backbone, _ = _BACKBONES[variant]
    _check_feature_cls(kwargs)
    out_indices = kwargs.pop("out_indices", 3)  # as timm's ViT: the last 3 blocks

    options = dict(exit_classifiers=kwargs.pop("exit_classifiers", "shared"))

    def model_cls(**model_kwargs: Any) -> AdaptiveVisionTransformer:
        return adaptive_from_timm(backbone, family_options=options, **model_kwargs)

    return build_model(model_cls, variant, pretrained, pretrained_filter_fn=_filter_fn,
                       feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


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
