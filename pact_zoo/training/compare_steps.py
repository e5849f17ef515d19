"""The evaluation steps of a ``pact-zoo compare`` entry beyond ``pact-zoo evaluate``'s: thresholds calibrated to FLOPs
budgets, static truncations of the same weights, and the timing of every entry's model
(:mod:`~pact_zoo.training.compare` runs them)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .compare_report import TRUNCATED_RULE
from .compare_timing import time_entries
from .config import ConfigError, load_config
from .io import folder_model_name, is_timm_folder, load_model_folder

__all__ = ["EVERY_DEPTH", "evaluation_config", "calibrate_budgets", "evaluate_truncations", "time_entry_models"]

#: ``truncations:`` value for every uniform depth d = 1, 2, ... (each stage runs min(d, its units))
EVERY_DEPTH = "every_depth"


def evaluation_config(evaluation: Dict[str, Any], model_dir: Path, extra: Optional[Dict[str, Any]] = None):
    """The evaluation config of the model in ``model_dir``; a Hugging Face folder is its own ``pretrained_file`` (its
    tokenizer: what a text task reads)."""
    own = {} if is_timm_folder(model_dir) else {"pretrained_file": str(model_dir)}
    return load_config(None, {**evaluation, **own, "model": folder_model_name(model_dir), **(extra or {})})


def calibrate_budgets(model_dir: Path, evaluation: Dict[str, Any], budgets: Sequence[float],
                      samples: int) -> List[Dict[str, float]]:
    """For each target FLOPs ratio in ``budgets``, the threshold :func:`~pact_zoo.calibrate_threshold` finds on the
    first ``samples`` training samples of the evaluation's dataset, unaugmented: ``{target, threshold,
    calibration_flops_ratio}``."""
    from torch.utils.data import DataLoader, Subset

    from ..halting import calibrate_threshold
    from .tasks import build_task

    model = load_model_folder(model_dir).eval()
    config = evaluation_config(evaluation, model_dir, {"augment": "none", "max_train_samples": samples})
    data = build_task(config).load_data(model)
    loader = DataLoader(Subset(data.train, range(min(samples, len(data.train)))), batch_size=config.eval_batch_size,
                        collate_fn=data.collate_fn)
    calibrations = []
    for target in budgets:
        threshold, ratio = calibrate_threshold(model, loader, target)
        calibrations.append({"target": target, "threshold": threshold, "calibration_flops_ratio": ratio})
        print(f"   budget {target:g}: threshold {threshold:.4g} (FLOPs ratio {ratio:.3f} on {len(loader.dataset)} "
              f"training samples)", flush=True)
    return calibrations


def evaluate_truncations(model_dir: Path, evaluation: Dict[str, Any], truncations: Any) -> List[Dict[str, Any]]:
    """The model as static networks: for each truncation (units per stage; :data:`EVERY_DEPTH`: d = 1, 2, ... units
    in every stage, at most its own), the evaluation split run through exactly those units and no halting head
    (:func:`~pact_zoo.truncated_depth`). Points as in ``tradeoff.json``, rule ``truncated <units>``."""
    from torch.utils.data import DataLoader

    from ..halting import adaptive_stages, truncated_depth
    from .loop import evaluate_model
    from .tasks import build_task

    model = load_model_folder(model_dir).eval()
    config = evaluation_config(evaluation, model_dir)
    task = build_task(config)
    data = task.load_data(model)
    loader = DataLoader(data.eval, batch_size=config.eval_batch_size, collate_fn=data.collate_fn,
                        num_workers=config.num_workers)
    units = [stage.num_units for _, stage in adaptive_stages(model)]
    if not units:
        raise ConfigError(f"truncations need a model with adaptive stages; {model_dir} has none (a plain network "
                          f"is its own static baseline: leave truncations out)")
    if truncations == EVERY_DEPTH:
        truncations = [[min(d, u) for u in units] for d in range(1, max(units, default=0) + 1)]
    points = []
    for depths in truncations:
        with truncated_depth(model, list(depths)):
            point = evaluate_model(model, loader, task)
        points.append(dict(point, threshold=None, rule=TRUNCATED_RULE + " " + "/".join(map(str, depths))))
    return points


def time_entry_models(model_dirs: Dict[str, Path], evaluation: Dict[str, Any], timing: Dict[str, Any]
                  ) -> Dict[str, Any]:
    """:func:`~pact_zoo.training.compare_timing.time_entries` of every entry's model on its evaluation split."""
    from .tasks import build_task

    models, datasets = {}, {}
    for name, model_dir in model_dirs.items():
        models[name] = load_model_folder(model_dir).eval()
        data = build_task(evaluation_config(evaluation, model_dir)).load_data(models[name])
        datasets[name] = (data.eval, data.collate_fn)
    return time_entries(models, datasets, timing)
