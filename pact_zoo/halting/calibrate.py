"""Budget control: find the halting threshold that meets a FLOPs budget on calibration data.

Users pick a budget ("at most 50 % of the full-depth FLOPs") instead of guessing tau or a threshold:
:func:`calibrate_threshold` searches the deterministic PACT rule's threshold (h_n >= threshold) by bisection
in logit space, running the model's fast (compacted) evaluation over the calibration batches at every step,
and sets the threshold it found on the model.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from .report import adaptive_stages, halting_report, set_threshold

__all__ = ["ThresholdCalibration", "calibrate_threshold"]

#: Thresholds are searched as sigmoid(u) for u in [-LOGIT_RANGE, LOGIT_RANGE] (both ends inside (0, 1]).
LOGIT_RANGE = 30.0
#: Keys of a dict batch that are targets, not model inputs.
LABEL_KEYS = ("label", "labels", "target", "targets")


class ThresholdCalibration(NamedTuple):
    """Result of :func:`calibrate_threshold` (unpacks as ``threshold, flops_ratio``).

    Attributes:
        threshold: the threshold set on the model, in (0, 1].
        flops_ratio: mean FLOPs per sample at that threshold relative to full depth, on the calibration data.
    """

    threshold: float
    flops_ratio: float


def _model_inputs(batch: Any, device: torch.device) -> tuple[tuple, dict]:
    """Positional and keyword model inputs of one calibration batch (labels are dropped)."""
    if isinstance(batch, torch.Tensor):
        return (batch.to(device),), {}
    if isinstance(batch, Mapping) and "pixel_values" in batch:  # pact_zoo / HF image batches
        return (batch["pixel_values"].to(device),), {}
    if isinstance(batch, Mapping):
        kwargs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
                  if k not in LABEL_KEYS}
        return (), kwargs
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return (batch[0].to(device),), {}  # (inputs, targets, ...) as a torch DataLoader yields them
    raise TypeError("dataloader must yield tensors, (inputs, targets) sequences or dicts of model inputs, "
                    f"got {type(batch).__name__}")


@torch.inference_mode()
def _flops_ratio(model: nn.Module, batches: list, device: torch.device) -> float:
    """Sum of per-sample FLOPs over all batches / (samples x full-depth FLOPs) at the current threshold."""
    flops = full = 0.0
    for batch in batches:
        args, kwargs = _model_inputs(batch, device)
        model(*args, **kwargs)
        report = halting_report(model)
        flops += float(report.flops.double().sum())
        full += float(report.sample_full_flops.double().sum())
    return flops / full


def calibrate_threshold(
        model: nn.Module,
        dataloader: Iterable,
        target_flops_ratio: float,
        tolerance: float = 0.005,
        max_iterations: int = 30,
        max_batches: Optional[int] = None,
) -> ThresholdCalibration:
    """Find and set the halting threshold whose mean FLOPs ratio on ``dataloader`` meets ``target_flops_ratio``.

    The FLOPs ratio (mean per-sample FLOPs / full-depth FLOPs, from :func:`~pact_zoo.halting_report`) grows
    with the threshold. The search returns the largest threshold found whose ratio does not exceed the
    target, stopping once it is within ``tolerance`` below it. If even the smallest threshold (every sample
    stops after the first unit of every stage) exceeds the budget, that threshold is returned with its
    ratio and a ``UserWarning`` says that the budget is out of reach; if the largest (1.0) is within budget, 1.0
    is returned. The model is left in its previous
    train/eval mode with the threshold set (:func:`~pact_zoo.set_threshold`).

    Args:
        model: a model whose :class:`~pact_zoo.halting.AdaptiveStage` methods have a threshold (``has_threshold``).
        dataloader: calibration batches: ``[B, ...]`` tensors, ``(inputs, targets, ...)`` sequences, or dicts
            of model keyword inputs (``labels`` etc. are dropped). Iterated once; the batches are kept.
        target_flops_ratio: the budget, in (0, 1].
        tolerance: accept a ratio in ``[target - tolerance, target]``.
        max_iterations: bisection steps at most (each runs the calibration data once).
        max_batches: use at most this many batches of ``dataloader``.

    Returns:
        :class:`ThresholdCalibration` ``(threshold, flops_ratio)``; the achieved ratio is what to report.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not (isinstance(target_flops_ratio, (int, float)) and 0.0 < target_flops_ratio <= 1.0):
        raise ValueError(f"target_flops_ratio must be a number in (0, 1], got {target_flops_ratio!r}")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not (isinstance(max_iterations, int) and max_iterations >= 1):
        raise ValueError(f"max_iterations must be an int >= 1, got {max_iterations!r}")
    if max_batches is not None and not (isinstance(max_batches, int) and max_batches >= 1):
        raise ValueError(f"max_batches must be None or an int >= 1, got {max_batches!r}")
    stages = [stage for _, stage in adaptive_stages(model) if stage.adaptive]
    if not stages or not all(stage.method.has_threshold for stage in stages):
        methods = sorted({stage.method.name for stage in stages})
        raise ValueError(f"model must have halting stages whose method has a threshold (e.g. 'pact', "
                         f"'policy_gradient'), got methods {methods or 'none'}")
    batches = []
    for batch in dataloader:
        batches.append(batch)
        if max_batches is not None and len(batches) >= max_batches:
            break
    if not batches:
        raise ValueError("dataloader yielded no batch")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    executions = [stage.execution for stage in stages]
    model.eval()
    try:
        for stage in stages:
            stage.execution = "compact"  # the fast path; results equal the masked reference

        def ratio_at(logit: float) -> tuple[float, float]:
            threshold = 1.0 if logit >= LOGIT_RANGE else 1.0 / (1.0 + math.exp(-logit))
            set_threshold(model, threshold)
            return threshold, _flops_ratio(model, batches, device)

        best = ratio_at(-LOGIT_RANGE)  # every sample stops at the first unit: the smallest ratio
        if best[1] <= target_flops_ratio:
            top = ratio_at(LOGIT_RANGE)  # threshold 1.0: only a saturated sigmoid stops a sample
            if top[1] <= target_flops_ratio:
                best = top
            else:
                low, high = -LOGIT_RANGE, LOGIT_RANGE
                for _ in range(max_iterations):
                    if target_flops_ratio - best[1] <= tolerance:
                        break
                    middle = 0.5 * (low + high)
                    candidate = ratio_at(middle)
                    if candidate[1] <= target_flops_ratio:
                        low = middle
                        if candidate[1] > best[1] or (candidate[1] == best[1] and candidate[0] > best[0]):
                            best = candidate
                    else:
                        high = middle
        if best[1] > target_flops_ratio + tolerance:
            warnings.warn(f"target_flops_ratio={target_flops_ratio:g} is out of reach: the smallest FLOPs ratio of this "
                          f"model on the calibration data is {best[1]:.3f} (every sample stops after the first unit "
                          f"of every stage, threshold {best[0]:.3g}); that threshold is set", UserWarning, stacklevel=2)
        set_threshold(model, best[0])
    finally:
        for stage, execution in zip(stages, executions):
            stage.execution = execution
        model.train(was_training)
    return ThresholdCalibration(threshold=float(best[0]), flops_ratio=float(best[1]))
