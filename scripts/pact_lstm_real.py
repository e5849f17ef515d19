"""The PACT-LSTM on real sequences: JapaneseVowels (UEA, 12 channels, 7-29 frames, 9 classes, shipped by sktime) and
Rotten Tomatoes as token sequences (an embedding LSTM over the MiniLM tokenizer's ids), plus a generated task for
quick checks. Trains one model per variant (plain LSTM at 1 and M steps, PACT, ACT, policy gradient over a tau
sweep), evaluates it with halted rows leaving the batch, and reports accuracy (with its binomial standard error),
ponder steps per frame, FLOPs measured by ``pact_zoo.halting_report``, the spread of steps per input and whether
harder inputs (misclassified, longer) get more steps. ``--diagnose`` also logs, on a fixed training batch, the
halting logits' mean/std per ponder step, the per-step halting probabilities, q(z), the size of the cost and
entropy terms against the task loss and the gradient each term sends to the halting head.

    OMP_NUM_THREADS=1 python scripts/pact_lstm_real.py --config hub_configs/pact_lstm.real/experiment.yaml \
        --task vowels [--variants 'pact*'] [--diagnose] [--set epochs=5] [--output docs/lstm_real_results.json]

Recipe format: per task ``data`` (loader arguments), ``model`` (PactLSTMConfig fields shared by the variants),
``train`` (epochs, batch_size, lr, grad_clip, head_lr_mult, tau_warmup, eval_batch_size), ``variants`` (name ->
``{method, <knobs>, <model fields>, train: {...}}``) and ``tau_sweep`` (every variant with a tau knob and no
tau of its own runs once per value, named ``<variant>@tau=<value>``). Results merge into the JSON file by
(task, variant), so a partial run updates only its rows.
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import torch.nn.functional as F
import yaml

import pact_zoo
from pact_zoo.halting import anytime_depth
from pact_zoo.halting.distributions import StoppingDistribution
from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification
from pact_zoo.training.evaluate import standard_error

ROOT = Path(__file__).resolve().parents[1]
#: the text task's map from the tokenizer's ids to the model's compact vocabulary, written beside a card
TOKEN_REMAP = "token_remap.safetensors"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --------------------------------------------------------------------------------------------------------------------
# Data: every split is a list of per-example tensors ([T, F] float or [T] long ids) and a label tensor
# --------------------------------------------------------------------------------------------------------------------
class Split:
    def __init__(self, inputs: list[torch.Tensor], labels: torch.Tensor) -> None:
        self.inputs, self.labels = inputs, labels
        self.lengths = torch.tensor([x.shape[0] for x in inputs])

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, index) -> dict[str, torch.Tensor]:
        rows = [self.inputs[i] for i in index]
        length = max(x.shape[0] for x in rows)
        mask = torch.zeros(len(rows), length, dtype=torch.long)
        if rows[0].dim() == 1:  # token ids, right-padded with 0 (the tokenizer's pad id)
            ids = torch.zeros(len(rows), length, dtype=torch.long)
            for r, x in enumerate(rows):
                ids[r, :len(x)], mask[r, :len(x)] = x, 1
            out = {"input_ids": ids}
        else:
            feats = torch.zeros(len(rows), length, rows[0].shape[1])
            for r, x in enumerate(rows):
                feats[r, :len(x)], mask[r, :len(x)] = x, 1
            out = {"inputs_embeds": feats}
        if bool(mask.all()):
            out["attention_mask"] = None
        else:
            out["attention_mask"] = mask
        out["labels"] = self.labels[torch.as_tensor(index)]
        return out


def synthetic_task(data: dict, seed: int) -> dict[str, Any]:
    """Generated sequences: class c is a smooth random template in F channels, resampled to a random length in
    [min_length, max_length] and observed in Gaussian noise (std ``noise``); fast to learn, for quick checks."""
    rng = np.random.default_rng(seed)
    classes, channels = data.get("num_classes", 5), data.get("num_features", 8)
    knots = rng.normal(size=(classes, 6, channels)).astype(np.float32)

    def make(count: int) -> Split:
        inputs, labels = [], []
        for _ in range(count):
            c = int(rng.integers(classes))
            length = int(rng.integers(data.get("min_length", 8), data.get("max_length", 24) + 1))
            grid = np.linspace(0, 5, length)
            x = np.stack([np.interp(grid, np.arange(6), knots[c, :, f]) for f in range(channels)], 1)
            x = x + rng.normal(scale=data.get("noise", 1.0), size=x.shape)
            inputs.append(torch.from_numpy(x.astype(np.float32)))
            labels.append(c)
        return Split(inputs, torch.tensor(labels))

    train, test = make(data.get("train_samples", 1000)), make(data.get("test_samples", 1000))
    validation = make(data.get("validation_samples", 500))
    return {"train": train, "validation": validation, "test": test, "num_labels": classes, "input_size": channels,
            "vocab_size": None,
            "description": f"generated: {classes} classes, {channels} channels"}


def stratified_holdout(split: Split, fraction: float, seed: int) -> tuple[Split, Split]:
    """Split ``split`` into (rest, held-out) with ``round(fraction * n_c)`` examples of every class c held out, drawn
    with ``seed`` (fixed apart from the training seed, so every variant and seed trains on the same examples)."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label in split.labels.unique().tolist():
        members = torch.nonzero(split.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held += members[:round(fraction * len(members))].tolist()
    held_set = set(held)
    rest = [i for i in range(len(split)) if i not in held_set]
    held.sort()

    def pick(index: list[int]) -> Split:
        return Split([split.inputs[i] for i in index], split.labels[torch.tensor(index)])

    return pick(rest), pick(held)


def vowels_task(data: dict, seed: int) -> dict[str, Any]:
    from pact_zoo.data.uea import load_uea_splits

    folder = data.get("folder")  # written by `pact-zoo data fetch japanese_vowels --dest data`; else the wheel's
    train, test, names = load_uea_splits(data.get("name", "JapaneseVowels"),
                                         folder=None if folder is None else ROOT / folder)

    def to_split(ds) -> Split:
        return Split([torch.tensor(np.asarray(x), dtype=torch.float32) for x in ds["inputs_embeds"]],
                     torch.tensor(ds["labels"]))

    full, te = to_split(train), to_split(test)
    tr, va = stratified_holdout(full, data.get("validation_fraction", 0.25), data.get("split_seed", 0))
    return {"train": tr, "validation": va, "test": te, "num_labels": len(names), "class_names": list(names),
            "input_size": tr.inputs[0].shape[1], "vocab_size": None,
            "description": f"UEA {data.get('name', 'JapaneseVowels')} ({folder or 'sktime wheel'}): {len(tr)} train / "
                           f"{len(va)} validation (held out of the archive's train split) / {len(te)} test"}


def rotten_tomatoes_task(data: dict, seed: int) -> dict[str, Any]:
    """Rotten Tomatoes from the local parquet files through the project's text loader, tokenised with the
    MiniLM tokenizer (ids incl. [CLS] and [SEP], truncated to ``max_length``); ids are remapped to the tokens seen in
    the train split (the rest -> [UNK]) so the embedding holds only rows that can learn."""
    from transformers import AutoTokenizer

    from pact_zoo.data.text import load_text_dataset, tokenize_split

    source = f"parquet:{ROOT / data.get('path', 'data/rotten_tomatoes')}"
    splits = load_text_dataset(source, eval_split=data.get("eval_split", "test"))
    validation_splits = load_text_dataset(source, eval_split=data.get("validation_split", "validation"))
    tokenizer = AutoTokenizer.from_pretrained(ROOT / data.get("tokenizer", "data/all-MiniLM-L6-v2"))
    max_length = data.get("max_length", 64)
    train = tokenize_split(splits.train, tokenizer, splits.text_column, splits.label_column, max_length)
    test = tokenize_split(splits.eval, tokenizer, splits.text_column, splits.label_column, max_length)
    validation = tokenize_split(validation_splits.eval, tokenizer, splits.text_column, splits.label_column,
                                max_length)
    counts = np.bincount(np.concatenate([np.asarray(x) for x in train["input_ids"]]),
                         minlength=tokenizer.vocab_size)
    keep = np.nonzero(counts >= data.get("min_count", 1))[0]
    remap = np.full(tokenizer.vocab_size, 1, dtype=np.int64)  # 1: [UNK] of the compact vocabulary
    remap[keep] = np.arange(2, len(keep) + 2)  # 0: padding
    remap[tokenizer.pad_token_id] = 0

    def to_split(ds) -> Split:
        limit = data.get("limit")
        rows = ds if limit is None else ds.select(range(min(limit, len(ds))))
        return Split([torch.from_numpy(remap[np.asarray(x)]) for x in rows["input_ids"]],
                     torch.tensor(rows["labels"]))

    tr, va, te = to_split(train), to_split(validation), to_split(test)
    return {"train": tr, "validation": va, "test": te, "num_labels": splits.num_classes,
            "class_names": list(splits.class_names), "input_size": None,
            "vocab_size": len(keep) + 2, "pad_token_id": 0, "token_remap": torch.from_numpy(remap),
            "description": f"Rotten Tomatoes parquet ({len(tr)} train / {len(va)} validation / {len(te)} "
                           f"{data.get('eval_split', 'test')}), "
                           f"MiniLM tokenizer ids, max_length {max_length}, vocabulary {len(keep) + 2}"}


TASKS = {"synthetic": synthetic_task, "vowels": vowels_task, "rt": rotten_tomatoes_task}


# --------------------------------------------------------------------------------------------------------------------
# Model, training, diagnostics, evaluation
# --------------------------------------------------------------------------------------------------------------------
MODEL_KEYS = set(PactLSTMConfig.__annotations__) | {"num_labels"}


def build(task: dict, model: dict, variant: dict) -> PactLSTMForSequenceClassification:
    fields = {**model, **{k: v for k, v in variant.items() if k != "train"}}
    if task["vocab_size"] is not None:
        fields.update(vocab_size=task["vocab_size"], pad_token_id=task["pad_token_id"])
        fields.setdefault("input_size", model.get("embedding_size", 64))
    else:
        fields["input_size"] = task["input_size"]
    fields.pop("embedding_size", None)
    names = task.get("class_names") or [str(i) for i in range(task["num_labels"])]
    return PactLSTMForSequenceClassification(PactLSTMConfig(num_labels=task["num_labels"], **fields,
                                                             id2label=dict(enumerate(names)),
                                                             label2id={n: i for i, n in enumerate(names)}))


def _forward(model, batch: dict, labels: bool = True):
    kwargs = {k: v for k, v in batch.items() if k != "labels" and v is not None}
    if labels:
        kwargs["labels"] = batch["labels"]
    return model(**kwargs)


def _stages(model):
    return [layer.stage for layer in model.pact_lstm.layers]


def _heads(model):
    return [layer.halting_head for layer in model.pact_lstm.layers if layer.halting_head is not None]


def train_batches(split: Split, batch_size: int, generator: torch.Generator, bucket: int) -> list[list[int]]:
    """One epoch of shuffled minibatches; with ``bucket`` > 1, chunks of ``bucket`` batches are sorted by length
    first (less padding) and the batches shuffled again."""
    order = torch.randperm(len(split), generator=generator).tolist()
    if bucket > 1:
        chunk = batch_size * bucket
        order = [i for start in range(0, len(order), chunk)
                 for i in sorted(order[start:start + chunk], key=lambda i: int(split.lengths[i]))]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def diagnose(model, batch: dict) -> dict[str, Any]:
    """Training-mode forward on ``batch`` (no update): halting logits per ponder step (mean, std), halting
    probabilities per step, q(z) averaged over rows and frames, the size of each loss term and the norm of the
    gradient each one sends to the halting head(s)."""
    heads = _heads(model)
    if not heads:
        return {}
    calls: list[torch.Tensor] = []
    hooks = [h.register_forward_hook(lambda m, i, o: calls.append(o)) for h in heads]
    try:
        model.train()
        output = _forward(model, batch, labels=False)
    finally:
        for hook in hooks:
            hook.remove()
    stage = _stages(model)[0]
    steps_per_frame = stage.num_units - 1
    task_loss = F.cross_entropy(output.logits, batch["labels"])
    record, method = stage.record, stage.method
    terms = {"task": task_loss}
    if record.cost is not None and method.cost_weight:
        terms["cost"] = method.cost_weight * record.cost.float().mean()
    for key, value in record.terms.items():
        terms[key] = value
    params = [p for h in heads for p in h.parameters()]
    grads = {}
    for key, value in terms.items():
        if not torch.is_tensor(value) or not value.requires_grad:
            continue
        g = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        grads[key] = float(torch.sqrt(sum((x.float() ** 2).sum() for x in g if x is not None)))
    # per ponder step: logits of every (frame, row); calls come in frame order, steps 0..M-2 within a frame
    per_step = [torch.cat([c.detach() for c in calls[n::steps_per_frame]]) for n in range(steps_per_frame)]
    logits = torch.stack([x for x in per_step], 1) if len({x.numel() for x in per_step}) == 1 else None
    out = {"loss_terms": {k: round(float(v), 4) for k, v in terms.items()},
           "head_grad_norm": {k: round(v, 5) for k, v in grads.items()},
           "logit_mean": [round(float(x.mean()), 3) for x in per_step],
           "logit_std": [round(float(x.std()), 3) for x in per_step],
           "h_mean": [round(float(torch.sigmoid(x).mean()), 3) for x in per_step]}
    if logits is not None:
        dist = StoppingDistribution(logits)
        out["q_mean"] = [round(float(v), 3) for v in dist.probs.mean(0)]
        out["greedy_steps"] = round(float(dist.greedy_steps(getattr(method, "threshold", 0.5)).float().mean()), 3)
        out["expected_steps"] = round(float(dist.mean.mean()), 3)
        out["entropy"] = round(float(dist.entropy().mean()), 3)
    return out


def train(model, task: dict, options: dict, seed: int, prefix: str, diagnose_every: int = 0) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    anytime_draws = torch.Generator().manual_seed(seed + 1)  # apart, so the batch order is the same for every variant
    head_params = {id(p) for h in _heads(model) for p in h.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in head_params], "lr": options["lr"]}]
    if head_params:
        groups.append({"params": [p for h in _heads(model) for p in h.parameters()],
                       "lr": options["lr"] * options.get("head_lr_mult", 1.0)})
    optimizer = torch.optim.Adam(groups, lr=options["lr"])
    train_split = task["train"]
    diag_batch = train_split.batch(list(range(min(options["batch_size"], len(train_split)))))
    epochs, batch_size = options["epochs"], options["batch_size"]
    total = epochs * math.ceil(len(train_split) / batch_size)
    warmup = round(options.get("tau_warmup", 0.0) * total)
    history, diagnostics = [], []
    step, start = 0, time.perf_counter()
    for epoch in range(1, epochs + 1):
        sums = {"loss": 0.0, "task_loss": 0.0, "train_steps_per_frame": 0.0}
        count = 0
        for index in train_batches(train_split, batch_size, generator, options.get("bucket", 1)):
            step += 1
            if diagnose_every and (step == 1 or step % diagnose_every == 0):
                diagnostics.append({"step": step, **diagnose(model, diag_batch)})
                print(f"{prefix} diag {diagnostics[-1]}", flush=True)
            model.train()
            batch = train_split.batch(index)
            scale = min(1.0, step / warmup) if warmup else 1.0
            anytime = options.get("anytime_prob", 0.0) > torch.rand((), generator=anytime_draws).item()
            if anytime:  # a truncated network: d ~ U{1..M} ponder steps per row and frame, no head, no cost
                with anytime_depth(model):
                    output = _forward(model, batch, labels=False)
                    task_loss = F.cross_entropy(output.logits, batch["labels"])
                    loss = task_loss + pact_zoo.halting_loss(model)
            else:
                output = _forward(model, batch, labels=scale == 1.0)
                task_loss = F.cross_entropy(output.logits, batch["labels"])
                loss = output.loss if scale == 1.0 else task_loss + pact_zoo.halting_loss(model, cost_scale=scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if options.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), options["grad_clip"])
            optimizer.step()
            frames = (batch["attention_mask"].sum() if batch["attention_mask"] is not None
                      else batch["labels"].numel() * output.units_executed.shape[1])
            sums["loss"] += float(loss.detach())
            sums["task_loss"] += float(task_loss)
            sums["train_steps_per_frame"] += float(output.ponder_cost.detach().sum() / frames)
            count += 1
        entry = {"epoch": epoch, **{k: round(v / count, 4) for k, v in sums.items()},
                 "seconds": round(time.perf_counter() - start, 1)}
        history.append(entry)
        print(f"{prefix} {entry}", flush=True)
    if diagnose_every:
        diagnostics.append({"step": step, "final": True, **diagnose(model, diag_batch)})
        print(f"{prefix} diag {diagnostics[-1]}", flush=True)
    return {"train_seconds": round(time.perf_counter() - start, 1), "updates": step, "history": history,
            "diagnostics": diagnostics}


def pearson(x: torch.Tensor, y: torch.Tensor) -> Optional[float]:
    x, y = x.double().numpy(), y.double().numpy()
    if x.std() == 0 or y.std() == 0:
        return None
    return round(float(np.corrcoef(x, y)[0, 1]), 3)


@torch.no_grad()
def evaluate(model, split: Split, batch_size: int, decision: str = "greedy", threshold: Optional[float] = None
             ) -> dict[str, Any]:
    """Accuracy (with binomial s.e.), ponder steps per frame (mean, std over inputs, quantiles), FLOPs per input
    from ``halting_report`` (and relative to every frame running all M steps), and the steps of misclassified vs
    correct and of long vs short inputs."""
    model.eval()
    old = None
    if threshold is not None:
        old = _stages(model)[0].method.threshold
        pact_zoo.set_threshold(model, threshold)
    pact_zoo.set_decision(model, decision)
    order = sorted(range(len(split)), key=lambda i: int(split.lengths[i]))
    correct, steps, flops, full = (torch.zeros(len(split), dtype=torch.bool), torch.zeros(len(split)),
                                   torch.zeros(len(split), dtype=torch.float64),
                                   torch.zeros(len(split), dtype=torch.float64))
    start = time.perf_counter()
    try:
        for begin in range(0, len(order), batch_size):
            index = order[begin:begin + batch_size]
            batch = split.batch(index)
            output = _forward(model, batch, labels=False)
            rows = torch.tensor(index)
            correct[rows] = output.logits.argmax(-1) == batch["labels"]
            steps[rows] = output.units_executed.sum(1).float() / split.lengths[rows].float()
            report = pact_zoo.halting_report(model)
            flops[rows] = report.flops.double()
            full[rows] = report.sample_full_flops.double()
    finally:
        pact_zoo.set_decision(model, "greedy")
        if old is not None:
            pact_zoo.set_threshold(model, old)
    seconds = time.perf_counter() - start
    n = len(split)
    acc = float(correct.float().mean())
    lengths = split.lengths.float()
    long = lengths > lengths.median()
    wrong = ~correct
    return {
        "accuracy": round(acc, 4), "accuracy_se": round(standard_error(acc, n), 4), "n": n,
        "steps_per_frame": round(float(steps.mean()), 3), "steps_per_frame_std": round(float(steps.std()), 3),
        "steps_per_frame_quantiles": [round(float(q), 3) for q in torch.quantile(steps, torch.tensor(
            [0.05, 0.25, 0.5, 0.75, 0.95]))],
        "mflops": round(float(flops.mean()) / 1e6, 4), "flops_vs_every_step": round(float(flops.sum() / full.sum()), 4),
        "steps_correct": round(float(steps[correct].mean()), 3) if correct.any() else None,
        "steps_wrong": round(float(steps[wrong].mean()), 3) if wrong.any() else None,
        "steps_long": round(float(steps[long].mean()), 3), "steps_short": round(float(steps[~long].mean()), 3),
        "r_steps_length": pearson(steps, lengths), "r_steps_wrong": pearson(steps, wrong.float()),
        "eval_seconds": round(seconds, 2),
    }


# --------------------------------------------------------------------------------------------------------------------
def expand_sweep(variants: dict, taus: Optional[list]) -> dict:
    out = {}
    for name, variant in variants.items():
        method = pact_zoo.HALTING_METHODS[variant.get("method", "pact")]
        if taus and "tau" in method.knobs and "tau" not in variant:
            for tau in taus:
                out[f"{name}@tau={tau:g}"] = {**variant, "tau": float(tau)}
        else:
            out[name] = variant
    return out


def _parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def run(recipe: dict, task_name: str, patterns: Optional[list[str]], overrides: dict, diagnose_every: int,
        output: Optional[Path], thresholds: Optional[list[float]], ladder: bool = False,
        seed: Optional[int] = None, save_dir: Optional[Path] = None) -> dict[str, Any]:
    spec = copy.deepcopy(recipe["tasks"][task_name])
    suffix = "" if seed is None or seed == recipe.get("seed", 0) else f"#seed{seed}"  # extra seeds: own rows
    seed = recipe.get("seed", 0) if seed is None else seed
    torch.set_num_threads(recipe.get("threads", 1))
    task = TASKS[spec.get("loader", task_name)](spec.get("data", {}), seed)
    if ladder:  # the diagnosis: one change at a time on top of the task's ``diagnosis_base`` variant
        base = spec["diagnosis_base"]
        variants = {name: {**base, **row, "train": {**base.get("train", {}), **row.get("train", {})}}
                    for name, row in spec["diagnosis"].items()}
    else:
        variants = expand_sweep(spec["variants"], spec.get("tau_sweep"))
    if patterns:
        variants = {n: v for n, v in variants.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}
    results = json.loads(output.read_text()) if output is not None and output.exists() else {}
    task_results = results.setdefault(f"{task_name}_diagnosis" if ladder else task_name, {})
    for name, variant in variants.items():
        options = {**spec["train"], **variant.get("train", {}), **overrides.get("train", {})}
        model_fields = {**spec["model"], **overrides.get("model", {})}
        torch.manual_seed(seed)
        model = build(task, model_fields, {**variant, **overrides.get("variant", {})})
        load_before = loadavg()
        log = train(model, task, options, seed, f"[{task_name}/{name}]", diagnose_every)
        entry = {"config": {k: v for k, v in model.config.to_diff_dict().items()
                            if k not in ("id2label", "label2id", "transformers_version", "architectures")},
                 "train_options": options, **log, "loadavg_before": load_before, "loadavg_after": loadavg(),
                 "eval": evaluate(model, task["test"], options.get("eval_batch_size", 256))}
        stage = _stages(model)[0]
        if stage.adaptive and stage.method.stochastic:
            entry["eval_sampled"] = evaluate(model, task["test"], options.get("eval_batch_size", 256), "sample")
        if stage.adaptive and stage.method.has_threshold and thresholds:
            entry["eval_thresholds"] = {f"{t:g}": evaluate(model, task["test"], options.get("eval_batch_size", 256),
                                                           threshold=t) for t in thresholds}
        if "validation" in task:  # what the choices of tau, threshold and recipe are made on
            entry["eval_validation"] = evaluate(model, task["validation"], options.get("eval_batch_size", 256))
            if stage.adaptive and stage.method.has_threshold and thresholds:
                entry["eval_thresholds_validation"] = {
                    f"{t:g}": evaluate(model, task["validation"], options.get("eval_batch_size", 256), threshold=t)
                    for t in thresholds}
        entry["description"] = task["description"]
        name = name + suffix
        if save_dir is not None:
            model.save_pretrained(saved_model_dir(save_dir, task_name, name))
        task_results[name] = entry
        e = entry["eval"]
        print(f"[{task_name}/{name}] acc {e['accuracy']:.4f} ± {e['accuracy_se']:.4f} steps/frame "
              f"{e['steps_per_frame']:.2f} ± {e['steps_per_frame_std']:.2f} flops x{e['flops_vs_every_step']:.3f} "
              f"wrong/correct {e['steps_wrong']}/{e['steps_correct']} r(len) {e['r_steps_length']} "
              f"train {log['train_seconds']:.0f}s load {loadavg()}", flush=True)
        if output is not None:
            results.setdefault("runs", []).append({
                "task": task_name, "variant": name, "seed": seed, "torch_threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
                "python": platform.python_version(), "overrides": overrides})
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(results, indent=1))
    return results


# --------------------------------------------------------------------------------------------------------------------
# Report: markdown tables and the plot from the JSON
# --------------------------------------------------------------------------------------------------------------------
def _pct(entry: dict) -> str:
    return f"{100 * entry['accuracy']:.1f} ± {100 * entry['accuracy_se']:.1f}"


def _r(value) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def _method(config: dict) -> str:
    """A recorded model config's halting method (results written before the rename hold ``halting_method``)."""
    return config.get("method", config.get("halting_method", "pact"))


def _knobs(entry: dict) -> str:
    config = entry["config"]
    method = _method(config)
    knobs = config.get("halting_knobs") or {}
    parts = [method, f"M={config.get('max_ponder_steps', 20)}"]
    if method != "none":
        parts.append(f"τ={knobs.get('tau', 0):g}")
    if method == "pact":
        parts.append(f"β={knobs.get('entropy_weight', 0.1):g} {config.get('halting_terms_over_time', 'mean')}")
    if method != "none":
        parts.append(f"bias {config.get('halting_bias_init', -3):g}")
    train = entry.get("train_options", {})
    if method != "none" and train.get("head_lr_mult", 1.0) != 1.0:
        parts.append(f"heads lr ×{train['head_lr_mult']:g}")
    if train.get("anytime_prob"):
        parts.append(f"anytime {train['anytime_prob']:g}")
    return ", ".join(parts)


def diagnosis_table(rows: dict[str, Any]) -> str:
    lines = ["| change | settings | steps / frame (mean ± std over inputs) | accuracy % ± s.e. | FLOPs vs every "
             "step | r(steps, length) | end of training, on a fixed train batch: halting logits per ponder step "
             "(mean / std) | h per step | loss terms: task / τ·cost / −β·entropy | head gradient norm: task / "
             "cost / entropy | eval threshold 0.3 / 0.4: steps, acc % |", "|" + "---|" * 11]
    for name, entry in rows.items():
        e = entry["eval"]
        final = next((d for d in reversed(entry.get("diagnostics", [])) if "loss_terms" in d), None)
        if final:
            terms, grads = final["loss_terms"], final["head_grad_norm"]
            logit = " · ".join(f"{m:+.1f}/{s:.2f}" for m, s in zip(final["logit_mean"], final["logit_std"]))
            h = " · ".join(f"{v:.2f}" for v in final["h_mean"])
            loss = " / ".join(f"{terms[k]:.3g}" if k in terms else "—" for k in ("task", "cost", "entropy"))
            grad = " / ".join(f"{grads[k]:.2g}" if k in grads else "—" for k in ("task", "cost", "entropy"))
        else:
            logit = h = loss = grad = "—"
        th = entry.get("eval_thresholds", {})
        th_cell = "; ".join(f"{th[t]['steps_per_frame']:.2f}, {100 * th[t]['accuracy']:.1f}"
                            for t in ("0.3", "0.4") if t in th) or "—"
        lines.append(f"| {name} | {_knobs(entry)} | {e['steps_per_frame']:.2f} ± {e['steps_per_frame_std']:.2f} | "
                     f"{_pct(e)} | {e['flops_vs_every_step']:.3f} | {_r(e['r_steps_length'])} | {logit} | {h} | "
                     f"{loss} | {grad} | {th_cell} |")
    return "\n".join(lines)


def results_table(rows: dict[str, Any]) -> str:
    lines = ["| variant | settings | accuracy % ± s.e. | steps / frame | std over inputs | 5 / 50 / 95 % quantile | "
             "MFLOPs / input | FLOPs vs every step | steps: misclassified / correct | steps: long / short | "
             "r(steps, length) | train s | load (before → after) |", "|" + "---|" * 13]
    for name, entry in rows.items():
        e = entry["eval"]
        q = e["steps_per_frame_quantiles"]
        wrong = "—" if e["steps_wrong"] is None else f"{e['steps_wrong']:.2f}"
        lines.append(f"| {name} | {_knobs(entry)} | {_pct(e)} | {e['steps_per_frame']:.2f} | "
                     f"{e['steps_per_frame_std']:.2f} | {q[0]:.2f} / {q[2]:.2f} / {q[4]:.2f} | {e['mflops']:.3f} | "
                     f"{e['flops_vs_every_step']:.3f} | {wrong} / {e['steps_correct']:.2f} | "
                     f"{e['steps_long']:.2f} / {e['steps_short']:.2f} | {_r(e['r_steps_length'])} | "
                     f"{entry['train_seconds']:.0f} | {entry['loadavg_before']} → {entry['loadavg_after']} |")
        extra = {}
        if _method(entry["config"]) == "pact":  # PG's greedy depth did not move with the threshold
            extra = {f"threshold {t}": te for t, te in entry.get("eval_thresholds", {}).items()}
            if entry.get("eval_sampled"):
                extra["sampled stops"] = entry["eval_sampled"]
        for t, te in extra.items():
            lines.append(f"| ↳ {t} | same model | {_pct(te)} | {te['steps_per_frame']:.2f} | "
                         f"{te['steps_per_frame_std']:.2f} | {te['steps_per_frame_quantiles'][0]:.2f} / "
                         f"{te['steps_per_frame_quantiles'][2]:.2f} / {te['steps_per_frame_quantiles'][4]:.2f} | "
                         f"{te['mflops']:.3f} | {te['flops_vs_every_step']:.3f} | "
                         f"{'—' if te['steps_wrong'] is None else format(te['steps_wrong'], '.2f')} / "
                         f"{te['steps_correct']:.2f} | {te['steps_long']:.2f} / {te['steps_short']:.2f} | "
                         f"{_r(te['r_steps_length'])} | | |")
    return "\n".join(lines)


def saved_model_dir(save_dir: Path, task_name: str, variant: str) -> Path:
    """Where ``--save-dir`` keeps a trained variant (``@`` and ``#`` of the variant's name replaced)."""
    return save_dir / task_name / variant.replace("@", "_").replace("#", "_")


def max_ponder_steps(rows: dict[str, Any]) -> int:
    """M of a task's rows: the largest ``max_ponder_steps`` among its trained variants."""
    return max(entry["config"].get("max_ponder_steps", 1) for entry in rows.values())


def _family(entry: dict) -> str:
    config = entry["config"]
    method = _method(config)
    if method == "none":
        return "lstm (1 step)" if config.get("max_ponder_steps") == 1 else "lstm (every step)"
    return method


def _rules(entry: dict) -> dict[str, tuple[dict, dict]]:
    """Every rule a choice can pick for one trained model, with its (validation, test) results: the model's own
    rule (``""``) and every evaluated threshold."""
    if "eval_validation" not in entry:
        return {}
    out = {"": (entry["eval_validation"], entry["eval"])}
    for t, val in entry.get("eval_thresholds_validation", {}).items():
        out[t] = (val, entry["eval_thresholds"][t])
    return out


def selection_table(rows: dict[str, Any], max_steps: float) -> str:
    """The choices made on the validation split only, and their test results. A candidate is a variant (tau) with
    one rule (its own, or a threshold), trained with every seed present (``<variant>`` and ``<variant>#seed<n>``);
    its validation accuracy and steps are the means over those seeds. Per method: the candidate with the best
    validation accuracy, and the best whose validation steps per frame are at most half of M (ties: fewer steps);
    then their test accuracy and steps as mean ± std over the seeds."""
    variants: dict[str, list[dict]] = {}
    for name, entry in rows.items():
        variants.setdefault(name.split("#seed")[0], []).append(entry)
    families: dict[str, list] = {}
    for variant, entries in variants.items():
        for rule in _rules(entries[0]):
            pairs = [_rules(e).get(rule) for e in entries]
            if any(pair is None for pair in pairs):
                continue
            val = [pair[0] for pair in pairs]
            test = [pair[1] for pair in pairs]
            label = variant + (f", threshold {rule}" if rule else "")
            families.setdefault(_family(entries[0]), []).append(
                (label, float(np.mean([v["accuracy"] for v in val])),
                 float(np.mean([v["steps_per_frame"] for v in val])), test))
    lines = ["| method | choice (made on validation) | budget | seeds | validation accuracy % | validation steps / "
             "frame | test accuracy % (mean ± std over seeds) | test steps / frame | test FLOPs vs every step |",
             "|" + "---|" * 9]
    chosen = {}

    def mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
        values = np.array(values) * scale
        spread = f" ± {values.std(ddof=1):.{digits}f}" if len(values) > 1 else ""
        return f"{values.mean():.{digits}f}{spread}"

    for family, candidates in families.items():
        for budget, limit in (("any", float("inf")), ("≤ M/2 steps", max_steps / 2)):
            pool = [c for c in candidates if c[2] <= limit]
            if not pool or (budget != "any" and family.startswith("lstm")):
                continue
            label, val_acc, val_steps, test = max(pool, key=lambda c: (c[1], -c[2]))
            chosen[(family, budget)] = (label, test)
            lines.append(f"| {family} | {label} | {budget} | {len(test)} | {100 * val_acc:.1f} | {val_steps:.2f} | "
                         f"{mean_std([t['accuracy'] for t in test], 100)} | "
                         f"{mean_std([t['steps_per_frame'] for t in test], digits=2)} | "
                         f"{mean_std([t['flops_vs_every_step'] for t in test], digits=3)} |")

    def test_mean(key: tuple) -> tuple[float, float]:
        test = chosen[key][1]
        return (100 * float(np.mean([t["accuracy"] for t in test])),
                float(np.mean([t["steps_per_frame"] for t in test])))

    notes = []
    if ("lstm (every step)", "any") in chosen and ("pact", "≤ M/2 steps") in chosen:
        every, _ = test_mean(("lstm (every step)", "any"))
        acc, steps = test_mean(("pact", "≤ M/2 steps"))
        verdict = "met" if acc - every >= -0.5 and steps <= max_steps / 2 else "missed"
        notes.append(f"Goal \"a PACT model within 0.5 points of the every-step LSTM at ≤ 0.5 of its steps\", both "
                     f"chosen on validation, test means: PACT {acc:.1f} % at {steps:.2f} steps per frame vs "
                     f"{every:.1f} % at {max_steps:g}: {acc - every:+.1f} points, **{verdict}**.")
    if ("pact", "≤ M/2 steps") in chosen and ("act", "≤ M/2 steps") in chosen:
        pact_acc, pact_steps = test_mean(("pact", "≤ M/2 steps"))
        act_acc, act_steps = test_mean(("act", "≤ M/2 steps"))
        notes.append(f"PACT against ACT, each chosen on validation at ≤ M/2 steps, test means: PACT {pact_acc:.1f} % "
                     f"at {pact_steps:.2f} steps, ACT {act_acc:.1f} % at {act_steps:.2f} steps.")
    return "\n".join(lines + ([""] + notes if notes else []))


def plot(results: dict[str, Any], tasks: list[str], path: Path) -> None:
    """Accuracy against steps per frame and against measured FLOPs (relative to every frame running M steps), one
    row per task; PACT's threshold sweep of each model as a dotted line from its own point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"pact": "C0", "act": "C1", "policy_gradient": "C2", "none": "k"}
    fig, axes = plt.subplots(len(tasks), 2, figsize=(12, 4.6 * len(tasks)), squeeze=False)
    for row, task in enumerate(tasks):
        entries = {n: r for n, r in results.get(task, {}).items() if "#seed" not in n}
        every = entries.get("lstm_m", {}).get("eval", {}).get("mflops")  # the every-step LSTM's FLOPs

        def cost(e: dict, key: str) -> float:
            return e["mflops"] / every if key == "flops" and every else e[key if key != "flops" else
                                                                          "flops_vs_every_step"]

        for col, (key, label) in enumerate((("steps_per_frame", "ponder steps per frame (test mean)"),
                                            ("flops", "FLOPs per input / FLOPs of the every-step LSTM (lstm_m)"))):
            ax = axes[row][col]
            by_method: dict[str, list] = {}
            for name, entry in entries.items():
                method = _method(entry["config"])
                e = entry["eval"]
                group = method if ("@" in name or method == "none") else f"{method} ({name})"
                by_method.setdefault(group, []).append((cost(e, key), 100 * e["accuracy"], 100 * e["accuracy_se"],
                                                        name, method))
                sampled = entry.get("eval_sampled")
                if sampled and method == "pact":  # PACT's stops sampled from q(z | x) instead of the greedy rule
                    ax.plot([cost(sampled, key)], [100 * sampled["accuracy"]], "o", mfc="none",
                            color=colours["pact"], ms=6, label="pact, sampled stops" if "s" not in by_method else None)
                    by_method.setdefault("s", [])
                sweep = entry.get("eval_thresholds")
                if sweep:
                    pts = sorted([(cost(v, key), 100 * v["accuracy"]) for v in sweep.values()]
                                 + [(cost(e, key), 100 * e["accuracy"])])
                    ax.plot(*zip(*pts), ":", color=colours.get(method, "grey"), alpha=0.5, lw=1)
            by_method.pop("s", None)
            for group, pts in by_method.items():
                pts.sort()
                xs, ys, es, names, methods = zip(*pts)
                style = "s" if methods[0] == "none" else ("o-" if group == methods[0] else "x")
                ax.errorbar(xs, ys, yerr=es, fmt=style, color=colours.get(methods[0], "grey"), label=group,
                            capsize=2, ms=4 if style != "x" else 7)
                for x, y, _, n, _ in pts:
                    if "@" in n or methods[0] == "none":
                        ax.annotate(n.split("@")[-1] if "@" in n else n, (x, y), fontsize=6,
                                    textcoords="offset points", xytext=(3, 3))
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy (%) ± binomial s.e.")
            ax.set_title(f"{task}: accuracy vs {'steps' if col == 0 else 'FLOPs'} (dotted: threshold sweep of "
                         f"each PACT / PG model; hollow: PACT sampled stops)", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def diagnosis_summary(results: dict[str, Any]) -> str:
    """One row per change of the diagnosis: steps per frame (mean ± std over inputs) and test accuracy on every
    task, with the validation accuracy the recipe is chosen on where the run had a validation split."""
    tasks = [k for k in results if k.endswith("_diagnosis")]
    names = list(dict.fromkeys(n for t in tasks for n in results[t]))
    lines = ["| change | " + " | ".join(f"{t.removesuffix('_diagnosis')}: steps / frame, accuracy %" for t in tasks)
             + " |", "|---|" + "---|" * len(tasks)]
    for name in names:
        cells = []
        for t in tasks:
            e = results[t].get(name, {}).get("eval")
            val = results[t].get(name, {}).get("eval_validation")
            cells.append("—" if e is None else f"{e['steps_per_frame']:.2f} ± {e['steps_per_frame_std']:.2f}, "
                                               f"{_pct(e)}" + ("" if val is None else
                                                               f" (validation {100 * val['accuracy']:.1f})"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_table(rows: dict[str, Any]) -> str:
    """Variants trained with extra seeds (``<variant>#seed<n>``): accuracy and steps per frame of every seed, and
    their mean ± std over the seeds."""
    groups: dict[str, list] = {}
    for name, entry in rows.items():
        base = name.split("#seed")[0]
        if any(n.startswith(base + "#seed") for n in rows):
            seed = int(name.split("#seed")[1]) if "#seed" in name else entry.get("train_options", {}).get("seed", 0)
            groups.setdefault(base, []).append((seed, entry["eval"]))
    groups = {base: items for base, items in groups.items() if len(items) > 1}
    if not groups:
        return ""
    lines = ["| variant | seeds | accuracy % per seed | mean ± std | steps / frame per seed | mean ± std |",
             "|---|---|---|---|---|---|"]
    for base, items in groups.items():
        items.sort(key=lambda item: item[0])
        acc = np.array([100 * e["accuracy"] for _, e in items])
        steps = np.array([e["steps_per_frame"] for _, e in items])
        lines.append(f"| {base} | {', '.join(str(sd) for sd, _ in items)} | {' / '.join(f'{a:.1f}' for a in acc)} | "
                     f"{acc.mean():.1f} ± {acc.std(ddof=1):.1f} | {' / '.join(f'{x:.2f}' for x in steps)} | "
                     f"{steps.mean():.2f} ± {steps.std(ddof=1):.2f} |")
    return "\n".join(lines)


def report(results_path: Path, markdown_path: Path, plot_path: Optional[Path]) -> None:
    loaded = json.loads(results_path.read_text())
    order = [f"{t}{suffix}" for suffix in ("_diagnosis", "") for t in TASKS]
    results = {k: loaded[k] for k in sorted(loaded, key=lambda k: order.index(k) if k in order else len(order))}
    parts = ["### diagnosis summary", "", diagnosis_summary(results), ""]
    for key, rows in results.items():
        if key == "runs":
            continue
        if key.endswith("_diagnosis"):
            parts += [f"### {key}", "", diagnosis_table(rows), ""]
        else:
            parts += [f"### {key}", "", results_table({n: r for n, r in rows.items() if "#seed" not in n}), ""]
            if any("eval_validation" in e for e in rows.values()):
                parts += [f"### {key}: chosen on the validation split", "",
                          selection_table(rows, max_ponder_steps(rows)), ""]
            seeds = seeds_table(rows)
            if seeds:
                parts += [f"### {key}: extra seeds", "", seeds, ""]
    markdown_path.write_text("\n".join(parts))
    if plot_path is not None:
        tasks = [k for k in ("vowels", "rt") if k in results] or [
            k for k in results if k != "runs" and not k.endswith("_diagnosis")]
        if tasks:
            plot(results, tasks, plot_path)
    print("\n".join(parts))


def _tradeoff_point(result: dict, rule: str, threshold: Optional[float], full_mflops: float) -> dict[str, Any]:
    """One of :func:`evaluate`'s results as a point of pact_zoo's ``tradeoff.json`` (the model card's table)."""
    return {"rule": rule, "threshold": threshold, "accuracy": result["accuracy"], "num_samples": result["n"],
            "mean_flops": result["mflops"] * 1e6, "flops_ratio": result["mflops"] / full_mflops,
            "mean_units": [result["steps_per_frame"]]}


def write_card(recipe: dict, task_name: str, variant: str, save_dir: Path, card_path: Path, out_dir: Path,
               results_path: Path, thresholds: list[float]) -> None:
    """A hub folder for one saved model (``--save-dir``): the model, and its card measured again on the test split
    (its own rule, every threshold and full depth: the same weights at M steps, no halting head) through pact_zoo's
    card builder, with the validation choice table and the accuracy-against-cost plot of the task."""
    from pact_zoo.hub import _load_card, build_model_card

    spec = recipe["tasks"][task_name]
    seed = recipe.get("seed", 0)
    torch.set_num_threads(recipe.get("threads", 1))
    task = TASKS[spec.get("loader", task_name)](spec.get("data", {}), seed)
    variant, _, chosen_threshold = variant.partition(":")  # VARIANT[:THRESHOLD], the rule chosen on validation
    model = PactLSTMForSequenceClassification.from_pretrained(saved_model_dir(save_dir, task_name, variant)).eval()
    if chosen_threshold:
        model.set_threshold(float(chosen_threshold))  # saved with the config: the folder's default rule
    if task.get("class_names"):  # runs saved before the names were recorded
        model.config.id2label = dict(enumerate(task["class_names"]))
        model.config.label2id = {name: i for i, name in enumerate(task["class_names"])}
    batch_size = spec["train"].get("eval_batch_size", 256)
    with pact_zoo.full_depth(model):
        full = evaluate(model, task["test"], batch_size)
    method = _stages(model)[0].method
    own = evaluate(model, task["test"], batch_size)
    rule = model.config.method
    points = [_tradeoff_point(own, rule, method.threshold, full["mflops"])]
    points += [_tradeoff_point(evaluate(model, task["test"], batch_size, threshold=t), rule, t, full["mflops"])
               for t in thresholds if t != method.threshold]
    points.sort(key=lambda point: point["threshold"])
    evaluation = {"methods": [rule], "threshold": method.threshold, "points": points,
                  "full_depth": _tradeoff_point(full, "full_depth", None, full["mflops"]),
                  "default": points[[p["threshold"] for p in points].index(method.threshold)],
                  "plots": [f"{task_name}_tradeoff.png"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)  # the folder the card's usage loads: weights, config, remote code
    (out_dir / "tradeoff.json").write_text(json.dumps(evaluation, indent=1) + "\n")
    if "token_remap" in task:  # tokenizer id -> the model's compact vocabulary id, for the card's usage
        from safetensors.torch import save_file

        save_file({"token_remap": task["token_remap"]}, str(out_dir / TOKEN_REMAP))
    results = json.loads(results_path.read_text())
    plot(results, [task_name], out_dir / f"{task_name}_tradeoff.png")
    card = _load_card(str(card_path))
    rows = results[task_name]
    card["description"] = (card.get("description", "").strip() + "\n\n" + task["description"] + ".\n\n"
                           "### Every method on this task, chosen on the validation split\n\n"
                           + selection_table(rows, max_ponder_steps(rows)))
    recipe_summary = {"script": "scripts/pact_lstm_real.py", "config": "hub_configs/pact_lstm.real/experiment.yaml",
                      "task": task_name, "variant": variant, "model": {**spec["model"]},
                      "train": dict(spec["train"])}
    build_model_card(card, evaluation, False, card.get("model_name", variant), recipe_summary,
                     folder_name=out_dir.name).save(out_dir / "README.md")
    print(f"wrote {out_dir / 'README.md'}, {out_dir / 'tradeoff.json'} and the plot")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "hub_configs/pact_lstm.real/experiment.yaml")
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--variants", nargs="*", default=None, help="glob patterns of the variants to run")
    parser.add_argument("--set", nargs="*", default=[], metavar="SCOPE.KEY=VALUE",
                        help="overrides: train.epochs=3, model.hidden_size=32, variant.entropy_weight=0")
    parser.add_argument("--diagnose", type=int, default=0, metavar="N",
                        help="log the halting diagnostics every N updates")
    parser.add_argument("--thresholds", type=float, nargs="*", default=None,
                        help="also evaluate threshold methods at these thresholds")
    parser.add_argument("--output", type=Path, default=None, help="merge the results into this JSON file")
    parser.add_argument("--save-dir", type=Path, default=None,
                        help="save every trained model (save_pretrained) under SAVE_DIR/<task>/<variant>")
    parser.add_argument("--seed", type=int, default=None,
                        help="train with this seed instead of the recipe's (rows are named <variant>#seed<n>)")
    parser.add_argument("--ladder", action="store_true",
                        help="run the task's diagnosis rows (one change each on diagnosis_base) instead of variants")
    parser.add_argument("--report", type=Path, nargs="+", default=None, metavar=("RESULTS_JSON", "MARKDOWN"),
                        help="only write the tables (and --plot) from a results JSON: RESULTS_JSON MARKDOWN")
    parser.add_argument("--plot", type=Path, default=None, help="with --report: the accuracy-vs-cost plot")
    parser.add_argument("--card", nargs=4, default=None, metavar=("VARIANT[:THRESHOLD]", "CARD_YAML", "RESULTS_JSON",
                                                                  "OUT_DIR"),
                        help="with --task and --save-dir: a hub folder of a saved variant (at THRESHOLD, if given) "
                             "with its card measured on the test split")
    args = parser.parse_args()
    if args.card:
        variant, card_yaml, results_json, out_dir = args.card
        write_card(yaml.safe_load(args.config.read_text()), args.task, variant, args.save_dir, Path(card_yaml),
                   Path(out_dir), Path(results_json), args.thresholds or [0.3, 0.4, 0.5, 0.6, 0.7])
        return
    if args.report:
        report(args.report[0], args.report[1], args.plot)
        return
    recipe = yaml.safe_load(args.config.read_text())
    overrides: dict[str, dict] = {}
    for item in args.set:
        key, value = item.split("=", 1)
        scope, field = key.split(".", 1)
        if scope not in ("train", "model", "variant"):
            raise ValueError(f"--set scope must be train, model or variant, got {scope!r}")
        overrides.setdefault(scope, {})[field] = _parse_value(value)
    start = time.perf_counter()
    run(recipe, args.task, args.variants, overrides, args.diagnose, args.output, args.thresholds, args.ladder,
        args.seed, args.save_dir)
    print(f"total {time.perf_counter() - start:.0f} s, load {loadavg()}")


if __name__ == "__main__":
    main()
