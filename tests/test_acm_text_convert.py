"""ACM's three conversion phases on a text classifier through ``pact-zoo convert``: a tiny BERT fine-tuned as a plain
PACT-Encoder by the shared loop (masked mean pooling, as all-MiniLM-L6-v2), converted into ACM-BERT on a generated
parquet text dataset, offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed

import pact_zoo
from pact_zoo import acm
from pact_zoo.hf import AcmBertForSequenceClassification
from pact_zoo.training.config import load_config
from pact_zoo.training.io import load_model_folder, save_model_folder
from pact_zoo.training.tasks import build_task
from test_acm_convert import run_acm_conversion
from test_hf_pact_encoder import _text_folder, tiny_backbone, tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
ACM_KWARGS = dict(num_learners=4, method="acm")


def _common(data: Path) -> dict:
    return dict(dataset=f"parquet:{data}", dataset_kwargs={"max_length": 8}, epochs=1, batch_size=8,
                eval_batch_size=12, optimizer="adamw", schedule="constant", seed=0)


def _source(tmp_path: Path) -> tuple[str, Path]:
    """A plain PACT-Encoder fine-tune (``pact-zoo train``) of a tiny BERT with mean pooling, and the data folder."""
    from pact_zoo.training.loop import train

    backbone, data = _text_folder(tmp_path)
    train(load_config(None, dict(_common(data), model="pact_encoder", pretrained_file=str(backbone), lr=1e-3,
                                 model_kwargs={"method": "none", "pooling": "mean"},
                                 output_dir=str(tmp_path / "source"))))
    return str(tmp_path / "source" / "model"), data


def _batch(model, data: Path, source: str) -> dict:
    """The evaluation split as one batch, tokenised by the task (``labels`` dropped)."""
    config = load_config(None, dict(_common(data), model="acm_bert", pretrained_file=source))
    task_data = build_task(config).load_data(model)
    batch = task_data.collate_fn([task_data.eval[i] for i in range(len(task_data.eval))])
    return {key: value for key, value in batch.items() if key != "labels"}


def _weights(model: torch.nn.Module, params: list) -> dict:
    ids = {id(p) for p in params}
    return {n: p.detach().clone() for n, p in model.named_parameters() if id(p) in ids}


def test_convert_runs_the_acm_phases_on_a_text_classifier(tmp_path, reset_accelerate):
    source, data = _source(tmp_path)
    out, summary = run_acm_conversion(tmp_path, **_common(data), model="acm_bert", model_kwargs=ACM_KWARGS,
                                      source=source)

    original = load_model_folder(source).eval()
    set_seed(0)  # the first phase's model before training: same seed, same fresh gates
    task = build_task(load_config(None, dict(_common(data), model="acm_bert", model_kwargs=ACM_KWARGS,
                                             pretrained_file=source)))
    start = task.build_model(task.num_classes()).eval()
    phases = [load_model_folder(out / name / "model").eval() for name in summary["phases"]]
    assert all(isinstance(m, AcmBertForSequenceClassification) and m.tokenizer is not None for m in phases)
    assert load_model_folder(summary["model_dir"]).config.pooling == "mean"

    # at full width the conversion computes what the source computes
    batch = _batch(start, data, source)
    with torch.no_grad(), pact_zoo.full_depth(start):
        torch.testing.assert_close(start(**batch).logits, original(**batch).logits, rtol=0, atol=1e-5)

    # phase 1 trains the learners only, phase 2 the gates only, phase 3 both
    learners = [_weights(m, acm.learner_parameters(m)) for m in [start] + phases]
    gates = [_weights(m, acm.gate_parameters(m)) for m in [start] + phases]
    changed = [[any(not torch.equal(w[i][n], w[i + 1][n]) for n in w[i]) for i in range(3)]
               for w in (learners, gates)]
    assert changed == [[True, False, True], [False, True, True]]
    # phase 1 lowered the prefixes' error against the source's FFNs (the sources are the PACT-Encoder's modules)
    before = acm.prefix_errors(start, original, [batch])
    after = acm.prefix_errors(phases[0], original, [batch])
    assert sum(after[1:-1]) < sum(before[1:-1])
    metrics = [json.loads(line) for line in (out / "end_to_end" / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 < metrics[-1]["flops_ratio"] < 1.0


def test_acm_bert_folder_reloads_with_its_sources_pooling_and_tokenizer(tmp_path):
    from pact_zoo.hf import PactEncoderForSequenceClassification

    source = PactEncoderForSequenceClassification.from_backbone(tiny_backbone("bert"), num_labels=3, method="none",
                                                                pooling="max", tokenizer=tiny_tokenizer()).eval()
    model = acm.acmize(source, **ACM_KWARGS).eval()
    with torch.no_grad():
        for param in acm.gate_parameters(model):
            param.add_(torch.randn_like(param))
    save_model_folder(model, tmp_path / "acm")
    loaded = load_model_folder(tmp_path / "acm").eval()
    assert [m.source for _, m in acm.acm_modules(loaded)] == [m.source for _, m in acm.acm_modules(model)]
    assert acm.acm_modules(loaded)[0][1].source[0] == "pact_encoder.backbone.encoder.layer.0.intermediate"
    assert loaded.config.pooling == "max" and loaded.tokenizer.get_vocab() == source.tokenizer.get_vocab()
    batch = loaded.tokenizer(["the film was good", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch).logits)


def test_acmize_refuses_a_pact_encoder_that_halts():
    from pact_zoo.hf import PactEncoderForSequenceClassification

    model = PactEncoderForSequenceClassification.from_backbone(tiny_backbone("bert"), num_labels=2, method="pact")
    with pytest.raises(ValueError, match="plain PACT-Encoder classifier over a BERT backbone"):
        acm.acmize(model, **ACM_KWARGS)


def test_acm_minilm_recipes_load():
    from pact_zoo.training.compare import load_comparison
    from pact_zoo.training.convert import load_conversion

    folder = REPO / "hub_configs" / "acm_minilm.rotten_tomatoes"
    phases = load_conversion(str(folder / "convert.yaml")).phases
    assert [config.objective for _, config in phases] == ["module_distillation", "gate_labels", "task"]
    assert {config.model for _, config in phases} == {"acm_bert"}
    assert all(config.teacher == phases[0][1].pretrained_file for _, config in phases)
    comparison = load_comparison(str(folder / "compare.yaml"))
    names = [e.name for e in comparison.entries]
    assert names[0] == "source" and {"minilm-acm-acm_budget0.25", "minilm-condnet-acm_budget0.75"} <= set(names)
    assert comparison.timing["batch_sizes"] == [1, 8, 64]
    assert [e.budgets for e in comparison.entries if e.budgets] == [[0.833, 0.667, 0.5]]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_acm_bert_counts_the_flops_of_its_source(pooling):
    """At full width ACM-BERT reports per sample the FLOPs its PACT-Encoder source reports (each review at its own
    length, padding excluded, attention's matmuls included), and its gated forward fewer."""
    from pact_zoo.hf import PactEncoderForSequenceClassification
    from test_hf_pact_encoder import padded_batch

    source = PactEncoderForSequenceClassification.from_backbone(tiny_backbone("bert"), num_labels=2, method="none",
                                                                pooling=pooling).eval()
    model = acm.acmize(source, **ACM_KWARGS).eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        source(input_ids=ids, attention_mask=mask)
        expected = pact_zoo.halting_report(source).flops
        with pact_zoo.full_depth(model):
            model(input_ids=ids, attention_mask=mask)
            full = pact_zoo.halting_report(model)
        pact_zoo.set_threshold(model, 0.1)
        model(input_ids=ids, attention_mask=mask)
        gated = pact_zoo.halting_report(model)
    assert torch.equal(full.flops, expected) and torch.equal(full.sample_full_flops, expected)
    assert torch.equal(gated.sample_full_flops, expected) and (gated.flops < expected).all()
