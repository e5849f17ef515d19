"""``make_adaptive``: turn a timm model instance into its adaptive twin, with the same weights.

One path for every timm family: a family file defines an adaptive subclass of timm's model class whose
``add_halting(halting_cfg, halting_act_layer)`` replaces the residual stages by :class:`SequentialAdaptiveStage`
modules with fresh halting heads, and registers the pair with :func:`register_adaptive_family`.
:func:`make_adaptive` switches a plain instance to that subclass and calls ``add_halting``; the registered
``pact_*`` builders build timm's own model (``timm.create_model(<backbone>)``) and call :func:`make_adaptive`
(:func:`adaptive_from_timm`), so a builder and a user's conversion run the same code.

Backbone keys are unchanged (``blocks.3.1.conv_pw.weight`` stays), halting heads are new keys
``<stage>.heads.<n>.*`` listed in ``model.newly_initialized_keys``.
"""
from __future__ import annotations

import inspect
import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type, Union

import timm
from timm.layers import register_notrace_module
from torch import nn

from ..halting import AdaptiveStage, HaltingConfig, adaptive_stages
from ._helpers import halting_parameter_names

_logger = logging.getLogger(__name__)

__all__ = ["SequentialAdaptiveStage", "adaptive_from_timm", "backbone_pretrained_cfg", "make_adaptive",
           "register_adaptive_family", "supported_families"]

#: (timm class, adaptive subclass) pairs, in registration order.
_ADAPTIVE_FAMILIES: List[Tuple[Type[nn.Module], Type[nn.Module]]] = []


@register_notrace_module
class SequentialAdaptiveStage(AdaptiveStage):
    """An :class:`AdaptiveStage` that keeps the key layout of the ``nn.Sequential`` of blocks it replaces.

    The units are registered as children ``"0"``, ``"1"``, ... (so ``layer1.0.conv1.weight`` or
    ``blocks.5.attn.qkv.weight`` keep their timm keys) and the halting heads as ``heads``. ``stage[i]``,
    ``len(stage)`` and iteration give the units, as on the timm ``nn.Sequential`` (e.g. a Grad-CAM target).

    Args: as :class:`~pact_zoo.halting.AdaptiveStage`.

    Shape: ``[B, ...]`` -> ``[B, ...]`` (the shape the units produce).
    """

    def __init__(self, units: Sequence[nn.Module], heads: Optional[Sequence[nn.Module]] = None,
                 **halting_kwargs: Any) -> None:
        super().__init__(units, heads, **halting_kwargs)
        unit_list = self._modules.pop("units")
        head_list = self._modules.pop("heads", None)
        for idx, unit in enumerate(unit_list):
            self.add_module(str(idx), unit)
        if head_list is not None:
            self.add_module("heads", head_list)
        # A plain (unregistered) view: the same module objects, indexed by AdaptiveStage as ``self.units[n]``.
        self.units = tuple(unit_list)

    def __getitem__(self, idx: Union[int, slice]) -> Union[nn.Module, Tuple[nn.Module, ...]]:
        return self.units[idx]

    def __len__(self) -> int:
        return len(self.units)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.units)


def register_adaptive_family(plain_cls: Type[nn.Module], adaptive_cls: Type[nn.Module]) -> None:
    """Let :func:`make_adaptive` convert instances of timm's ``plain_cls`` to ``adaptive_cls`` (a subclass of it
    with an ``add_halting(halting_cfg, halting_act_layer)`` method)."""
    if not (isinstance(adaptive_cls, type) and issubclass(adaptive_cls, plain_cls)
            and callable(getattr(adaptive_cls, "add_halting", None))):
        raise TypeError(f"adaptive_cls must subclass {plain_cls.__name__} and define add_halting, "
                        f"got {adaptive_cls!r}")
    _ADAPTIVE_FAMILIES.append((plain_cls, adaptive_cls))


def supported_families() -> List[str]:
    """Names of the timm model classes :func:`make_adaptive` converts."""
    return [f"{plain.__module__}.{plain.__name__}" for plain, _ in _ADAPTIVE_FAMILIES]


def make_adaptive(
        model: nn.Module,
        method: Union[str, HaltingConfig] = "pact",
        halting_act_layer: Optional[str] = None,
        **knobs: Any,
) -> nn.Module:
    """Turn a timm model into its adaptive twin with the same weights (in place; the model is returned).

    Supported: timm ``ResNet`` (``resnet18`` ...), ``EfficientNet`` (``mobilenetv2_100``, ``tf_efficientnet_lite0``,
    ``efficientnet_b0`` ...) and ``VisionTransformer`` (``vit_*``, ``deit_*`` without a distillation token). The
    backbone keys and values are unchanged; the halting heads are new (bias ``halting_bias_init``, so that every
    unit runs at first) and their keys are in ``model.newly_initialized_keys``. Copy the model first
    (``copy.deepcopy``) to keep the plain one. ``pact_zoo.training.save_model_folder`` (and ``pact-zoo export``)
    record these arguments beside timm's config, so ``pact_zoo.training.load_model_folder`` rebuilds the model.

    Args:
        model: a timm model instance of a supported class (not already adaptive).
        method: a registered halting method (``"pact"``, ``"act"``, ``"policy_gradient"``, ``"none"``) or a
            :class:`~pact_zoo.halting.HaltingConfig`.
        halting_act_layer: activation between a halting head's BatchNorm and linear layer (timm name), or None.
        **knobs: ``halting_bias_init`` and the method's knobs (``tau``, ``threshold`` ...); any other keyword is an
            option of the family's ``add_halting`` (e.g. the mobile CNNs' ``halting_scope``).

    Raises:
        TypeError: ``model`` is not an instance of a supported timm class, or an unknown keyword is given.
        ValueError: ``model`` already has adaptive stages, or a knob value is invalid.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a timm model (torch.nn.Module), got {type(model).__name__}")
    if adaptive_stages(model):
        raise ValueError(f"model must be a plain timm model, got {type(model).__name__} that already has "
                         "adaptive stages")
    adaptive_cls = next((adaptive for plain, adaptive in _ADAPTIVE_FAMILIES if type(model) is plain), None)
    if adaptive_cls is None:
        raise TypeError(f"make_adaptive supports timm models of the classes {supported_families()}, "
                        f"got {type(model).__module__}.{type(model).__name__}")
    accepted = inspect.signature(adaptive_cls.add_halting).parameters
    if isinstance(method, HaltingConfig):
        knob_args = sorted(k for k in knobs if k not in accepted)
        if knob_args:
            raise ValueError(f"pass halting knobs inside the HaltingConfig, not as keyword arguments: {knob_args}")
        halting_cfg = method
    else:
        halting_cfg = HaltingConfig.from_kwargs(method, knobs)
    options = dict(knobs)  # what is left: options of the family's add_halting
    unknown = sorted(k for k in options if k not in accepted or k in ("self", "halting_cfg", "halting_act_layer"))
    if unknown:
        raise TypeError(f"make_adaptive got unexpected keyword arguments {unknown} for {adaptive_cls.__name__}")
    model.__class__ = adaptive_cls
    model.add_halting(halting_cfg, halting_act_layer, **options)
    # how to rebuild it from the plain architecture (pact_zoo.training.io saves it beside timm's config)
    model.__dict__[MADE_ADAPTIVE_ATTR] = {**halting_cfg.to_dict(), "halting_act_layer": halting_act_layer,
                                          "family_options": options}
    new_keys = sorted(halting_parameter_names(model))
    model.__dict__["newly_initialized_keys"] = new_keys
    if new_keys:
        _logger.info("Halting heads newly initialised: %d tensors (%s ...)", len(new_keys), new_keys[0])
    return model


#: attribute (and config.json key) holding the make_adaptive arguments of a model made adaptive from a plain one
MADE_ADAPTIVE_ATTR = "pact_zoo_make_adaptive"


def remake_adaptive(model: nn.Module, spec: Dict[str, Any]) -> nn.Module:
    """Apply the recorded :func:`make_adaptive` arguments ``spec`` (``model.pact_zoo_make_adaptive`` of the model
    that was saved) to a freshly built plain ``model``."""
    spec = dict(spec)
    method, act, options = spec.pop("method"), spec.pop("halting_act_layer", None), spec.pop("family_options", {})
    return make_adaptive(model, method, act, **spec, **options)


def head_device_dtype(model: nn.Module) -> Dict[str, Any]:
    """Factory kwargs for new halting heads: the device and dtype of the model's parameters."""
    param = next(model.parameters(), None)
    return {"device": param.device, "dtype": param.dtype} if param is not None else {}


def adaptive_from_timm(backbone: str, method: str = "pact", halting_act_layer: Optional[str] = None,
                       family_options: Optional[Dict[str, Any]] = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(backbone, **kwargs)`` (no weights) made adaptive: the model class of the ``pact_*``
    builders (``build_model_with_cfg`` loads the weights afterwards). Halting knobs are taken out of ``kwargs``;
    ``family_options`` go to the family's ``add_halting``."""
    halting_cfg = HaltingConfig.from_kwargs(method, kwargs)  # validate the knobs before building the backbone
    model = timm.create_model(backbone, pretrained=False, **kwargs)
    return make_adaptive(model, halting_cfg, halting_act_layer=halting_act_layer, **(family_options or {}))


# pretrained_cfg fields copied from the backbone's own timm cfg (data config, weight location, provenance).
_BACKBONE_CFG_FIELDS = (
    "url", "hf_hub_id", "hf_hub_filename", "num_classes", "input_size", "test_input_size", "pool_size",
    "crop_pct", "test_crop_pct", "crop_mode", "interpolation", "mean", "std", "first_conv", "classifier",
    "license", "origin_url", "fixed_input_size",
)
_PAPERS = {
    "pact": ("arXiv:1712.00386", "Probabilistic Adaptive Computation Time"),
    "act": ("arXiv:1603.08983", "Adaptive Computation Time for Recurrent Neural Networks"),
}


def backbone_pretrained_cfg(backbone_tag: str, method: str, min_input_size: int, **extra: Any) -> Dict[str, Any]:
    """pretrained_cfg of ``<method>_<backbone>.<tag>``: the timm backbone ``<backbone>.<tag>``'s weights and data
    config (``resolve_data_config`` gives the backbone's transform), fresh halting heads."""
    source = timm.models.get_pretrained_cfg(backbone_tag).to_dict()
    cfg = {k: source[k] for k in _BACKBONE_CFG_FIELDS if source.get(k) is not None}
    paper_id, paper_name = _PAPERS.get(method, _PAPERS["pact"])
    cfg.update(
        min_input_size=(3, min_input_size, min_input_size), paper_ids=paper_id, paper_name=paper_name,
        description=f"timm {backbone_tag} backbone weights with newly initialised {method.upper()} halting heads: "
                    "fine-tune the heads before use.",
        notes=(f"backbone: timm {backbone_tag}",),
    )
    cfg.update(extra)
    return cfg
