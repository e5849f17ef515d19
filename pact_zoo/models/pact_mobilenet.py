"""Adaptive mobile CNNs: PACT / ACT halting over the inverted-residual blocks of timm's MobileNetV2 and
EfficientNet-Lite (real ImageNet backbones).

The backbone is timm's :class:`timm.models.efficientnet.EfficientNet` (the class of ``mobilenetv2_100``,
``tf_efficientnet_lite0``, ``efficientnet_b0`` ...): same stem, same blocks, same module names. Every stage
``blocks.<s>`` of more than one block becomes a :class:`~pact_zoo.models.adaptive.SequentialAdaptiveStage`: its
first block (the one that changes stride and width) always runs, and the following blocks - shape-preserving
inverted residuals with an identity shortcut - run while the sample has not halted, with a halting head after every
block but the last. Stages of one block stay plain.

State-dict layout: every backbone key is the timm key (``blocks.3.2.conv_pwl.weight``); the halting heads are new
keys ``blocks.<s>.heads.<n>.{norm,fc}.*``. A timm checkpoint loads with fresh heads
(``pretrained_cfg_overlay=dict(file="model.safetensors")``), and :func:`pact_zoo.make_adaptive` converts a timm
model instance in place; both run :meth:`AdaptiveEfficientNet.add_halting`.

Halting head: global average pool -> BN -> Linear(C -> 1), bias -3 (SACT ImageNet, as the ResNets).

``halting_scope="network"`` is the early-exit layout instead (BranchyNet, Teerapittayanon et al. 2016; the exits of
MSDNet, Huang et al. 2018, on one backbone): one adaptive stage whose units are the whole block stages
``blocks.0 .. blocks.6``, an exit classifier after each (global average pool -> Linear(C -> classes), keys
``blocks.exits.<s>.fc.*``) and the model's own head (``conv_head`` -> ``bn2`` -> classifier) as the last exit. A
sample stops after a stage and leaves with that exit's logits, so the rest of the network never runs for it. The
exit rules (``confidence``, ``entropy``, ``patience``) decide from the exits; PACT and policy gradient add a halting
head after every stage but the last (``blocks.heads.<s>.*``), which with ``halting_features="state_and_exit"`` also
reads the certainty of the stage's exit. This is the default for the exit rules.

Papers:
* PACT: Figurnov, Sobolev, Vetrov, "Probabilistic Adaptive Computation Time", arXiv:1712.00386.
* MobileNetV2: Sandler et al., arXiv:1801.04381. EfficientNet: Tan, Le, arXiv:1905.11946.
"""
from __future__ import annotations

from typing import Any, List, Optional

import torch
from timm.layers import get_act_layer
from timm.models import generate_default_cfgs, register_model
from timm.models.efficientnet import EfficientNet
from torch import nn

from ..halting import AdaptiveStage, HaltingConfig, HaltingHead
from ..halting.exits import NUM_CERTAINTY_FEATURES, exit_certainty_features
from ._checkpoint import build_model
from ._helpers import RecordsMethodByName, add_halting_heads_filter, begin_forward
from .adaptive import (
    SequentialAdaptiveStage, adaptive_from_timm, backbone_pretrained_cfg, head_device_dtype, register_adaptive_family,
)

__all__ = ["AdaptiveEfficientNet", "ExitAwareHaltingHead", "HALTING_FEATURES", "HALTING_SCOPES", "MIN_INPUT_SIZE",
           "StageExit"]

#: Smallest accepted input side: the backbone's total stride (the last stage sees at least one pixel).
MIN_INPUT_SIZE = 32
#: ``"stage"``: halting over the blocks inside every stage (SACT); ``"network"``: one decision after every stage,
#: where an exit classifier reads the stage's output (early exits).
HALTING_SCOPES = ("stage", "network")
#: What the halting heads of ``halting_scope="network"`` read: the pooled stage output, or that plus the certainty of
#: the stage's exit (largest softmax probability and 1 - normalised entropy).
HALTING_FEATURES = ("state", "state_and_exit")


def _out_channels(block: nn.Module) -> int:
    """Output channels of a block: those of its last convolution (``conv_pwl`` of an inverted residual)."""
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class StageExit(nn.Module):
    """Exit classifier after a block stage: global average pool -> Linear(C -> num_classes).

    Shape: ``[B, C, H, W]`` -> ``[B, num_classes]`` logits.
    """

    is_exit = True

    def __init__(self, num_chs: int, num_classes: int, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.fc = nn.Linear(num_chs, num_classes, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


class ModelHeadExit(nn.Module):
    """The last exit: the model's own ``conv_head`` -> ``bn2`` -> ``forward_head`` (pool, classifier). It owns no
    weights: the model is referenced, not registered, so the keys stay timm's.

    Shape: ``[B, C_last, H, W]`` -> ``[B, num_classes]`` logits.
    """

    is_exit = True

    def __init__(self, model: EfficientNet) -> None:
        super().__init__()
        self.__dict__["model"] = model

    def referenced_parameters(self) -> List[nn.Parameter]:
        """The head's parameters (used, not registered here): a training forward that stops every row before the
        last exit still touches them (DDP)."""
        model = self.__dict__["model"]
        return [p for m in (model.conv_head, model.bn2, model.classifier) for p in m.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = self.__dict__["model"]
        return model.forward_head(model.bn2(model.conv_head(x)))


class ExitAwareHaltingHead(HaltingHead):
    """Halting head that also reads its stage's exit: global pool -> BN -> act, concatenated with the exit's largest
    softmax probability and ``1 - H(p) / log C`` (detached) -> Linear(C + 2 -> 1). The exit is referenced, not
    registered (its weights belong to the stage's exits).

    Shape: ``[B, C, H, W]`` -> ``[B]`` halting logits.
    """

    #: certainty features read from the exit
    NUM_EXIT_FEATURES = NUM_CERTAINTY_FEATURES

    def __init__(self, num_chs: int, exit_module: nn.Module, act_layer: Optional[type] = None,
                 bias_init: float = -3.0, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__(num_chs, act_layer=act_layer, bias_init=bias_init, device=device, dtype=dtype)
        self.fc = nn.Linear(num_chs + self.NUM_EXIT_FEATURES, 1, device=device, dtype=dtype)
        nn.init.zeros_(self.fc.weight)
        nn.init.constant_(self.fc.bias, bias_init)
        self.__dict__["exit_module"] = exit_module

    def _can_fold(self, x: torch.Tensor) -> bool:
        return False  # the exit features are not an affine map of the state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pooled_features(x)
        certainty = exit_certainty_features(self.__dict__["exit_module"](x))
        return self.fc(torch.cat([features, certainty.to(features.dtype)], dim=-1)).squeeze(-1)


class AdaptiveEfficientNet(RecordsMethodByName, EfficientNet):
    """timm's EfficientNet / MobileNetV2 whose multi-block stages are adaptive stages with halting heads.

    Build it with a registered name (``pact_mobilenetv2_100``, ``pact_efficientnet_lite0``) or convert a timm
    instance with :func:`pact_zoo.make_adaptive`; the constructor takes ``method``, ``halting_act_layer``,
    ``halting_scope`` (:data:`HALTING_SCOPES`), the halting knobs and the arguments of
    :class:`timm.models.efficientnet.EfficientNet`.

    Shape: ``[B, in_chans, H, W]`` -> ``[B, num_classes]``; H, W >= 32.
    """

    def __init__(self, method: str = "pact", halting_act_layer: Optional[str] = None,
                 halting_scope: Optional[str] = None, halting_features: str = "state", **kwargs: Any) -> None:
        halting_cfg = HaltingConfig.from_kwargs(method, kwargs)
        super().__init__(**kwargs)
        self.add_halting(halting_cfg, halting_act_layer, halting_scope, halting_features)

    def add_halting(self, halting_cfg: HaltingConfig, halting_act_layer: Optional[str] = None,
                    halting_scope: Optional[str] = None, halting_features: str = "state") -> None:
        """Make the blocks adaptive with fresh halting heads (shared by the builders and
        :func:`pact_zoo.make_adaptive`). ``halting_scope="stage"`` (default for methods with halting heads): every
        stage of more than one block becomes an adaptive stage over its blocks; raises ValueError if a later block
        of a stage changes the shape (no identity shortcut). ``"network"`` (default for the exit rules): one adaptive
        stage over the whole stages with an exit after each; its halting heads read the stage's output and, with
        ``halting_features="state_and_exit"``, the certainty of its exit."""
        scope = halting_scope or ("network" if halting_cfg.reads_exits else "stage")
        if scope not in HALTING_SCOPES:
            raise ValueError(f"halting_scope must be one of {HALTING_SCOPES}, got {halting_scope!r}")
        if halting_features not in HALTING_FEATURES:
            raise ValueError(f"halting_features must be one of {HALTING_FEATURES}, got {halting_features!r}")
        if halting_features != "state" and scope != "network":
            raise ValueError("halting_features='state_and_exit' needs halting_scope='network' (exits to read)")
        self.halting_scope = scope
        if scope == "network":
            self._add_network_halting(halting_cfg, halting_act_layer, halting_features)
            return
        if halting_cfg.reads_exits:
            raise ValueError(f"method {halting_cfg.method!r} decides from exit classifiers: use "
                             "halting_scope='network' (an exit after every stage)")
        head_act = get_act_layer(halting_act_layer) if halting_act_layer else None
        dd = head_device_dtype(self)
        for stage_idx, stage in enumerate(self.blocks):
            units = list(stage)
            if len(units) < 2:
                continue
            for block_idx, block in enumerate(units[1:], start=1):
                if not getattr(block, "has_skip", False):
                    raise ValueError(f"blocks.{stage_idx}.{block_idx} ({type(block).__name__}) has no identity "
                                     "shortcut: only shape-preserving residual blocks can be skipped")
            heads = None
            if halting_cfg.adaptive:
                num_chs = _out_channels(units[-1])
                heads = [HaltingHead(num_chs, act_layer=head_act, bias_init=halting_cfg.halting_bias_init, **dd)
                         for _ in range(len(units) - 1)]
            self.blocks[stage_idx] = SequentialAdaptiveStage(units, heads, method=halting_cfg)
        self._finish_halting(halting_cfg)

    def _add_network_halting(self, halting_cfg: HaltingConfig, halting_act_layer: Optional[str],
                             halting_features: str) -> None:
        if self.num_classes < 1:
            raise ValueError(f"halting_scope='network' needs a classifier (num_classes >= 1) for its exits, got "
                             f"num_classes={self.num_classes}")
        dd = head_device_dtype(self)
        units = list(self.blocks)
        channels = [_out_channels(stage[-1]) for stage in units]
        exits = [StageExit(c, self.num_classes, **dd) for c in channels[:-1]] + [ModelHeadExit(self)]
        heads = None
        if halting_cfg.adaptive and not halting_cfg.reads_exits:
            head_act = get_act_layer(halting_act_layer) if halting_act_layer else None
            if halting_features == "state_and_exit":
                heads = [ExitAwareHaltingHead(c, exit_module, act_layer=head_act,
                                              bias_init=halting_cfg.halting_bias_init, **dd)
                         for c, exit_module in zip(channels[:-1], exits)]
            else:
                heads = [HaltingHead(c, act_layer=head_act, bias_init=halting_cfg.halting_bias_init, **dd)
                         for c in channels[:-1]]
        self.blocks = SequentialAdaptiveStage(units, heads, method=halting_cfg, exits=exits)
        self._finish_halting(halting_cfg)

    def _finish_halting(self, halting_cfg: HaltingConfig) -> None:
        self.halting_cfg = halting_cfg
        self.min_input_size = MIN_INPUT_SIZE
        self.grad_checkpointing = False

    @property
    def _network_scope(self) -> bool:
        return getattr(self, "halting_scope", "stage") == "network"

    @torch.jit.ignore
    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """timm's ``reset_classifier``; with ``halting_scope="network"`` the stage exits are replaced by fresh ones
        for ``num_classes`` too (>= 1)."""
        if self._network_scope and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 with halting_scope='network' (the exits classify), got "
                             f"{num_classes}")
        super().reset_classifier(num_classes, global_pool)
        if self._network_scope:
            stage = self.blocks
            dd = head_device_dtype(self)
            for n in range(stage.num_units - 1):
                stage.exits[n] = StageExit(stage.exits[n].fc.in_features, num_classes, **dd)
                if isinstance(stage.heads[n] if stage.heads is not None else None, ExitAwareHaltingHead):
                    stage.heads[n].__dict__["exit_module"] = stage.exits[n]

    def _stages(self) -> List[AdaptiveStage]:
        return [m for m in self.modules() if isinstance(m, AdaptiveStage)]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for layer-wise lr decay; a halting head joins its stage."""
        matcher = super().group_matcher(coarse)
        if not coarse:
            matcher["blocks"] = [(r"^blocks\.(\d+)\.heads\.(\d+)", None),
                                 (r"^blocks\.(?:heads|exits)\.(\d+)", None)] + list(matcher["blocks"])
        return matcher

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every block of the adaptive stages in training (the stages run blocks one by one)."""
        for stage in self._stages():
            stage.grad_checkpointing = enable

    def _check(self, x: torch.Tensor) -> None:
        begin_forward(self, x)

    def forward_intermediates(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """timm's ``forward_intermediates``: the stem and every stage's output (each stage under its halting rule)."""
        self._check(x)
        return super().forward_intermediates(x, *args, **kwargs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_features, H / 32, W / 32]``. With ``halting_scope="network"`` every
        stage runs (samples leave early only with their exit's logits, in :meth:`forward`)."""
        self._check(x)
        x = self.bn1(self.conv_stem(x))
        if self._network_scope:
            for stage in self.blocks:
                x = stage(x)
        else:
            x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_classes]`` logits. The halting cost is in
        :func:`pact_zoo.halting_loss`, the per-sample account in :func:`pact_zoo.halting_report`."""
        if self._network_scope:  # the stage ends in the exits, the last of which is the model's head
            self._check(x)
            return self.blocks(self.bn1(self.conv_stem(x)))
        return self.forward_head(self.forward_features(x))


register_adaptive_family(EfficientNet, AdaptiveEfficientNet)

#: registered name -> (timm backbone, backbone weights tag)
_BACKBONES = {
    "pact_mobilenetv2_100": ("mobilenetv2_100", "ra_in1k"),
    "pact_efficientnet_lite0": ("tf_efficientnet_lite0", "in1k"),
}


def _create(variant: str, pretrained: bool = False, halting_scope: Optional[str] = None,
            halting_features: str = "state", **kwargs: Any) -> AdaptiveEfficientNet:
    backbone, _ = _BACKBONES[variant]
    options = dict(halting_scope=halting_scope, halting_features=halting_features)

    def model_cls(**model_kwargs: Any) -> AdaptiveEfficientNet:
        return adaptive_from_timm(backbone, family_options=options, **model_kwargs)

    return build_model(model_cls, variant, pretrained, pretrained_filter_fn=add_halting_heads_filter,
                       feature_cfg=dict(flatten_sequential=True), **kwargs)


default_cfgs = generate_default_cfgs({
    f"{name}.{tag}": backbone_pretrained_cfg(f"{backbone}.{tag}", "pact", MIN_INPUT_SIZE)
    for name, (backbone, tag) in _BACKBONES.items()
})


@register_model
def pact_mobilenetv2_100(pretrained: bool = False, **kwargs: Any) -> AdaptiveEfficientNet:
    """MobileNetV2 1.0 (timm ``mobilenetv2_100``) with halting over the blocks of every stage (PACT by default,
    ``method=`` for another)."""
    return _create("pact_mobilenetv2_100", pretrained, **kwargs)


@register_model
def pact_efficientnet_lite0(pretrained: bool = False, **kwargs: Any) -> AdaptiveEfficientNet:
    """EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``) with halting over the blocks of every stage (PACT by
    default, ``method=`` for another)."""
    return _create("pact_efficientnet_lite0", pretrained, **kwargs)
