"""Adaptive ImageNet ResNets: PACT and ACT halting heads on timm's own ResNet (pretrained backbones).

The backbone is timm's :class:`timm.models.resnet.ResNet` (same stem, same ``BasicBlock`` / ``Bottleneck`` units,
same module names). Each of its four stages ``layer1`` .. ``layer4`` becomes an :class:`AdaptiveResNetStage`: an
:class:`~pact_zoo.halting.AdaptiveStage` over the stage's residual units, with a halting head after every unit
but the last. The first unit of a stage (the one that changes stride and width) always runs.

State-dict layout: every backbone key is exactly the key of the matching timm model (``conv1.weight``,
``layer3.5.conv2.weight``, ``fc.bias`` ...), so a timm ``resnet50`` checkpoint loads straight in. The only new
keys are the halting heads, ``layer<N>.heads.<n>.{norm,fc}.*`` (head ``n`` follows unit ``n``); a checkpoint
without them is accepted and the heads are reported as newly initialised (:func:`add_halting_heads_filter`).

Halting head: global average pool -> BN -> Linear(C -> 1), no activation, bias -3 (SACT ImageNet
``imagenet_model.py`` arg scope). Use ``halting_act_layer`` to add one.

Papers:
* PACT: Figurnov, Sobolev, Vetrov, "Probabilistic Adaptive Computation Time", arXiv:1712.00386.
* SACT: Figurnov et al., "Spatially Adaptive Computation Time for Residual Networks", arXiv:1612.02297.
* ResNet: He et al., "Deep Residual Learning for Image Recognition", arXiv:1512.03385.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Type, Union

import timm
import torch
from timm.layers import get_act_layer
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..halting import AdaptiveStage, HaltingConfig, HaltingHead
from .adaptive import SequentialAdaptiveStage, head_device_dtype, register_adaptive_family
from ._checkpoint import build_model
from ._helpers import RecordsMethodByName, add_halting_heads_filter, begin_forward

__all__ = ["AdaptiveResNet", "AdaptiveResNetStage", "MIN_INPUT_SIZE"]

#: Smallest accepted input side: the backbone's total stride, so the last stage sees at least one pixel.
MIN_INPUT_SIZE = 32
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")


#: The stage of an adaptive ResNet (kept under its former name): the units keep the ``layer<N>.<i>`` keys.
AdaptiveResNetStage = SequentialAdaptiveStage


class AdaptiveResNet(RecordsMethodByName, ResNet):
    """timm's ResNet whose four stages are adaptive stages with halting heads.

    Args:
        block: ``BasicBlock`` or ``Bottleneck`` (timm's classes).
        layers: units per stage.
        method: a registered halting method (``pact_zoo.halting.HALTING_METHODS``: ``"pact"``, ``"act"``,
            ``"policy_gradient"``, ``"none"`` = no halting heads, exactly timm's ResNet).
        halting_act_layer: activation between the halting head's BN and linear layer, a timm activation name;
            ``None`` (default) for none, as SACT on ImageNet.
        device, dtype: factory kwargs for every parameter and buffer.
        **kwargs: ``halting_bias_init`` and the method's knobs (e.g. ``tau``, ``threshold``; see
            :class:`~pact_zoo.halting.HaltingConfig`), and the other arguments of
            :class:`timm.models.resnet.ResNet` (``num_classes``, ``in_chans``,
            ``global_pool``, ``drop_rate``, ``drop_path_rate``, ``output_stride``, stem / downsample options ...);
            an unknown name raises TypeError.
    """

    def __init__(
            self,
            block: Union[Type[BasicBlock], Type[Bottleneck]],
            layers: Tuple[int, ...],
            method: str = "pact",
            halting_act_layer: Optional[str] = None,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs: Any,
    ) -> None:
        # Validate the halting knobs before building the (large) backbone.
        halting_cfg = HaltingConfig.from_kwargs(method, kwargs)
        if halting_act_layer:
            get_act_layer(halting_act_layer)
        super().__init__(block=block, layers=layers, device=device, dtype=dtype, **kwargs)
        self.add_halting(halting_cfg, halting_act_layer)

    def add_halting(self, halting_cfg: HaltingConfig, halting_act_layer: Optional[str] = None) -> None:
        """Replace ``layer1`` .. ``layer4`` by adaptive stages with fresh halting heads (the one conversion path,
        shared by the builders and :func:`pact_zoo.make_adaptive`)."""
        head_act = get_act_layer(halting_act_layer) if halting_act_layer else None
        dd = head_device_dtype(self)
        self.halting_cfg = halting_cfg
        self.min_input_size = MIN_INPUT_SIZE
        for stage_idx, name in enumerate(STAGE_NAMES):
            units = list(getattr(self, name))
            num_chs = self.feature_info[stage_idx + 1]["num_chs"]
            heads = None
            if halting_cfg.adaptive:
                heads = [HaltingHead(num_chs, act_layer=head_act, bias_init=halting_cfg.halting_bias_init, **dd)
                         for _ in range(len(units) - 1)]
            setattr(self, name, SequentialAdaptiveStage(units, heads, method=halting_cfg))

    def _stages(self) -> List[AdaptiveResNetStage]:
        """The stages still present (``prune_intermediate_layers`` replaces pruned ones by empty Sequentials)."""
        return [m for m in (getattr(self, n) for n in STAGE_NAMES) if isinstance(m, AdaptiveStage)]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise lr decay; a halting head joins the unit it follows."""
        return dict(
            stem=r"^conv1|^bn1|^maxpool",
            blocks=r"^layer(\d+)" if coarse else [
                (r"^layer(\d+)\.(\d+)", None),
                (r"^layer(\d+)\.heads\.(\d+)", None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Checkpoint every residual unit in training (the stages run units one by one)."""
        self.grad_checkpointing = enable
        for stage in self._stages():
            stage.grad_checkpointing = enable

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, C, H / 2, W / 2]`` (before the max-pool); records the input shape."""
        begin_forward(self, x)
        return self.act1(self.bn1(self.conv1(x)))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of the stem (``act1``) and of every stage (each stage runs under its halting rule)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(STAGE_NAMES) + 1, indices)
        intermediates = []
        x = self._stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        x = self.maxpool(x)
        layer_names = STAGE_NAMES[:max_index] if stop_early else STAGE_NAMES
        for feat_idx, name in enumerate(layer_names, start=1):
            x = getattr(self, name)(x)
            if feat_idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_features, H / 32, W / 32]`` (output stride 32)."""
        x = self.maxpool(self._stem(x))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_classes]`` logits. The halting cost is in
        :func:`pact_zoo.halting_loss`, the per-sample account in :func:`pact_zoo.halting_report`."""
        return self.forward_head(self.forward_features(x))


register_adaptive_family(ResNet, AdaptiveResNet)


def _create_pact_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> AdaptiveResNet:
    return build_model(
        AdaptiveResNet,
        variant,
        pretrained,
        pretrained_filter_fn=add_halting_heads_filter,
        **kwargs,
    )


# pretrained_cfg fields copied from the backbone's own timm cfg (data config, weight location, provenance).
_BACKBONE_CFG_FIELDS = (
    "url", "hf_hub_id", "hf_hub_filename", "num_classes", "input_size", "test_input_size", "pool_size",
    "crop_pct", "test_crop_pct", "crop_mode", "interpolation", "mean", "std", "first_conv", "classifier",
    "license", "origin_url",
)
#: Backbone tags per architecture: timm's default ImageNet-1k weights of that backbone first (the tag
#: ``timm.create_model("resnet50", pretrained=True)`` loads), then the torchvision weights.
_BACKBONE_TAGS = {
    "resnet18": ("a1_in1k", "tv_in1k"),
    "resnet34": ("a1_in1k", "tv_in1k"),
    "resnet50": ("a1_in1k", "tv_in1k"),
    "resnet101": ("a1h_in1k", "tv_in1k"),
}


def _backbone_cfg(backbone: str, tag: str, method: str) -> Dict[str, Any]:
    """pretrained_cfg of ``<method>_<backbone>.<tag>``: the backbone ``<backbone>.<tag>``'s weights and data config."""
    source = timm.models.get_pretrained_cfg(f"{backbone}.{tag}").to_dict()
    cfg = {k: source[k] for k in _BACKBONE_CFG_FIELDS if source.get(k) is not None}
    paper = ("arXiv:1712.00386", "Probabilistic Adaptive Computation Time") if method == "pact" else \
        ("arXiv:1612.02297", "Spatially Adaptive Computation Time for Residual Networks")
    cfg.update(
        min_input_size=(3, MIN_INPUT_SIZE, MIN_INPUT_SIZE),
        paper_ids=paper[0], paper_name=paper[1],
        description=f"timm {backbone}.{tag} backbone weights with newly initialised {method.upper()} halting "
                    f"heads: fine-tune before use (hub_configs/{method}_resnet50.in1k/train.yaml).",
        notes=(f"backbone: timm {backbone}.{tag}",),
    )
    return cfg


default_cfgs = generate_default_cfgs({
    f"{method}_{backbone}.{tag}": _backbone_cfg(backbone, tag, method)
    for method, backbones in (("pact", ("resnet18", "resnet34", "resnet50", "resnet101")),
                              ("act", ("resnet50", "resnet101")))
    for backbone in backbones
    for tag in _BACKBONE_TAGS[backbone]
})


@register_model
def pact_resnet18(pretrained: bool = False, **kwargs: Any) -> AdaptiveResNet:
    """ResNet-18 (timm ``resnet18``) with PACT halting in every stage."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2), method="pact")
    return _create_pact_resnet("pact_resnet18", pretrained, **dict(model_args, **kwargs))


@register_model
def pact_resnet34(pretrained: bool = False, **kwargs: Any) -> AdaptiveResNet:
    """ResNet-34 (timm ``resnet34``) with PACT halting in every stage."""
    model_args = dict(block=BasicBlock, layers=(3, 4, 6, 3), method="pact")
    return _create_pact_resnet("pact_resnet34", pretrained, **dict(model_args, **kwargs))


@register_model
def pact_resnet50(pretrained: bool = False, **kwargs: Any) -> AdaptiveResNet:
    """ResNet-50 (timm ``resnet50``) with PACT halting in every stage."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), method="pact")
    return _create_pact_resnet("pact_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def pact_resnet101(pretrained: bool = False, **kwargs: Any) -> AdaptiveResNet:
    """ResNet-101 (timm ``resnet101``) with PACT halting in every stage."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3), method="pact")
    return _create_pact_resnet("pact_resnet101", pretrained, **dict(model_args, **kwargs))


@register_model
def act_resnet50(pretrained: bool = False, **kwargs: Any) -> AdaptiveResNet:
    """ResNet-50 (timm ``resnet50``) with ACT halting in every stage (the SACT baseline, non-spatial)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3), method="act")
    return _create_pact_resnet("act_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def act_resnet101(pretrained: bool = False, **kwargs: Any) -> AdaptiveResNet:
    """ResNet-101 (timm ``resnet101``) with ACT halting in every stage (SACT's ImageNet ACT baseline)."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 23, 3), method="act")
    return _create_pact_resnet("act_resnet101", pretrained, **dict(model_args, **kwargs))
