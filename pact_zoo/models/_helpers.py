"""Helpers shared by the timm model families: input checks and checkpoint loading with new halting heads."""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch
from torch import nn

from ..halting import adaptive_stages, resolve_method
from ..halting.protocols import record_input_shape

_logger = logging.getLogger(__name__)

__all__ = ["add_halting_heads_filter", "begin_forward", "check_image_input", "check_not_compact_export",
           "halting_parameter_names", "is_tracing", "newly_initialized_state_keys", "record_input_shape",
           "RecordsMethodByName"]


def check_image_input(x: torch.Tensor, in_chans: int, min_size: int, training: bool,
                      dtype: Optional[torch.dtype] = None) -> None:
    """Raise ValueError unless ``x`` is ``[B, in_chans, H, W]`` with H, W >= min_size, floating point (of the
    weights' ``dtype`` when given) and finite in eval.

    Non-finite input in eval would make the halting rule silently wrong (NaN never reaches a threshold).
    A tracing proxy (``torch.fx`` symbolic tracing: FX feature extraction) has no values to check and passes;
    under ``torch.compile`` / ``torch.export`` the shape checks run and the value check is skipped.
    """
    if is_tracing(x):
        return
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor [B, {in_chans}, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must have shape [B, {in_chans}, H, W] (rank 4), got rank {x.dim()} "
                         f"shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"x must have shape [B, {in_chans}, H, W], got {x.shape[1]} channels "
                         f"(shape {tuple(x.shape)})")
    if not x.dtype.is_floating_point:  # uint8 pixels: torch would fail inside the first conv with a dtype message
        raise ValueError(f"x must be a floating-point tensor of normalised pixels, got dtype {x.dtype}: convert with "
                         f"x.float() / 255 and normalise with the model's pretrained_cfg mean / std")
    if dtype is not None and x.dtype != dtype and not torch.is_autocast_enabled():
        raise ValueError(f"x has dtype {x.dtype} but the model's weights are {dtype}: pass x.to({dtype}) "
                         f"(or convert the model with model.to({x.dtype}))")
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(f"x must have spatial size H, W >= {min_size}, got {tuple(x.shape[2:])}")
    if (not training and x.device.type != "meta" and not torch.jit.is_scripting() and not torch.compiler.is_compiling()
            and not torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf: an eval forward needs finite input for the halting rule")


def is_tracing(x: object) -> bool:
    """True when ``x`` is a ``torch.fx`` tracing proxy (symbolic tracing: shapes and values are unknown)."""
    return isinstance(x, torch.fx.Proxy)


def check_not_compact_export(model: nn.Module) -> None:
    """Raise RuntimeError while ``torch.export`` traces an eval forward whose halting stages run compacted: halted
    samples leave the batch, a data-dependent shape that one exported graph cannot hold."""
    stages = [stage for _, stage in adaptive_stages(model)]
    if not model.training and any(stage.halting and stage.execution == "compact" for stage in stages):
        raise RuntimeError("torch.export cannot capture the compact path (halted samples leave the batch: "
                           "data-dependent shapes); call pact_zoo.set_execution(model, 'masked') first (the same "
                           "outputs, every unit runs), or export inside pact_zoo.full_depth(model)")


def begin_forward(model: nn.Module, x: torch.Tensor) -> None:
    """What every image family does with its input: :func:`check_image_input` against the model's ``in_chans``,
    ``min_input_size`` and weight dtype, the export check, and the per-sample input shape for
    :func:`pact_zoo.halting_report`."""
    check_image_input(x, model.in_chans, model.min_input_size, model.training, next(model.parameters()).dtype)
    if torch.compiler.is_exporting():
        check_not_compact_export(model)
    record_input_shape(model, x)


def halting_parameter_names(model: nn.Module) -> set[str]:
    """State-dict keys that belong to halting heads and exit classifiers (the only keys a backbone checkpoint may
    lack)."""
    names = set()
    for stage_name, stage in adaptive_stages(model):
        for part in ("heads", "exits"):
            modules = getattr(stage, part, None)
            if modules is None:
                continue
            prefix = f"{stage_name}.{part}." if stage_name else f"{part}."
            names.update(prefix + key for key in modules.state_dict().keys())
    return names


def _classifier_keys_timm_drops(model: nn.Module) -> set[str]:
    """The classifier keys timm's ``load_pretrained`` removes from a checkpoint after the ``pretrained_filter_fn``:
    those of ``pretrained_cfg["classifier"]`` when the model's ``num_classes`` differs from the cfg's."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifiers = cfg.get("classifier")
    if classifiers is None or getattr(model, "num_classes", None) == cfg.get("num_classes"):
        return set()
    names = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    return {f"{name}.{suffix}" for name in names for suffix in ("weight", "bias")}


def add_halting_heads_filter(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: accept a checkpoint of the backbone (plain model) for an adaptive model.

    Halting-head keys missing from ``state_dict`` are filled with the model's fresh initialisation and
    reported. The checkpoint's classifier (``pretrained_cfg["classifier"]``) may be absent from a model built with
    another ``num_classes`` (``num_classes=0``: no classifier): timm's ``load_pretrained`` drops it after this
    filter. Any other missing or unexpected key raises a KeyError that names it.
    """
    model_state = model.state_dict()
    head_keys = halting_parameter_names(model)
    dropped = _classifier_keys_timm_drops(model)
    unexpected = sorted(k for k in state_dict if k not in model_state and k not in dropped)
    missing = sorted(k for k in model_state if k not in state_dict and k not in head_keys
                     and not k.endswith("num_batches_tracked"))  # absent from older (torchvision) checkpoints
    if unexpected or missing:
        raise KeyError(f"checkpoint does not match {type(model).__name__}: "
                       f"unexpected keys {unexpected[:10]}{'...' if len(unexpected) > 10 else ''}, "
                       f"missing keys {missing[:10]}{'...' if len(missing) > 10 else ''}")
    new_heads = sorted(k for k in head_keys if k not in state_dict)
    if new_heads:
        _logger.info("Halting heads newly initialised (not in the checkpoint): %s", ", ".join(new_heads))
    filled = new_heads + sorted(k for k in model_state if k not in state_dict and k not in head_keys)
    if filled:
        state_dict = dict(state_dict)
        for key in filled:
            state_dict[key] = model_state[key]
    model.__dict__["newly_initialized_keys"] = new_heads
    return state_dict


class RecordsMethodByName:
    """Mixin of the timm families: ``timm.create_model`` records its keyword arguments on the model
    (``_model_args``, which ``save_for_hf`` writes to ``config.json``); a halting ``method`` given as a class or an
    instance is recorded as its registered name plus knobs, so that the model saves and reloads like one built by
    name. Arguments under a former name (:attr:`renamed_model_args`, old -> new) are recorded under the new one."""

    #: former keyword -> current keyword (the model's ``__init__`` still takes the former one, with a warning)
    renamed_model_args: dict[str, str] = {}

    @property
    def _model_args(self) -> dict:
        return self.__dict__.get("_recorded_model_args", {})

    @_model_args.setter
    def _model_args(self, value: dict) -> None:
        value = dict(value)
        for old, new in self.renamed_model_args.items():
            if old in value:
                value.setdefault(new, value.pop(old))
        if "method" in value:
            method, value = resolve_method(value.pop("method"), value)
            value["method"] = method
        self.__dict__["_recorded_model_args"] = value


def newly_initialized_state_keys(model: nn.Module) -> Optional[set[str]]:
    """State-dict keys a timm model built over a checkpoint did not read from it: its ``newly_initialized_keys`` (fresh
    halting heads, exits) and its classifier where timm dropped the checkpoint's (another number of classes); None for
    a model that was not built over a checkpoint."""
    loaded_new = getattr(model, "newly_initialized_keys", None)
    if loaded_new is None:
        return None
    new = set(loaded_new)
    classes = (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
    if classes is not None and classes != getattr(model, "num_classes", None):
        classifier = model.get_classifier()
        prefix = next(name for name, module in model.named_modules() if module is classifier)
        new |= {f"{prefix}.{key}" for key in classifier.state_dict()}
    return new
