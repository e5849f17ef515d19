"""The PACT-LSTM reference experiment on CPU: Graves's parity task (PACT and ACT over a tau sweep, a fixed one-step
LSTM) with the ponder-steps profile per number of non-zeros (Graves 2016 Fig. 3), and MNIST-1D (PACT vs a plain
LSTM at equal updates, plus the fixes tried: warm start from the plain LSTM, tau warm-up, entropy weight). Reads the
recipe ``hub_configs/pact_lstm.parity/experiment.yaml``.

    OMP_NUM_THREADS=1 python scripts/pact_lstm_experiment.py \
        --config hub_configs/pact_lstm.parity/experiment.yaml --output-dir out/pact_lstm_experiment \
        [--only parity|mnist1d] [--variants 'pact*'] [--steps-scale 0.1] [--plot docs/lstm_parity_profile.png]

Recipe format (per task): ``model`` holds the architecture shared by the variants (no halting knobs); ``variants``
maps a name to ``{method, <that method's knobs>, ...}`` (a knob the method lacks raises) plus the training
options ``warm_start`` (name of an earlier variant of the same task whose weights initialise this one; the halting
head keeps its init), ``tau_warmup`` (fraction of the updates over which tau rises linearly from 0) and ``steps``
(overrides the task's updates). Parity's ``tau_sweep`` runs every variant whose method has a ``tau`` knob once per
value (named ``<variant>@tau=<value>``).

Writes ``results.json`` (every number; a run with ``--only`` updates its task in an existing file), ``results.md``
(the tables of ``docs/lstm_results.md``) and the profile plot to the output directory, and saves each trained model
with ``save_pretrained`` under ``<output-dir>/<task>-<variant>/``.
"""
from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

import pact_zoo
from pact_zoo.data.mnist1d import mnist1d_splits
from pact_zoo.data.sequences import parity_dataset
from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification

#: Variant keys that steer training, not the model config.
TRAINING_KEYS = ("warm_start", "tau_warmup", "steps")


def loadavg() -> str:
    """The 1/5/15-minute load averages (the machine is shared: times are only comparable within a run)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _arrays(dataset, *columns: str) -> list[torch.Tensor]:
    table = dataset.with_format("numpy", columns=list(columns))[:]  # one slice: fast for fixed-shape columns
    return [torch.from_numpy(np.ascontiguousarray(table[column])) for column in columns]


def _split_variant(variant: dict) -> tuple[dict, dict]:
    """(config overrides, training options) of a variant entry."""
    config = {k: v for k, v in variant.items() if k not in TRAINING_KEYS}
    return config, {k: variant[k] for k in TRAINING_KEYS if k in variant}


def _has_tau(variant: dict) -> bool:
    method = pact_zoo.HALTING_METHODS[variant.get("method", "pact")]
    return "tau" in method.knobs


def expand_sweep(variants: dict, taus: list | None) -> dict:
    """Every variant whose method has a ``tau`` knob, once per tau of the sweep (``name@tau=value``)."""
    if not taus:
        return dict(variants)
    out = {}
    for name, variant in variants.items():
        if _has_tau(variant) and "tau" not in variant:
            for tau in taus:
                out[f"{name}@tau={tau:g}"] = {**variant, "tau": float(tau)}
        else:
            out[name] = variant
    return out


def build(base: dict, config_overrides: dict, num_labels: int, input_size: int) -> PactLSTMForSequenceClassification:
    config = PactLSTMConfig(input_size=input_size, num_labels=num_labels, **{**base, **config_overrides})
    return PactLSTMForSequenceClassification(config)


def _layers_method(model: PactLSTMForSequenceClassification):
    stage = model.pact_lstm.layers[0].stage
    return stage.method if stage.adaptive else None


def train(model: PactLSTMForSequenceClassification, inputs: torch.Tensor, labels: torch.Tensor, recipe: dict,
          options: dict, seed: int, log_prefix: str) -> dict[str, Any]:
    """Adam on minibatches drawn with replacement. Loss = cross-entropy + ``pact_zoo.halting_loss(model,
    cost_scale=s)`` with s rising linearly 0 -> 1 over the first ``tau_warmup`` fraction of the updates (s = 1
    without warm-up: the model's own ``output.loss``). Returns wall time and the logged history."""
    steps = options.get("steps", recipe["steps"])
    warmup = max(0, round(options.get("tau_warmup", 0.0) * steps))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    model.train()
    start = time.perf_counter()
    sums = {"loss": 0.0, "task_loss": 0.0, "halting_loss": 0.0, "train_steps": 0.0}
    log_every = max(1, steps // recipe.get("num_logs", 10))
    history = []
    for step in range(1, steps + 1):
        index = torch.randint(len(labels), (recipe["batch_size"],), generator=generator)
        output = model(inputs_embeds=inputs[index])
        task_loss = F.cross_entropy(output.logits.float(), labels[index])
        scale = min(1.0, step / warmup) if warmup else 1.0
        halting = pact_zoo.halting_loss(model, cost_scale=scale)
        loss = task_loss + halting
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        optimizer.step()
        sums["loss"] += loss.item()
        sums["task_loss"] += task_loss.item()
        sums["halting_loss"] += float(halting)
        # expected / relaxed steps per time step (PACT: sum_n n w_n; ACT: N + R; none: executed)
        sums["train_steps"] += output.ponder_cost.detach().mean().item() / inputs.shape[1]
        if step % log_every == 0:
            entry = {"step": step, **{k: round(v / log_every, 4) for k, v in sums.items()}, "cost_scale": scale,
                     "seconds": round(time.perf_counter() - start, 1)}
            history.append(entry)
            print(f"{log_prefix} {entry}", flush=True)
            sums = dict.fromkeys(sums, 0.0)
    return {"train_seconds": time.perf_counter() - start, "updates": steps, "history": history}


@torch.no_grad()
def evaluate(model: PactLSTMForSequenceClassification, inputs: torch.Tensor, labels: torch.Tensor,
             batch_size: int, decision: str = "greedy", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Evaluation with halted rows leaving the batch: ``decision="greedy"`` is the deterministic rule (PACT: first
    ponder step with h >= threshold; ACT: cumulative sum), ``"sample"`` samples PACT's stops from q(z | x).
    Returns per-example correctness, ponder steps per time step (mean over time), seconds."""
    model.eval()
    pact_zoo.set_decision(model, decision)
    torch.manual_seed(seed)
    correct, steps = [], []
    start = time.perf_counter()
    try:
        for begin in range(0, len(labels), batch_size):
            output = model(inputs_embeds=inputs[begin:begin + batch_size])
            correct.append(output.logits.argmax(-1) == labels[begin:begin + batch_size])
            steps.append(output.units_executed.float().mean(1))  # mean over time steps
    finally:
        pact_zoo.set_decision(model, "greedy")
    return torch.cat(correct), torch.cat(steps), time.perf_counter() - start


def pearson(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Pearson correlation, None when either side is constant."""
    x, y = x.double().numpy(), y.double().numpy()
    if x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _warm_start(model: PactLSTMForSequenceClassification, source: Path) -> dict[str, list[str]]:
    """Copy the weights of a saved variant into ``model`` (same cell and classifier shapes); the halting head keeps
    its init. Returns the keys left at init."""
    state = PactLSTMForSequenceClassification.from_pretrained(source).state_dict()
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or any("halting_head" not in key for key in result.missing_keys):
        raise RuntimeError(f"warm start from {source} does not fit: {result}")
    return {"left_at_init": list(result.missing_keys)}


def _run_variants(task: str, recipe: dict, variants: dict, seed: int, output_dir: Path, num_labels: int,
                  input_size: int, train_xy, test_xy, extra) -> dict[str, Any]:
    x_train, y_train = train_xy
    x_test, y_test = test_xy
    results = {}
    for name, variant in variants.items():
        config_overrides, options = _split_variant(variant)
        torch.manual_seed(seed)
        model = build(recipe["model"], config_overrides, num_labels, input_size)
        warm = {}
        if "warm_start" in options:
            warm = _warm_start(model, output_dir / f"{task}-{options['warm_start']}")
        load_before = loadavg()
        log = train(model, x_train, y_train, recipe, options, seed, f"[{task}/{name}]")
        correct, steps, eval_seconds = evaluate(model, x_test, y_test, recipe["eval_batch_size"])
        entry = {"config": model.config.to_diff_dict(), "options": options, **warm, **log,
                 "eval_seconds": eval_seconds, "loadavg_before": load_before, "loadavg_after": loadavg(),
                 "accuracy": float(correct.float().mean()), "ponder_steps": float(steps.mean()),
                 "ponder_steps_std": float(steps.std())}
        method = _layers_method(model)
        if method is not None and method.stochastic:  # PACT: also the stops sampled from q(z | x)
            s_correct, s_steps, _ = evaluate(model, x_test, y_test, recipe["eval_batch_size"], "sample", seed)
            entry["sampled"] = {"accuracy": float(s_correct.float().mean()), "ponder_steps": float(s_steps.mean())}
            entry.update(extra(correct, steps, s_correct, s_steps))
        else:
            entry.update(extra(correct, steps, None, None))
        results[name] = entry
        model.save_pretrained(output_dir / f"{task}-{name}")
        print(f"[{task}/{name}] accuracy {entry['accuracy']:.4f} ponder {entry['ponder_steps']:.2f} "
              f"{ {k: v for k, v in entry.items() if k in ('pearson_steps_k', 'sampled')} } load {loadavg()}",
              flush=True)
    return results


def _selected(variants: dict, patterns: list[str] | None) -> dict:
    if not patterns:
        return variants
    return {n: v for n, v in variants.items() if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


def run_parity(recipe: dict, seed: int, output_dir: Path, patterns: list[str] | None) -> dict[str, Any]:
    data = recipe["data"]
    train_set = parity_dataset(data["train_samples"], vector_size=data["vector_size"], seed=seed,
                               placement=data["placement"])
    test_set = parity_dataset(data["test_samples"], vector_size=data["vector_size"], seed=seed + 1,
                              placement=data["placement"])
    x_train, y_train = _arrays(train_set, "inputs_embeds", "labels")
    x_test, y_test, k_test = _arrays(test_set, "inputs_embeds", "labels", "num_nonzero")
    ks = list(range(1, data["vector_size"] + 1))

    def per_k(correct, steps, s_correct, s_steps) -> dict[str, Any]:
        table = {}
        for k in ks:
            rows = k_test == k
            table[k] = {"n": int(rows.sum()), "accuracy": float(correct[rows].float().mean()),
                        "ponder_steps": float(steps[rows].mean())}
            if s_steps is not None:
                table[k]["sampled_accuracy"] = float(s_correct[rows].float().mean())
                table[k]["sampled_ponder_steps"] = float(s_steps[rows].mean())
        out = {"per_k": table, "pearson_steps_k": pearson(steps, k_test)}
        if s_steps is not None:
            out["sampled"] = {"accuracy": float(s_correct.float().mean()), "ponder_steps": float(s_steps.mean()),
                              "pearson_steps_k": pearson(s_steps, k_test)}
        return out

    variants = _selected(expand_sweep(recipe["variants"], recipe.get("tau_sweep")), patterns)
    return _run_variants("parity", recipe, variants, seed, output_dir, 2, data["vector_size"],
                         (x_train, y_train), (x_test, y_test), per_k)


def run_mnist1d(recipe: dict, seed: int, output_dir: Path, patterns: list[str] | None) -> dict[str, Any]:
    splits = mnist1d_splits(**recipe["data"])
    x_train, y_train = _arrays(splits["train"], "inputs_embeds", "labels")
    x_test, y_test = _arrays(splits["test"], "inputs_embeds", "labels")
    variants = _selected(recipe["variants"], patterns)
    return _run_variants("mnist1d", recipe, variants, seed, output_dir, 10, 1, (x_train, y_train),
                         (x_test, y_test), lambda *args: {})


def _fmt_r(value) -> str:
    return "n/a (constant)" if value is None else f"{value:+.2f}"


def _describe(entry: dict) -> str:
    config, options = entry["config"], entry.get("options", {})
    method = config.get("method", config.get("halting_method", "pact"))  # before the rename: halting_method
    knobs = config.get("halting_knobs") or {}
    parts = [method]
    if method != "none":
        parts += [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in knobs.items()
                  if k in ("tau", "entropy_weight", "act_eps")]
    parts.append(f"M={config.get('max_ponder_steps', '?')}")
    if "warm_start" in options:
        parts.append(f"warm start from {options['warm_start']}")
    if options.get("tau_warmup"):
        parts.append(f"tau warm-up {options['tau_warmup']:g} of the updates")
    return ", ".join(parts)


def _recipe_order(task_results: dict[str, Any], recipe: dict) -> dict[str, Any]:
    """The task's results in recipe order (a partial run appends its variants at the end of results.json)."""
    order = list(expand_sweep(recipe["variants"], recipe.get("tau_sweep")))
    return {n: task_results[n] for n in sorted(task_results, key=lambda n: order.index(n) if n in order else len(order))}


def markdown(results: dict[str, Any], recipe: dict) -> str:
    lines = []
    if "parity" in results:
        parity = _recipe_order(results["parity"], recipe["parity"])
        names = list(parity)
        first = parity[names[0]]["per_k"]
        lines += [f"### Parity, {recipe['parity']['data']['vector_size']}-element vectors "
                  f"(test set: {recipe['parity']['data']['test_samples']} vectors), deterministic evaluation", "",
                  "Ponder steps (mean over the test vectors with k non-zeros):", "",
                  "| k | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for k in first:
            cells = " | ".join(f"{parity[n]['per_k'][k]['ponder_steps']:.2f}" for n in names)
            lines.append(f"| {k} | {first[k]['n']} | {cells} |")
        lines.append("| **r(steps, k)** | | " + " | ".join(f"**{_fmt_r(parity[n]['pearson_steps_k'])}**"
                                                       for n in names) + " |")
        lines.append("| all | " + f"{sum(r['n'] for r in first.values())} | "
                     + " | ".join(f"{parity[n]['ponder_steps']:.2f}" for n in names) + " |")
        lines += ["", "Accuracy:", "", "| k | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for k in first:
            lines.append(f"| {k} | " + " | ".join(f"{parity[n]['per_k'][k]['accuracy']:.3f}" for n in names) + " |")
        lines.append("| **all** | " + " | ".join(f"**{parity[n]['accuracy']:.3f}**" for n in names) + " |")
        lines += ["", "| variant | settings | accuracy | steps | r(steps, k) | sampled stops: accuracy / steps / r "
                  "| train time (s) | load avg (before → after) |", "|---|---|---|---|---|---|---|---|"]
        for n in names:
            r = parity[n]
            sampled = r.get("sampled")
            s_cell = (f"{sampled['accuracy']:.3f} / {sampled['ponder_steps']:.2f} / "
                      f"{_fmt_r(sampled['pearson_steps_k'])}") if sampled else "—"
            lines.append(f"| {n} | {_describe(r)} | {r['accuracy']:.3f} | {r['ponder_steps']:.2f} | "
                         f"{_fmt_r(r['pearson_steps_k'])} | {s_cell} | {r['train_seconds']:.0f} | "
                         f"{r['loadavg_before']} → {r['loadavg_after']} |")
        lines.append("")
    if "mnist1d" in results:
        mnist = _recipe_order(results["mnist1d"], recipe["mnist1d"])
        lines += ["### MNIST-1D (40 steps of 1 feature; 4000 train / 1000 test)", "",
                  "| variant | settings | updates | test accuracy | ponder steps per time step (mean ± std over "
                  "sequences) | PACT sampled stops: acc / steps | final train task loss | train time (s) | "
                  "load avg (before → after) |", "|---|---|---|---|---|---|---|---|---|"]
        for n, r in mnist.items():
            sampled = r.get("sampled")
            s_cell = f"{sampled['accuracy']:.3f} / {sampled['ponder_steps']:.2f}" if sampled else "—"
            updates = r["updates"] + (mnist[r["options"]["warm_start"]]["updates"]
                                      if "warm_start" in r.get("options", {}) else 0)
            lines.append(f"| {n} | {_describe(r)} | {updates} | {r['accuracy']:.3f} | {r['ponder_steps']:.2f} ± "
                         f"{r['ponder_steps_std']:.2f} | {s_cell} | {r['history'][-1]['task_loss']:.3f} | "
                         f"{r['train_seconds']:.0f} | {r['loadavg_before']} → {r['loadavg_after']} |")
        lines.append("")
    return "\n".join(lines)


def plot_profile(parity: dict[str, Any], path: Path) -> None:
    """Graves 2016 Fig. 3 style: mean ponder steps vs number of non-zeros, one line per variant; accuracy beside."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_steps, ax_acc) = plt.subplots(1, 2, figsize=(13, 6.4), gridspec_kw={"width_ratios": [1.6, 1]})
    # line style per variant (method / entropy weight), colour per tau
    bases = list(dict.fromkeys(name.split("@")[0] for name in parity))
    base_styles = dict(zip(bases, [("-", "o"), ("-.", "s"), ("--", "^"), (":", "x"), ((0, (1, 3)), "d")] * 3))
    taus = sorted({r["config"].get("halting_knobs", {}).get("tau") for r in parity.values()} - {None})
    colours = {tau: f"C{i}" for i, tau in enumerate(taus)}
    for name, r in parity.items():
        ks = [int(k) for k in r["per_k"]]
        steps = [r["per_k"][k]["ponder_steps"] for k in r["per_k"]]
        acc = [r["per_k"][k]["accuracy"] for k in r["per_k"]]
        style, marker = base_styles[name.split("@")[0]]
        colour = colours.get((r["config"].get("halting_knobs") or {}).get("tau"), "grey")
        label = f"{name} (r={_fmt_r(r['pearson_steps_k'])}, acc {r['accuracy']:.3f})"
        ax_steps.plot(ks, steps, linestyle=style, marker=marker, markersize=3, color=colour, label=label)
        ax_acc.plot(ks, acc, linestyle=style, marker=marker, markersize=3, color=colour, label=name)
    ax_steps.set_xlabel("number of non-zero entries k")
    ax_steps.set_ylabel("ponder steps (test mean)")
    ax_steps.set_title("Parity: ponder steps vs difficulty (Graves 2016 Fig. 3 style)")
    ax_steps.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    ax_steps.grid(alpha=0.3)
    ax_acc.set_xlabel("number of non-zero entries k")
    ax_acc.set_ylabel("test accuracy")
    ax_acc.set_title("Parity: accuracy per k")
    ax_acc.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("hub_configs/pact_lstm.parity/experiment.yaml"))
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--only", choices=("parity", "mnist1d"), default=None)
    parser.add_argument("--variants", nargs="*", default=None,
                        help="run only the variants matching these glob patterns (e.g. 'pact*')")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every training budget (pilots)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="also write the parity profile plot here (e.g. docs/lstm_parity_profile.png)")
    args = parser.parse_args()
    if args.steps_scale <= 0:
        raise ValueError(f"--steps-scale must be > 0, got {args.steps_scale}")
    recipe = yaml.safe_load(args.config.read_text())
    output_dir = args.output_dir or Path(recipe["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe["threads"])
    runners = {"parity": run_parity, "mnist1d": run_mnist1d}
    results_path = output_dir / "results.json"
    results: dict[str, Any] = {}
    if (args.only or args.variants) and results_path.exists():  # a partial run updates the existing results
        results = json.loads(results_path.read_text())
    start = time.perf_counter()
    load_start = loadavg()
    for task, runner in runners.items():
        if args.only not in (None, task):
            continue
        task_recipe = copy.deepcopy(recipe[task])
        task_recipe["steps"] = max(1, int(task_recipe["steps"] * args.steps_scale))
        for variant in task_recipe["variants"].values():
            if "steps" in variant:
                variant["steps"] = max(1, int(variant["steps"] * args.steps_scale))
        # through JSON: per-k keys become strings, as in a results.json that a partial run merges into
        task_results = json.loads(json.dumps(runner(task_recipe, recipe["seed"], output_dir, args.variants)))
        results[task] = {**(results.get(task, {}) if args.variants else {}), **task_results}
    results.setdefault("runs", []).append({
        "argv": {k: str(v) for k, v in vars(args).items()}, "seconds": time.perf_counter() - start,
        "loadavg_start": load_start, "loadavg_end": loadavg(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version()})
    results_path.write_text(json.dumps(results, indent=1))
    table = markdown(results, recipe)
    (output_dir / "results.md").write_text(table)
    if "parity" in results:
        parity = _recipe_order(results["parity"], recipe["parity"])
        plot_profile(parity, output_dir / "parity_profile.png")
        if args.plot is not None:
            plot_profile(parity, args.plot)
    print(table)
    print(f"total {time.perf_counter() - start:.0f} s, load {load_start} -> {loadavg()}")


if __name__ == "__main__":
    main()
