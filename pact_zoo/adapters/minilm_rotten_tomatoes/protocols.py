"""What :func:`~pact_zoo.halting.halting_report` needs from a model, as typed protocols.

The report counts each sample's FLOPs from one profiled sample; a model says how to build that sample in one of two
ways:

* it implements :class:`ProfiledModel` (``halting_profile_inputs()``: the inputs of a one-sample forward, e.g. one
  token sequence for a language model), and :class:`LengthProfiledModel` where a sample's FLOPs depend on its length;
* or its forward calls :func:`record_input_shape` (image models: the report profiles a zero input of the last
  forward's per-sample shape, whatever resolution it had).

An adaptive module with a FLOPs account of its own (per-token width, :class:`pact_zoo.acm.AdaptiveWidth`) implements
:class:`FlopsAccountedModule`. The adaptive modules themselves subclass
:class:`~pact_zoo.halting.adaptive_module.AdaptiveModule`.

``isinstance(model, ProfiledModel)`` and the others check that the methods exist (``typing.runtime_checkable``).
"""
from __future__ import annotations

import warnings
from typing import Any, Optional, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["FlopsAccountedModule", "LengthProfiledModel", "ProfiledModel", "deprecated_hook_name",
           "record_input_shape", "recorded_input_shape"]

#: Where :func:`record_input_shape` keeps the shape (the instance's ``__dict__``; not a state-dict entry).
_INPUT_SHAPE_KEY = "_halting_input_shape"
#: Deprecated public attribute of the same shape (set by user models that followed the earlier docs).
_LEGACY_INPUT_SHAPE_ATTR = "halting_input_shape"
_WARNED: set[str] = set()
#: The string names the report's hooks had before these protocols (and :class:`AdaptiveModule`): still importable
#: from :mod:`.report` and the package, with a DeprecationWarning.
_DEPRECATED_HOOK_NAMES = {
    "INPUT_SHAPE_ATTR": ("halting_input_shape", "record_input_shape(self, x) in forward"),
    "PROFILE_INPUTS_METHOD": ("halting_profile_inputs", "the ProfiledModel protocol"),
    "SAMPLE_LENGTHS_METHOD": ("halting_sample_lengths", "the LengthProfiledModel protocol"),
    "STAGE_PROTOCOL_ATTR": ("adaptive_stage_protocol", "a subclass of AdaptiveModule"),
}


def warn_deprecated(key: str, message: str) -> None:
    """One ``DeprecationWarning`` per ``key`` and process."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, DeprecationWarning, stacklevel=3)


def deprecated_hook_name(module: str, name: str) -> str:
    """The value of the deprecated constant ``name`` (a module's ``__getattr__``); AttributeError for other names."""
    if name not in _DEPRECATED_HOOK_NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    value, replacement = _DEPRECATED_HOOK_NAMES[name]
    warn_deprecated(name, f"pact_zoo.halting.{name} is deprecated: use {replacement} (pact_zoo.halting.protocols)")
    return value


@runtime_checkable
class ProfiledModel(Protocol):
    """A model that gives :func:`~pact_zoo.halting.halting_report` a one-sample forward to profile."""

    def halting_profile_inputs(self) -> tuple[tuple, dict[str, Any]]:
        """``(args, kwargs)`` of a one-sample forward (batch 1) that applies every adaptive module once, on the
        model's device (e.g. ``input_ids`` ``[1, T]`` for a language model, one time step for a recurrent one)."""
        ...


@runtime_checkable
class LengthProfiledModel(Protocol):
    """A :class:`ProfiledModel` whose per-sample FLOPs depend on each sample's length (transformer encoders: linear
    layers ~ T, attention ~ T^2): the report profiles ``halting_profile_inputs(length)`` once per distinct length."""

    def halting_profile_inputs(self, length: int = 1) -> tuple[tuple, dict[str, Any]]:
        """``(args, kwargs)`` of a one-sample forward of ``length`` real tokens."""
        ...

    def halting_sample_lengths(self) -> Optional[torch.Tensor]:
        """``[B]`` long: real tokens per sample of the last forward, or None (every sample costs the same)."""
        ...


@runtime_checkable
class FlopsAccountedModule(Protocol):
    """An adaptive module that counts its own FLOPs (the report does not profile its units)."""

    def report_flops(self) -> tuple[torch.Tensor, torch.Tensor, int, Optional[torch.Tensor]]:
        """FLOPs of the last forward: per sample ``[B]``, per sample at full depth ``[B]``, one sample at full depth,
        and per token ``[B, T]`` (or None)."""
        ...


def record_input_shape(module: nn.Module, x: torch.Tensor) -> None:
    """Keep ``x``'s per-sample shape (``[C, H, W]`` of a ``[B, C, H, W]`` batch) on ``module``: the report then
    profiles one zero sample of that shape. Call it in the forward; a ``torch.fx`` proxy (tracing) is skipped."""
    if not isinstance(x, torch.fx.Proxy):
        module.__dict__[_INPUT_SHAPE_KEY] = tuple(x.shape[1:])


def recorded_input_shape(module: nn.Module) -> Optional[tuple[int, ...]]:
    """The per-sample input shape :func:`record_input_shape` kept on ``module`` (or that it set as the deprecated
    attribute ``halting_input_shape``), None when there is none."""
    shape = module.__dict__.get(_INPUT_SHAPE_KEY)
    if shape is None:
        shape = getattr(module, _LEGACY_INPUT_SHAPE_ATTR, None)
        if shape:
            warn_deprecated(_LEGACY_INPUT_SHAPE_ATTR, "the attribute halting_input_shape is deprecated: call "
                            "pact_zoo.halting.record_input_shape(self, x) in forward, or implement "
                            "halting_profile_inputs() (pact_zoo.halting.ProfiledModel)")
    return tuple(shape) if shape else None
