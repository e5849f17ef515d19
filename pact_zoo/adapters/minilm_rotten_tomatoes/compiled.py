"""Compiled units, eager halting: what an adaptive stage runs when its model is called under ``torch.compile``.

A compiled model cannot halt per row inside one graph (which rows go on is known only at run time), so under
``torch.compile`` an :class:`~pact_zoo.halting.AdaptiveStage` in eval leaves the graph (a graph break) and runs its
compact loop eagerly, calling each unit compiled on its own with a dynamic batch dimension: rows that stop skip the
remaining units as in eager evaluation, and the halting report counts what ran. The parts of the model around the
stages stay in the compiled graphs. Training forwards and the masked reference keep their dense path (every unit
runs) under compilation.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .compact import forward_compact

__all__ = ["CompiledUnits", "DEFAULT_UNIT_COMPILE", "UNIT_RECOMPILE_LIMIT", "set_unit_compile"]

#: ``torch.compile`` options of each unit (inductor, one graph for every sub-batch size)
DEFAULT_UNIT_COMPILE: dict[str, Any] = {"dynamic": True}
#: recompilations dynamo may make of one unit code object while the compact loop runs (its default is 8): the units of
#: a class share their code, and each structure (stride, shortcut, channels) and batch-size range (a convolution
#: guards on e.g. ``16 <= rows``) is an entry of its own; past the limit a unit would silently run uncompiled
UNIT_RECOMPILE_LIMIT = 64
#: key of the instance ``__dict__`` that holds the compiled units (dropped when the module is pickled or copied)
_COMPILED_KEY = "_compiled_units"


class CompiledUnits:
    """Mixin of :class:`~pact_zoo.halting.AdaptiveStage`: the units compiled one by one for the compact loop under
    ``torch.compile``. The host class provides ``units`` (an ``nn.ModuleList``) and is what
    :func:`~pact_zoo.halting.compact.forward_compact` runs.

    Attributes:
        unit_compile: ``torch.compile`` keyword arguments of each unit (:func:`set_unit_compile`), or None: the
            stage runs its dense path under ``torch.compile`` (every unit, outputs masked; no time saved).
    """

    unit_compile: Optional[dict[str, Any]] = DEFAULT_UNIT_COMPILE

    def compiled_units(self) -> list:
        """``torch.compile(unit, **unit_compile)`` of every unit, built on first use and kept until the options
        change (inductor reuses one graph for units of the same code and shapes)."""
        key = repr(sorted(self.unit_compile.items()))
        cached = self.__dict__.get(_COMPILED_KEY)
        if cached is None or cached[0] != key or len(cached[1]) != len(self.units):
            cached = (key, [torch.compile(unit, **self.unit_compile) for unit in self.units])
            self.__dict__[_COMPILED_KEY] = cached
        return cached[1]

    @torch.compiler.disable
    def _forward_compiled_units(self, x: torch.Tensor, context: Optional[torch.Tensor], mode: str) -> torch.Tensor:
        """The compact loop, run eagerly (``torch.compiler.disable``: a graph break in the caller's graph) over the
        compiled units. ``x``: ``[B, ...]`` stage input; returns the ``[B, ...]`` stage output. Dynamo's recompile
        limit is raised to :data:`UNIT_RECOMPILE_LIMIT` for the loop only."""
        limit = max(UNIT_RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
        with torch._dynamo.config.patch(recompile_limit=limit):
            return forward_compact(self, x, context, mode, units=self.compiled_units())

    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop(_COMPILED_KEY, None)
        return state


def set_unit_compile(model: nn.Module, options: Optional[dict[str, Any]] = DEFAULT_UNIT_COMPILE) -> None:
    """How every adaptive stage of ``model`` runs under ``torch.compile`` in eval: with ``options`` (keyword arguments
    of ``torch.compile``, e.g. ``{"backend": "eager"}`` or ``{"mode": "max-autotune", "dynamic": True}``) each unit
    is compiled on its own and the halting loop stays eager, so rows that stop save their time; with None the stages
    run their dense path when compiled (every unit for every row)."""
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict of torch.compile keyword arguments or None, got {options!r}")
    for module in model.modules():
        if isinstance(module, CompiledUnits):
            module.unit_compile = None if options is None else dict(options)
            module.__dict__.pop(_COMPILED_KEY, None)
