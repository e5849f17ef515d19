"""No halting: every unit runs (the plain network). Stages with this method have no halting heads."""
from __future__ import annotations

from .method import HaltingMethod, register_halting_method

__all__ = ["NoHalting"]


@register_halting_method
class NoHalting(HaltingMethod):
    """Every unit runs for every sample; no heads, no cost, no knobs."""

    name = "none"
    knobs = {}
    uses_heads = False
    cost_knob = None
