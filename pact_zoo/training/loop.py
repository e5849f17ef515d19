"""The Accelerate training loop shared by every model family.

loss = task loss + pact_zoo.halting_loss(model, per-sample task loss, cost_scale=s(t)), where s(t) ramps the
halting cost weights from 0 to 1 over ``tau_warmup_epochs`` (optional). The run lasts ``epochs`` epochs, or
``max_steps`` optimiser steps (a step budget: the last epoch is cut short). Methods that learn by REINFORCE get the
per-sample task loss, and the self-critical baseline (a gradient-free forward under the deterministic rule)
where they use it. With ``anytime: true`` a share ``anytime_prob`` of the batches trains the task loss of a network
truncated at d ~ U{1..L} units per sample and stage instead (:func:`~pact_zoo.halting.anytime_depth`), so that
every threshold gives a trained network: one model for every budget. With ``distill_weight`` every sample's loss also
has the KL divergence from a teacher's output (the model itself at full depth, or ``teacher``), and
``freeze_backbone`` trains only the weights new to the model (:mod:`pact_zoo.training.distill`). One process or
many (``accelerate launch``);
checkpoints with ``accelerator.save_state`` at the end of every epoch, written atomically, and ``resume`` from the
latest.
"""
from __future__ import annotations

import importlib.util
from contextlib import nullcontext
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..halting import FlopsTally, anytime_depth, training_loss
from .config import ConfigError, TrainConfig
from ..fileio import atomic_write_json, atomic_write_text
from .io import save_model_folder
from .run_dir import (
    CHECKPOINT_DIR, CHECKPOINT_PATTERN, CONFIG_FILE, FINAL_METRICS_FILE, METRICS_FILE, MODEL_DIR, STATE_FILE,
    clear_run, latest_checkpoint, plan_run,
)
from .acm_phases import acm_budget_term, acm_phase_loss, prepare_acm_objective
from .distill import distillation_loss, freeze_norm_statistics, freeze_source_weights, teacher_logits
from ..acm.phases import average_gradients
from .io import load_model_folder
from .tasks import build_task, halting_head_parameters

__all__ = ["train", "evaluate_model", "latest_checkpoint", "build_optimizer", "lr_factor", "run_length",
           "data_order_seed", "dataloader_configuration"]

#: fault injection for the resume test (not a config field): SIGKILL the process at this optimiser step
KILL_AT_STEP_ENV = "PACT_ZOO_TEST_KILL_AT_STEP"
#: distance between the data-order seeds of consecutive run seeds: a prime above any run's number of epochs
DATA_ORDER_SEED_STRIDE = 1_000_003


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (SACT) or AdamW; no weight decay on norms and biases; halting heads at
    ``lr * head_lr_mult``."""
    heads = halting_head_parameters(model)
    groups: Dict[tuple, list] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        decay = config.weight_decay if param.ndim > 1 else 0.0
        lr = config.lr * (config.head_lr_mult if id(param) in heads else 1.0)
        groups.setdefault((decay, lr), []).append(param)
    param_groups = [dict(params=p, weight_decay=d, lr=lr) for (d, lr), p in groups.items()]
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum, nesterov=False)
    return torch.optim.AdamW(param_groups, lr=config.lr)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Learning-rate multiplier at optimiser step ``step``: linear warm-up, then step decay or cosine."""
    warmup = int(config.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    progress = step / max(1, total_steps)
    if config.schedule == "step":  # SACT: x0.1 at fixed fractions of training
        return config.lr_gamma ** sum(progress >= m for m in config.lr_milestones)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))


def run_length(config: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs to run, optimiser steps in all): ``epochs`` whole epochs, or with ``max_steps`` the epochs that hold
    that many steps, the last one cut short."""
    if config.max_steps is None:
        return config.epochs, steps_per_epoch * config.epochs
    return math.ceil(config.max_steps / steps_per_epoch), config.max_steps


def _tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, task, accelerator=None,
                   keep_units: bool = False) -> Dict[str, Any]:
    """Accuracy, mean FLOPs per sample and mean units per stage of an eval pass (deterministic halting); with
    ``keep_units`` also ``units``, the ``[N, S]`` units run per sample and stage, and ``is_correct``, ``[N]`` bool,
    in loader order."""
    model.eval()
    unwrapped = accelerator.unwrap_model(model) if accelerator is not None else model
    correct, count, units_sum = 0, 0, None
    tally = FlopsTally()
    per_sample, per_sample_correct = [], []
    for batch in loader:
        logits = task.forward(model, batch)
        flops, units, full = task.report(unwrapped)
        labels = batch["labels"]
        preds = logits.argmax(-1)
        flops, units, full = flops.to(preds.device), units.to(preds.device), full.to(preds.device)
        if accelerator is not None:
            preds, labels, flops, units, full = accelerator.gather_for_metrics((preds, labels, flops, units, full))
        correct += int((preds == labels).sum())
        count += labels.numel()
        tally.add(flops, full)
        if keep_units:
            per_sample.append(units.long().cpu())
            per_sample_correct.append((preds == labels).cpu())
        units = units.double().sum(0)
        units_sum = units if units_sum is None else units_sum + units
    result = {
        "accuracy": correct / max(count, 1),
        "mean_flops": tally.flops_sum / max(count, 1),
        "full_flops": tally.full_sum / max(count, 1),
        "flops_ratio": tally.ratio,
        "mean_units": (units_sum / max(count, 1)).tolist() if units_sum is not None else [],
        "num_samples": count,
    }
    if keep_units:
        result["units"], result["is_correct"] = torch.cat(per_sample), torch.cat(per_sample_correct)
    return result


def _train_loader(data, config: TrainConfig) -> DataLoader:
    """Shuffled training batches, the last partial one dropped (a 1-row batch breaks BatchNorm in training); with
    ``bucket_batches`` > 1, batches of similar lengths (:class:`~pact_zoo.data.sequences.LengthBucketSampler`)."""
    if config.bucket_batches == 1:
        return DataLoader(data.train, batch_size=config.batch_size, shuffle=True, collate_fn=data.collate_fn,
                          num_workers=config.num_workers, drop_last=True)
    from ..data.sequences import LengthBucketSampler

    if "length" not in getattr(data.train, "column_names", ()):
        raise ConfigError(f"bucket_batches={config.bucket_batches} needs a training split with a 'length' column "
                          f"(sequence tasks have one); {config.dataset!r} has none: set bucket_batches: 1")
    sampler = LengthBucketSampler(data.train["length"], config.batch_size, config.bucket_batches, config.seed)
    return DataLoader(data.train, batch_sampler=sampler, collate_fn=data.collate_fn, num_workers=config.num_workers)


def _first_batch(data, config: TrainConfig, device) -> Dict[str, Any]:
    """The first ``batch_size`` training rows as one batch on ``device`` (the fixed batch of ``diagnose_every``)."""
    with torch.random.fork_rng(devices=[]):  # an augmentation's draws leave the run's random state as it was
        rows = [data.train[i] for i in range(min(config.batch_size, len(data.train)))]
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.collate_fn(rows).items()}


def _log_diagnostics(model: nn.Module, task, batch: Dict[str, Any], config: TrainConfig, output_dir: Path,
                     step: int) -> None:
    """Append :func:`~pact_zoo.training.diagnose.halting_diagnostics` of ``batch`` at ``step`` to the run's
    ``diagnostics.jsonl``."""
    from .diagnose import DIAGNOSTICS_FILE, halting_diagnostics

    heads = halting_head_parameters(model)
    result = halting_diagnostics(model, lambda: task.forward(model, batch),
                                 lambda logits: _sample_loss(logits, batch["labels"], None, config),
                                 [p for p in model.parameters() if id(p) in heads])
    with open(output_dir / DIAGNOSTICS_FILE, "a") as handle:
        handle.write(json.dumps({"step": step, **result}) + "\n")


def _progress_enabled() -> bool:
    """Progress bars only on a terminal: redirected output gets the per-epoch lines, not carriage returns."""
    return sys.stderr.isatty()


def data_order_seed(seed: int) -> int:
    """The seed of the training data's order for run seed ``seed``. accelerate's seedable sampler shuffles epoch e
    with seed ``data_seed + e``, so run seed s would replay run seed 0's epochs shifted by s (seeds 1 and 2 of a seed
    grid: the same batch orders as seed 0 from its second and third epoch on). Seeds spaced
    :data:`DATA_ORDER_SEED_STRIDE` apart give every run seed its own orders; seed 0 keeps its own."""
    return seed * DATA_ORDER_SEED_STRIDE


def dataloader_configuration(config: TrainConfig):
    """accelerate's data-loader settings of a run: the seedable sampler, seeded by :func:`data_order_seed`."""
    from accelerate.utils import DataLoaderConfiguration

    return DataLoaderConfiguration(use_seedable_sampler=True, data_seed=data_order_seed(config.seed))


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
    """Run one training job; returns the last epoch's metrics. Works with 1 or N processes.

    ``output_dir`` is checked first (:func:`~pact_zoo.training.run_dir.plan_run`): a new run refuses a folder that
    holds a run unless ``overwrite``; ``resume`` continues the latest checkpoint of the same run only.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    output_dir = Path(config.output_dir)
    plan = plan_run(config, resume=resume, overwrite=overwrite)
    task = build_task(config)  # validates the model and data options before anything is written
    kill_at_step = int(os.environ.get(KILL_AT_STEP_ENV, "0")) or None
    if plan.finished:
        print(plan.message)
        return json.loads((output_dir / FINAL_METRICS_FILE).read_text())
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum_steps,
        dataloader_config=dataloader_configuration(config),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "tb")),
        log_with="tensorboard" if _tensorboard_available() else None,
    )
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise ConfigError("mixed_precision: fp16 needs a GPU, and this run is on the CPU (accelerate would silently "
                          "train in fp32); use mixed_precision: bf16 or no")
    if plan.message:
        accelerator.print(plan.message)
    if accelerator.is_main_process and plan.clear:
        clear_run(output_dir, plan.clear)
    accelerator.wait_for_everyone()
    set_seed(config.seed)
    with accelerator.main_process_first():
        num_classes = task.num_classes()
    model = task.build_model(num_classes)
    phase_params = prepare_acm_objective(model, config)  # None unless an ACM phase's objective
    if config.freeze_backbone:
        trainable = freeze_source_weights(model, config.freeze_exits)
        accelerator.print(f"freeze_backbone: training {len(trainable)} of {len(list(model.parameters()))} tensors "
                          f"({sum(p.numel() for p in model.parameters() if p.requires_grad):,} parameters)")
    teacher = load_model_folder(config.teacher).to(accelerator.device) if config.teacher else None
    with accelerator.main_process_first():
        data = task.load_data(model)
    train_loader = _train_loader(data, config)
    eval_loader = DataLoader(data.eval, batch_size=config.eval_batch_size, shuffle=False,
                             collate_fn=data.collate_fn, num_workers=config.num_workers)
    if len(train_loader) == 0:
        raise ConfigError(f"batch_size={config.batch_size} is larger than the training split ({len(data.train)} rows): "
                          f"no full batch to train on (the last partial batch is dropped); lower batch_size")
    # Scheduler steps are counted on the un-sharded loader: accelerate steps it once per process.
    steps_per_epoch = math.ceil(len(train_loader) / config.grad_accum_steps)
    num_epochs, total_steps = run_length(config, steps_per_epoch)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, steps_per_epoch, config))
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)

    start_epoch, global_step = 0, 0
    if plan.checkpoint is not None:
        checkpoint = plan.checkpoint
        try:
            accelerator.load_state(str(checkpoint))
        except (RuntimeError, KeyError, OSError, ValueError) as exc:
            raise ConfigError(f"--resume: cannot load the checkpoint {checkpoint} into {config.model}: "
                              f"{' '.join(str(exc).split())[:300]}") from exc
        state = json.loads((checkpoint / STATE_FILE).read_text())
        start_epoch, global_step = state["epoch"], state["global_step"]
        accelerator.print(f"resumed from {checkpoint} (epoch {start_epoch}, step {global_step})")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        config_text = json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n"
        config_path = output_dir / CONFIG_FILE
        if not config_path.is_file() or config_path.read_text() != config_text:
            atomic_write_text(config_path, config_text)
    if accelerator.log_with:
        accelerator.init_trackers("pact_zoo", config={k: v for k, v in config.to_dict().items()
                                                      if isinstance(v, (int, float, str, bool))})

    metrics: Dict[str, Any] = _trim_metrics(output_dir / METRICS_FILE, start_epoch) \
        if accelerator.is_main_process else {}
    micro_batches_per_epoch = len(train_loader)
    unwrapped = accelerator.unwrap_model(model)
    diagnose_batch = _first_batch(data, config, accelerator.device) if config.diagnose_every else None
    for epoch in range(start_epoch, num_epochs):
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        model.train()
        if config.freeze_backbone:  # frozen normalisation layers keep the source's statistics
            freeze_norm_statistics(model)
        start = time.perf_counter()
        running_loss, running_cost, seen = 0.0, 0.0, 0
        progress = tqdm(train_loader, desc=f"epoch {epoch + 1}/{num_epochs}",
                        disable=not (accelerator.is_local_main_process and _progress_enabled()), leave=False)
        for micro_step, batch in enumerate(progress):
            epochs_done = epoch + micro_step / max(1, micro_batches_per_epoch)
            tau_scale = min(1.0, epochs_done / config.tau_warmup_epochs) if config.tau_warmup_epochs > 0 else 1.0
            with accelerator.accumulate(model):
                if phase_params is not None:  # learners or gates against the original model, no forward of ours
                    loss = acm_phase_loss(config, unwrapped, teacher, lambda module: task.forward(module, batch))
                    task_loss, cost = loss, loss.new_zeros(())
                else:
                    anytime = config.anytime and _anytime_batch(config, epoch, micro_step)
                    target = None
                    if config.distill_weight > 0:
                        target = teacher_logits(lambda module: task.forward(module, batch), unwrapped, teacher)
                    with anytime_depth(unwrapped) if anytime else nullcontext():
                        step = training_loss(unwrapped, lambda: task.forward(model, batch),
                                             lambda logits: _sample_loss(logits, batch["labels"], target, config),
                                             tau_scale)
                    loss, task_loss, cost = step.loss, step.task_loss, step.halting_loss
                    if config.acm_budget is not None:
                        budget = acm_budget_term(unwrapped, config)
                        loss, cost = loss + budget, cost + budget
                _check_finite_loss(accelerator, float(loss.detach()), config,
                                   f"step {global_step + 1} (epoch {epoch + 1}, batch {micro_step + 1})")
                accelerator.backward(loss)
                if phase_params is not None and accelerator.sync_gradients:
                    average_gradients(phase_params)  # no DDP forward ran: average across processes here
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                global_step += 1
                if kill_at_step is not None and global_step == kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)  # fault injection: die mid-run, no clean-up
                if diagnose_batch is not None and global_step % config.diagnose_every == 0 \
                        and accelerator.is_main_process:
                    _log_diagnostics(unwrapped, task, diagnose_batch, config, output_dir, global_step)
            running_loss += float(task_loss.detach()) * batch["labels"].shape[0]
            running_cost += float(cost.detach()) * batch["labels"].shape[0]
            seen += batch["labels"].shape[0]
            progress.set_postfix(loss=f"{running_loss / seen:.3f}", cost=f"{running_cost / seen:.3f}")
            if (config.log_every_steps and progress.disable and accelerator.sync_gradients
                    and global_step % config.log_every_steps == 0):
                accelerator.print(f"epoch {epoch + 1}/{num_epochs} step {global_step}/{total_steps}: "
                                  f"loss {running_loss / seen:.4f} cost {running_cost / seen:.4f} "
                                  f"lr {scheduler.get_last_lr()[0]:.3g} [{time.perf_counter() - start:.1f}s]")
            if config.max_steps is not None and accelerator.sync_gradients and global_step >= config.max_steps:
                break  # the step budget ends inside this epoch
        train_time = time.perf_counter() - start
        metrics = evaluate_model(model, eval_loader, task, accelerator)
        metrics.update(epoch=epoch + 1, step=global_step, train_loss=running_loss / max(seen, 1),
                       train_halting_loss=running_cost / max(seen, 1), lr=scheduler.get_last_lr()[0],
                       epoch_time_s=train_time, num_processes=accelerator.num_processes)
        if accelerator.is_main_process:
            with open(output_dir / METRICS_FILE, "a") as handle:
                handle.write(json.dumps(metrics) + "\n")
        if accelerator.log_with:
            accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=global_step)
        accelerator.print(
            f"epoch {epoch + 1}: loss {metrics['train_loss']:.4f} acc {metrics['accuracy']:.4f} "
            f"flops {metrics['mean_flops'] / 1e6:.1f}M ({metrics['flops_ratio'] or 0.0:.3f} of full) "
            f"units {[round(u, 2) for u in metrics['mean_units']]} [{train_time:.1f}s]")
        _save_checkpoint(accelerator, output_dir, epoch + 1, global_step, config.keep_checkpoints)

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if not config.freeze_backbone:
            _mark_trained_as_source(unwrapped)
        _set_label_names(unwrapped, data.class_names)
        save_model_folder(accelerator.unwrap_model(model), output_dir / MODEL_DIR)
        atomic_write_json(output_dir / FINAL_METRICS_FILE, metrics)
        model_dir = output_dir / MODEL_DIR
        print(f"model saved to {model_dir}; next: pact-zoo evaluate --model-dir {model_dir}")
    accelerator.end_training()
    return metrics


def _set_label_names(model: nn.Module, class_names) -> None:
    """Record the dataset's class names on a timm model (``pretrained_cfg["label_names"]``), which the saved folder's
    ``config.json`` keeps, unless they are just the class ids."""
    cfg = getattr(model, "pretrained_cfg", None)
    names = [str(name) for name in (class_names or [])]
    if not isinstance(cfg, dict) or not names or names == [str(i) for i in range(len(names))]:
        return
    if len(names) == getattr(model, "num_classes", None):
        model.pretrained_cfg = {**cfg, "label_names": names}


def _mark_trained_as_source(model: nn.Module) -> None:
    """After a run that trained every weight, none is new any more: a later ``freeze_backbone`` conversion of the
    saved model keeps all of them (models that record ``new_weights``)."""
    if getattr(model, "new_weights", None) is not None:
        model.new_weights = []
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "new_weights"):
            config.new_weights = []


def _sample_loss(logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor],
                 config: TrainConfig) -> torch.Tensor:
    """``[B]`` cross-entropy, plus ``distill_weight`` times the distillation term when a teacher's logits are given."""
    loss = F.cross_entropy(logits.float(), labels, reduction="none")
    if target is not None:
        loss = loss + config.distill_weight * distillation_loss(logits, target, config.distill_temperature)
    return loss


def _check_finite_loss(accelerator, loss_value: float, config: TrainConfig, where: str) -> None:
    """Raise ConfigError when the loss is NaN or inf; with several processes every process learns whether any of
    them diverged and all raise together (one process alone would leave the others waiting in the next all-reduce)."""
    if accelerator.num_processes == 1:
        if math.isfinite(loss_value):
            return
        what = f"the training loss is {loss_value}"
    else:
        flags = accelerator.gather(torch.tensor([float(not math.isfinite(loss_value))], device=accelerator.device))
        bad = [rank for rank, flag in enumerate(flags.tolist()) if flag]
        if not bad:
            return
        what = f"the training loss is not finite on process {', '.join(map(str, bad))} of {len(flags)}"
    raise ConfigError(f"{what} at {where}: the run diverged; lower lr (now {config.lr:g}), set max_grad_norm, or use "
                      f"mixed_precision: no")


def _anytime_batch(config: TrainConfig, epoch: int, micro_step: int) -> bool:
    """Whether this batch is an anytime batch: a draw keyed on (seed, epoch, step), so every process and a resumed
    run make the same choice."""
    return random.Random(f"{config.seed}:{epoch}:{micro_step}").random() < config.anytime_prob


def _trim_metrics(path: Path, epochs_done: int) -> Dict[str, Any]:
    """Keep the metrics lines of the epochs a resumed run does not repeat; return the last one (or {})."""
    if not path.is_file():
        return {}
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["epoch"] <= epochs_done]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
    return json.loads(kept[-1]) if kept else {}


def _save_checkpoint(accelerator, output_dir: Path, epoch: int, global_step: int, keep: int) -> None:
    """``save_state`` into a temporary folder, then rename it into place (a crash never leaves half a
    checkpoint behind as the latest)."""
    root = output_dir / CHECKPOINT_DIR
    tmp = root / f".tmp_epoch_{epoch:04d}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        atomic_write_json(tmp / STATE_FILE, {"epoch": epoch, "global_step": global_step})
        final = root / f"epoch_{epoch:04d}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        checkpoints = sorted(p for p in root.iterdir() if CHECKPOINT_PATTERN.match(p.name))
        for old in checkpoints[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
