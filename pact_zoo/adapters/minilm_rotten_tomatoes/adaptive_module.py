"""AdaptiveModule: the base of every module whose computation each row chooses, and what the model-level API reads.

:class:`~pact_zoo.halting.AdaptiveStage` (per-sample depth) and :class:`pact_zoo.acm.AdaptiveWidth` (per-token width)
subclass it. :mod:`pact_zoo.halting.report` finds these modules in a model (``adaptive_stages``) and works through
what this class holds: the method, the record of the last forward, and the switches that the knobs and context
managers set (``set_execution``, ``set_decision``, ``full_depth``, ``truncated_depth``, ``anytime_depth``, the
self-critical rollout).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

try:  # timm's FX tracing treats adaptive modules as leaves; the core does not need timm (remote-code checkpoints)
    from timm.layers import register_notrace_module
except ImportError:  # pragma: no cover - exercised only where timm is absent
    def register_notrace_module(module: type) -> type:
        return module

from .flops import current_profiler
from .method import HaltingMethod, HaltingRecord
from .protocols import warn_deprecated

__all__ = ["AdaptiveModule", "is_adaptive_module", "register_notrace_module"]

#: Deprecated class attribute: a module that adapted per row without this base set it to True.
_LEGACY_ATTR = "adaptive_stage_protocol"


class AdaptiveModule(nn.Module):
    """A module that adapts its computation per row (sample or token) under a :class:`~pact_zoo.halting.HaltingMethod`.

    Subclasses set :attr:`method` and define :attr:`num_units` and ``forward``; every forward leaves one
    :class:`~pact_zoo.halting.HaltingRecord` (``[B]`` or ``[B, T]`` units executed) through :meth:`_keep`.

    Attributes:
        method: the :class:`~pact_zoo.halting.HaltingMethod` that decides (set by the subclass).
        record: the :class:`~pact_zoo.halting.HaltingRecord` of the last forward (None before the first).
        execution: eval strategy, ``"compact"`` (rows skip what they do not use) or ``"masked"`` (reference).
        decision: eval decisions, ``"greedy"`` (the method's deterministic rule) or ``"sample"``.
        full_depth: run every unit and no decision (:func:`~pact_zoo.halting.full_depth`).
        truncate: run exactly this many units and no decision (:func:`~pact_zoo.halting.truncated_depth`), or None.
        anytime: run a uniformly drawn number of units per row and no decision
            (:func:`~pact_zoo.halting.anytime_depth`).
        rollout: training-mode forward under the deterministic rule (:func:`~pact_zoo.halting.self_critical_baseline`).
    """

    method: HaltingMethod

    def __init__(self) -> None:
        super().__init__()
        self.record: Optional[HaltingRecord] = None
        self.execution = "compact"
        self.decision = "greedy"
        self.full_depth = False
        self.truncate: Optional[int] = None
        self.anytime = False
        self.rollout = False

    @property
    def num_units(self) -> int:
        """L, the most units a row can run (layers of a stage, learners of a width module)."""
        raise NotImplementedError

    @property
    def adaptive(self) -> bool:
        """True when the module has something to decide from (its method adapts the computation)."""
        return True

    @property
    def halting(self) -> bool:
        """True when the next forward's computation comes from the method's decisions (adaptive, and not switched to
        full, truncated or anytime depth)."""
        return self.adaptive and not self.full_depth and self.truncate is None and not self._anytime_forward

    @property
    def _anytime_forward(self) -> bool:
        """True when the next forward runs a uniform depth per row and no decision: training under ``anytime`` or
        under a method that trains that way (``anytime_training``)."""
        return self.training and (self.anytime or self.method.anytime_training)

    def _keep(self, record: HaltingRecord) -> None:
        """Make ``record`` the record of the last forward (a FLOPs-profiling run leaves the user's record alone)."""
        if current_profiler() is None:
            self.record = record

    def _fx_leaf(self, *args: torch.Tensor) -> Any:
        """The call of this module as one leaf node of an FX graph (any tracer): it decides at run time. ``args[0]``
        is a ``torch.fx.Proxy``."""
        tracer = args[0].tracer
        return tracer.create_proxy("call_module", tracer.path_of_module(self), tuple(args), {})


def is_adaptive_module(module: nn.Module) -> bool:
    """True for an :class:`AdaptiveModule` (or a class that sets the deprecated ``adaptive_stage_protocol = True``)."""
    if isinstance(module, AdaptiveModule):
        return True
    if getattr(type(module), _LEGACY_ATTR, False):
        warn_deprecated(_LEGACY_ATTR, f"{type(module).__name__}.adaptive_stage_protocol is deprecated: subclass "
                                      "pact_zoo.halting.AdaptiveModule")
        return True
    return False
