"""Model-level API: the loss and the report of the last forward (read from each stage's one record), and the knobs
users turn after training (threshold, execution, stop decisions, full depth)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from .adaptive_module import AdaptiveModule, is_adaptive_module
from .config import validate_threshold
from .flops import _COUNTED, FlopsProfiler
from .protocols import (
    FlopsAccountedModule, LengthProfiledModel, ProfiledModel, deprecated_hook_name, recorded_input_shape,
)
from .stage import DECISION_MODES, EXECUTION_MODES

__all__ = [
    "HaltingReport", "TrainingLoss", "adaptive_stages", "anytime_depth", "eval_mode", "full_depth", "halting_cost",
    "halting_loss",
    "halting_report",
    "needs_rollout", "needs_task_loss", "self_critical_baseline", "set_decision", "set_execution", "set_threshold",
    "training_loss", "truncated_depth",
]


def __getattr__(name: str) -> Any:
    return deprecated_hook_name(__name__, name)  # the string names of the hooks, before the protocols


@dataclass
class HaltingReport:
    """Per-sample account of the last forward.

    Attributes:
        units_executed: ``[B, S]`` long, units run per adaptive stage (summed over time steps for recurrent models).
        flops: ``[B]`` long, FLOPs per sample (2 per multiply-add of every convolution, linear and recurrent-cell
            layer that ran: stem, executed units, executed halting heads, classifier).
        full_flops: FLOPs of one sample at full depth (every unit, no halting head: the plain network); for models
            whose FLOPs depend on the sample length, those of the longest sample of the batch.
        sample_full_flops: ``[B]`` long, full-depth FLOPs of each sample (differs from ``full_flops`` only for
            sequences with padding).
        num_units: ``S`` stage depths L.
        stage_names: ``S`` module names of the stages.
        token_flops: ``[B, T]`` long FLOPs per token of the modules that count their own FLOPs
            (:class:`~pact_zoo.halting.protocols.FlopsAccountedModule`), summed over them, or None when the model has
            none.
        sample_full_units: ``[B, S]`` long, units each sample runs per stage at full depth (L, times the sample's
            time steps for recurrent models); None where a report was built without it.
    """

    units_executed: torch.Tensor
    flops: torch.Tensor
    full_flops: int
    sample_full_flops: torch.Tensor
    num_units: tuple[int, ...]
    stage_names: tuple[str, ...]
    token_flops: Optional[torch.Tensor] = None
    sample_full_units: Optional[torch.Tensor] = None

    @property
    def mean_flops(self) -> float:
        return float(self.flops.double().mean())

    @property
    def flops_ratio(self) -> float:
        """Total FLOPs relative to the same samples at full depth."""
        return float(self.flops.double().sum() / self.sample_full_flops.double().sum())

    @property
    def mean_units(self) -> torch.Tensor:
        """``[S]`` mean units executed per stage."""
        return self.units_executed.double().mean(0)

    @property
    def units_fraction(self) -> Optional[float]:
        """Units executed over all stages relative to the same samples at full depth (None without
        ``sample_full_units``)."""
        if self.sample_full_units is None or not self.sample_full_units.sum():
            return None
        return float(self.units_executed.double().sum() / self.sample_full_units.double().sum())

    def __repr__(self) -> str:
        """A short summary (the tensors stay in the attributes): batch size, FLOPs against full depth, mean units
        per stage out of each stage's depth (per time step or token where a stage runs once per step)."""
        batch = int(self.flops.shape[0]) if self.flops.dim() else 1
        if batch == 0:
            return f"HaltingReport(batch=0, full depth {self.full_flops / 1e6:.4g} MFLOPs, {len(self.num_units)} stages)"
        mean, label = self.mean_units, "mean units per stage"
        if self.sample_full_units is not None:
            steps = self.sample_full_units.double().sum(0) / torch.tensor(self.num_units, dtype=torch.double)
            if bool((steps > batch).any()):  # a stage applied per time step or token: units per application
                mean = self.units_executed.double().sum(0) / steps.clamp_min(1)
                label = "mean units per stage and step"
        units = " / ".join(f"{float(u):.2f} of {n}" for u, n in zip(mean.tolist(), self.num_units))
        return (f"HaltingReport(batch={batch}, flops ratio {self.flops_ratio:.3f} (mean {self.mean_flops / 1e6:.4g} "
                f"of {self.full_flops / 1e6:.4g} MFLOPs at full depth), {label} {units or '-'})")


def adaptive_stages(model: nn.Module) -> list[tuple[str, AdaptiveModule]]:
    """All adaptive modules of ``model`` (:class:`~pact_zoo.halting.adaptive_module.AdaptiveModule`: the
    :class:`AdaptiveStage` modules, including non-halting ones, and per-token width modules), in module order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return [(name, m) for name, m in model.named_modules() if is_adaptive_module(m)]


def _records(model: nn.Module, what: str) -> list[tuple[str, AdaptiveModule]]:
    stages = adaptive_stages(model)
    for name, stage in stages:
        if stage.record is None:
            raise RuntimeError(f"stage {name!r} has not run yet: call the model's forward before {what}")
    return stages


def needs_task_loss(model: nn.Module) -> bool:
    """True when a stage's method needs the per-sample task loss in :func:`halting_loss` (REINFORCE)."""
    return any(stage.halting and stage.method.needs_task_loss for _, stage in adaptive_stages(model))


def needs_rollout(model: nn.Module) -> bool:
    """True when a stage's method uses the self-critical baseline (:func:`self_critical_baseline`)."""
    return any(stage.halting and stage.method.needs_rollout for _, stage in adaptive_stages(model))


def halting_cost(model: nn.Module, cost_scale: float = 1.0) -> torch.Tensor:
    """``[B]`` per-sample tau-weighted cost of the last forward, summed over the halting stages."""
    total: Optional[torch.Tensor] = None
    for _, stage in _records(model, "halting_cost"):
        record = stage.record
        if record.cost is None or not stage.halting:
            continue
        term = cost_scale * stage.method.cost_weight * record.cost.float()
        total = term if total is None else total + term
    if total is None:
        stages = adaptive_stages(model)
        if not stages:
            return torch.zeros(())
        record = stages[0][1].record
        return torch.zeros(record.batch_size, device=record.units_executed.device)
    return total


def halting_loss(model: nn.Module, task_loss: Optional[torch.Tensor] = None,
                 baseline_loss: Optional[torch.Tensor] = None, cost_scale: float = 1.0) -> torch.Tensor:
    """The halting term of the training loss for the last forward, summed over stages (a scalar).

    Each stage's method gives its term: PACT ``tau * E_q[z]`` (or the relaxed sum_n n w_n), ACT ``tau * (N + R)``
    (averaged over the batch), policy gradient its REINFORCE term. A plain model gives a zero scalar.

    Args:
        model: a model with :class:`AdaptiveStage` modules, after a forward.
        task_loss: ``[B]`` per-sample task loss of that forward (``reduction="none"``); required by methods with
            ``needs_task_loss`` (policy gradient), ignored by the others.
        baseline_loss: ``[B]`` per-sample path loss of a baseline forward, from :func:`self_critical_baseline`.
        cost_scale: multiplies every ``tau`` (a warm-up of the cost).
    """
    stages = [(name, stage) for name, stage in _records(model, "halting_loss") if stage.halting]
    path_loss = None
    if task_loss is not None:
        if not isinstance(task_loss, torch.Tensor) or task_loss.dim() != 1:
            raise ValueError("task_loss must be the per-sample task loss, a [B] tensor (reduction='none'), got "
                             f"{type(task_loss).__name__} {tuple(getattr(task_loss, 'shape', ()))}")
        if any(stage.method.needs_task_loss for _, stage in stages):
            if task_loss.shape[0] != stages[0][1].record.batch_size:
                raise ValueError(f"task_loss must be [B] for the forward's batch of B={stages[0][1].record.batch_size}, "
                                 f"got shape {tuple(task_loss.shape)}")
            path_loss = task_loss.detach().float() + halting_cost(model, cost_scale).detach()
    total: Optional[torch.Tensor] = None
    for _, stage in stages:
        term = stage.method.loss(stage.record, task_loss=path_loss, baseline_loss=baseline_loss,
                                 cost_scale=cost_scale)
        total = term if total is None else total + term
    for _, stage in adaptive_stages(model):  # stages that ran without their heads (anytime batches) still touch them
        if not stage.halting and stage.record is not None and stage.record.touch is not None:
            total = stage.record.touch if total is None else total + stage.record.touch
    if total is None:
        param = next(model.parameters(), None)
        return torch.zeros((), device=param.device if param is not None else None)
    return total


@contextmanager
def _rollout(model: nn.Module) -> Iterator[None]:
    """Training-mode forward under the deterministic rule, BatchNorm statistics left untouched."""
    stages = [stage for _, stage in adaptive_stages(model)]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
    for stage in stages:
        stage.rollout = True
    try:
        yield
    finally:
        for stage in stages:
            stage.rollout = False
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def self_critical_baseline(model: nn.Module, path_task_loss: Callable[[], torch.Tensor],
                           cost_scale: float = 1.0) -> torch.Tensor:
    """The self-critical REINFORCE baseline (Rennie et al. 2017; BlockDrop): the per-sample path loss of the
    deterministic halting rule on the same batch.

    Runs ``path_task_loss()`` - a closure that calls the model on the batch and returns the ``[B]`` per-sample task
    loss - without gradients, in training mode but with every stage deciding by its deterministic rule and BatchNorm
    statistics left untouched. Call it *before* the training forward (a forward replaces the stages' records).

    Returns:
        ``[B]`` task loss + tau-weighted units of the greedy path, for ``halting_loss(..., baseline_loss=...)``.
    """
    with torch.no_grad(), _rollout(model):
        task_loss = path_task_loss()
        return task_loss.detach().float() + halting_cost(model, cost_scale)


@dataclass
class TrainingLoss:
    """Result of :func:`training_loss`: ``loss`` (scalar to backpropagate) = ``task_loss`` + ``halting_loss``, and the
    model ``output`` of the training forward."""

    loss: torch.Tensor
    task_loss: torch.Tensor
    halting_loss: torch.Tensor
    output: Any


def training_loss(model: nn.Module, forward: Callable[[], Any], per_sample_loss: Callable[[Any], torch.Tensor],
                  cost_scale: float = 1.0) -> TrainingLoss:
    """One training forward and its loss, for every halting method (what the training loop does per batch).

    Runs the self-critical baseline forward first where a method needs it, then ``forward()``, and adds
    :func:`halting_loss` with the per-sample task loss where a method needs it.

    Args:
        model: the adaptive model (the unwrapped module when ``forward`` calls a DDP wrapper).
        forward: ``() -> output`` runs the model on the batch.
        per_sample_loss: ``output -> [B]`` per-sample task loss (e.g. ``F.cross_entropy(..., reduction="none")``).
        cost_scale: multiplies every ``tau`` (warm-up).
    """
    baseline = None
    if model.training and torch.is_grad_enabled() and needs_rollout(model):
        baseline = self_critical_baseline(model, lambda: per_sample_loss(forward()), cost_scale)
    output = forward()
    per_sample = per_sample_loss(output)
    task_loss = per_sample.mean()
    cost = halting_loss(model, task_loss=per_sample, baseline_loss=baseline, cost_scale=cost_scale)
    return TrainingLoss(loss=task_loss + cost, task_loss=task_loss, halting_loss=cost, output=output)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` inside the block; afterwards every submodule gets back its own mode (a frozen BatchNorm left
    in eval inside a training model stays so)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


# --------------------------------------------------------------------------------------------------------------------
# FLOPs report
# --------------------------------------------------------------------------------------------------------------------
def _profile_inputs(module: nn.Module) -> Optional[Callable[..., tuple[tuple, dict[str, Any]]]]:
    """``([length]) -> (args, kwargs)`` of ``module``'s one-sample forward, or None when it gives none."""
    if isinstance(module, ProfiledModel):
        return module.halting_profile_inputs
    shape = recorded_input_shape(module)
    if shape is None:
        return None

    def zeros() -> tuple[tuple, dict[str, Any]]:
        param = next(module.parameters())
        return (torch.zeros((1,) + shape, dtype=param.dtype, device=param.device),), {}

    return zeros


def _profiled_root(model: nn.Module) -> tuple[nn.Module, Callable[..., tuple[tuple, dict[str, Any]]]]:
    for module in model.modules():
        inputs = _profile_inputs(module)
        if inputs is not None:
            return module, inputs
    raise RuntimeError("no profiling input: halting_report profiles models that record their per-sample input shape "
                       "(pact_zoo.halting.record_input_shape, called by the pact_zoo timm families in "
                       "forward_features) or implement halting_profile_inputs() (pact_zoo.halting.ProfiledModel: the "
                       "pact_zoo Hugging Face models); call such a model first")


def _profile(root: nn.Module, inputs: Callable[..., tuple[tuple, dict[str, Any]]],
             stages: list[tuple[str, AdaptiveModule]], length: Optional[int] = None
             ) -> tuple[int, list[list[int]], list[list[int]], list[list[int]]]:
    """Per-sample FLOPs of the non-adaptive part, of every unit, of every head and of every exit, profiled once per
    input shape on one sample (every stage runs its dense path once under the profiler and leaves its record alone);
    ``inputs``: the root's one-sample inputs (:func:`_profile_inputs`); ``length``: the sample's length, for
    :class:`~pact_zoo.halting.protocols.LengthProfiledModel` models."""
    param = next(root.parameters())
    args, kwargs = inputs() if length is None else inputs(length)
    shape = tuple((k, tuple(v.shape)) for k, v in kwargs.items() if isinstance(v, torch.Tensor))
    shape += tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
    signature = (shape, param.dtype, param.device.type, tuple(s.adaptive for _, s in stages),
                 tuple((type(m).__name__, tuple(getattr(m, "weight").shape) if hasattr(m, "weight") else ())
                       for m in root.modules() if isinstance(m, _COUNTED)))
    cache = root.__dict__.setdefault("_halting_flops_cache", {})
    if signature in cache:
        return cache[signature]
    count = len(adaptive_stages(root))
    # every unit and head once, also when called inside full_depth / truncated_depth (the cache outlives them)
    with eval_mode(root), torch.no_grad(), _stage_setting(root, "truncate", [None] * count), \
            _stage_setting(root, "full_depth", [False] * count), FlopsProfiler(root) as profiler:
        root(*args, **kwargs)
    unit_flops = [[profiler.get(s, "unit", n) for n in range(s.num_units)] for _, s in stages]
    head_flops = [[profiler.get(s, "head", n) for n in range(s.num_units - 1)] if s.adaptive else []
                  for _, s in stages]
    # exits that also decide (exit rules) ran in the head slots: the same computation, counted once
    exit_flops = [[profiler.get(s, "head" if s.exits_are_heads and n < s.num_units - 1 else "exit", n)
                   for n in range(s.num_units)] if getattr(s, "exits", None) is not None else []
                  for _, s in stages]
    result = (profiler.flops["base"], unit_flops, head_flops, exit_flops)
    cache[signature] = result
    return result


def halting_report(model: nn.Module) -> HaltingReport:
    """Units executed and FLOPs per sample of the model's last forward (see :class:`HaltingReport`)."""
    stages = adaptive_stages(model)
    if not stages:
        raise ValueError("model has no AdaptiveStage: nothing to report")
    stages = _records(model, "halting_report")
    units = [stage.record.units_executed.cpu() for _, stage in stages]
    if len({u.shape[0] for u in units}) != 1:
        raise RuntimeError("stages recorded different batch sizes: they did not all run in the last forward")
    root, inputs = _profiled_root(model)
    batch_size = units[0].shape[0]
    lengths = root.halting_sample_lengths() if isinstance(root, LengthProfiledModel) else None
    if lengths is None:  # every sample costs the same per unit
        groups = [(None, torch.ones(batch_size, dtype=torch.bool))]
    else:  # one profile per distinct sample length
        lengths = lengths.detach().cpu().long()
        if tuple(lengths.shape) != (batch_size,):
            raise RuntimeError(f"halting_sample_lengths() gave shape {tuple(lengths.shape)}, expected ({batch_size},)")
        groups = [(int(n), lengths == n) for n in torch.unique(lengths)]
    flops = torch.zeros(batch_size, dtype=torch.long)
    sample_full = torch.zeros(batch_size, dtype=torch.long)
    full_units = torch.zeros(batch_size, len(stages), dtype=torch.long)
    full = 0
    token_flops = None
    for s, (_, stage) in enumerate(stages):
        if isinstance(stage, FlopsAccountedModule):  # its own account (e.g. per-token width)
            stage_flops, stage_sample_full, stage_full, tokens = stage.report_flops()
            full_units[:, s] = (units[s].shape[1] if units[s].dim() == 2 else 1) * stage.num_units  # every token
            flops += stage_flops
            sample_full += stage_sample_full
            full += stage_full
            if tokens is not None:
                token_flops = tokens if token_flops is None else token_flops + tokens
    protocol_full = full
    for length, rows in groups:
        base, unit_flops, head_flops, exit_flops = _profile(root, inputs, stages, length)
        flops[rows] += base
        sample_full[rows] += base
        group_full = base
        for s, (_, stage) in enumerate(stages):
            if isinstance(stage, FlopsAccountedModule):
                continue
            per_step = units[s] if units[s].dim() == 2 else units[s].unsqueeze(1)  # [B, T] applications
            per_step = per_step[rows]
            full_units[rows, s] = (per_step > 0).sum(1) * stage.num_units
            cum_units = torch.tensor([0] + unit_flops[s], dtype=torch.long).cumsum(0)
            flops[rows] += cum_units[per_step].sum(1)
            stage_full = int(cum_units[-1])
            sample_full[rows] += (per_step > 0).sum(1) * stage_full
            group_full += per_step.shape[1] * stage_full
            if stage.adaptive and stage.record.heads_ran:  # after every executed unit but the last
                cum_heads = torch.tensor([0] + head_flops[s], dtype=torch.long).cumsum(0)
                flops[rows] += cum_heads[per_step.clamp(max=stage.num_units - 1)].sum(1)
            if exit_flops[s]:  # the exit after the unit where a row stopped (the last one: the model's own head)
                per_exit = torch.tensor([0] + exit_flops[s], dtype=torch.long)
                if stage.record.method.accumulates and stage.record.heads_ran:  # ACT mixes every exit's output
                    per_exit = per_exit.cumsum(0)
                ran = per_exit[per_step]
                if stage.exits_are_heads and stage.record.heads_ran:  # already counted as the deciding head
                    ran = torch.where(per_step < stage.num_units, torch.zeros_like(ran), ran)
                flops[rows] += ran.sum(1)
                sample_full[rows] += (per_step > 0).sum(1) * exit_flops[s][-1]
                group_full += per_step.shape[1] * exit_flops[s][-1]
        full = max(full, protocol_full + group_full)  # length-dependent models: the longest sample's
    units_executed = torch.stack([u.sum(1) if u.dim() == 2 else u for u in units], dim=1)
    return HaltingReport(units_executed=units_executed, flops=flops, full_flops=full, sample_full_flops=sample_full,
                         num_units=tuple(s.num_units for _, s in stages),
                         stage_names=tuple(name for name, _ in stages), token_flops=token_flops,
                         sample_full_units=full_units)


# --------------------------------------------------------------------------------------------------------------------
# Knobs
# --------------------------------------------------------------------------------------------------------------------
def set_threshold(model: nn.Module, threshold: float) -> None:
    """Change the deterministic halting rule (h_n >= threshold) of every stage whose method has a threshold, without
    retraining. Raises ValueError when no stage has one (e.g. ACT or a plain model)."""
    threshold = validate_threshold(threshold)
    stages = [stage for _, stage in adaptive_stages(model) if stage.adaptive and stage.method.has_threshold]
    if not stages:
        methods = sorted({stage.method.name for _, stage in adaptive_stages(model)})
        raise ValueError(f"model has no halting stage with a threshold (methods: {methods or 'none'}): "
                         "set_threshold needs a method with a threshold rule such as 'pact' or 'policy_gradient'")
    for stage in stages:
        stage.method.set_knob("threshold", threshold)
    _sync_configs(model, "threshold", threshold)


def _sync_configs(model: nn.Module, key: str, value: Any) -> None:
    """Keep exported configs (a model's ``halting_cfg``, timm's ``_model_args``) in step with a knob change."""
    for module in model.modules():
        config = getattr(module, "halting_cfg", None)
        if config is not None and hasattr(config, "set_halting_knob"):
            config.set_halting_knob(key, value)
        model_args = getattr(module, "_model_args", None)
        if isinstance(model_args, dict) and (key in model_args or config is not None):
            model_args[key] = value


def set_execution(model: nn.Module, execution: str) -> None:
    """Choose how evaluation runs: ``"compact"`` (halted rows leave the batch) or ``"masked"`` (reference)."""
    if execution not in EXECUTION_MODES:
        raise ValueError(f"execution must be one of {EXECUTION_MODES}, got {execution!r}")
    for _, stage in adaptive_stages(model):
        stage.execution = execution


def set_decision(model: nn.Module, decision: str) -> None:
    """Eval stop decisions: ``"greedy"`` (the deterministic rule, default) or ``"sample"`` (each stop sampled from the
    heads' Bernoulli probabilities; methods with ``stochastic = True`` only)."""
    if decision not in DECISION_MODES:
        raise ValueError(f"decision must be one of {DECISION_MODES}, got {decision!r}")
    for _, stage in adaptive_stages(model):
        if decision == "sample" and stage.adaptive and not stage.method.stochastic:
            raise ValueError(f"decision='sample' needs a stochastic halting method; stage uses "
                             f"{stage.method.name!r}")
        stage.decision = decision


@contextmanager
def _stage_setting(model: nn.Module, name: str, values: Sequence[Any]) -> Iterator[nn.Module]:
    """Set attribute ``name`` of every stage (in :func:`adaptive_stages` order) to ``values[s]`` inside the block."""
    stages = [stage for _, stage in adaptive_stages(model)]
    previous = [getattr(stage, name) for stage in stages]
    for stage, value in zip(stages, values):
        setattr(stage, name, value)
    try:
        yield model
    finally:
        for stage, value in zip(stages, previous):
            setattr(stage, name, value)


@contextmanager
def truncated_depth(model: nn.Module, depths: Sequence[int]) -> Iterator[nn.Module]:
    """Run exactly ``depths[s]`` units of stage ``s`` (in :func:`adaptive_stages` order) and no halting head inside
    the block: a static network made of each stage's first units (anytime training, static baselines)."""
    stages = [stage for _, stage in adaptive_stages(model)]
    if len(depths) != len(stages) or not all(isinstance(d, int) and 1 <= d <= s.num_units
                                             for d, s in zip(depths, stages)):
        raise ValueError(f"depths must give 1..L units for each of the {len(stages)} stages "
                         f"(L = {[s.num_units for s in stages]}), got {list(depths)}")
    with _stage_setting(model, "truncate", list(depths)):
        yield model


@contextmanager
def anytime_depth(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, training forwards run ``d ~ Uniform{1..L}`` units per sample and stage (drawn up front, the
    rows leave the batch at their depth) and no halting head: the anytime batches of ``anytime: true`` training,
    which train every prefix of every stage so that any threshold gives a working network."""
    with _stage_setting(model, "anytime", [True] * len(adaptive_stages(model))):
        yield model


@contextmanager
def full_depth(model: nn.Module) -> Iterator[nn.Module]:
    """Run every unit of every stage and no halting head inside the block: the plain network's computation.

    This is the one definition of full depth used by the report (``full_flops``), evaluation and the benchmark.
    Raises ValueError for a model without any adaptive stage (a plain timm model): it would be a silent no-op.
    """
    stages = adaptive_stages(model)
    if not stages:
        raise ValueError(f"model has no adaptive stage ({type(model).__name__}): full_depth needs a pact_zoo model "
                         f"(timm.create_model('pact_...'), pact_zoo.make_adaptive(model), pact_zoo.acm.acmize(model))")
    with _stage_setting(model, "full_depth", [True] * len(stages)):
        yield model
