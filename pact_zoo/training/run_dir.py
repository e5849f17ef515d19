"""The run folder (``output_dir``) of one training run, checked before any work starts so that it cannot go stale.

* A new run refuses a folder that already holds a run's outputs, unless ``overwrite`` removes them first.
* ``resume`` continues the latest checkpoint only when the folder's ``train_config.json`` describes the same run
  (model, data, optimisation; only the fields in :data:`RESUMABLE_FIELDS` may change, e.g. more ``epochs``).
* ``resume`` without a checkpoint says so and starts fresh; a finished run resumes as a no-op that writes nothing.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .config import ConfigError, TrainConfig, load_config

__all__ = ["RunPlan", "plan_run", "clear_run", "latest_checkpoint", "RUN_OUTPUTS", "RESUMABLE_FIELDS",
           "CHECKPOINT_DIR", "STATE_FILE", "MODEL_DIR", "CONFIG_FILE", "FINAL_METRICS_FILE", "METRICS_FILE"]

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d+)$")
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"
FINAL_METRICS_FILE = "final_metrics.json"
CONFIG_FILE = "train_config.json"
MODEL_DIR = "model"
#: what a run (and the quickstart's evaluate / export into the run folder) writes into ``output_dir``
RUN_OUTPUTS = (CHECKPOINT_DIR, MODEL_DIR, METRICS_FILE, FINAL_METRICS_FILE, CONFIG_FILE, "tb", "eval", "hub")
#: outputs a resume without a checkpoint replaces (a run killed before its first checkpoint leaves them)
_EARLY_OUTPUTS = (CONFIG_FILE, METRICS_FILE, "tb")
#: config fields a resumed run may change: they do not change the checkpoint's model or optimiser state
RESUMABLE_FIELDS = frozenset({"epochs", "output_dir", "num_workers", "eval_batch_size", "eval_thresholds",
                              "max_eval_samples", "keep_checkpoints", "log_every_steps"})


@dataclass
class RunPlan:
    """What :func:`~pact_zoo.training.train` does with ``output_dir``."""

    checkpoint: Optional[Path] = None  # resume from this checkpoint
    finished: bool = False  # the checkpoint is the run's last epoch and the model is saved: nothing to do
    clear: tuple = ()  # outputs the main process removes before the run (``overwrite``)
    message: Optional[str] = None  # printed once by the main process


#: model arguments renamed since runs were saved (old -> current name): a run saved under the old name resumes
RENAMED_MODEL_KWARGS = {"halting_method": "method", "gating": "method", "acm_gating": "acm_method"}


def latest_checkpoint(output_dir: str) -> Optional[Path]:
    """``<output_dir>/checkpoints/epoch_NNNN`` with the largest epoch, or None."""
    root = Path(output_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def _existing(output_dir: Path, names=RUN_OUTPUTS) -> list[str]:
    return [name for name in names if (output_dir / name).exists()]


def _saved_config(output_dir: Path) -> Dict[str, Any]:
    path = output_dir / CONFIG_FILE
    try:
        return load_config(None, json.loads(path.read_text())).to_dict()
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        raise ConfigError(f"--resume: cannot read the run's settings from {path} ({exc}); "
                          f"use --overwrite to start this run over") from None


def _current_names(fields: Dict[str, Any]) -> Dict[str, Any]:
    """``fields`` with the renamed keys of its ``model_kwargs`` (:data:`RENAMED_MODEL_KWARGS`) under today's names."""
    kwargs = fields.get("model_kwargs")
    if not isinstance(kwargs, dict) or not set(kwargs) & set(RENAMED_MODEL_KWARGS):
        return fields
    return {**fields, "model_kwargs": {RENAMED_MODEL_KWARGS.get(key, key): value for key, value in kwargs.items()}}


def _differences(saved: Dict[str, Any], current: Dict[str, Any]) -> list[str]:
    saved, current = _current_names(saved), _current_names(current)
    return [f"{key}: {saved.get(key)!r} -> {current[key]!r}" for key in current
            if key not in RESUMABLE_FIELDS and saved.get(key) != current[key]]


def plan_run(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> RunPlan:
    """Check ``config.output_dir`` against ``resume`` / ``overwrite``; raise a one-line error when the folder
    holds a run this call must not mix with. Read-only: every process may call it."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: continue the run, or replace it")
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} exists and is not a folder")
    existing = _existing(output_dir)
    if not resume:
        if existing and not overwrite:
            raise FileExistsError(
                f"output_dir {output_dir} already holds a run ({', '.join(existing)}): pass --resume to continue it, "
                f"--overwrite to replace it, or choose another --output-dir")
        return RunPlan(clear=tuple(existing), message=f"replacing the run in {output_dir}" if existing else None)
    checkpoint = latest_checkpoint(str(output_dir))
    if checkpoint is None:
        stale = [name for name in existing if name not in _EARLY_OUTPUTS]
        if stale:
            raise FileExistsError(
                f"--resume: {output_dir} has no checkpoint to resume but holds a run's outputs ({', '.join(stale)}); "
                f"pass --overwrite to replace them, or choose another --output-dir")
        return RunPlan(clear=tuple(existing),
                       message=f"--resume: no checkpoint in {output_dir / CHECKPOINT_DIR}: starting a fresh run")
    if not (output_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"--resume: {output_dir} has checkpoints but no {CONFIG_FILE}, so the checkpoint's "
                                f"model and settings cannot be checked; use --overwrite to start over")
    differences = _differences(_saved_config(output_dir), config.to_dict())
    if differences:
        raise ConfigError(f"--resume: the checkpoint {checkpoint} belongs to a run with other settings "
                          f"({'; '.join(differences)}); resume with the run's own recipe "
                          f"({output_dir / CONFIG_FILE}), or start a new run (--overwrite or another --output-dir)")
    state = json.loads((checkpoint / STATE_FILE).read_text())
    # a step budget (max_steps) ends inside an epoch: the steps done say whether it is spent
    field, unit, what = (("max_steps", "global_step", "steps") if config.max_steps is not None
                         else ("epochs", "epoch", "epochs"))
    done, budget = state[unit], getattr(config, field)
    if done > budget:
        raise ConfigError(f"--resume: the checkpoint {checkpoint} is at {unit} {done}, past {field}={budget}")
    finished = (done == budget and (output_dir / MODEL_DIR / "config.json").is_file()
                and (output_dir / FINAL_METRICS_FILE).is_file())
    message = (f"--resume: the run in {output_dir} has finished all {budget} {what}: nothing to do"
               if finished else None)
    return RunPlan(checkpoint=checkpoint, finished=finished, message=message)


def clear_run(output_dir: Path, names: tuple) -> None:
    """Remove the named run outputs of ``output_dir`` (main process only)."""
    for name in names:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
