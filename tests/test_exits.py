"""Exits that read what the backbone was trained to produce: pooling, per-layer exit classifiers, the early-exit
rules (confidence, entropy, patience), distillation and the frozen-backbone conversion."""
import json
import math

import pytest
import timm
import torch

import pact_zoo
from pact_zoo.halting import ConfidenceExit, EntropyExit, PatienceExit, exit_certainty, truncated_depth
from pact_zoo.hf import PactEncoderForSequenceClassification, PactEncoderForTokenClassification
from pact_zoo.hf.modeling_pact_encoder import pool_tokens, sentence_transformers_pooling
from pact_zoo.training.config import load_config
from pact_zoo.training.distill import distillation_loss, freeze_source_weights

from test_hf_pact_encoder import LABELS, LAYERS, _text_folder, padded_batch, tiny_backbone

EXIT_RULES = ("confidence", "entropy", "patience")


def exits_model(method="confidence", pooling="mean", exit_classifiers="per_layer", weight_std=0.5, **kwargs):
    torch.manual_seed(0)
    model = PactEncoderForSequenceClassification.from_backbone(
        tiny_backbone("bert"), num_labels=LABELS, method=method, pooling=pooling,
        exit_classifiers=exit_classifiers, **kwargs)
    with torch.no_grad():  # exits of different confidence per row and layer
        torch.manual_seed(1)
        for linear in [*(model.exit_classifiers or []), model.classifier]:
            linear.weight.normal_(0.0, weight_std)
    return model.eval()


# -- the rules ----------------------------------------------------------------------------------------------------------
def test_rules_on_hand_made_exits():
    # 3 rows, 3 heads (L = 4), 2 classes: logits per layer
    logits = torch.tensor([[[4.0, 0.0], [4.0, 0.0], [4.0, 0.0]],     # confident and stable from layer 1
                           [[0.1, 0.0], [0.0, 0.1], [3.0, 0.0]],     # flips, confident at layer 3
                           [[0.2, 0.0], [0.3, 0.0], [0.1, 0.0]]])    # stable but never confident
    confidence = ConfidenceExit(threshold=0.9).for_stage(4).rule_mixture(logits)
    assert confidence.units_executed.tolist() == [1, 3, 4]
    patience = PatienceExit(threshold=0.5).for_stage(4)  # k = ceil(0.5 * 3) = 2 agreements
    assert patience.patience == 2 and patience.rule_mixture(logits).units_executed.tolist() == [3, 4, 3]
    assert PatienceExit(threshold=1.0).for_stage(4).rule_mixture(logits).units_executed.tolist() == [4, 4, 4]
    assert PatienceExit(threshold=0.1).for_stage(4).rule_mixture(logits).units_executed.tolist() == [2, 4, 2]
    certain = exit_certainty(torch.tensor([[0.0, 0.0], [50.0, 0.0]]))
    torch.testing.assert_close(certain, torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)
    entropy = EntropyExit(threshold=0.5).for_stage(4).rule_mixture(logits)
    # certainty of [4, 0]: 1 - H(0.982) / log 2 = 0.87 >= 0.5; of [3, 0]: 0.77
    assert entropy.units_executed.tolist() == [1, 3, 4]
    for rule in (ConfidenceExit, EntropyExit, PatienceExit):  # threshold 1.0 runs every unit
        assert rule(threshold=1.0).for_stage(4).rule_mixture(logits).units_executed.tolist() == [4, 4, 4]


def test_exit_rules_bind_to_their_stage_depth():
    rule = PatienceExit(threshold=0.5)
    bound = rule.for_stage(7)
    assert bound is not rule and bound.num_units == 7 and bound.patience == 3 and bound.for_stage(7) is bound


@pytest.mark.parametrize("name,kwargs", [("pact_resnet32", {}), ("pact_mobilenetv2_100", {"halting_scope": "stage"})])
def test_families_without_exits_refuse_exit_rules(name, kwargs):
    with pytest.raises(ValueError, match="decides from exit classifiers"):
        timm.create_model(name, method="confidence", num_classes=3, **kwargs)


def test_vit_exits_are_its_own_head():
    """ViT: the exit after block n is the model's norm + head on block n's tokens; the rule stops where it says."""
    torch.manual_seed(0)
    model = timm.create_model("pact_vit_tiny_patch16_224", method="confidence", num_classes=3, img_size=32, depth=4,
                              threshold=0.8).eval()
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.3)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        depth = pact_zoo.halting_report(model).units_executed[:, 0]
        per_block = []
        for n in range(1, 5):
            with truncated_depth(model, [n]):
                per_block.append(model(x))
    per_block = torch.stack(per_block, 1)
    expected = model.blocks.method.rule_mixture(per_block[:, :-1]).units_executed
    assert torch.equal(depth, expected) and len(set(depth.tolist())) > 1, depth
    torch.testing.assert_close(logits, per_block[torch.arange(6), depth - 1], atol=1e-5, rtol=0)
    assert not any(k.startswith("blocks.heads") for k in model.state_dict())


def test_vit_per_layer_exits_start_as_its_head_and_save_their_own_weights(tmp_path):
    """exit_classifiers='per_layer': each block but the last has its own norm + classifier (initialised as the
    model's), saved under blocks.exits.*; the model's head stays the last exit; full depth is the plain ViT."""
    torch.manual_seed(0)
    kwargs = dict(num_classes=3, img_size=32, depth=4)
    model = timm.create_model("pact_vit_tiny_patch16_224", method="entropy", exit_classifiers="per_layer",
                              **kwargs).eval()
    shared = timm.create_model("pact_vit_tiny_patch16_224", method="entropy", **kwargs).eval()
    shared.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("blocks.exits.")})
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        for n in (1, 2, 4):  # untrained per-layer exits equal the shared head
            with truncated_depth(model, [n]), truncated_depth(shared, [n]):
                torch.testing.assert_close(model(x), shared(x), atol=1e-5, rtol=0)
        model.blocks.exits[0].head.weight.add_(1.0)  # now exit 0 is its own
        with truncated_depth(model, [1]):
            own = model(x)
        torch.testing.assert_close(own, model.blocks.exits[0](model.blocks[0](model._embed(x))))
        with pact_zoo.full_depth(model):
            torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
    keys = [k for k in model.state_dict() if k.startswith("blocks.exits.")]
    assert sorted({k.split(".")[2] for k in keys}) == ["0", "1", "2"] and not any("heads" in k for k in keys)
    model.reset_classifier(7)
    assert model.blocks.exits[1].head.out_features == 7
    with pytest.raises(ValueError, match="exit_classifiers must be one of"):
        timm.create_model("pact_vit_tiny_patch16_224", exit_classifiers="every", **kwargs)


def test_token_classification_refuses_exits():
    with pytest.raises(ValueError, match="exit classifiers are built for sequence classification"):
        PactEncoderForTokenClassification.from_backbone(tiny_backbone("bert"), num_labels=3,
                                                       method="confidence")


@pytest.mark.parametrize("method, threshold", [("confidence", 0.9), ("entropy", 0.6), ("patience", 0.5)])
def test_rules_stop_where_their_exit_says(method, threshold):
    model = exits_model(method)
    ids, mask = padded_batch()
    pact_zoo.set_threshold(model, threshold)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        layers = pact_zoo.halting_report(model).units_executed[:, 0]
        per_layer = []
        for depth in range(1, LAYERS + 1):
            with truncated_depth(model, [depth]):
                per_layer.append(model(input_ids=ids, attention_mask=mask).logits)
    per_layer = torch.stack(per_layer, 1)  # [B, L, C]: every exit's logits
    expected = model.pact_encoder.stage.method.rule_mixture(per_layer[:, :-1]).units_executed
    assert torch.equal(layers, expected) and (method == "patience" or len(set(layers.tolist())) > 1), layers
    rows = torch.arange(len(layers))
    torch.testing.assert_close(logits, per_layer[rows, layers - 1], atol=1e-6, rtol=0)


def test_calibration_and_report_work_on_exit_rules():
    model = exits_model("confidence")
    ids, mask = padded_batch()
    batches = [{"input_ids": ids, "attention_mask": mask}]
    threshold, ratio = pact_zoo.calibrate_threshold(model, batches, 0.8)
    assert 0 < threshold <= 1 and ratio <= 0.8 + 0.005
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    report = pact_zoo.halting_report(model)
    # exits that ran are counted (heads_ran): more than the units alone
    with torch.no_grad(), pact_zoo.full_depth(model):
        model(input_ids=ids, attention_mask=mask)
    assert report.flops_ratio == pytest.approx(ratio, abs=1e-9)


# -- pooling ------------------------------------------------------------------------------------------------------------
def test_pooling_is_masked():
    hidden = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    torch.testing.assert_close(pool_tokens(hidden, mask, "mean")[0], hidden[0, :2].mean(0))
    torch.testing.assert_close(pool_tokens(hidden, mask, "max")[0], hidden[0, :2].amax(0))
    assert torch.equal(pool_tokens(hidden, mask, "cls"), hidden[:, 0])


def test_mean_pooling_reads_padding_on_either_side():
    model = exits_model("none")
    ids, mask = padded_batch(lengths=(5, 3))
    left_ids, left_mask = ids.clone(), mask.clone()
    left_ids[1] = torch.cat([ids[1, 3:], ids[1, :3]])  # the 3 real tokens moved to the right end
    left_mask[1] = torch.cat([mask[1, 3:], mask[1, :3]])
    position_ids = torch.zeros_like(ids)
    position_ids[0] = torch.arange(5)
    position_ids[1, 2:] = torch.arange(3)
    with torch.no_grad():
        right = model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(5).expand(2, 5)).logits
        left = model(input_ids=left_ids, attention_mask=left_mask, position_ids=position_ids).logits
    torch.testing.assert_close(left, right, atol=1e-5, rtol=0)


def test_auto_pooling_reads_a_sentence_transformers_folder(tmp_path):
    backbone, _ = _text_folder(tmp_path)
    assert sentence_transformers_pooling(backbone) is None
    assert PactEncoderForSequenceClassification.from_backbone(str(backbone), num_labels=2).config.pooling == "cls"
    (backbone / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (backbone / "1_Pooling").mkdir()
    (backbone / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    model = PactEncoderForSequenceClassification.from_backbone(str(backbone), num_labels=2)
    assert model.config.pooling == "mean" and model.pooler is None
    assert not any(key.startswith("pact_encoder.backbone.pooler") for key in model.state_dict())
    explicit = PactEncoderForSequenceClassification.from_backbone(str(backbone), num_labels=2, pooling="cls")
    assert explicit.config.pooling == "cls"


# -- per-layer exits in training ------------------------------------------------------------------------------------------
def test_pact_training_mixes_the_exits_logits():
    model = exits_model("pact", halting_bias_init=0.0).train()
    ids, mask = padded_batch()
    torch.manual_seed(0)
    logits = model(input_ids=ids, attention_mask=mask).logits
    record = model.pact_encoder.stage.record
    exits = torch.stack([model.exit_logits(n + 1, state, mask) for n, state in enumerate(record.unit_outputs)], 1)
    torch.testing.assert_close(logits, (exits * record.weights.unsqueeze(-1)).sum(1), atol=1e-5, rtol=0)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.exit_classifiers.parameters())


def test_per_layer_exits_refuse_accumulating_methods():
    with pytest.raises(ValueError, match="accumulates"):
        exits_model("act")


# -- distillation and frozen conversion -------------------------------------------------------------------------------------
def test_distillation_loss():
    teacher = torch.tensor([[2.0, 0.0, -1.0]])
    student = torch.zeros(1, 3, requires_grad=True)
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    loss = distillation_loss(student, teacher, 2.0)
    probs_t = torch.softmax(teacher / 2, -1)
    expected = (probs_t * (probs_t.log() - math.log(1 / 3))).sum() * 4
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.sum().backward()
    assert student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="do not match"):
        distillation_loss(student, teacher[:, :2])


def test_frozen_conversion_keeps_the_source_exactly(tmp_path):
    """A converted model trains only its new weights; at full depth its outputs equal the source's bit for bit."""
    source = exits_model("none", exit_classifiers="shared")
    source.new_weights = source.config.new_weights = []  # a trained source (the training loop records this)
    source.save_pretrained(tmp_path / "source")
    converted = PactEncoderForSequenceClassification.convert_from(tmp_path / "source", method="confidence",
                                                                  exit_classifiers="per_layer")
    assert converted.new_weights == sorted(f"exit_classifiers.{n}.{p}" for n in range(LAYERS - 1)
                                           for p in ("bias", "weight"))
    trainable = freeze_source_weights(converted)
    assert set(trainable) == set(converted.new_weights)
    optimizer = torch.optim.SGD([p for p in converted.parameters() if p.requires_grad], lr=0.5)
    ids, mask = padded_batch()
    converted.train()
    for _ in range(3):
        optimizer.zero_grad()
        with pact_zoo.halting.anytime_depth(converted):
            converted(input_ids=ids, attention_mask=mask, labels=torch.arange(len(ids)) % LABELS).loss.backward()
        optimizer.step()
    converted.eval()
    with torch.no_grad(), pact_zoo.full_depth(converted):
        full = converted(input_ids=ids, attention_mask=mask).logits
        reference = source(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(full, reference)
    # the next phase keeps the exits as trained and adds the halting heads
    converted.save_pretrained(tmp_path / "exits")
    halting = PactEncoderForSequenceClassification.convert_from(tmp_path / "exits", method="pact")
    assert any(k.startswith("pact_encoder.stage.heads") for k in halting.new_weights)
    assert torch.equal(halting.exit_classifiers[0].weight, converted.exit_classifiers[0].weight)
    heads_only = freeze_source_weights(halting, freeze_exits=True)
    assert heads_only and all(name.startswith("pact_encoder.stage.heads") for name in heads_only)


def test_convert_command_runs_the_phases(tmp_path, reset_accelerate):
    from pact_zoo.cli import main
    from pact_zoo.training.loop import train

    backbone, data = _text_folder(tmp_path)
    common = dict(model="pact_encoder", dataset=f"parquet:{data}", epochs=1, batch_size=8, eval_batch_size=12,
                  optimizer="adamw", lr=1e-3, dataset_kwargs={"max_length": 8})
    train(load_config(None, dict(common, pretrained_file=str(backbone), output_dir=str(tmp_path / "source"),
                                 model_kwargs={"method": "none", "pooling": "mean"})))
    recipe = dict(common, source=str(tmp_path / "source" / "model"), output_dir=str(tmp_path / "converted"),
                  freeze_backbone=True, phases=[
                      dict(name="exits", anytime=True, anytime_prob=1.0, distill_weight=1.0,
                           model_kwargs={"method": "confidence", "exit_classifiers": "per_layer"}),
                      dict(name="halting", freeze_exits=True, distill_weight=0.5,
                           teacher=str(tmp_path / "source" / "model"),
                           model_kwargs={"method": "pact", "exit_classifiers": "per_layer"})])
    (tmp_path / "convert.yaml").write_text(json.dumps(recipe))
    assert main(["convert", "--config", str(tmp_path / "convert.yaml")]) == 0
    summary = json.loads((tmp_path / "converted" / "conversion.json").read_text())
    assert summary["phases"] == ["exits", "halting"]
    model = PactEncoderForSequenceClassification.from_pretrained(summary["model_dir"])
    source = PactEncoderForSequenceClassification.from_pretrained(tmp_path / "source" / "model")
    assert model.config.method == "pact" and model.config.pooling == "mean"
    for key, value in source.state_dict().items():  # the source's weights came through both phases unchanged
        assert torch.equal(model.state_dict()[key], value), key
    assert main(["convert", "--config", str(tmp_path / "convert.yaml"), "--resume"]) == 0  # finished: a no-op


@pytest.mark.parametrize("fields, message", [
    (dict(distill_weight=-1.0), "distill_weight"),
    (dict(distill_temperature=0.0), "distill_temperature"),
    (dict(freeze_exits=True), "freeze_exits needs freeze_backbone"),
])
def test_conversion_fields_are_validated(fields, message):
    from pact_zoo.training.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, fields)
    assert load_config(None, dict(anytime=True, anytime_prob=1.0)).anytime_prob == 1.0


def test_convert_recipe_errors_name_the_problem(tmp_path):
    from pact_zoo.training.config import ConfigError
    from pact_zoo.training.convert import load_conversion

    path = tmp_path / "convert.yaml"
    for recipe, message in ((dict(phases=[dict(name="a")]), "source must name"),
                            (dict(source="m", phases=[]), "phases must be a non-empty list"),
                            (dict(source="m", phases=[dict(name="a"), dict(name="a")]), "distinct"),
                            (dict(source="m", phases=[dict(name="a", lr=-1.0)]), "lr must be > 0")):
        path.write_text(json.dumps(recipe))
        with pytest.raises(ConfigError, match=message):
            load_conversion(str(path))
