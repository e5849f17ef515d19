"""Halting diagnostics during training (``diagnose_every``): what the halting heads learn from, on one fixed batch.

Every ``diagnose_every`` optimiser steps the training loop runs one training-mode forward of the model on a fixed
training batch (the first ``batch_size`` rows) without an update, with the random state and the buffers (BatchNorm
statistics) put back, so the run trains exactly as it would without it, and appends to ``diagnostics.jsonl``: the task
loss and the halting loss, each halting stage's terms (the ``tau``-weighted cost and the method's own terms, such as
the entropy bonus on PACT's stopping distribution q(z | x), Figurnov et al. 2018) and the norm of the gradient each
of these terms sends to the halting heads.
A term whose gradient is small against the others cannot move the heads (the PACT-LSTM's diagnosis,
``docs/lstm_results.md``). The task loss is the cross-entropy alone (no distillation term); a resumed run appends,
so steps between its checkpoint and the interruption may appear twice.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch import nn

from ..halting import adaptive_stages, training_loss

__all__ = ["DIAGNOSTICS_FILE", "halting_diagnostics"]

DIAGNOSTICS_FILE = "diagnostics.jsonl"


def halting_diagnostics(model: nn.Module, forward: Callable[[], Any], per_sample_loss: Callable[[Any], torch.Tensor],
                        head_params: list[torch.Tensor]) -> Dict[str, Any]:
    """One training forward (``forward()``: the model on the fixed batch; ``per_sample_loss``: its ``[B]`` task loss)
    without an update: ``loss_terms`` (``task``, ``halting`` and per stage ``<stage>.cost`` and ``<stage>.<term>``)
    and ``head_grad_norm`` (the L2 norm of each term's gradient on ``head_params``, the halting heads' parameters;
    a term without a gradient, such as policy gradient's cost, is left out). The random state and every buffer of
    ``model`` are as before."""
    buffers = [buffer.detach().clone() for buffer in model.buffers()]
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        step = training_loss(model, forward, per_sample_loss)
    with torch.no_grad():
        for buffer, saved in zip(model.buffers(), buffers):
            buffer.copy_(saved)
    terms = {"task": step.task_loss, "halting": step.halting_loss}
    for name, stage in adaptive_stages(model):
        record = getattr(stage, "record", None)
        if not getattr(stage, "halting", False) or record is None:
            continue
        if record.cost is not None:
            terms[f"{name}.cost"] = stage.method.cost_weight * record.cost.float().mean()
        terms.update({f"{name}.{key}": value for key, value in record.terms.items()})
    grads = {}
    for key, value in terms.items():
        if torch.is_tensor(value) and value.requires_grad and head_params:
            parts = torch.autograd.grad(value, head_params, retain_graph=True, allow_unused=True)
            grads[key] = float(torch.sqrt(sum(((g.float() ** 2).sum() for g in parts if g is not None),
                                              torch.zeros((), device=value.device))))
    return {"loss_terms": {key: float(value.detach()) for key, value in terms.items()}, "head_grad_norm": grads}
