"""What the last forward did, and the knobs users turn after training (model-level API)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .config import validate_threshold
from .flops import FlopsProfiler, _COUNTED
from .stage import EXECUTION_MODES, AdaptiveStage

__all__ = [
    "HaltingReport", "adaptive_stages", "halting_loss", "halting_report", "set_threshold", "set_execution",
    "INPUT_SHAPE_ATTR",
]

#: Models set this attribute (the ``[C, H, W]`` / per-sample input shape of the last forward) so that
#: :func:`halting_report` can profile one sample at full depth.
INPUT_SHAPE_ATTR = "halting_input_shape"


@dataclass
class HaltingReport:
    """Per-sample account of the last forward.

    Attributes:
        units_executed: ``[B, S]`` long, units run per adaptive stage.
        flops: ``[B]`` long, FLOPs per sample (2 per multiply-add of every convolution and linear layer that
            ran: stem, executed units, executed halting heads, classifier).
        full_flops: FLOPs of one sample at full depth (every unit and head).
        num_units: ``S`` stage depths L.
        stage_names: ``S`` module names of the stages.
    """

    units_executed: torch.Tensor
    flops: torch.Tensor
    full_flops: int
    num_units: tuple[int, ...]
    stage_names: tuple[str, ...]

    @property
    def mean_flops(self) -> float:
        return float(self.flops.double().mean())

    @property
    def flops_ratio(self) -> float:
        """Mean FLOPs relative to full depth."""
        return self.mean_flops / self.full_flops

    @property
    def mean_units(self) -> torch.Tensor:
        """``[S]`` mean units executed per stage."""
        return self.units_executed.double().mean(0)


def adaptive_stages(model: nn.Module) -> list[tuple[str, AdaptiveStage]]:
    """All :class:`AdaptiveStage` modules of ``model`` (including non-halting ones), in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AdaptiveStage)]


def _stages_or_raise(model: nn.Module) -> list[tuple[str, AdaptiveStage]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return adaptive_stages(model)


def halting_loss(model: nn.Module) -> torch.Tensor:
    """The tau-weighted cost term of the last forward, summed over stages, averaged over the batch.

    PACT: tau * E_q[z] (or its relaxed estimate sum_n n w_n); ACT: tau * (N + R) (DESIGN §1). A plain model
    (no halting stage) gives a zero scalar.
    """
    total: Optional[torch.Tensor] = None
    for name, stage in _stages_or_raise(model):
        if not stage.adaptive:
            continue
        if stage.last_cost is None:
            raise RuntimeError(f"stage {name!r} has not run yet: call the model's forward before halting_loss")
        term = stage.tau * stage.last_cost.mean()
        total = term if total is None else total + term
    if total is None:
        param = next(model.parameters(), None)
        return torch.zeros((), device=param.device if param is not None else None)
    return total


def _find_profiled_root(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if getattr(module, INPUT_SHAPE_ATTR, None) is not None:
            return module
    raise RuntimeError("no input shape recorded: halting_report profiles models that record their per-sample "
                       f"input shape (attribute {INPUT_SHAPE_ATTR!r}, set by the pact_zoo timm families in "
                       "forward_features); call such a model first. Sequence models report ponder_steps in their "
                       "outputs instead")


def _profile(root: nn.Module, stages: list[tuple[str, AdaptiveStage]]) -> tuple[int, list[list[int]],
                                                                                 list[list[int]]]:
    """Per-sample FLOPs of the non-adaptive part, of every unit and of every head (cached per input shape)."""
    shape = tuple(getattr(root, INPUT_SHAPE_ATTR))
    param = next(root.parameters())
    signature = (shape, param.dtype, param.device.type, tuple(s.adaptive for _, s in stages),
                 tuple((type(m).__name__, tuple(getattr(m, "weight").shape) if hasattr(m, "weight") else ())
                       for m in root.modules() if isinstance(m, _COUNTED)))
    cache = root.__dict__.setdefault("_halting_flops_cache", {})
    if signature in cache:
        return cache[signature]
    records = [(s.last_units_executed, s.last_cost) for _, s in stages]
    modes = [(m, m.training) for m in root.modules()]  # e.g. frozen BN layers stay in eval
    root.eval()
    try:
        with torch.no_grad(), FlopsProfiler(root) as profiler:
            root(torch.zeros((1,) + shape, dtype=param.dtype, device=param.device))
    finally:
        for module, training in modes:
            module.training = training
        for (_, stage), (units, cost) in zip(stages, records):
            stage.last_units_executed, stage.last_cost = units, cost
    unit_flops = [[profiler.get(s, "unit", n) for n in range(s.num_units)] for _, s in stages]
    head_flops = [[profiler.get(s, "head", n) for n in range(s.num_units - 1)] if s.adaptive else []
                  for _, s in stages]
    result = (profiler.flops["base"], unit_flops, head_flops)
    cache[signature] = result
    return result


def halting_report(model: nn.Module) -> HaltingReport:
    """Units executed and FLOPs per sample of the model's last forward (see :class:`HaltingReport`)."""
    stages = _stages_or_raise(model)
    if not stages:
        raise ValueError("model has no AdaptiveStage: nothing to report")
    units = []
    for name, stage in stages:
        if stage.last_units_executed is None:
            raise RuntimeError(f"stage {name!r} has not run yet: call the model before halting_report")
        units.append(stage.last_units_executed)
    batch_sizes = {u.shape[0] for u in units}
    if len(batch_sizes) != 1:
        raise RuntimeError("stages recorded different batch sizes: they did not all run in the last forward")
    units_executed = torch.stack(units, dim=1).cpu()  # [B, S]
    base, unit_flops, head_flops = _profile(_find_profiled_root(model), stages)
    flops = torch.full((units_executed.shape[0],), base, dtype=torch.long)
    full = base
    for s, (_, stage) in enumerate(stages):
        cum_units = torch.tensor([0] + unit_flops[s], dtype=torch.long).cumsum(0)
        flops += cum_units[units_executed[:, s]]
        full += int(cum_units[-1])
        if stage.adaptive:
            cum_heads = torch.tensor([0] + head_flops[s], dtype=torch.long).cumsum(0)
            heads_run = units_executed[:, s].clamp(max=stage.num_units - 1)  # no head after the last unit
            flops += cum_heads[heads_run]
            full += int(cum_heads[-1])
    return HaltingReport(units_executed=units_executed, flops=flops, full_flops=full,
                         num_units=tuple(s.num_units for _, s in stages),
                         stage_names=tuple(name for name, _ in stages))


def set_threshold(model: nn.Module, threshold: float) -> None:
    """Change the deterministic PACT halting rule (h_n >= threshold) of every stage, without retraining."""
    threshold = validate_threshold(threshold)
    for _, stage in _stages_or_raise(model):
        stage.set_threshold(threshold)
    for module in model.modules():  # keep exported model args / configs in step
        config = getattr(module, "halting_cfg", None)
        if config is not None:
            config.threshold = threshold
        model_args = getattr(module, "_model_args", None)
        if isinstance(model_args, dict) and "threshold" in model_args:
            model_args["threshold"] = threshold


def set_execution(model: nn.Module, execution: str) -> None:
    """Choose how evaluation runs: ``"compact"`` (halted rows leave the batch) or ``"masked"`` (reference)."""
    if execution not in EXECUTION_MODES:
        raise ValueError(f"execution must be one of {EXECUTION_MODES}, got {execution!r}")
    for _, stage in _stages_or_raise(model):
        stage.execution = execution
