"""The conversion as one training loop with three stages: acmize a copy of a pretrained model, then phase 1
(module-wise distillation), phase 2 (gate pre-training), phase 3 (end-to-end fine-tuning at a budget)."""
from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..halting.deprecation import renamed_kwarg
from .convert import acmize
from .phases import (
    Forward, check_batches, check_beta, default_forward, distill_modules, finetune, pretrain_gates,
)

__all__ = ["convert", "ConversionLog", "PHASES"]

PHASES = ("distill", "gates", "finetune")


@dataclass
class ConversionLog:
    """What each stage of :func:`convert` reported (see the phase functions)."""

    distill: list = field(default_factory=list)
    gates: list = field(default_factory=list)
    finetune: list = field(default_factory=list)


def convert(model: nn.Module, batches: Iterable, loss_fn: Callable[[Any, Any], torch.Tensor], beta: float,
            num_learners: int = 4, method: str = "acm", epochs: tuple[int, int, int] = (1, 1, 1),
            lrs: tuple[float, float, float] = (1e-3, 1e-2, 1e-4), forward: Forward = default_forward,
            distill_weight: float = 1.0, acmize_kwargs: Optional[dict] = None,
            finetune_kwargs: Optional[dict] = None, *,
            gating: Optional[str] = None) -> tuple[nn.Module, ConversionLog]:
    """ACMize a copy of ``model`` and run the three phases on ``batches``; ``model`` (the original) is left as is and
    serves as the frozen teacher of phases 1 and 3.

    Args:
        model: pretrained timm ViT/DeiT or HF BERT classifier.
        batches: re-iterable training batches (a list or a DataLoader, at least one batch).
        loss_fn: ``(logits, batch) -> [B]`` per-sample task loss (phase 3).
        beta: target FLOPs ratio of the ACM modules, in (0, 1].
        num_learners, method: :func:`~pact_zoo.acm.acmize`'s (``method``: ``"acm"`` or ``"condnet"``).
        epochs, lrs: per phase (0 epochs skips a phase).
        gating: deprecated name of ``method`` (DeprecationWarning).

    Returns:
        the ACMized model (train mode) and the :class:`ConversionLog`.
    """
    if gating is not None:
        method = renamed_kwarg({"gating": gating}, "gating", "method", method, "acm", "pact_zoo.acm.convert")
    beta = check_beta("beta", beta)
    if len(epochs) != 3 or not all(isinstance(e, int) and e >= 0 for e in epochs):
        raise ValueError(f"epochs must be three ints >= 0 (distill, gates, finetune), got {epochs!r}")
    check_batches(batches, passes=sum(epochs))  # one pass per epoch of every phase
    original = model.eval()
    for p in original.parameters():
        p.requires_grad_(False)
    acm = acmize(copy.deepcopy(original), num_learners=num_learners, method=method, **(acmize_kwargs or {}))
    for p in acm.parameters():
        p.requires_grad_(True)
    log = ConversionLog()
    if epochs[0]:
        log.distill = distill_modules(acm, original, batches, epochs=epochs[0], lr=lrs[0], forward=forward)
    if epochs[1]:
        log.gates = pretrain_gates(acm, original, batches, epochs=epochs[1], lr=lrs[1], forward=forward)
    if epochs[2]:
        log.finetune = finetune(acm, batches, loss_fn, beta, teacher=original, epochs=epochs[2], lr=lrs[2],
                                forward=forward, distill_weight=distill_weight, **(finetune_kwargs or {}))
    return acm, log
