"""The evaluation steps of a ``pact-zoo compare`` entry beyond ``pact-zoo evaluate``'s: thresholds calibrated to FLOPs
budgets, static truncations of the same weights, and the timing of every entry's model
(:mod:`~pact_zoo.training.compare` runs them).

An entry's model and data are loaded once (:func:`load_entry`) and every step reads that :class:`LoadedEntry`; a
step that changes the model (a calibrated threshold, a truncation) puts it back as it found it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from torch import nn
from torch.utils.data import DataLoader

from .compare_report import TRUNCATED_RULE
from .compare_timing import time_entries
from .config import ConfigError, TrainConfig, load_config
from .io import folder_model_name, is_timm_folder, load_model_folder
from .tasks import TaskData, build_task

__all__ = ["EVERY_DEPTH", "LoadedEntry", "evaluation_config", "load_entry", "calibrate_budgets",
           "evaluate_truncations", "time_entry_models"]

#: ``truncations:`` value for every uniform depth d = 1, 2, ... (each stage runs min(d, its units))
EVERY_DEPTH = "every_depth"


def evaluation_config(evaluation: Dict[str, Any], model_dir: Path, extra: Optional[Dict[str, Any]] = None):
    """The evaluation config of the model in ``model_dir``; a Hugging Face folder is its own ``pretrained_file`` (its
    tokenizer: what a text task reads)."""
    own = {} if is_timm_folder(model_dir) else {"pretrained_file": str(model_dir)}
    return load_config(None, {**evaluation, **own, "model": folder_model_name(model_dir), **(extra or {})})


@dataclass
class LoadedEntry:
    """An entry's model (eval mode), its evaluation config and task, and their data: the evaluation split and the
    first calibration samples of the training split, unaugmented."""
    model: nn.Module
    config: TrainConfig
    task: Any
    data: TaskData

    def eval_loader(self) -> DataLoader:
        """The evaluation split in order, in batches of the evaluation's ``eval_batch_size``."""
        return DataLoader(self.data.eval, batch_size=self.config.eval_batch_size, shuffle=False,
                          collate_fn=self.data.collate_fn, num_workers=self.config.num_workers)


def load_entry(model_dir: Path, evaluation: Dict[str, Any], calibration_samples: int) -> LoadedEntry:
    """Load the model of ``model_dir`` and its data on the comparison's ``evaluation`` split, once for every step.
    The training split is cut to ``calibration_samples`` rows without augmentation (what budgets calibrate on);
    the evaluation split is what ``pact-zoo evaluate`` reads."""
    model = load_model_folder(model_dir).eval()
    config = evaluation_config(evaluation, model_dir, {"augment": "none", "max_train_samples": calibration_samples})
    task = build_task(config)
    return LoadedEntry(model, config, task, task.load_data(model))


def calibrate_budgets(entry: LoadedEntry, budgets: Sequence[float]) -> List[Dict[str, float]]:
    """For each target FLOPs ratio in ``budgets``, the threshold :func:`~pact_zoo.calibrate_threshold` finds on the
    entry's calibration samples: ``{target, threshold, calibration_flops_ratio}``. The model keeps its own
    threshold."""
    from ..halting import adaptive_stages, calibrate_threshold, set_threshold

    model, train = entry.model, entry.data.train
    loader = DataLoader(train, batch_size=entry.config.eval_batch_size, collate_fn=entry.data.collate_fn)
    own = next((stage.method.threshold for _, stage in adaptive_stages(model)
                if stage.adaptive and stage.method.has_threshold), None)
    calibrations = []
    try:
        for target in budgets:
            threshold, ratio = calibrate_threshold(model, loader, target)
            calibrations.append({"target": target, "threshold": threshold, "calibration_flops_ratio": ratio})
            print(f"   budget {target:g}: threshold {threshold:.4g} (FLOPs ratio {ratio:.3f} on {len(train)} "
                  f"training samples)", flush=True)
    finally:
        if own is not None:
            set_threshold(model, own)
        model.eval()
    return calibrations


def evaluate_truncations(entry: LoadedEntry, truncations: Any, where: str) -> List[Dict[str, Any]]:
    """The model as static networks: for each truncation (units per stage; :data:`EVERY_DEPTH`: d = 1, 2, ... units
    in every stage, at most its own), the evaluation split run through exactly those units and no halting head
    (:func:`~pact_zoo.truncated_depth`). Points as in ``tradeoff.json``, rule ``truncated <units>``; ``where``
    names the entry in errors."""
    from ..halting import adaptive_stages, truncated_depth
    from .loop import evaluate_model

    model, loader = entry.model, entry.eval_loader()
    units = [stage.num_units for _, stage in adaptive_stages(model)]
    if not units:
        raise ConfigError(f"truncations need a model with adaptive stages; {where} has none (a plain network "
                          f"is its own static baseline: leave truncations out)")
    if truncations == EVERY_DEPTH:
        truncations = [[min(d, u) for u in units] for d in range(1, max(units, default=0) + 1)]
    points = []
    for depths in truncations:
        with truncated_depth(model, list(depths)):
            point = evaluate_model(model, loader, entry.task)
        points.append(dict(point, threshold=None, rule=TRUNCATED_RULE + " " + "/".join(map(str, depths))))
    return points


def time_entry_models(entries: Dict[str, LoadedEntry], timing: Dict[str, Any]) -> Dict[str, Any]:
    """:func:`~pact_zoo.training.compare_timing.time_entries` of every entry's model on its evaluation split."""
    models = {name: entry.model.eval() for name, entry in entries.items()}
    datasets = {name: (entry.data.eval, entry.data.collate_fn) for name, entry in entries.items()}
    return time_entries(models, datasets, timing)
