"""Budget control: find the halting threshold that meets a FLOPs budget on calibration data.

Users pick a budget ("at most 50 % of the full-depth FLOPs") instead of guessing tau or a threshold:
:func:`calibrate_threshold` searches the deterministic PACT rule's threshold (h_n >= threshold) by bisection
in logit space, running the model's fast (compacted) evaluation over the calibration batches at every step,
and sets the threshold it found on the model.

The FLOPs ratio over batches is measured here once (:class:`FlopsTally`, :func:`measure_flops`) for calibration,
evaluation and the benchmark, and :func:`run_model` runs a model on a batch of any kind (tensor, dict, sequence).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Optional

import torch
from torch import nn

from .report import adaptive_stages, halting_report, set_threshold

__all__ = ["ThresholdCalibration", "calibrate_threshold", "run_model", "FlopsTally", "measure_flops"]

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


def run_model(model: nn.Module, batch: Any, device: Optional[torch.device] = None) -> Any:
    """Run ``model`` on one batch of any kind and return its output: a tensor (``model(batch)``), a dict of keyword
    inputs (``model(**batch)`` without the label keys; an image dict ``{"pixel_values": ...}`` as
    ``model(pixel_values)``) or an ``(inputs, targets, ...)`` sequence as a torch DataLoader yields it (the inputs).
    With ``device`` the inputs are moved there first. This is the one batch adapter of calibration, the ACM phases
    and the benchmark."""
    if isinstance(batch, torch.Tensor):
        return model(batch if device is None else batch.to(device))
    if isinstance(batch, Mapping) and "pixel_values" in batch:  # pact_zoo / HF image batches
        return run_model(model, batch["pixel_values"], device)
    if isinstance(batch, Mapping):
        return model(**{k: v.to(device) if device is not None and isinstance(v, torch.Tensor) else v
                        for k, v in batch.items() if k not in LABEL_KEYS})
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (torch.Tensor, Mapping)):
        return run_model(model, batch[0], device)  # (inputs, targets, ...)
    raise TypeError("a batch (what the dataloader yields) must be a tensor, an (inputs, targets, ...) sequence or "
                    f"a dict of model inputs, got {type(batch).__name__}")


class FlopsTally:
    """Per-sample FLOPs of forwards, summed over batches: the one FLOPs ratio (total FLOPs / the same samples at full
    depth) of calibration, evaluation and the benchmark. :meth:`add` takes one batch's ``[B]`` per-sample FLOPs and
    full-depth FLOPs (e.g. gathered over processes); :meth:`add_report` a :class:`~pact_zoo.halting.HaltingReport`.
    With ``keep_samples`` the per-sample FLOPs and units stay available (:meth:`samples`)."""

    def __init__(self, keep_samples: bool = False) -> None:
        self.keep_samples = keep_samples
        self.flops_sum = 0.0
        self.full_sum = 0.0
        self.num_samples = 0
        self.full_flops: Optional[int] = None  # of the last report
        self.num_units: Optional[tuple[int, ...]] = None
        self._flops: list[torch.Tensor] = []
        self._units: list[torch.Tensor] = []
        self._full_units: list[torch.Tensor] = []

    def add(self, flops: torch.Tensor, sample_full_flops: torch.Tensor, units: Optional[torch.Tensor] = None
            ) -> None:
        self.flops_sum += float(flops.double().sum())
        self.full_sum += float(sample_full_flops.double().sum())
        self.num_samples += flops.numel()
        if self.keep_samples:
            self._flops.append(flops.double())
            if units is not None:
                self._units.append(units)

    def add_report(self, report: Any) -> None:
        self.add(report.flops, report.sample_full_flops, report.units_executed)
        if self.keep_samples and report.sample_full_units is not None:
            self._full_units.append(report.sample_full_units)
        self.full_flops, self.num_units = int(report.full_flops), tuple(report.num_units)

    @property
    def ratio(self) -> Optional[float]:
        """Total FLOPs / total full-depth FLOPs of the same samples (None before any FLOPs)."""
        return self.flops_sum / self.full_sum if self.full_sum else None

    @property
    def mean_flops(self) -> float:
        return self.flops_sum / max(self.num_samples, 1)

    @property
    def mean_full_flops(self) -> float:
        return self.full_sum / max(self.num_samples, 1)

    def samples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([N] FLOPs, [N, S] units)`` of every sample added (``keep_samples=True``)."""
        if not self.keep_samples:
            raise ValueError("FlopsTally(keep_samples=True) keeps the per-sample FLOPs")
        return torch.cat(self._flops), torch.cat(self._units)

    @property
    def units_fraction(self) -> Optional[float]:
        """Units executed over all stages and samples kept, relative to the same samples at full depth (recurrent
        models: every time step's units); None unless every report added carried its full-depth units."""
        if not self._full_units or len(self._full_units) != len(self._units):
            return None
        full = float(torch.cat(self._full_units).double().sum())
        return float(torch.cat(self._units).double().sum()) / full if full else None


@torch.inference_mode()
def measure_flops(model: nn.Module, batches: Iterable, device: Optional[torch.device] = None,
                  keep_samples: bool = False) -> FlopsTally:
    """Run ``model`` (as it is set: eval mode, threshold, execution) on every batch (:func:`run_model`) and tally
    the per-sample FLOPs of each forward (:func:`~pact_zoo.halting_report`); ``.ratio`` is the FLOPs ratio."""
    tally = FlopsTally(keep_samples)
    for batch in batches:
        run_model(model, batch, device)
        tally.add_report(halting_report(model))
    return tally


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
            return threshold, measure_flops(model, batches, device).ratio

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
