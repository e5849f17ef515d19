"""MiniLM / Rotten Tomatoes: accuracy, FLOPs and measured wall time of PACT-Encoder models.

Reads the model folders written by the three recipes of ``hub_configs/pact_minilm.rotten_tomatoes/`` (PACT, ACT and
plain fine-tuning, ``pact-zoo train``) and, on the test split:

* accuracy, FLOPs per sample (``pact_zoo.halting_report``: each sample at its own length, padding excluded) and the
  depth spread at each model's own halting rule, and the accuracy at full depth;
* wall time per sample at batch 1, 8 and 64 of the adaptive models (compact eval: halted samples leave the batch),
  the same models at full depth, the plain fine-tuned model and the plain weights in transformers' own
  ``BertForSequenceClassification``, interleaved round-robin (``pact_zoo.bench.time_round_robin``), median of
  the repeats, on the same ``--timing-samples`` test reviews padded per batch to the batch's longest.

Output: ``<out>/results.json`` and ``<out>/results.md`` (written atomically).

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 python scripts/encoder_experiment.py --runs out/pact_minilm.rotten_tomatoes
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import torch

import pact_zoo
from pact_zoo.bench import time_round_robin
from pact_zoo.data.text import TextCollator, load_text_dataset, tokenize_split
from pact_zoo.fileio import atomic_write_json, atomic_write_text
from pact_zoo.halting import FlopsTally, truncated_depth
from pact_zoo.hf import PactEncoderForSequenceClassification

VARIANTS = ("pact", "act", "plain")
#: PACT thresholds tried on validation rows for the FLOPs budget (PACT's eval rule: stop at the first h >= threshold).
THRESHOLDS = (0.5, 0.475, 0.45, 0.425, 0.4, 0.3, 0.2, 0.1, 0.05)
BATCH_SIZES = (1, 8, 64)


def _batches(rows, collate, batch_size):
    return [collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            for start in range(0, len(rows), batch_size)]


def _inputs(batch):
    return {k: v for k, v in batch.items() if k != "labels"}


@torch.no_grad()
def evaluate(model, batches, full: bool = True) -> dict:
    """Accuracy, FLOPs ratio and depth of the model's own rule, and (``full``) the accuracy at full depth."""
    correct, tally, layers = 0, FlopsTally(), []
    count = 0
    for batch in batches:
        logits = model(**_inputs(batch)).logits
        report = pact_zoo.halting_report(model)
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        count += batch["labels"].numel()
        tally.add_report(report)
        layers.append(report.units_executed[:, 0])
    layers = torch.cat(layers)
    full_correct = None
    if full:
        with pact_zoo.full_depth(model):
            full_correct = sum(int((model(**_inputs(b)).logits.argmax(-1) == b["labels"]).sum()) for b in batches)
    histogram = torch.bincount(layers, minlength=model.config.num_hidden_layers + 1)[1:].tolist()
    return {"accuracy": correct / count, "accuracy_full_depth": full_correct / count if full else None,
            "away_from_mode": 1.0 - max(histogram) / count,  # share of samples not at the most common depth
            "mean_flops": tally.flops_sum / count, "mean_full_flops": tally.full_sum / count,
            "flops_ratio": tally.ratio,
            "mean_layers": float(layers.double().mean()), "std_layers": float(layers.double().std(unbiased=False)),
            "layers_histogram": histogram, "num_samples": count}


def plain_hf_twin(model: PactEncoderForSequenceClassification):
    """transformers' own BertForSequenceClassification holding the same weights (the reference plain model)."""
    from transformers import BertForSequenceClassification

    twin = BertForSequenceClassification(model.config.encoder.__class__(**dict(
        model.config.encoder.to_dict(), num_labels=model.config.num_labels))).eval()
    state = {("bert." + k[len("pact_encoder.backbone."):] if k.startswith("pact_encoder.backbone.") else k): v
             for k, v in model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return twin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="out/pact_minilm.rotten_tomatoes", help="folder with pact/ act/ plain/ runs")
    parser.add_argument("--dataset", default="parquet:data/rotten_tomatoes",
                        help="text dataset (pact-zoo data fetch rotten_tomatoes --dest data writes the default)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-length", type=int, default=40)
    parser.add_argument("--max-eval-samples", type=int, default=None, help="first N test rows (default: all)")
    parser.add_argument("--timing-samples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--flops-budget", type=float, default=0.75, help="FLOPs ratio the calibrated PACT meets")
    parser.add_argument("--calibration-samples", type=int, default=256, help="validation rows for the calibration")
    parser.add_argument("--out", default=None, help="output folder (default: --runs)")
    args = parser.parse_args()
    out = Path(args.out or args.runs)

    models = {v: PactEncoderForSequenceClassification.from_pretrained(Path(args.runs) / v / "model").eval()
              for v in VARIANTS}
    tokenizer = models["plain"].tokenizer
    splits = load_text_dataset(args.dataset, eval_split=args.split)
    evaluation = splits.eval.select(range(args.max_eval_samples)) if args.max_eval_samples else splits.eval
    rows = tokenize_split(evaluation, tokenizer, splits.text_column, splits.label_column, args.max_length)
    collate = TextCollator(tokenizer)
    eval_batches = _batches(rows, collate, 64)

    # PACT's speed knob: the largest threshold whose FLOPs ratio on validation rows meets --flops-budget
    validation = tokenize_split(load_text_dataset(args.dataset, eval_split="validation").eval.select(
        range(args.calibration_samples)), tokenizer, splits.text_column, splits.label_column, args.max_length)
    calibration_batches = _batches(validation, collate, 64)
    pact, own_threshold = models["pact"], models["pact"].config.halting_knobs["threshold"]
    calibration = {}
    for threshold in THRESHOLDS:
        pact_zoo.set_threshold(pact, threshold)
        calibration[threshold] = evaluate(pact, calibration_batches, full=False)["flops_ratio"]
    meeting = [t for t in THRESHOLDS if calibration[t] <= args.flops_budget]
    calibrated = max(meeting) if meeting else min(THRESHOLDS)
    pact_zoo.set_threshold(pact, own_threshold)
    calibrated_model = PactEncoderForSequenceClassification.from_pretrained(Path(args.runs) / "pact" / "model").eval()
    pact_zoo.set_threshold(calibrated_model, calibrated)
    models["pact_calibrated"] = calibrated_model

    results = {"threads": torch.get_num_threads(), "load_average_start": os.getloadavg(),
               "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "split": args.split, "max_length": args.max_length, "models": {},
               "calibration": {"flops_budget": args.flops_budget, "validation_samples": args.calibration_samples,
                               "validation_flops_ratio": calibration, "threshold": calibrated}}
    for name, model in models.items():
        results["models"][name] = evaluate(model, eval_batches, full=name in ("pact", "act"))
        print(name, json.dumps(results["models"][name]))

    # static baselines of (about) equal FLOPs: the first k layers of every review, k = an adaptive model's rounded
    # mean depth; the plain fine-tune (never trained to exit early) and the anytime-trained PACT model
    depths = sorted({min(max(round(results["models"][n]["mean_layers"]), 1), models["plain"].config.num_hidden_layers)
                     for n in ("pact", "pact_calibrated", "act")})
    results["static"] = {}
    for source in ("plain", "pact"):
        for depth in depths:
            with truncated_depth(models[source], [depth]):
                results["static"][f"{source}@{depth}"] = evaluate(models[source], eval_batches, full=False)
            print("static", source, depth, json.dumps(results["static"][f"{source}@{depth}"]))

    timing_rows = rows.select(range(args.timing_samples))
    twin = plain_hf_twin(models["plain"])
    results["timing"] = {}
    for batch_size in BATCH_SIZES:
        batches = _batches(timing_rows, collate, batch_size)

        def run(model, batches=batches):
            def go():
                with torch.no_grad():
                    for batch in batches:
                        model(**_inputs(batch))
            return go

        runs = {"pact": run(models["pact"]), "pact_calibrated": run(models["pact_calibrated"]),
                "pact_full_depth": run(models["pact"]), "act": run(models["act"]),
                "plain": run(models["plain"]), "plain_hf_bert": run(twin)}
        # ACT at full depth runs the same layers as PACT at full depth (and as plain): not timed twice
        contexts = {"pact_full_depth": lambda: pact_zoo.full_depth(models["pact"])}
        times = time_round_robin(runs, warmup=args.warmup, repeats=args.repeats, contexts=contexts)
        results["timing"][str(batch_size)] = {
            name: {"ms_per_sample": 1000 * statistics.median(values) / args.timing_samples,
                   "repeats_ms_per_sample": [1000 * v / args.timing_samples for v in values]}
            for name, values in times.items()}
        print(batch_size, {n: round(v["ms_per_sample"], 2) for n, v in results["timing"][str(batch_size)].items()})
    results["load_average_end"] = os.getloadavg()
    results["timing_samples"] = args.timing_samples  # a batch size above it runs them as one batch
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", format_markdown(results))
    print(format_markdown(results))


def format_markdown(results: dict) -> str:
    """The results table (one row per model and depth rule)."""
    timing = results["timing"]
    lines = ["| model | rule | test acc. | FLOPs / sample | FLOPs ratio | layers mean ± std (histogram 1..6) | "
             "away from mode | ms/sample b=1 | b=8 | b=64 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("pact", "pact_calibrated", "act", "plain"):
        m = results["models"][name]
        ms = [timing[str(b)][name]["ms_per_sample"] for b in BATCH_SIZES]
        rule = (f"threshold {results['calibration']['threshold']} (validation FLOPs <= "
                f"{results['calibration']['flops_budget']})" if name == "pact_calibrated" else "own rule")
        lines.append(f"| {name} | {rule} | {100 * m['accuracy']:.2f} % | {m['mean_flops'] / 1e6:.1f} M | "
                     f"{m['flops_ratio']:.3f} | {m['mean_layers']:.2f} ± {m['std_layers']:.2f} "
                     f"({', '.join(map(str, m['layers_histogram']))}) | {100 * m['away_from_mode']:.1f} % | "
                     + " | ".join(f"{v:.2f}" for v in ms) + " |")
        if name in ("pact", "act"):
            ms = [timing[str(b)]["pact_full_depth"]["ms_per_sample"] for b in BATCH_SIZES]
            lines.append(f"| {name} | full depth | {100 * m['accuracy_full_depth']:.2f} % | "
                         f"{m['mean_full_flops'] / 1e6:.1f} M | 1.000 | 6 | 0 % | "
                         + " | ".join(f"{v:.2f}" for v in ms) + " |")
    ms = [timing[str(b)]["plain_hf_bert"]["ms_per_sample"] for b in BATCH_SIZES]
    lines.append("| plain weights in transformers' BertForSequenceClassification | full depth | (= plain) | | | 6 "
                 "| 0 % | "
                 + " | ".join(f"{v:.2f}" for v in ms) + " |")
    for name, m in results.get("static", {}).items():
        source, depth = name.split("@")
        lines.append(f"| static: {source}, first {depth} layers | truncated | {100 * m['accuracy']:.2f} % | "
                     f"{m['mean_flops'] / 1e6:.1f} M | {m['flops_ratio']:.3f} | {depth} | 0 % | (not timed) | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
