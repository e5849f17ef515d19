"""Frozen-backbone conversion and distillation for the shared training loop.

* :func:`freeze_source_weights`: ``freeze_backbone: true`` trains only the weights that are new to the model (DeeBERT's
  second stage, Xin et al. 2020: the backbone stays as it was, the exits and halting heads learn); with
  ``freeze_exits`` only the halting heads learn.
* :func:`distillation_loss`: the per-sample KL divergence from a teacher's output to the student's, at a temperature
  (Hinton, Vinyals, Dean 2015), times T^2 so that its gradient scale does not depend on T. The default teacher is the
  model itself at full depth (no gradient): every halted or truncated output learns to agree with the full network.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..halting import eval_mode, full_depth
from ..models._helpers import newly_initialized_state_keys
from .tasks import halting_head_parameters

__all__ = ["freeze_source_weights", "freeze_norm_statistics", "distillation_loss", "teacher_logits"]


def _new_weight_names(model: nn.Module) -> set[str]:
    """Parameter names new to ``model``: its ``new_weights`` (models built from a backbone or converted from a source
    record them); for timm models loaded over a checkpoint, the keys it initialised (halting heads, exits) and the
    classifier if timm dropped the checkpoint's; else its halting heads and classifier."""
    names = getattr(model, "new_weights", None)
    if names is not None:
        return set(names)
    loaded_new = newly_initialized_state_keys(model)
    if loaded_new is not None:  # a timm model built with fresh heads / exits over a checkpoint
        return {name for name, _ in model.named_parameters() if name in loaded_new}
    heads = halting_head_parameters(model)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    classifier_ids = {id(p) for p in classifier.parameters()} if isinstance(classifier, nn.Module) else set()
    return {name for name, p in model.named_parameters() if id(p) in heads or id(p) in classifier_ids}


def freeze_source_weights(model: nn.Module, freeze_exits: bool = False) -> list[str]:
    """Freeze every parameter of ``model`` but the new ones (see :func:`_new_weight_names`); with ``freeze_exits``
    every parameter but the halting heads. Returns the names left trainable; raises ValueError if none is."""
    heads = halting_head_parameters(model)
    new = _new_weight_names(model)
    trainable = []
    for name, param in model.named_parameters():
        train = id(param) in heads if freeze_exits else name in new
        param.requires_grad_(train)
        if train:
            trainable.append(name)
    if not trainable:
        what = "halting heads" if freeze_exits else "new weights (halting heads, exit classifiers, a new classifier)"
        raise ValueError(f"freeze_backbone: the model has no {what} to train")
    return trainable


def freeze_norm_statistics(model: nn.Module) -> list[nn.Module]:
    """Put every batch-normalisation layer whose parameters are all frozen in eval mode (call after
    ``model.train()``): a frozen backbone keeps its running statistics, so at full depth it still computes what the
    source computed. Returns those layers."""
    frozen = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase):
            params = list(module.parameters(recurse=False))
            if not any(p.requires_grad for p in params):
                module.eval()
                frozen.append(module)
    return frozen


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[B]`` KL(softmax(teacher / T) || softmax(student / T)) * T^2 of ``[B, C]`` logits (teacher not
    differentiated)."""
    if student.shape != teacher.shape:
        raise ValueError(f"teacher logits {tuple(teacher.shape)} do not match the student's {tuple(student.shape)}")
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.detach().float() / temperature, dim=-1)
    return (log_teacher.exp() * (log_teacher - log_student)).sum(-1) * temperature ** 2


@torch.no_grad()
def teacher_logits(forward: Callable[[nn.Module], torch.Tensor], model: nn.Module,
                   teacher: Optional[nn.Module] = None) -> torch.Tensor:
    """The teacher's ``[B, C]`` logits in eval mode without gradient: ``teacher`` if given, else ``model`` at full
    depth (its own full network). ``forward(module)`` runs a module on the batch."""
    if teacher is not None:
        with eval_mode(teacher):
            return forward(teacher)
    with eval_mode(model), full_depth(model):
        return forward(model)
