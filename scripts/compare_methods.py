"""Halting methods on equal footing: the same backbone and recipe, a tau sweep per method, several datasets.

Reads a comparison recipe (``hub_configs/methods.compare/compare.yaml``): a base training recipe, the methods
(registered model, fixed knobs, tau sweep), the datasets (recipe overrides) and where to write the results.

    OMP_NUM_THREADS=1 python scripts/compare_methods.py --config hub_configs/methods.compare/compare.yaml \
        [--datasets digits] [--methods pact,act] [--dry-run] [--report-only] [--force] \
        [--time-steps 4 --time-rounds 3]

Every run trains in a fresh Python process (``pact_zoo.training.train``, exactly what ``pact-zoo train`` does)
and is evaluated there with ``run_evaluation`` (what ``pact-zoo evaluate`` does) at the recipe's
``eval_thresholds``; runs go one at a time. A run whose folder already holds a ``run.json`` for the same
specification is reused, so an interrupted comparison continues where it stopped (``--force`` reruns).

Per run: accuracy, measured FLOPs ratio and mean units per stage at the model's own rule (threshold 0.5 where the
method has one; ACT's own rule; full depth for the plain network), accuracy at full depth, the share of test
samples whose depth differs from the stage's most common depth, and the median training time per epoch
(``epoch_time_s`` of ``metrics.jsonl``: the training loop only, no evaluation), with the load average at the start
and end of the run. Writes a JSON of every number, a markdown table and one plot (accuracy vs FLOPs ratio, one
colour and marker per method, one panel per dataset), all atomically.

Per-epoch times on a shared machine follow the load more than the method, so ``--time-steps N`` also times N
training steps of every trained model per round, interleaved (same batches, rotating order, learning rate 0 so the
halting behaviour stays that of the trained model), and adds the median / minimum step time to the results.
A run that fails is retried once after ``RETRY_WAIT_S`` (e.g. a library file caught half-edited).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml

from pact_zoo.fileio import atomic_path, atomic_write_json, atomic_write_text

SPEC_FILE = "spec.json"
RUN_FILE = "run.json"
LOG_FILE = "log.txt"
TIMING_FILE = "step_timing.json"
RETRY_WAIT_S = 30
ZOOM_POINTS = 5.0  # bottom row of the plot: accuracies within this many points of the plain network
RECIPE_KEYS = {"base_config", "train", "output_dir", "threads", "eval_thresholds", "results", "methods", "datasets"}
METHOD_KEYS = {"model", "model_kwargs", "taus", "overrides", "eval_thresholds"}
DATASET_KEYS = {"overrides", "taus"}
#: plot style per method (others get matplotlib's cycle)
STYLES = {"pact": ("tab:blue", "o"), "act": ("tab:orange", "s"), "policy_gradient": ("tab:green", "^"),
          "pact_anytime": ("tab:purple", "D"), "resnet8": ("dimgray", "P"), "resnet14": ("dimgray", "P"),
          "resnet20": ("dimgray", "P"),
          "plain": ("black", "*")}


# --------------------------------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------------------------------
def load_recipe(path: str) -> Dict[str, Any]:
    """The comparison recipe, with unknown keys rejected."""
    from pact_zoo.training.config import YamlLoader  # 2e-3 is a float, as in training recipes

    with open(path) as handle:
        recipe = yaml.load(handle, Loader=YamlLoader) or {}
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; valid: {sorted(RECIPE_KEYS)}")
    for key in ("methods", "datasets"):
        if key not in recipe:
            raise ValueError(f"{path}: missing {key!r}")
    for name, method in recipe["methods"].items():
        if set(method) - METHOD_KEYS or "model" not in method or not method.get("taus"):
            raise ValueError(f"{path}: method {name!r} needs model and taus (keys {sorted(METHOD_KEYS)})")
    for name, dataset in recipe["datasets"].items():
        if set(dataset or {}) - DATASET_KEYS:
            raise ValueError(f"{path}: dataset {name!r} takes keys {sorted(DATASET_KEYS)}")
    recipe.setdefault("base_config", None)
    recipe.setdefault("train", {})
    recipe.setdefault("output_dir", "out/methods_compare")
    recipe.setdefault("threads", 1)
    recipe.setdefault("eval_thresholds", [0.5])
    results = recipe.setdefault("results", {})
    for key, default in (("json", "results.json"), ("markdown", "results.md"), ("plot", "methods.png")):
        results.setdefault(key, str(Path(recipe["output_dir"]) / default))
    return recipe


def _tau_tag(tau: Optional[float]) -> str:
    return "full" if tau is None else f"tau{tau:g}"


def expand_runs(recipe: Dict[str, Any], datasets: Optional[Sequence[str]] = None,
                methods: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    """One specification per (dataset, method, tau), in recipe order."""
    specs = []
    for dataset_name, dataset in recipe["datasets"].items():
        if datasets and dataset_name not in datasets:
            continue
        dataset = dataset or {}
        for method_name, method in recipe["methods"].items():
            if methods and method_name not in methods:
                continue
            taus = (dataset.get("taus") or {}).get(method_name, method["taus"])
            for tau in taus:
                model_kwargs = dict(method.get("model_kwargs") or {})
                if tau is not None:
                    model_kwargs["tau"] = tau
                output_dir = str(Path(recipe["output_dir"]) / dataset_name / f"{method_name}-{_tau_tag(tau)}")
                overrides = dict(recipe["train"])  # recipe < dataset < method (the most specific wins)
                overrides.update(dataset.get("overrides") or {})
                overrides.update(method.get("overrides") or {})
                overrides.update(model=method["model"], model_kwargs=model_kwargs, output_dir=output_dir)
                specs.append(dict(dataset=dataset_name, method=method_name, tau=tau, model=method["model"],
                                  base_config=recipe["base_config"], overrides=overrides,
                                  eval_thresholds=list(method.get("eval_thresholds") or recipe["eval_thresholds"]),
                                  threads=recipe["threads"]))
    return specs


def cli_command(spec: Dict[str, Any]) -> str:
    """The equivalent ``pact-zoo train`` + ``pact-zoo evaluate`` commands of a run."""
    args = ["pact-zoo", "train"] + (["--config", spec["base_config"]] if spec["base_config"] else [])
    for key, value in spec["overrides"].items():
        args += [f"--{key.replace('_', '-')}", _yaml_flow(value)]
    output_dir = spec["overrides"]["output_dir"]
    evaluate = ["pact-zoo", "evaluate", "--model-dir", f"{output_dir}/model", "--eval-thresholds",
                _yaml_flow(spec["eval_thresholds"])]
    return " ".join(map(shlex.quote, args)) + " && " + " ".join(map(shlex.quote, evaluate))


def _yaml_flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


# --------------------------------------------------------------------------------------------------------------------
# One run (child process)
# --------------------------------------------------------------------------------------------------------------------
def loadavg() -> List[float]:
    with open("/proc/loadavg") as handle:
        return [float(v) for v in handle.read().split()[:3]]


def run_one(run_dir: Path) -> None:
    """Train and evaluate the run described by ``run_dir/spec.json``; write ``run_dir/run.json``."""
    import torch

    spec = json.loads((run_dir / SPEC_FILE).read_text())
    torch.set_num_threads(int(spec["threads"]))
    from pact_zoo.training.config import load_config
    from pact_zoo.training.evaluate import run_evaluation
    from pact_zoo.training.io import load_model_folder
    from pact_zoo.training.loop import train

    load_start, start = loadavg(), time.perf_counter()
    config = load_config(spec["base_config"], spec["overrides"])
    train(config)  # also writes the effective config to train_config.json
    train_wall = time.perf_counter() - start
    model = load_model_folder(Path(config.output_dir) / "model")  # the saved artefact, as pact-zoo evaluate
    tradeoff = run_evaluation(model, config, Path(config.output_dir) / "eval", spec["eval_thresholds"])
    epochs = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()]
    atomic_write_json(run_dir / RUN_FILE, dict(
        spec=spec, tradeoff=tradeoff, epochs=epochs, train_wall_s=train_wall,
        total_wall_s=time.perf_counter() - start, loadavg_start=load_start, loadavg_end=loadavg(),
        torch_threads=torch.get_num_threads(), command=cli_command(spec)))


def finished_run(spec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The finished run in ``spec``'s folder if it trained exactly what ``spec`` asks for, else None.

    Compares the *effective* training config (``train_config.json``, written by the run) with the config ``spec``
    resolves to now, so a run is redone when a recipe it depends on has changed, and reused when only the way
    the recipe is written changed. Config fields that the run's library did not have yet must be at their
    defaults. (Changed defaults of halting knobs cannot be seen here: pin the knobs that matter in
    ``model_kwargs``.)
    """
    from pact_zoo.training.config import TrainConfig, load_config

    run_dir = Path(spec["overrides"]["output_dir"])
    if not (run_dir / RUN_FILE).is_file() or not (run_dir / "train_config.json").is_file():
        return None
    result = json.loads((run_dir / RUN_FILE).read_text())
    if any(result["spec"].get(key) != spec[key] for key in ("dataset", "method", "tau", "eval_thresholds", "threads")):
        return None
    used = json.loads((run_dir / "train_config.json").read_text())
    wanted = json.loads(json.dumps(load_config(spec["base_config"], spec["overrides"]).to_dict()))
    defaults = json.loads(json.dumps(TrainConfig().to_dict()))
    if set(used) - set(wanted):
        return None
    for key, value in wanted.items():
        if used.get(key, defaults[key]) != value:
            return None
    return result


def launch(spec: Dict[str, Any], force: bool, retries: int = 1) -> Dict[str, Any]:
    """Run ``spec`` in a fresh process unless its folder already holds a finished run of the same training."""
    run_dir = Path(spec["overrides"]["output_dir"])
    done = run_dir / RUN_FILE
    previous = None if force else finished_run(spec)
    if previous is not None:
        print(f"[reuse] {run_dir}", flush=True)
        return previous
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / SPEC_FILE, spec)
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(spec["threads"])
    print(f"[run] {run_dir}  (load {' '.join(map(str, loadavg()))})\n      {cli_command(spec)}", flush=True)
    for attempt in range(1 + retries):
        if attempt:  # e.g. a library file caught half-edited by someone else: wait, then try once more
            print(f"      failed (exit code {code}); retrying in {RETRY_WAIT_S}s", flush=True)
            time.sleep(RETRY_WAIT_S)
            shutil.copy(run_dir / LOG_FILE, run_dir / f"failed_{attempt}_{LOG_FILE}")
        start = time.perf_counter()
        with open(run_dir / LOG_FILE, "w") as log:
            code = subprocess.call([sys.executable, os.path.abspath(__file__), "--run-one", str(run_dir)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
        if code == 0 and done.is_file():
            break
    if code != 0 or not done.is_file():
        tail = (run_dir / LOG_FILE).read_text()[-3000:]
        raise RuntimeError(f"run {run_dir} failed (exit code {code}); end of {run_dir / LOG_FILE}:\n{tail}")
    result = json.loads(done.read_text())
    print(f"      done in {time.perf_counter() - start:.0f}s: {format_row(summarize(result, spec))}", flush=True)
    return result


def time_training_steps(recipe: Dict[str, Any], dataset: str, steps: int, repeats: int) -> Dict[str, Any]:
    """Training-step time of every finished run of ``dataset``, interleaved so that load hits all models alike.

    Loads each run's trained model (so the halting heads behave as after training), takes the same ``steps``
    training batches for every model, and times forward (with the policy-gradient greedy baseline forward where
    the method uses one) + backward + AdamW step. The learning rate is 0, so the weights and the halting behaviour
    stay those of the trained model. One warm-up round, then ``repeats`` rounds in rotating order; reports the
    median seconds per step and the mean units per stage that the training forwards ran.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from pact_zoo.halting import halting_report, training_loss
    from pact_zoo.training.config import load_config
    from pact_zoo.training.io import load_model_folder
    from pact_zoo.training.loop import build_optimizer
    from pact_zoo.training.tasks import build_task

    torch.set_num_threads(int(recipe["threads"]))
    entries, batches = [], None
    for spec in expand_runs(recipe, [dataset]):
        run_dir = Path(spec["overrides"]["output_dir"])
        if finished_run(spec) is None:
            continue
        config = load_config(spec["base_config"], spec["overrides"])
        task = build_task(config)
        model = load_model_folder(run_dir / "model")
        if batches is None:
            data = task.load_data(model)
            generator = torch.Generator().manual_seed(config.seed)
            loader = DataLoader(data.train, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                collate_fn=data.collate_fn, generator=generator)
            batches = [batch for _, batch in zip(range(steps), loader)]
        optimizer = build_optimizer(model, config)
        for group in optimizer.param_groups:
            group["lr"] = 0.0
        entries.append(dict(spec=spec, task=task, model=model, optimizer=optimizer, times=[], units=[]))

    def one_step(entry: Dict[str, Any], batch: Dict[str, Any]) -> Any:
        model, task = entry["model"], entry["task"]
        step = training_loss(model, lambda: task.forward(model, batch),
                             lambda logits: F.cross_entropy(logits.float(), batch["labels"], reduction="none"))
        step.loss.backward()
        entry["optimizer"].step()
        entry["optimizer"].zero_grad()
        return step

    for entry in entries:
        entry["model"].train()
    for round_index in range(repeats + 1):
        shift = round_index % max(1, len(entries))
        for entry in entries[shift:] + entries[:shift]:
            for batch in batches:
                start = time.perf_counter()
                one_step(entry, batch)
                elapsed = time.perf_counter() - start
                if round_index > 0:  # round 0 warms up
                    entry["times"].append(elapsed)
                    try:
                        entry["units"].append(halting_report(entry["model"]).units_executed.double().mean(0))
                    except ValueError:  # no adaptive stage
                        pass
    rows = []
    for entry in entries:
        spec = entry["spec"]
        units = torch.stack(entry["units"]).mean(0).tolist() if entry["units"] else None
        rows.append(dict(dataset=dataset, method=spec["method"], tau=spec["tau"],
                         step_time_median_s=statistics.median(entry["times"]),
                         step_time_min_s=min(entry["times"]), num_timed_steps=len(entry["times"]),
                         train_units_per_stage=units))
    batch_size = load_config(recipe["base_config"], {**recipe["train"], **(recipe["datasets"][dataset].get(
        "overrides") or {})}).batch_size
    return dict(dataset=dataset, steps=steps, repeats=repeats, batch_size=batch_size, threads=recipe["threads"],
                rows=rows)


def timing_table(timings: List[Dict[str, Any]]) -> str:
    lines = []
    for timing in timings:
        lines += [f"### Interleaved training-step timing, {timing['dataset']} models (batch {timing['batch_size']}, "
                  f"{timing['repeats']} rounds x {timing['steps']} steps, {timing['threads']} thread, "
                  f"load {timing['loadavg_start'][0]:.2f} / {timing['loadavg_end'][0]:.2f})", "",
                  "| method | tau | step time median (s) | step time min (s) | min relative to plain "
                  "| units run per stage in training |",
                  "|---|---|---|---|---|---|"]
        # the minimum is the least load-sensitive statistic on a shared machine
        plain = next((r["step_time_min_s"] for r in timing["rows"] if r["method"] == "plain"), None)
        for r in timing["rows"]:
            units = " / ".join(f"{u:.2f}" for u in r["train_units_per_stage"]) if r["train_units_per_stage"] else "-"
            relative = f"{r['step_time_min_s'] / plain:.2f}" if plain else "-"
            lines.append(f"| {r['method']} | {_fmt_tau(r['tau'])} | {r['step_time_median_s']:.3f} "
                         f"| {r['step_time_min_s']:.3f} | {relative} | {units} |")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Summary, table, plot
# --------------------------------------------------------------------------------------------------------------------
def off_mode_share(histogram: Sequence[int]) -> float:
    """Share of samples whose depth is not the stage's most common depth."""
    total = sum(histogram)
    return 1.0 - max(histogram) / total if total else 0.0


def summarize(result: Dict[str, Any], spec: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """One table row from a finished run (``spec``: the recipe's current spec of it, for the command line)."""
    spec, tradeoff = spec or result["spec"], result["tradeoff"]
    default, full = tradeoff["default"], tradeoff["full_depth"]
    epoch_times = [e["epoch_time_s"] for e in result["epochs"]]
    return dict(
        dataset=spec["dataset"], method=spec["method"], model=spec["model"], tau=spec["tau"],
        rule=default["rule"], threshold=default["threshold"],
        accuracy=default["accuracy"], flops_ratio=default["flops_ratio"], mean_flops=default["mean_flops"],
        full_flops=default["full_flops"], mean_units=default["mean_units"],
        curve=[dict(threshold=p["threshold"], accuracy=p["accuracy"], mean_flops=p["mean_flops"],
                    mean_units=p["mean_units"]) for p in tradeoff["points"] if not p["rule"].endswith(":sampled")],
        sampled=next((dict(accuracy=p["accuracy"], flops_ratio=p["flops_ratio"]) for p in tradeoff["points"]
                      if p["rule"].endswith(":sampled")), None),
        off_mode_share=[off_mode_share(h) for h in tradeoff.get("units_histogram", [])],
        units_histogram=tradeoff.get("units_histogram"),
        full_depth_accuracy=full["accuracy"], num_eval_samples=default["num_samples"],
        epochs=len(epoch_times), epoch_time_median_s=statistics.median(epoch_times) if epoch_times else None,
        epoch_times_s=epoch_times, train_wall_s=result["train_wall_s"], total_wall_s=result["total_wall_s"],
        loadavg_start=result["loadavg_start"], loadavg_end=result["loadavg_end"], command=cli_command(spec))


def format_row(row: Dict[str, Any]) -> str:
    return (f"{row['method']} tau={row['tau']} acc {100 * row['accuracy']:.2f}% flops {row['flops_ratio']:.3f} "
            f"units {[round(u, 2) for u in row['mean_units']]} epoch {row['epoch_time_median_s']:.1f}s")


def _fmt_tau(tau: Optional[float]) -> str:
    return "-" if tau is None else f"{tau:g}"


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """One markdown table per dataset, then the median epoch time per method and dataset."""
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        subset = [r for r in rows if r["dataset"] == dataset]
        first = subset[0]
        reference = max(r["full_flops"] for r in subset)
        lines += [f"### {dataset} ({first['num_eval_samples']} test samples, {first['epochs']} epochs)", "",
                  "| method | tau | rule | accuracy | FLOPs ratio | FLOPs vs largest | mean units per stage "
                  "| off-mode share per stage | full-depth acc. | sampled-depth acc. | epoch time (median, s) "
                  "| load start / end |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in subset:
            rule = r["rule"] if r["threshold"] is None else f"{r['rule']} @ {r['threshold']:g}"
            sampled = r.get("sampled")
            sampled_text = "-" if sampled is None else f"{100 * sampled['accuracy']:.2f}%"
            lines.append(
                f"| {r['method']} | {_fmt_tau(r['tau'])} | {rule} | {100 * r['accuracy']:.2f}% "
                f"| {r['flops_ratio']:.3f} | {r['mean_flops'] / reference:.3f} "
                f"| {' / '.join(f'{u:.2f}' for u in r['mean_units'])} "
                f"| {' / '.join(f'{s:.2f}' for s in r['off_mode_share'])} | {100 * r['full_depth_accuracy']:.2f}% "
                f"| {sampled_text} "
                f"| {r['epoch_time_median_s']:.1f} | {r['loadavg_start'][0]:.2f} / {r['loadavg_end'][0]:.2f} |")
        lines.append("")
        for r in subset:  # one model, every budget: the threshold sweep of a run evaluated at several thresholds
            if len(r.get("curve") or []) > 1:
                lines += [f"{r['method']} (tau {_fmt_tau(r['tau'])}), one trained model at every threshold:", "",
                          "| threshold | accuracy | FLOPs vs largest | mean units per stage |", "|---|---|---|---|"]
                lines += [f"| {c['threshold']:g} | {100 * c['accuracy']:.2f}% | {c['mean_flops'] / reference:.3f} "
                          f"| {' / '.join(f'{u:.2f}' for u in c['mean_units'])} |" for c in r["curve"]]
                lines.append("")
    lines += ["### Training time per epoch (median over each method's runs of the per-run median epoch_time_s)", "",
              "| dataset | " + " | ".join(dict.fromkeys(r["method"] for r in rows)) + " |",
              "|---|" + "---|" * len(dict.fromkeys(r["method"] for r in rows))]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        cells = []
        for method in dict.fromkeys(r["method"] for r in rows):
            times = [r["epoch_time_median_s"] for r in rows if r["dataset"] == dataset and r["method"] == method]
            cells.append(f"{statistics.median(times):.1f} s" if times else "-")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def plot(rows: List[Dict[str, Any]], path: str) -> None:
    """Accuracy vs measured FLOPs ratio: one column per dataset, one colour and marker per method; the bottom
    row zooms on the accuracies within ``ZOOM_POINTS`` of the plain network's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(2, len(datasets), figsize=(5.2 * len(datasets), 7.6), squeeze=False,
                             gridspec_kw=dict(height_ratios=[1.0, 0.8]))
    for column, dataset in enumerate(datasets):
        subset = [r for r in rows if r["dataset"] == dataset]
        plain = next((100 * r["accuracy"] for r in subset if r["method"] == "plain"), None)
        reference = max(r["full_flops"] for r in subset)  # the largest network at full depth (ResNet-32)
        for row_index, ax in enumerate(axes[:, column]):
            for method in dict.fromkeys(r["method"] for r in subset):
                points = sorted((r for r in subset if r["method"] == method), key=lambda r: r["mean_flops"])
                color, marker = STYLES.get(method, (None, "D"))
                curves = [p for p in points if len(p.get("curve") or []) > 1]
                for p in curves:  # one trained model, every budget: its threshold sweep as a line
                    curve = sorted(p["curve"], key=lambda c: c["mean_flops"])
                    ax.plot([c["mean_flops"] / reference for c in curve], [100 * c["accuracy"] for c in curve],
                            marker=marker, color=color, linestyle="-", alpha=0.85, markersize=5,
                            label=f"{method} (one model, thresholds)")
                    if row_index == 0:
                        for c in curve:
                            ax.annotate(f"{c['threshold']:g}", (c["mean_flops"] / reference, 100 * c["accuracy"]),
                                        textcoords="offset points", xytext=(3, -9), fontsize=6, color=color)
                points = [p for p in points if p not in curves]
                if not points:
                    continue
                ax.plot([p["mean_flops"] / reference for p in points], [100 * p["accuracy"] for p in points],
                        marker=marker, color=color, linestyle="-" if len(points) > 1 else "none", alpha=0.85,
                        markersize=11 if marker == "*" else 7,
                        label=method if method != "plain" else "plain (full depth)")
                for p in points:
                    if p["tau"] is not None:
                        ax.annotate(f"{p['tau']:g}", (p["mean_flops"] / reference, 100 * p["accuracy"]),
                                    textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
            if plain is not None:
                ax.axhline(plain, color="black", linestyle=":", linewidth=0.8, alpha=0.6)
            ax.grid(alpha=0.3)
            ax.set_xlabel("measured FLOPs / full-depth ResNet-32 (own rule: threshold 0.5, ACT's N + R rule)",
                          fontsize=8)
            ax.set_ylabel("test accuracy (%)")
            if row_index == 0:
                first = subset[0]
                ax.set_title(f"{dataset}: {first['epochs']} epochs, {first['num_eval_samples']} test images",
                             fontsize=9)
                ax.legend(fontsize=8, loc="lower right")
            elif plain is not None:
                top = max(100 * r["accuracy"] for r in subset)
                ax.set_ylim(plain - ZOOM_POINTS, top + 0.15 * ZOOM_POINTS)
                ax.set_title(f"zoom: within {ZOOM_POINTS:g} points of the plain network", fontsize=8)
    fig.suptitle("accuracy vs measured FLOPs (labels: tau; one seed)", fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)


def write_results(recipe: Dict[str, Any], config_path: str, rows: List[Dict[str, Any]],
                  meta: Dict[str, Any]) -> None:
    results = recipe["results"]
    timings = [json.loads(p.read_text()) for p in sorted(Path(recipe["output_dir"]).glob(f"*/{TIMING_FILE}"))
               if p.parent.name in recipe["datasets"]]
    atomic_write_json(results["json"], dict(recipe=config_path, meta=meta, runs=rows, step_timing=timings))
    atomic_write_text(results["markdown"], markdown_table(rows) + "\n" + timing_table(timings))
    if rows:
        plot(rows, results["plot"])


# --------------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="hub_configs/methods.compare/compare.yaml", help="comparison recipe")
    parser.add_argument("--datasets", help="comma-separated subset of the recipe's datasets")
    parser.add_argument("--methods", help="comma-separated subset of the recipe's methods")
    parser.add_argument("--dry-run", action="store_true", help="print the runs' commands and exit")
    parser.add_argument("--report-only", action="store_true", help="rebuild JSON / table / plot from finished runs")
    parser.add_argument("--force", action="store_true", help="rerun runs that already finished")
    parser.add_argument("--time-steps", type=int, metavar="N",
                        help="after the runs: time N training steps of every trained model per round, interleaved")
    parser.add_argument("--time-rounds", type=int, default=3, help="timed rounds of --time-steps (after a warm-up)")
    parser.add_argument("--run-one", metavar="RUN_DIR", help=argparse.SUPPRESS)  # child process
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_one:
        run_one(Path(args.run_one))
        return 0
    recipe = load_recipe(args.config)
    split = lambda text: [t for t in text.split(",") if t] if text else None  # noqa: E731
    specs = expand_runs(recipe, split(args.datasets), split(args.methods))
    if args.dry_run:
        for spec in specs:
            print(cli_command(spec))
        return 0
    meta = dict(command=" ".join(map(shlex.quote, [os.path.relpath(sys.argv[0])] + list(argv or sys.argv[1:]))),
                loadavg_start=loadavg(), started=time.strftime("%Y-%m-%d %H:%M:%S"), cpu_count=os.cpu_count(),
                threads=recipe["threads"])
    previous = Path(recipe["results"]["json"])
    if args.report_only and previous.is_file():  # keep the record of the run that produced the numbers
        meta = dict(json.loads(previous.read_text()).get("meta") or {},
                    report_rebuilt=time.strftime("%Y-%m-%d %H:%M:%S"))
    start = time.perf_counter()
    rows = []
    # Rows of every finished run of the recipe (also those outside --datasets / --methods) go into the results.
    selected = {spec["overrides"]["output_dir"] for spec in specs}
    for spec in expand_runs(recipe):
        if spec["overrides"]["output_dir"] in selected and not args.report_only:
            rows.append(summarize(launch(spec, args.force), spec))
            meta.update(loadavg_end=loadavg(), wall_s=time.perf_counter() - start)
            write_results(recipe, args.config, rows, meta)
        elif (result := finished_run(spec)) is not None:
            rows.append(summarize(result, spec))
    if args.time_steps:
        for dataset in dict.fromkeys(spec["dataset"] for spec in specs):
            print(f"[timing] {dataset}: {args.time_rounds} rounds x {args.time_steps} steps (load "
                  f"{' '.join(map(str, loadavg()))})", flush=True)
            load_start = loadavg()
            timing = time_training_steps(recipe, dataset, args.time_steps, args.time_rounds)
            timing.update(loadavg_start=load_start, loadavg_end=loadavg())
            atomic_write_json(Path(recipe["output_dir"]) / dataset / TIMING_FILE, timing)
    if not args.report_only:
        meta.update(loadavg_end=loadavg(), wall_s=time.perf_counter() - start)
    write_results(recipe, args.config, rows, meta)
    print(markdown_table(rows))
    print(f"wrote {recipe['results']['json']}, {recipe['results']['markdown']}, {recipe['results']['plot']} "
          f"(load {meta.get('loadavg_start')} -> {meta.get('loadavg_end')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
