#!/usr/bin/env python
"""Accuracy against measured FLOPs of converted models on one test split: every method's threshold sweep, static
truncation, the source model, and ms per sample at several batch sizes. PACT-Encoder folders (text) and timm folders
of the mobile CNNs with ``halting_scope="network"`` (images, ``--image-size``) both work.

    python scripts/exit_experiment.py --source out/.../source/model --exits out/.../exits/exits/model \
        --adaptive pact=out/.../pact/halting/model act=... --dataset parquet:data/rotten_tomatoes --split test \
        --out hub_configs/pact_minilm.rotten_tomatoes/exits_results

The exit rules (confidence, entropy, patience) are evaluated on the ``--exits`` model (its exits are shared by the
rules: the rule is switched with ``convert_from``); every ``--adaptive`` model is evaluated under its own method.
FLOPs come from ``pact_zoo.halting_report`` (embeddings, the layers and heads that ran, the classifier; each review at
its own length) relative to the same reviews at full depth. Writes ``results.json`` and ``tradeoff.png``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pact_zoo.cli import run_command
from pact_zoo.fileio import atomic_write_json
from pact_zoo.halting import adaptive_stages, full_depth, set_threshold, truncated_depth
from pact_zoo.hf import PactEncoderForSequenceClassification
from pact_zoo.training.config import load_config
from pact_zoo.training.evaluate import depth_spread, standard_error
from pact_zoo.training.io import is_timm_folder, load_model_folder
from pact_zoo.training.loop import evaluate_model
from pact_zoo.training.tasks import ImageClassificationTask
from pact_zoo.training.text_task import TextClassificationTask

EXIT_RULES = ("confidence", "entropy", "patience")
#: threshold sweeps: each rule's range of budgets (entropy's certainty threshold reaches low budgets only below 0.5)
RULE_THRESHOLDS = {
    "confidence": (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0),
    "entropy": (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0),
    "patience": (0.2, 0.4, 0.6, 0.8, 1.0),  # L = 6: patience 1, 2, 3, 4, 5
}
LEARNED_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
PARTS = ("rules", "static", "adaptive", "timing", "table")
TIMING_BATCHES = (1, 8, 64)


def _loader(model, args):
    if is_timm_folder(args.source):
        config = load_config(None, dict(model=model.pretrained_cfg["architecture"], dataset=args.dataset,
                                        eval_split=args.split, max_eval_samples=args.max_samples,
                                        eval_batch_size=args.batch_size, image_size=args.image_size))
        task = ImageClassificationTask(config)
    else:
        config = load_config(None, dict(model="pact_encoder", pretrained_file="unused", dataset=args.dataset,
                                        eval_split=args.split, max_eval_samples=args.max_samples,
                                        eval_batch_size=args.batch_size,
                                        dataset_kwargs={"max_length": args.max_length}))
        task = TextClassificationTask(config)
    data = task.load_data(model)
    return task, DataLoader(data.eval, batch_size=args.batch_size, shuffle=False, collate_fn=data.collate_fn), data


def _load(folder: str):
    """A model folder in eval mode (timm or PACT-Encoder)."""
    if is_timm_folder(folder):
        return load_model_folder(folder).eval()
    return PactEncoderForSequenceClassification.from_pretrained(folder).eval()


def _with_rule(exits_folder: str, rule: str):
    """The model of ``exits_folder`` with its exits read by the early-exit ``rule``."""
    if not is_timm_folder(exits_folder):
        return PactEncoderForSequenceClassification.convert_from(exits_folder, method=rule).eval()
    import timm

    config = json.loads((Path(exits_folder) / "config.json").read_text())
    kwargs = {k: v for k, v in config.get("model_args", {}).items()
              if k in ("halting_scope", "halting_bias_init", "drop_rate")}
    return timm.create_model(config["architecture"], method=rule, num_classes=config["num_classes"], pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(Path(exits_folder) / "model.safetensors"),
                                                         num_classes=config["num_classes"]), **kwargs).eval()


def _num_units(model) -> int:
    return next(s for _, s in adaptive_stages(model)).num_units


def _point(model, task, loader, **extra) -> dict:
    """Accuracy, measured FLOPs ratio, mean layers and their spread over the split, in one pass."""
    metrics = evaluate_model(model, loader, task, keep_units=True)
    units, accuracy = metrics["units"], metrics["accuracy"]
    spread = depth_spread(units)
    histogram = torch.bincount(units[:, 0], minlength=_num_units(model) + 1)[1:].tolist()
    return dict(accuracy=accuracy, flops_ratio=metrics["flops_ratio"], mean_flops=metrics["mean_flops"],
                mean_layers=metrics["mean_units"][0], layers_std=spread["std"][0],
                away_from_mode=spread["away_from_mode"][0], layers_histogram=histogram,
                std_error=standard_error(accuracy, metrics["num_samples"]), **extra)


@torch.no_grad()
def _ms_per_sample(models: dict, task, data, batch_size: int, samples: int, repeats: int) -> dict:
    """Median over interleaved repeats of the wall time per sample of each model over the first ``samples`` reviews
    in batches of ``batch_size``."""
    loader = DataLoader(torch.utils.data.Subset(data.eval, range(samples)), batch_size=batch_size, shuffle=False,
                        collate_fn=data.collate_fn)
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in loader]
    times = {name: [] for name in models}
    for _ in range(repeats + 1):  # the first round warms up
        for name, model in models.items():
            start = time.perf_counter()
            for batch in batches:
                task.forward(model, batch)
            times[name].append((time.perf_counter() - start) / samples * 1e3)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def _plot(result: dict, path: Path, title: str) -> None:
    """Accuracy against measured FLOPs: the exit rules in black, PACT models in shades of blue, the other learned
    methods in colour, static truncations dashed, the source as a star with its standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rule_styles = {"confidence": ("-", "o"), "entropy": ("--", "v"), "patience": (":", "s")}
    pact = [name for name in result["curves"] if name.startswith("pact")]
    blues = plt.cm.viridis([i / max(1, len(pact) - 1) * 0.85 for i in range(len(pact))])
    others = iter(plt.cm.Set1.colors)
    fig, ax = plt.subplots(figsize=(10, 5))
    for name, points in result["curves"].items():
        points = sorted(points, key=lambda p: p["flops_ratio"])
        if name in rule_styles:
            line, marker = rule_styles[name]
            style = dict(color="black", ls=line, marker=marker, lw=2)
        elif name in pact:
            style = dict(color=blues[pact.index(name)], marker="o", lw=1.3)
        else:
            style = dict(color=next(others), marker="x", lw=1.3)
        ax.plot([p["flops_ratio"] for p in points], [100 * p["accuracy"] for p in points], ms=4, label=name, **style)
    for (name, points), color in zip(result["static"].items(), ("tab:red", "tab:purple")):
        ax.plot([p["flops_ratio"] for p in points], [100 * p["accuracy"] for p in points], ls="--", marker="s", ms=3,
                color=color, label=f"static truncation ({name})")
    source = result["source"]
    ax.errorbar([1.0], [100 * source["accuracy"]], yerr=[100 * source["std_error"]], fmt="k*", ms=10,
                label="source (plain fine-tune) ± s.e.")
    ax.set_xlabel("FLOPs / source model's FLOPs (measured)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    low = min(100 * p["accuracy"] for c in result["curves"].values() for p in c)
    ax.set_ylim(max(low - 1, 100 * source["accuracy"] - 12), 100 * source["accuracy"] + 2.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _row(name: str, rule: str, point: dict, source_accuracy: float) -> str:
    histogram = " / ".join(str(n) for n in point.get("layers_histogram", []))
    return (f"| {name} | {rule} | {100 * point['accuracy']:.2f} % | {100 * (point['accuracy'] - source_accuracy):+.2f} | "
            f"{point['flops_ratio']:.3f} | {point['mean_layers']:.2f} ± {point.get('layers_std', 0.0):.2f} | "
            f"{100 * point.get('away_from_mode', 0.0):.1f} % | {histogram} |")


def format_table(result: dict) -> str:
    """The results as a markdown table: every curve's points, static truncations, the source, and timing."""
    source = result["source"]
    lines = ["| model | rule | test acc. | vs source (points) | FLOPs ratio | layers mean ± std | away from mode | "
             "reviews at 1 / 2 / ... / L layers |", "|---|---|---|---|---|---|---|---|",
             _row("source (plain fine-tune)", "full depth", source, source["accuracy"])]
    for name, points in result.get("curves", {}).items():
        for point in sorted(points, key=lambda p: p["flops_ratio"]):
            threshold = point.get("threshold")
            lines.append(_row(name, "own rule" if threshold is None else f"threshold {threshold:g}", point,
                              source["accuracy"]))
    for name, point in result.get("full_depth", {}).items():
        lines.append(_row(name, "full depth", point, source["accuracy"]))
    for name, points in result.get("static", {}).items():
        for point in points:
            lines.append(_row(f"static ({name})", f"first {point['layers']} layers", point, source["accuracy"]))
    if "ms_per_sample" in result:
        batches = list(result["ms_per_sample"])
        lines += ["", "| model | " + " | ".join(f"ms / sample, b={b}" for b in batches) + " |",
                  "|---|" + "---|" * len(batches)]
        for name in result["ms_per_sample"][batches[0]]:
            lines.append(f"| {name} | " + " | ".join(f"{result['ms_per_sample'][b][name]:.2f}" for b in batches) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="the plain source model folder")
    parser.add_argument("--exits", required=True, help="the converted model with trained exits (any exit rule)")
    parser.add_argument("--adaptive", nargs="*", default=[], help="name=folder of models with learned halting")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--max-length", type=int, default=40, help="text: tokens per sample")
    parser.add_argument("--image-size", type=int, default=None, help="images: side in pixels (the recipe's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--timing-samples", type=int, default=128)
    parser.add_argument("--timing-repeats", type=int, default=5)
    parser.add_argument("--timing-thresholds", default="confidence=0.9",
                        help="comma-separated name=threshold operating points to time against the source")
    parser.add_argument("--rule-thresholds", nargs="*", default=[],
                        help="rule=t1,t2,... replacing a rule's default sweep (e.g. confidence=0.8,0.9)")
    parser.add_argument("--learned-thresholds", default=",".join(f"{t:g}" for t in LEARNED_THRESHOLDS),
                        help="comma-separated thresholds of the --adaptive models")
    parser.add_argument("--out", required=True, help="folder for results.json and tradeoff.png")
    parser.add_argument("--title", default="all-MiniLM-L6-v2 on Rotten Tomatoes")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help="what to (re)compute; the other parts are kept from an existing results.json in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rule_thresholds = dict(RULE_THRESHOLDS)
    for spec in args.rule_thresholds:
        rule, values = spec.split("=", 1)
        rule_thresholds[rule] = tuple(float(v) for v in values.split(","))
    learned_thresholds = tuple(float(v) for v in args.learned_thresholds.split(","))
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        raise ValueError(f"--parts must name some of {PARTS}, got {args.parts!r}")
    if parts == {"table"}:
        print(format_table(json.loads((out / "results.json").read_text())))
        return 0
    source = _load(args.source)
    task, loader, data = _loader(source, args)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    result = {"curves": {}, "static": {}, **previous, "split": args.split, "num_samples": len(data.eval),
              "threads": torch.get_num_threads()}
    if "source" not in result or "rules" in parts:
        result["source"] = _point(source, task, loader, folder=args.source)
    print(f"source: {result['source']['accuracy']:.4f}", flush=True)
    with_rules = {rule: _with_rule(args.exits, rule) for rule in EXIT_RULES}
    num_layers = _num_units(with_rules["confidence"])
    images = is_timm_folder(args.source)  # the source's stages differ from the exits': no source-classifier truncation
    for rule in EXIT_RULES if "rules" in parts else ():
        model = with_rules[rule]
        points = []
        for threshold in rule_thresholds[rule]:
            set_threshold(model, threshold)
            points.append(_point(model, task, loader, threshold=threshold))
            print(rule, threshold, f"{points[-1]['accuracy']:.4f} {points[-1]['flops_ratio']:.3f}", flush=True)
        result["curves"][rule] = points
    static = [("per-layer exits", with_rules["confidence"])] + ([] if images else [("source classifier", source)])
    for name, model in static if "static" in parts else ():
        points = []
        for depth in range(1, num_layers + 1):
            with truncated_depth(model, [depth]):
                points.append(_point(model, task, loader, layers=depth))
        result["static"][name] = points
        print(name, [f"{p['accuracy']:.4f}@{p['flops_ratio']:.3f}" for p in points], flush=True)
    adaptive = {}
    for spec in args.adaptive if "adaptive" in parts else ():
        name, folder = spec.split("=", 1)
        model = _load(folder)
        adaptive[name] = model
        stages = [s for _, s in adaptive_stages(model) if s.adaptive]
        own = stages[0].method.threshold if stages[0].method.has_threshold else None
        points = []
        for threshold in (learned_thresholds if own is not None else (None,)):
            if threshold is not None:
                set_threshold(model, threshold)
            points.append(_point(model, task, loader, threshold=threshold))
            print(name, threshold, f"{points[-1]['accuracy']:.4f} {points[-1]['flops_ratio']:.3f}", flush=True)
        if own is not None:
            set_threshold(model, own)
        with full_depth(model):
            result.setdefault("full_depth", {})[name] = _point(model, task, loader)
        result["curves"][name] = points
    if "timing" in parts:
        timed = {"source": source}
        folders = dict(spec.split("=", 1) for spec in args.adaptive)
        for spec in filter(None, args.timing_thresholds.split(",")):  # fresh instances: thresholds do not interfere
            name, threshold = spec.split("=")
            model = _with_rule(args.exits, name) if name in EXIT_RULES else _load(folders[name])
            set_threshold(model.eval(), float(threshold))
            timed[f"{name}@{threshold}"] = model
        result["ms_per_sample"] = {str(b): _ms_per_sample(timed, task, data, b, args.timing_samples,
                                                          args.timing_repeats)
                                   for b in TIMING_BATCHES}
        result["timing"] = dict(samples=args.timing_samples, repeats=args.timing_repeats,
                                threads=torch.get_num_threads(), load_average=list(os.getloadavg()))
        print(json.dumps(result["ms_per_sample"], indent=1), flush=True)
    atomic_write_json(out / "results.json", result)
    _plot(result, out / "tradeoff.png", args.title)
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
