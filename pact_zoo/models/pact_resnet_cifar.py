"""Adaptive CIFAR ResNets: PACT and ACT over the residual units of every stage.

The CIFAR ResNet-(6n+2) of He et al. 2016 ("Identity Mappings in Deep Residual Networks", pre-activation
units) as configured by SACT (Figurnov et al., CVPR 2017, github.com/mfigurnov/sact ``cifar_model.py``):
3x3 stem, three stages of n basic units with 16/32/64 channels, leaky ReLU 0.1, stride-2 average-pool +
zero-pad shortcuts, no max-pool, global pool + linear head. Each stage is an
:class:`~pact_zoo.halting.AdaptiveStage` with a halting head after every unit but the last.

PACT: Figurnov, Sobolev, Vetrov, "Probabilistic Adaptive Computation Time", arXiv:1712.00386.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from timm.layers import create_classifier, get_device_dtype
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ..halting import AdaptiveStage, HaltingConfig, HaltingHead
from ..pretrained import FASHION_MNIST_CLASSES, keep_untagged_default, shipped_cfg, shipped_model_args
from ._checkpoint import build_model
from ._helpers import RecordsMethodByName, add_halting_heads_filter, begin_forward

__all__ = ["CifarResNet", "PreActBasicUnit"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
BN_EPS = 1e-3  # SACT cifar_model.py
LEAKY_RELU_SLOPE = 0.1  # SACT cifar_model.py
DEFAULT_CHANNELS = (16, 32, 64)


def _act_layer() -> nn.Module:
    return nn.LeakyReLU(LEAKY_RELU_SLOPE)


class PreActBasicUnit(nn.Module):
    """Pre-activation basic unit: x + conv(act(bn(conv(act(bn(x)))))), SACT's CIFAR residual unit.

    The shortcut of a downsampling unit is a stride-2 average pool followed by zero-padding of the channels;
    ``preact_shortcut`` takes the shortcut after the first activation (SACT ``activate_before_residual``).

    Shape: ``[B, in_chs, H, W]`` -> ``[B, out_chs, H / stride, W / stride]``.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            stride: int = 1,
            preact_shortcut: bool = False,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if out_chs < in_chs:
            raise ValueError(f"out_chs must be >= in_chs for a zero-pad shortcut, got {in_chs} -> {out_chs}")
        self.stride = stride
        self.pad_chs = out_chs - in_chs
        self.preact_shortcut = preact_shortcut
        self.norm1 = nn.BatchNorm2d(in_chs, eps=BN_EPS, **dd)
        self.act1 = _act_layer()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.norm2 = nn.BatchNorm2d(out_chs, eps=BN_EPS, **dd)
        self.act2 = _act_layer()
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        preact = self.act1(self.norm1(x))
        shortcut = preact if self.preact_shortcut else x
        if self.stride > 1:
            shortcut = F.avg_pool2d(shortcut, self.stride, self.stride)
        if self.pad_chs:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.pad_chs // 2, self.pad_chs - self.pad_chs // 2))
        residual = self.conv2(self.act2(self.norm2(self.conv1(preact))))
        return shortcut + residual


class CifarResNet(RecordsMethodByName, nn.Module):
    """CIFAR pre-activation ResNet whose stages are adaptive stages.

    Args:
        layers: units per stage (n, n, n for ResNet-(6n+2)).
        channels: widths of the stages.
        num_classes: classifier outputs (0 for no classifier).
        in_chans: input channels.
        global_pool: timm pooling type.
        drop_rate: dropout before the classifier.
        method: a registered halting method (``pact_zoo.halting.HALTING_METHODS``: ``"pact"``, ``"act"``,
            ``"policy_gradient"``, ``"none"`` = a plain ResNet, no halting heads).
        **halting_kwargs: ``halting_bias_init`` and the method's knobs (e.g. PACT: ``tau``, ``temperature``,
            ``threshold``, ``cost_estimator``), see :class:`~pact_zoo.halting.HaltingConfig`.
    """

    def __init__(
            self,
            layers: Sequence[int] = (5, 5, 5),
            channels: Sequence[int] = DEFAULT_CHANNELS,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            method: str = "pact",
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
            **halting_kwargs: Any,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if len(layers) != len(channels) or not all(n >= 1 for n in layers):
            raise ValueError(f"layers must give >= 1 unit for each of the {len(channels)} stages, got {layers}")
        self.halting_cfg = HaltingConfig.from_kwargs(method, halting_kwargs)
        if halting_kwargs:
            raise TypeError(f"CifarResNet got unexpected keyword arguments {sorted(halting_kwargs)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.min_input_size = 2 ** (len(channels) - 1)

        self.stem = nn.Conv2d(in_chans, channels[0], 3, padding=1, bias=False, **dd)
        self.feature_info = [dict(num_chs=channels[0], reduction=1, module="stem")]
        stages, prev_chs, reduction = [], channels[0], 1
        for stage_idx, (depth, chs) in enumerate(zip(layers, channels)):
            stride = 1 if stage_idx == 0 else 2
            reduction *= stride
            units = [PreActBasicUnit(prev_chs, chs, stride, preact_shortcut=stage_idx == 0, **dd)]
            units += [PreActBasicUnit(chs, chs, 1, **dd) for _ in range(depth - 1)]
            heads = None
            if self.halting_cfg.adaptive:
                heads = [HaltingHead(chs, act_layer=_act_layer, bias_init=self.halting_cfg.halting_bias_init, **dd)
                         for _ in range(depth - 1)]
            stages.append(AdaptiveStage(units, heads, method=self.halting_cfg))
            self.feature_info.append(dict(num_chs=chs, reduction=reduction, module=f"stages.{stage_idx}"))
            prev_chs = chs
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev_chs
        self.norm = nn.BatchNorm2d(prev_chs, eps=BN_EPS, **dd)
        self.act = _act_layer()
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu",
                                        a=LEAKY_RELU_SLOPE)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                module.reset_parameters()
            elif isinstance(module, HaltingHead):
                module.reset_parameters()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r"^stem",
            blocks=r"^stages\.(\d+)" if coarse else [
                (r"^stages\.(\d+)\.(?:units|heads)\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        dd = get_device_dtype(self)
        self.num_classes = num_classes
        if global_pool is None:
            global_pool = self.global_pool.pool_type
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        begin_forward(self, x)
        return self.stem(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Features of the stem and of every stage (each stage runs under its halting rule)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        intermediates = []
        x = self._stem(x)
        if 0 in take_indices:
            intermediates.append(x)
        stages = self.stages[:max_index] if stop_early else self.stages
        for idx, stage in enumerate(stages, start=1):
            x = stage(x)
            if idx in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return self.act(self.norm(x)), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        self.stages = self.stages[:max_index]
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.norm, self.act = nn.Identity(), nn.Identity()
        if max_index < len(self.feature_info) - 1:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or max_index < len(self.feature_info) - 1:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_features, H / 4, W / 4]``."""
        x = self._stem(x)
        x = self.stages(x)
        return self.act(self.norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        x = self.head_drop(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` -> ``[B, num_classes]`` logits. The halting cost is in
        :func:`pact_zoo.halting_loss`, the per-sample account in :func:`pact_zoo.halting_report`."""
        return self.forward_head(self.forward_features(x))


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    # a shipped tag (e.g. "pact_resnet32.fashion_mnist") builds the model with the halting knobs it was trained with
    kwargs = {**shipped_model_args(variant, kwargs.get("pretrained_cfg")), **kwargs}
    return build_model(
        CifarResNet,
        variant,
        pretrained,
        pretrained_filter_fn=add_halting_heads_filter,
        feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
        "first_conv": "stem", "classifier": "fc", "license": "apache-2.0",
        "paper_ids": "arXiv:1712.00386", "paper_name": "Probabilistic Adaptive Computation Time",
        **kwargs,
    }


def _fashion_mnist_cfg(name: str) -> Dict[str, Any]:
    """A shipped Fashion-MNIST tag: its weights file, the class names; 28x28 grey images are read as RGB and resized
    to the CIFAR input size, normalised with the CIFAR mean / std (as in training: ``hub_configs/<name>/``)."""
    return shipped_cfg(name, label_names=FASHION_MNIST_CLASSES)


default_cfgs = keep_untagged_default(generate_default_cfgs({
    **{f"resnet{6 * n + 2}_cifar": _cfg(paper_ids="arXiv:1603.05027",
                                        paper_name="Identity Mappings in Deep Residual Networks")
       for n in (1, 2, 3)},
    "resnet32_cifar": _cfg(paper_ids="arXiv:1603.05027", paper_name="Identity Mappings in Deep Residual Networks"),
    "resnet110_cifar": _cfg(paper_ids="arXiv:1603.05027", paper_name="Identity Mappings in Deep Residual Networks"),
    "pact_resnet32": _cfg(),
    "pact_resnet32.fashion_mnist": _cfg(**_fashion_mnist_cfg("pact_resnet32.fashion_mnist")),
    "pact_resnet110": _cfg(),
    "act_resnet32": _cfg(paper_ids="arXiv:1612.02297", paper_name="Spatially Adaptive Computation Time"),
    "act_resnet32.fashion_mnist": _cfg(paper_ids="arXiv:1612.02297", paper_name="Spatially Adaptive Computation Time",
                                       **_fashion_mnist_cfg("act_resnet32.fashion_mnist")),
    "act_resnet110": _cfg(paper_ids="arXiv:1612.02297", paper_name="Spatially Adaptive Computation Time"),
    "pg_resnet32": _cfg(paper_ids="arXiv:1511.06297",
                        paper_name="Conditional Computation in Neural Networks for faster models"),
    "pg_resnet32.fashion_mnist": _cfg(paper_ids="arXiv:1511.06297",
                                      paper_name="Conditional Computation in Neural Networks for faster models",
                                      **_fashion_mnist_cfg("pg_resnet32.fashion_mnist")),
    "pg_resnet110": _cfg(paper_ids="arXiv:1511.06297",
                         paper_name="Conditional Computation in Neural Networks for faster models"),
}))


@register_model
def resnet8_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Plain CIFAR ResNet-8 (1 unit per stage): a static baseline at the FLOPs of a shallow adaptive model."""
    model_args = dict(layers=(1, 1, 1), method="none")
    return _create_cifar_resnet("resnet8_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet14_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Plain CIFAR ResNet-14 (2 units per stage), a static baseline."""
    model_args = dict(layers=(2, 2, 2), method="none")
    return _create_cifar_resnet("resnet14_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Plain CIFAR ResNet-20 (3 units per stage), a static baseline."""
    model_args = dict(layers=(3, 3, 3), method="none")
    return _create_cifar_resnet("resnet20_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Plain CIFAR ResNet-32 (5 units per stage), no halting."""
    model_args = dict(layers=(5, 5, 5), method="none")
    return _create_cifar_resnet("resnet32_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """Plain CIFAR ResNet-110 (18 units per stage), no halting."""
    model_args = dict(layers=(18, 18, 18), method="none")
    return _create_cifar_resnet("resnet110_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def pact_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32 with PACT halting in every stage."""
    model_args = dict(layers=(5, 5, 5), method="pact")
    return _create_cifar_resnet("pact_resnet32", pretrained, **dict(model_args, **kwargs))


@register_model
def pact_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-110 with PACT halting in every stage."""
    model_args = dict(layers=(18, 18, 18), method="pact")
    return _create_cifar_resnet("pact_resnet110", pretrained, **dict(model_args, **kwargs))


@register_model
def act_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32 with ACT halting in every stage (the SACT baseline)."""
    model_args = dict(layers=(5, 5, 5), method="act")
    return _create_cifar_resnet("act_resnet32", pretrained, **dict(model_args, **kwargs))


@register_model
def act_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-110 with ACT halting in every stage (the SACT baseline)."""
    model_args = dict(layers=(18, 18, 18), method="act")
    return _create_cifar_resnet("act_resnet110", pretrained, **dict(model_args, **kwargs))


@register_model
def pg_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32 with policy-gradient halting in every stage (Bengio et al. 2016; BlockDrop-style)."""
    model_args = dict(layers=(5, 5, 5), method="policy_gradient")
    return _create_cifar_resnet("pg_resnet32", pretrained, **dict(model_args, **kwargs))


@register_model
def pg_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-110 with policy-gradient halting in every stage (Bengio et al. 2016; BlockDrop-style)."""
    model_args = dict(layers=(18, 18, 18), method="policy_gradient")
    return _create_cifar_resnet("pg_resnet110", pretrained, **dict(model_args, **kwargs))
