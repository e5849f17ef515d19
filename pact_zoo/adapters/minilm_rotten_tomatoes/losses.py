# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""Task losses and label checks shared by the Hugging Face models of pact_zoo (transformers' conventions).

Shipped as remote code next to every checkpoint's modeling file (flat, no imports from pact_zoo).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from transformers import PreTrainedConfig

__all__ = ["IGNORE_INDEX", "check_labels", "classification_loss", "problem_type", "sequence_loss", "token_loss"]

#: Label value ignored by the classification losses (transformers convention).
IGNORE_INDEX = -100


def problem_type(config: PreTrainedConfig, labels: torch.Tensor) -> str:
    """transformers' rule: regression for one label, else single- or multi-label by the labels' dtype."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str, num_labels: int,
                         valid: Optional[torch.Tensor] = None, rows: Optional[int] = None) -> torch.Tensor:
    """Mean task loss over the entries marked ``valid``, or, with ``rows``, the ``[rows]`` per-sample means (the N
    entries are ``rows`` samples of N / rows time steps each).

    Args:
        logits: ``[N, num_labels]``.
        labels: ``[N]`` class ids (single-label; ``-100`` ignored), ``[N, num_labels]`` targets (multi-label,
            regression) or ``[N]`` (regression with one label).
        valid: ``[N]`` bool, entries that count (padding excluded), or ``None``.
        rows: return per-sample losses of this many samples instead of the mean.
    """
    if problem_type == "single_label_classification":
        labels = labels.long()
        if valid is not None:
            labels = labels.masked_fill(~valid, IGNORE_INDEX)
        if rows is None:
            return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
        per_entry = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")
        counted = labels != IGNORE_INDEX
    else:
        if problem_type == "regression" and num_labels == 1 and labels.dim() == 1:
            labels = labels.unsqueeze(-1)
        labels = labels.to(logits.dtype)
        if problem_type == "multi_label_classification":
            per_entry = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
        else:
            per_entry = F.mse_loss(logits.float(), labels.float(), reduction="none")
        per_entry = per_entry.mean(-1)
        counted = valid if valid is not None else torch.ones_like(per_entry, dtype=torch.bool)
    if rows is None:
        return (per_entry * counted).sum() / counted.sum().clamp_min(1)
    per_entry, counted = per_entry.reshape(rows, -1), counted.reshape(rows, -1)
    return (per_entry * counted).sum(1) / counted.sum(1).clamp_min(1)


def check_labels(labels: torch.Tensor, problem_type: str, num_labels: int, leading: tuple[int, ...]) -> None:
    """Raise ValueError unless ``labels`` has shape ``leading`` (single-label) or ``leading + (num_labels,)``."""
    if problem_type == "single_label_classification":
        if tuple(labels.shape) != leading or labels.dtype.is_floating_point:
            raise ValueError(f"labels must be class ids of shape {leading}, got {labels.dtype} {tuple(labels.shape)}")
        if labels.device.type != "meta":
            real = labels[labels != IGNORE_INDEX]
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= num_labels):
                raise ValueError(f"labels must lie in [0, num_labels={num_labels}) or be {IGNORE_INDEX}")
        return
    allowed = {leading + (num_labels,)}
    if problem_type == "regression" and num_labels == 1:
        allowed.add(leading)
    if tuple(labels.shape) not in allowed:
        raise ValueError(f"labels for {problem_type} must have shape {' or '.join(map(str, sorted(allowed)))}, "
                         f"got {tuple(labels.shape)}")


def sequence_loss(config: PreTrainedConfig, logits: torch.Tensor, labels: torch.Tensor,
                  rows: bool = False) -> torch.Tensor:
    """Mean task loss of ``[B, num_labels]`` logits (the problem type from ``config``, labels checked), or the ``[B]``
    per-sample losses with ``rows``."""
    kind = problem_type(config, labels)
    check_labels(labels, kind, config.num_labels, (logits.shape[0],))
    return classification_loss(logits, labels.to(logits.device), kind, config.num_labels,
                               rows=logits.shape[0] if rows else None)


def token_loss(config: PreTrainedConfig, logits: torch.Tensor, labels: torch.Tensor,
               attention_mask: Optional[torch.Tensor], rows: bool = False) -> torch.Tensor:
    """Mean task loss of ``[B, T, num_labels]`` logits over the real tokens (``attention_mask`` ``[B, T]``; padding
    never counts), or the ``[B]`` per-sequence means with ``rows``."""
    batch_size, seq_len = logits.shape[:2]
    kind = problem_type(config, labels)
    check_labels(labels, kind, config.num_labels, (batch_size, seq_len))
    valid = None if attention_mask is None else attention_mask.to(logits.device).bool().reshape(-1)
    labels = labels.to(logits.device)
    return classification_loss(logits.reshape(batch_size * seq_len, -1),
                               labels.reshape((batch_size * seq_len,) + tuple(labels.shape[2:])),
                               kind, config.num_labels, valid, rows=batch_size if rows else None)
