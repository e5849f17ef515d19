"""Encoder speed on real review lengths: length-trimmed compact sub-batches vs untrimmed vs full depth vs
transformers' own ``BertForSequenceClassification``.

all-MiniLM-L6-v2 (a 6-layer BERT) as a PACT-Encoder with [CLS] pooling (so that at full depth it is exactly
``BertForSequenceClassification``'s computation: same weights, same pooler and classifier), fresh halting heads set
by :func:`pact_zoo.halting.synthesize_halting` on validation reviews (each review's depth spread over the layers,
about half of the FLOPs), Rotten Tomatoes test reviews at their natural lengths, each batch padded to its own
longest review. Timed round robin (:func:`pact_zoo.bench.time_round_robin`), medians of the repeats, with both clocks
of the benchmark: wall time at the default threads and process CPU time at one thread, the 1-minute load average
before and after each. Efficiency = (time / full-depth time) / (FLOPs / full-depth FLOPs), FLOPs from
``pact_zoo.halting_report`` (each review at its own length).

    PYTHONPATH=$PWD python scripts/encoder_speed.py --out out/encoder_speed

``--adapter FOLDER`` times a trained model instead (e.g. the shipped halting adapter, ``pact_zoo.shipped_adapter(
"minilm_rotten_tomatoes")``: PACT heads and exits over the unchanged backbone, masked-mean pooling): its accuracy and
FLOPs on the whole test split at each of ``--thresholds``, and its time on the timed reviews at each threshold, at
full depth, and as transformers' own ``BertModel`` with the adapter's pooling and classifier (the full-depth
computation through transformers' code: same logits, same accuracy), so that "faster at equal accuracy" is read off
one table.

    PYTHONPATH=$PWD python scripts/encoder_speed.py --adapter pact_zoo/adapters/minilm_rotten_tomatoes \
        --max-length 40 --out out/encoder_speed_adapter
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
from pathlib import Path
from typing import Iterator

import torch

import pact_zoo
from pact_zoo.bench import clock_settings, copy_weights, load_average, machine_info, threads, time_round_robin
from pact_zoo.bench.inputs import run_all
from pact_zoo.data.text import TextCollator, load_text_dataset, tokenize_split
from pact_zoo.fileio import atomic_write_json
from pact_zoo.halting import FlopsTally, synthesize_halting
from pact_zoo.hf import PactEncoderForSequenceClassification


def _batches(rows, collate, batch_size: int) -> list:
    """Tokenised rows in order, in padded batches of ``batch_size`` (each padded to its own longest row)."""
    return [collate([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
            for start in range(0, len(rows), batch_size)]


def _inputs(batch: dict) -> dict:
    """A batch without its labels: the model's keyword inputs."""
    return {k: v for k, v in batch.items() if k != "labels"}


def plain_hf_twin(model: PactEncoderForSequenceClassification):
    """transformers' own BertForSequenceClassification holding the same weights (the reference plain model)."""
    from transformers import BertForSequenceClassification

    twin = BertForSequenceClassification(model.config.encoder.__class__(**dict(
        model.config.encoder.to_dict(), num_labels=model.config.num_labels))).eval()
    state = {("bert." + k[len("pact_encoder.backbone."):] if k.startswith("pact_encoder.backbone.") else k): v
             for k, v in model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"model: not a BERT-layout PACT-Encoder (missing {missing}, unexpected {unexpected})")
    return twin


CONFIGS = ("trimmed", "untrimmed", "full_depth", "hf_bert")


def _runner(network: torch.nn.Module, batches: list):
    """A timed run: ``network`` over every batch (labels dropped: :func:`pact_zoo.bench.run_all`), without
    gradients."""
    def go() -> None:
        with torch.inference_mode():
            run_all(network, batches)
    return go


@contextlib.contextmanager
def _threshold(model: torch.nn.Module, threshold: float) -> Iterator[None]:
    """The model's threshold set for a timed run (it stays set after)."""
    pact_zoo.set_threshold(model, threshold)
    yield


@contextlib.contextmanager
def _trimmed(stage: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """The stage's padding trim switched for a timed run, and back on after."""
    stage.trim_padding = enabled
    try:
        yield
    finally:
        stage.trim_padding = True


class PooledBertTwin(torch.nn.Module):
    """transformers' ``BertModel`` (every layer) + a trained model's pooling and classifier: the full-depth
    computation of a PACT-Encoder with ``pooling`` other than [CLS], through transformers' code.
    ``forward(input_ids [B, T], attention_mask [B, T])`` returns an object with ``logits`` ``[B, num_labels]``."""

    def __init__(self, backbone: str, pooling: str, classifier: torch.nn.Module) -> None:
        super().__init__()
        from transformers import BertModel

        self.bert = BertModel.from_pretrained(backbone, add_pooling_layer=False).eval()
        self.pooling, self.classifier = pooling, classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import SequenceClassifierOutput

        from pact_zoo.hf.backbones import pool_tokens

        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        return SequenceClassifierOutput(logits=self.classifier(pool_tokens(hidden, attention_mask, self.pooling)))


def adapter_main(args: argparse.Namespace) -> None:
    """``--adapter``: a trained model's accuracy / FLOPs per threshold on the test split, and its time per threshold
    against full depth and transformers' BertModel with the same pooling and classifier."""
    load_start = load_average()
    model = pact_zoo.load_adapter(args.adapter, backbone=args.backbone).eval()
    twin = PooledBertTwin(args.backbone, model.config.resolved_pooling, model.classifier).eval()
    collate = TextCollator(model.tokenizer)
    test = load_text_dataset(args.dataset, eval_split="test")
    rows = tokenize_split(test.eval, model.tokenizer, test.text_column, test.label_column, args.max_length)
    all_batches = _batches(rows, collate, args.batch_size)
    timed_rows = rows.select(range(min(args.timing_samples, len(rows))))
    batches = _batches(timed_rows, collate, args.batch_size)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    results = {"platform": dict(machine_info("cpu"), load_average=load_start), "args": vars(args),
               "batch_lengths": [int(b["attention_mask"].sum(1).max()) for b in batches], "test_set": {}}
    with torch.inference_mode():
        with pact_zoo.full_depth(model):
            results["test_set"]["full_depth"] = _flops_and_accuracy(model, all_batches)
        correct = sum(int((twin(**_inputs(b)).logits.argmax(-1) == b["labels"]).sum()) for b in all_batches)
        results["test_set"]["hf_bert"] = {"accuracy": correct / len(rows), "flops_ratio": 1.0}
        with pact_zoo.full_depth(model):
            results["full_depth_vs_hf_max_abs_diff"] = max(
                float((model(**_inputs(b)).logits - twin(**_inputs(b)).logits).abs().max()) for b in batches)
        for threshold in thresholds:
            pact_zoo.set_threshold(model, threshold)
            results["test_set"][f"threshold {threshold:g}"] = _flops_and_accuracy(model, all_batches)
            results[f"timed_flops_ratio {threshold:g}"] = _flops_and_accuracy(model, batches)["flops_ratio"]

    runs = {f"threshold {t:g}": _runner(model, batches) for t in thresholds}
    runs.update(full_depth=_runner(model, batches), hf_bert=_runner(twin, batches))
    contexts = {f"threshold {t:g}": (lambda t=t: _threshold(model, t)) for t in thresholds}
    contexts["full_depth"] = lambda: pact_zoo.full_depth(model)
    results["clocks"] = {}
    for clock, count in clock_settings(args.clock, torch.get_num_threads()):
        before = load_average()
        with threads(count):
            times = time_round_robin(runs, args.warmup, args.repeats, contexts=contexts, clock=clock)
        medians = {name: statistics.median(values) for name, values in times.items()}
        entry = {"threads": count, "times_s": times, "load_average_before": before,
                 "load_average_after": load_average(),
                 "ms_per_review": {n: 1e3 * t / len(timed_rows) for n, t in medians.items()},
                 "vs_hf_bert": {n: medians[n] / medians["hf_bert"] for n in medians}}
        results["clocks"][clock] = entry
        print(clock, count, "threads:", {n: round(v, 3) for n, v in entry["ms_per_review"].items()}, "vs BERT",
              {n: round(v, 3) for n, v in entry["vs_hf_bert"].items()}, "load", before[0], "->",
              entry["load_average_after"][0], flush=True)
    results["platform"]["load_average_end"] = load_average()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    print({k: v for k, v in results.items() if k not in ("clocks", "platform", "args")})


@torch.inference_mode()
def _flops_and_accuracy(model, batches) -> dict:
    tally, correct, count = FlopsTally(), 0, 0
    for batch in batches:
        logits = model(**_inputs(batch)).logits
        tally.add_report(pact_zoo.halting_report(model))
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        count += batch["labels"].numel()
    return {"flops_ratio": tally.ratio, "mean_flops": tally.flops_sum / count, "accuracy": correct / count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="data/all-MiniLM-L6-v2",
                        help="the backbone folder (pact-zoo data fetch minilm --dest data)")
    parser.add_argument("--dataset", default="parquet:data/rotten_tomatoes",
                        help="test and validation reviews (pact-zoo data fetch rotten_tomatoes --dest data)")
    parser.add_argument("--max-length", type=int, default=128, help="truncation (the reviews are shorter)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--timing-samples", type=int, default=256, help="first N test reviews timed")
    parser.add_argument("--head-samples", type=int, default=256, help="validation reviews the heads are set on")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--clock", default="both", help="both, wall or process (pact_zoo.bench clocks)")
    parser.add_argument("--out", default="out/encoder_speed")
    parser.add_argument("--adapter", default=None, help="a trained model or halting-adapter folder to time instead "
                                                        "of fresh synthetic heads (see the module docstring)")
    parser.add_argument("--thresholds", default="0.3,0.5,0.7", help="--adapter: thresholds to evaluate and time")
    args = parser.parse_args()
    if args.adapter is not None:
        adapter_main(args)
        return

    load_start = load_average()
    model = PactEncoderForSequenceClassification.from_backbone(args.backbone, num_labels=2, pooling="cls").eval()
    plain = PactEncoderForSequenceClassification.from_backbone(args.backbone, num_labels=2, pooling="cls",
                                                               method="none")
    copy_weights(model, plain)  # the backbone, pooler and classifier of the adaptive model, without its heads
    twin = plain_hf_twin(plain)
    del plain
    tokenizer = model.tokenizer
    collate = TextCollator(tokenizer)
    test = load_text_dataset(args.dataset, eval_split="test")
    rows = tokenize_split(test.eval, tokenizer, test.text_column, test.label_column, args.max_length)
    validation = load_text_dataset(args.dataset, eval_split="validation")
    head_rows = tokenize_split(validation.eval.select(range(args.head_samples)), tokenizer, validation.text_column,
                               validation.label_column, args.max_length)
    head_batch = _inputs(collate([head_rows[i] for i in range(len(head_rows))]))
    synthesize_halting(model, seed=0, input_shape=None, inputs=head_batch)
    stage = model.pact_encoder.stage

    timing_rows = rows.select(range(min(args.timing_samples, len(rows))))
    batches = _batches(timing_rows, collate, args.batch_size)
    lengths = [int(b["attention_mask"].sum(1).max()) for b in batches]
    results = {"platform": dict(machine_info("cpu"), load_average=load_start), "args": vars(args),
               "batch_lengths": lengths, "mean_review_tokens": float(sum(int(b["attention_mask"].sum()) for b in
                                                                           batches) / len(timing_rows))}
    results["flops"] = _flops_and_accuracy(model, batches)
    results["test_set"] = _flops_and_accuracy(model, _batches(rows, collate, args.batch_size))
    with torch.inference_mode():  # the full-depth model is transformers' computation
        batch = _inputs(batches[0])
        with pact_zoo.full_depth(model):
            ours = model(**batch).logits
        results["full_depth_vs_hf_max_abs_diff"] = float((ours - twin(**batch).logits).abs().max())
        stage.trim_padding = False
        untrimmed = model(**batch).logits
        stage.trim_padding = True
        results["trimmed_vs_untrimmed_max_abs_diff"] = float((model(**batch).logits - untrimmed).abs().max())

    runs = {"trimmed": _runner(model, batches), "untrimmed": _runner(model, batches),
            "full_depth": _runner(model, batches), "hf_bert": _runner(twin, batches)}
    contexts = {"trimmed": lambda: _trimmed(stage, True), "untrimmed": lambda: _trimmed(stage, False),
                "full_depth": lambda: pact_zoo.full_depth(model)}
    results["clocks"] = {}
    for clock, count in clock_settings(args.clock, torch.get_num_threads()):
        before = load_average()
        with threads(count):
            times = time_round_robin(runs, args.warmup, args.repeats, contexts=contexts, clock=clock)
        medians = {name: statistics.median(values) for name, values in times.items()}
        flops = results["flops"]["flops_ratio"]
        entry = {"threads": count, "times_s": times, "load_average_before": before,
                 "load_average_after": load_average(),
                 "ms_per_review": {n: 1e3 * t / len(timing_rows) for n, t in medians.items()},
                 "time_ratio": {n: medians[n] / medians["full_depth"] for n in medians},
                 "efficiency": {n: medians[n] / medians["full_depth"] / flops for n in ("trimmed", "untrimmed")},
                 "trimmed_vs_hf_bert": medians["trimmed"] / medians["hf_bert"]}
        results["clocks"][clock] = entry
        print(clock, count, "threads:", {n: round(v, 3) for n, v in entry["ms_per_review"].items()},
              "efficiency", {n: round(v, 3) for n, v in entry["efficiency"].items()},
              "trimmed/hf", round(entry["trimmed_vs_hf_bert"], 3), "load", before[0], "->",
              entry["load_average_after"][0], flush=True)
    results["platform"]["load_average_end"] = load_average()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results.json", results)
    print({k: v for k, v in results.items() if k not in ("clocks", "platform")})


if __name__ == "__main__":
    main()
