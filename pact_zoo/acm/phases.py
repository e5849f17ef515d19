"""The three phases that turn a pretrained model into an ACMized one (Wójcik et al. 2023, §3.3), as functions that run
one phase over batches, and the losses they use.

1. :func:`distill_modules` - module-wise representation distillation: forward hooks capture every original module's
   input and output on the frozen original model; every prefix of learners (k = 1..K) of the replacing ACM regresses
   that output (MSE). Only learner weights train.
2. :func:`pretrain_gates` - gate pre-training on the labels of :func:`gate_labels`: per token, the smallest k after
   which adding a learner improves the error ``e_k = |ACM_k(x) - orig(x)|_2`` by less than ``error_factor``.
   Only gate weights train.
3. :func:`finetune` - end to end: task loss + distillation from the original model's logits (KL) + the budget:
   ``|E[cost] / max_cost - beta|`` over all ACM modules for ``"acm"`` gating (:func:`budget_loss`), the core's
   REINFORCE loss with Bengio's L_b / L_e / L_v at target rate ``beta`` for ``"condnet"`` gating
   (:func:`pact_zoo.training_loss`).

Each phase works on one process or many (``torch.distributed`` initialised, e.g. under ``accelerate launch``): phase
3 takes the DDP-wrapped model as ``forward_model``; phases 1 and 2 average their (few) gradients across processes.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..halting.method import check_number
from ..halting.calibrate import run_model
from ..halting.report import training_loss
from .convert import acm_modules, gate_parameters, learner_parameters
from .module import AdaptiveWidth

__all__ = ["budget_loss", "distill_modules", "finetune", "gate_labels", "pretrain_gates", "prefix_errors",
           "module_distillation_loss", "gate_label_loss", "average_gradients", "set_budget", "uses_budget_loss", "PHASE_OBJECTIVES",
           "default_forward", "check_batches", "check_beta", "DEFAULT_ERROR_FACTOR", "DEFAULT_BUDGET_WEIGHT"]

#: Phase-2 label rule of the paper's code (``gating_error_factor``).
DEFAULT_ERROR_FACTOR = 1.2
#: Phase-3 budget-loss weight of the released ImageNet script.
DEFAULT_BUDGET_WEIGHT = 0.1
check_beta = check_number(0.0, 1.0, min_open=True)

Forward = Callable[[nn.Module, Any], Any]

#: the phases' objectives in the shared training loop (``objective:`` of a recipe) and the weights each trains
PHASE_OBJECTIVES: dict[str, Callable[[nn.Module], list[nn.Parameter]]] = {
    "module_distillation": learner_parameters,
    "gate_labels": gate_parameters,
}


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on a batch: a tensor, an ``(inputs, targets)`` sequence, or a dict of keyword inputs (labels
    dropped) (:func:`~pact_zoo.halting.run_model`); returns logits (``.logits`` of a ModelOutput)."""
    out = run_model(model, batch)
    return getattr(out, "logits", out)


def _pairs(original: nn.Module, model: nn.Module) -> list[tuple[AdaptiveWidth, nn.Module, nn.Module]]:
    """(ACM module, original input module, original output module) for every ACM module of ``model``."""
    pairs = []
    for name, module in acm_modules(model):
        source = getattr(module, "source", None)
        if source is None:
            raise ValueError(f"ACM module {name!r} has no source (build it with pact_zoo.acm.acmize)")
        pairs.append((module, original.get_submodule(source[0]), original.get_submodule(source[1])))
    return pairs


@torch.no_grad()
def _capture(original: nn.Module, pairs, batch: Any, forward: Forward) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and outputs ``([N, D_in], [N, D_out])`` of every replaced original module on ``batch``."""
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    handles = []
    for i, (_, source_in, source_out) in enumerate(pairs):
        handles.append(source_in.register_forward_pre_hook(
            lambda m, args, i=i: inputs.__setitem__(i, args[0].reshape(-1, args[0].shape[-1]))))
        handles.append(source_out.register_forward_hook(
            lambda m, args, out, i=i: outputs.__setitem__(i, out.reshape(-1, out.shape[-1]))))
    try:
        original.eval()
        forward(original, batch)
    finally:
        for handle in handles:
            handle.remove()
    return [(inputs[i], outputs[i]) for i in range(len(pairs))]


def check_batches(batches: Iterable, passes: int = 2, what: str = "batches") -> None:
    """Raise a one-line ValueError when ``batches`` holds no batch, or is a one-shot iterator (a generator) that
    ``passes`` > 1 passes over it (epochs, phases) would exhaust after the first. A one-shot iterator read once is
    not inspected here (looking would consume a batch): the phase raises if it yields none."""
    if isinstance(batches, Iterator):
        if passes > 1:
            raise ValueError(f"{what} must be re-iterable (a list of batches or a DataLoader) for {passes} passes, "
                             f"got a one-shot {type(batches).__name__}")
        return
    try:
        empty = len(batches) == 0  # type: ignore[arg-type]
    except TypeError:  # no len: look at the first batch of a fresh pass
        empty = next(iter(batches), _NO_BATCH) is _NO_BATCH
    if empty:
        raise ValueError(f"{what} must hold at least one batch, got an empty {type(batches).__name__}")


def _check_seen(count: int, what: str = "batches") -> None:
    if count == 0:
        raise ValueError(f"{what} must hold at least one batch, got none")


_NO_BATCH = object()


def average_gradients(params: list[nn.Parameter]) -> None:
    """Mean of the gradients over processes (no-op on one process): phases 1 and 2 never run the model through a
    DDP wrapper, so their gradients are averaged here."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    world = torch.distributed.get_world_size()
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


def module_distillation_loss(model: nn.Module, original: nn.Module, batch: Any, forward: Forward = default_forward,
                             detach: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Phase 1's loss on one batch: the mean over ACM modules of the mean over prefixes k = 1..K of the MSE between
    the first k learners and the replaced original module, on that module's captured input (Wójcik et al. 2023,
    §3.3). No forward of ``model`` runs: inputs and targets come from ``original`` (frozen, eval mode).

    Returns:
        the loss (scalar, differentiable in the learner weights) and the detached ``[K+1]`` MSE of every prefix
        k = 0..K averaged over modules.
    """
    pairs = _pairs(original, model)
    loss, per_prefix = 0.0, 0.0
    for (module, _, _), (x, y) in zip(pairs, _capture(original, pairs, batch, forward)):
        prefixes = module.all_prefixes(x, detach=detach)  # [N, K+1, D]
        errors = ((prefixes - y.unsqueeze(1)) ** 2).mean(dim=(0, 2))  # [K+1]
        loss = loss + errors[1:].mean()
        per_prefix = per_prefix + errors.detach()
    return loss / len(pairs), per_prefix / len(pairs)


def gate_label_loss(model: nn.Module, original: nn.Module, batch: Any, forward: Forward = default_forward,
                    error_factor: float = DEFAULT_ERROR_FACTOR) -> torch.Tensor:
    """Phase 2's loss on one batch, averaged over ACM modules: the gates against the labels of :func:`gate_labels`
    on the replaced modules' captured inputs (ACM: cross-entropy over k; condnet: binary cross-entropy of "block i
    on" = i < label). Differentiable in the gate weights only."""
    pairs = _pairs(original, model)
    loss = 0.0
    for (module, _, _), (x, y) in zip(pairs, _capture(original, pairs, batch, forward)):
        with torch.no_grad():
            labels = gate_labels(module.all_prefixes(x), y, module.min_learners, error_factor)
        loss = loss + module.method.label_loss(module, module.gate_logits(x), labels)
    return loss / len(pairs)


def distill_modules(model: nn.Module, original: nn.Module, batches: Iterable, epochs: int = 1, lr: float = 1e-3,
                    forward: Forward = default_forward, detach: bool = True) -> list[list[float]]:
    """Phase 1 over in-memory batches: every prefix k = 1..K of every ACM module regresses the replaced module's
    output (:func:`module_distillation_loss`, Adam). ``pact-zoo convert`` runs the same loss in the shared training
    loop (``objective: module_distillation``).

    Args:
        model: the ACMized model (only its learner weights train).
        original: the frozen original model (same module names as ``model`` had before acmize).
        batches: a re-iterable of batches (one pass per epoch).
        detach: each learner's gradient flows through its own term only (the paper's default).

    Returns:
        per epoch, the mean MSE of each prefix k = 0..K over the epoch (``[epochs][K+1]``, averaged over modules).
    """
    check_batches(batches, epochs)
    _pairs(original, model)  # a model without sources raises before any step
    params = learner_parameters(model)
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in range(epochs):
        sums, count = None, 0
        for batch in batches:
            loss, per_prefix = module_distillation_loss(model, original, batch, forward, detach)
            optimizer.zero_grad()
            loss.backward()
            average_gradients(params)
            optimizer.step()
            sums = per_prefix if sums is None else sums + per_prefix
            count += 1
        _check_seen(count)
        history.append((sums / count).tolist())
    return history


@torch.no_grad()
def prefix_errors(model: nn.Module, original: nn.Module, batches: Iterable,
                  forward: Forward = default_forward) -> list[float]:
    """Mean MSE of every prefix k = 0..K against the original modules' outputs (averaged over modules)."""
    check_batches(batches, 1)
    pairs = _pairs(original, model)
    total, count = None, 0
    for batch in batches:
        for (module, _, _), (x, y) in zip(pairs, _capture(original, pairs, batch, forward)):
            errors = ((module.all_prefixes(x) - y.unsqueeze(1)) ** 2).mean(dim=(0, 2))
            total = errors if total is None else total + errors
            count += 1
    _check_seen(count)
    return (total / count).tolist()


def gate_labels(prefixes: torch.Tensor, target: torch.Tensor, min_learners: int = 0,
                error_factor: float = DEFAULT_ERROR_FACTOR) -> torch.Tensor:
    """Phase-2 labels ``[N]`` in ``min_learners..K``: the smallest k >= min_learners with ``e_k / e_{k+1} <
    error_factor`` (adding learner k+1 stops helping), K where every learner helps.

    Args:
        prefixes: ``[N, K+1, D]`` outputs of k = 0..K learners.
        target: ``[N, D]`` the original module's output.
    """
    errors = (prefixes - target.unsqueeze(1)).norm(dim=-1)  # [N, K+1]
    num_learners = prefixes.shape[1] - 1
    stops = errors[:, :-1] < error_factor * errors[:, 1:]  # [N, K]: adding learner k+1 helps by < factor
    stops[:, :min_learners] = False
    stops = torch.cat([stops, torch.ones_like(stops[:, :1])], 1)
    return stops.to(torch.int8).argmax(1).clamp(min=min_learners, max=num_learners)


def pretrain_gates(model: nn.Module, original: nn.Module, batches: Iterable, epochs: int = 1, lr: float = 1e-2,
                   forward: Forward = default_forward,
                   error_factor: float = DEFAULT_ERROR_FACTOR) -> list[float]:
    """Phase 2 over in-memory batches: gates learn the labels of :func:`gate_labels` (:func:`gate_label_loss`, Adam).
    Only gate weights train; returns the mean loss per epoch. ``pact-zoo convert`` runs the same loss in the shared
    training loop (``objective: gate_labels``)."""
    check_number(1.0)("error_factor", error_factor)
    check_batches(batches, epochs)
    _pairs(original, model)
    params = gate_parameters(model)
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in range(epochs):
        total, count = 0.0, 0
        for batch in batches:
            loss = gate_label_loss(model, original, batch, forward, error_factor)
            optimizer.zero_grad()
            loss.backward()
            average_gradients(params)
            optimizer.step()
            total += float(loss.detach())
            count += 1
        _check_seen(count)
        history.append(total / count)
    return history


def budget_loss(model: nn.Module, beta: float) -> torch.Tensor:
    """``|sum_m E[cost_m] / sum_m max_cost_m - beta|`` over every ACM module of the last (training) forward
    (Wójcik et al. 2023, eq. 5): cost in learner FLOPs, expectation over the batch's tokens."""
    beta = check_beta("beta", beta)
    cost, full = 0.0, 0.0
    for name, module in acm_modules(model):
        record = module.record
        if record is None or record.cost is None:
            raise RuntimeError(f"ACM module {name!r} has no gated forward to take the budget of: run a training "
                               "forward first")
        weight = module.num_learners * module.learner_flops
        cost = cost + weight * record.cost.mean()
        full += weight
    if full == 0.0:
        raise ValueError("model has no ACM modules")
    return (cost / full - beta).abs()


def set_budget(model: nn.Module, beta: float) -> None:
    """Hand the budget ``beta`` to every ACM module's gating (condnet: its target rate, Bengio et al. 2016's L_b;
    ACM gating reaches it through :func:`budget_loss` instead)."""
    for _, module in acm_modules(model):
        module.method.set_budget(beta)


def uses_budget_loss(model: nn.Module) -> bool:
    """True when a module's gating is trained to its budget by :func:`budget_loss` (ACM gating)."""
    return any(module.method.budget_loss for _, module in acm_modules(model))


def finetune(model: nn.Module, batches: Iterable, loss_fn: Callable[[Any, Any], torch.Tensor], beta: float,
             teacher: Optional[nn.Module] = None, epochs: int = 1, lr: float = 1e-4,
             gate_lr: Optional[float] = None, budget_weight: float = DEFAULT_BUDGET_WEIGHT,
             distill_weight: float = 1.0,
             forward: Forward = default_forward, forward_model: Optional[nn.Module] = None,
             optimizer: Optional[torch.optim.Optimizer] = None, backward: Optional[Callable] = None,
             max_grad_norm: Optional[float] = 1.0) -> list[dict[str, float]]:
    """Phase 3: end-to-end fine-tuning at the budget ``beta`` (target fraction of the ACM modules' FLOPs).

    Args:
        model: the ACMized model (unwrapped).
        batches: training batches (re-iterable).
        loss_fn: ``(logits, batch) -> [B]`` per-sample task loss.
        beta: target FLOPs ratio in (0, 1].
        teacher: the original model (distillation of its logits, KL), or None.
        lr, gate_lr: Adam learning rates of the network and of the gates (default ``lr``; short runs need a larger
            one for the gates to reach the budget).
        forward_model: what to call in the forward (a DDP wrapper of ``model``); default ``model``.
        optimizer, backward: defaults Adam(lr) and ``loss.backward``; pass an accelerator's prepared optimizer and
            ``accelerator.backward`` to run under ``accelerate``.

    Returns:
        per epoch, the mean task loss, distillation loss, budget term and executed-learner fraction.
    """
    beta = check_beta("beta", beta)
    check_number(0.0)("budget_weight", budget_weight)
    check_number(0.0)("distill_weight", distill_weight)
    check_batches(batches, epochs)
    modules = acm_modules(model)
    if not modules:
        raise ValueError("model has no ACM modules: call pact_zoo.acm.acmize first")
    set_budget(model, beta)
    forward_model = forward_model if forward_model is not None else model
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        gates = {id(p) for p in gate_parameters(model)}
        optimizer = torch.optim.Adam([
            {"params": [p for p in params if id(p) not in gates], "lr": lr},
            {"params": [p for p in params if id(p) in gates], "lr": gate_lr if gate_lr is not None else lr}])
    backward = backward if backward is not None else (lambda loss: loss.backward())
    uses_acm = uses_budget_loss(model)
    history = []
    for _ in range(epochs):
        model.train()
        sums = {"task": 0.0, "distill": 0.0, "budget": 0.0, "fraction": 0.0}
        count = 0
        for batch in batches:
            target = None
            if teacher is not None and distill_weight > 0:
                with torch.no_grad():
                    teacher.eval()
                    target = forward(teacher, batch).float()
            step = training_loss(model, lambda: forward(forward_model, batch), lambda out: loss_fn(out, batch))
            loss = step.loss
            distill = torch.zeros(())
            if target is not None:  # Hinton et al. 2015 distillation from the original model
                distill = F.kl_div(F.log_softmax(step.output.float(), -1), F.log_softmax(target, -1),
                                   log_target=True, reduction="batchmean")
                loss = loss + distill_weight * distill
            budget = budget_loss(model, beta) if uses_acm else torch.zeros(())
            loss = loss + budget_weight * budget
            optimizer.zero_grad()
            backward(loss)
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
            fraction = sum(float(m.record.units_executed.float().mean()) / m.num_learners for _, m in modules)
            for key, value in (("task", step.task_loss), ("distill", distill), ("budget", budget),
                               ("fraction", fraction / len(modules))):
                sums[key] += float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            count += 1
        _check_seen(count)
        history.append({k: v / count for k, v in sums.items()})
    return history
