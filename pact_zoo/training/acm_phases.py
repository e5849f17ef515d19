"""The ACM conversion phases (Wójcik et al. 2023, §3.3) as objectives of the shared training loop.

``pact-zoo convert`` makes an ACM model from a trained one in three phases, each one run of the loop with the
original model as ``teacher`` (``teacher: source`` in a conversion recipe):

1. ``objective: module_distillation``: only the learners train; every prefix of learners of every ACM module
   regresses the output of the module it replaced, on that module's input in the original model;
2. ``objective: gate_labels``: only the gates train, towards the learner count each token needs;
3. ``objective: task`` with ``acm_budget: beta``: everything trains end to end on the task loss, the distillation from
   the original model's logits (``distill_weight``) and the budget: ``|E[cost] / max cost - beta|`` for ACM gating
   (eq. 5, weight ``acm_budget_weight``), the target rate of Bengio et al. 2016's REINFORCE terms for condnet gating.

The per-batch losses are :mod:`pact_zoo.acm.phases`' (the same functions its in-memory phase functions run).
Example: ``hub_configs/acm_vit.fashion_mnist/convert.yaml``.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from ..acm.convert import acm_modules
from ..acm.phases import (
    PHASE_OBJECTIVES, budget_loss, gate_label_loss, module_distillation_loss, set_budget, uses_budget_loss,
)
from .config import ConfigError, TrainConfig

__all__ = ["prepare_acm_objective", "acm_phase_loss", "acm_budget_term"]


def prepare_acm_objective(model: nn.Module, config: TrainConfig) -> Optional[list[nn.Parameter]]:
    """Check that ``model`` has ACM modules when the config asks for an ACM objective or budget, hand
    ``acm_budget`` to the gatings (condnet: its target rate), and for a phase objective leave only that phase's weights trainable.

    Returns:
        the phase's parameters (learners or gates), or None for ``objective: task``.
    """
    if config.objective == "task" and config.acm_budget is None:
        return None
    if not acm_modules(model):
        setting = f"objective: {config.objective}" if config.objective != "task" else "acm_budget"
        raise ConfigError(f"{setting} needs a model with ACM modules (an acm_* model such as "
                          f"acm_vit_tiny_patch16_224, or one made with pact_zoo.acm.acmize), got {config.model}")
    if config.acm_budget is not None:
        set_budget(model, config.acm_budget)
    if config.objective == "task":
        return None
    params = PHASE_OBJECTIVES[config.objective](model)
    trained = {id(p) for p in params}
    for param in model.parameters():
        param.requires_grad_(id(param) in trained)
    return params


def acm_phase_loss(config: TrainConfig, model: nn.Module, original: nn.Module,
                   forward: Callable[[nn.Module], Any]) -> torch.Tensor:
    """The phase objective's loss (scalar) on one batch: ``forward(module)`` runs a module on the batch; only
    ``original`` (the teacher, frozen) runs, its replaced modules' inputs and outputs are the data."""
    run = lambda module, _batch: forward(module)  # noqa: E731  (the phase losses take (module, batch))
    if config.objective == "module_distillation":
        return module_distillation_loss(model, original, None, run)[0]
    return gate_label_loss(model, original, None, run, config.gate_error_factor)


def acm_budget_term(model: nn.Module, config: TrainConfig) -> torch.Tensor:
    """``acm_budget_weight`` times the budget loss of the last training forward (Wójcik et al. 2023, eq. 5) when a
    module's gating is trained by it (ACM); zero for condnet gating, whose budget is the REINFORCE target rate."""
    if not uses_budget_loss(model):
        return torch.zeros(())
    return config.acm_budget_weight * budget_loss(model, config.acm_budget)
