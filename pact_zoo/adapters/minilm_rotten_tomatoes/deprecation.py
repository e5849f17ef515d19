"""Renamed arguments, attributes and output fields: the old name keeps working with a DeprecationWarning.

pact_zoo names one concept one way across timm models, Hugging Face models and ACM: ``method`` (the halting method,
formerly ``halting_method`` on the Hugging Face configs and ``gating`` in ACM), ``units_executed`` (the depth each
sample ran, formerly ``layers_executed`` / ``ponder_steps`` on the Hugging Face outputs).
"""
from __future__ import annotations

import warnings
from typing import Any

__all__ = ["deprecated_alias", "renamed_kwarg", "warn_renamed"]


def warn_renamed(old: str, new: str, where: str, stacklevel: int = 3) -> None:
    """DeprecationWarning: ``old`` of ``where`` is now called ``new``."""
    warnings.warn(f"{where}: {old!r} is deprecated, use {new!r} (same meaning)", DeprecationWarning,
                  stacklevel=stacklevel)


def renamed_kwarg(kwargs: dict[str, Any], old: str, new: str, value: Any, default: Any, where: str) -> Any:
    """The value of keyword ``new`` after reading its deprecated alias ``old`` out of ``kwargs``.

    Args:
        kwargs: the caller's remaining keyword arguments; ``old`` is popped from it (with a DeprecationWarning).
        old, new: the deprecated and the current keyword.
        value: what the caller received as ``new``.
        default: ``new``'s default (``value`` equal to it counts as not given).
        where: the function or class, for the messages.

    Returns ``value`` when ``old`` is not in ``kwargs``, else the ``old`` value. Raises ValueError when both are given
    with different values.
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    warn_renamed(old, new, where, stacklevel=4)
    if not _same(value, default) and not _same(value, old_value):
        raise ValueError(f"{where}: {new}={value!r} and its deprecated alias {old}={old_value!r} disagree: give "
                         f"{new} only")
    return old_value


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:  # e.g. tensors or objects whose == does not give a bool
        return False


def deprecated_alias(new: str, old: str, where: str = "", settable: bool = True) -> property:
    """A property ``old`` that reads (and, if ``settable``, writes) attribute ``new`` with a DeprecationWarning.
    ``new`` may be a dotted path (``"method.name"``) for a read-only alias."""

    def fget(self: Any) -> Any:
        warn_renamed(old, new, where or type(self).__name__)
        value = self
        for part in new.split("."):
            value = getattr(value, part)
        return value

    def fset(self: Any, value: Any) -> None:
        warn_renamed(old, new, where or type(self).__name__)
        setattr(self, new, value)

    return property(fget, fset if settable else None, doc=f"Deprecated alias of ``{new}`` (DeprecationWarning).")
