"""Adaptive Computation Modules and condnet gating (pact_zoo.acm): tiny random timm ViT and HF BERT, offline."""
from __future__ import annotations

import copy
import json
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

import pact_zoo
from pact_zoo import acm

GATINGS = acm.GATINGS


def tiny_vit(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2,
                             **kwargs).eval()


def tiny_bert() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=3)
    return BertForSequenceClassification(config).eval()


def spread_gates(model: nn.Module, seed: int = 0, scale: float = 2.0) -> nn.Module:
    """Larger random gate weights, so that tokens choose different numbers of learners."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in acm.acm_modules(model):
            for p in module.gate.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return model


def run(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x) if x.dtype.is_floating_point else model(input_ids=x).logits


def build(family: str, gating: str, **kwargs) -> tuple[nn.Module, torch.Tensor]:
    if family == "vit":
        return acm.acmize(tiny_vit(), method=gating, **kwargs), torch.randn(5, 3, 16, 16)
    return acm.acmize(tiny_bert(), method=gating, **kwargs), torch.randint(0, 40, (5, 7))


@pytest.mark.parametrize("family", ["vit", "bert"])
@pytest.mark.parametrize("gating", GATINGS)
def test_full_width_equals_the_original(family, gating):
    original = tiny_vit() if family == "vit" else tiny_bert()
    x = torch.randn(3, 3, 16, 16) if family == "vit" else torch.randint(0, 40, (3, 7))
    model = acm.acmize(copy.deepcopy(original), method=gating).eval()
    with torch.no_grad(), pact_zoo.full_depth(model):
        torch.testing.assert_close(run(model, x), run(original, x), atol=1e-5, rtol=1e-5)
    report = pact_zoo.halting_report(model)
    assert torch.equal(report.flops, report.sample_full_flops)  # no gate ran
    assert report.units_fraction == 1.0  # every learner of every token
    modules = acm.acm_modules(model)
    with torch.no_grad(), pact_zoo.halting.truncated_depth(model, [2] * len(modules)):
        run(model, x)
    assert all(bool((m.record.units_executed == 2).all()) for _, m in modules)
    assert pact_zoo.halting_report(model).units_fraction == pytest.approx(2 / modules[0][1].num_learners)


@pytest.mark.parametrize("family", ["vit", "bert"])
@pytest.mark.parametrize("gating", GATINGS)
def test_gatings_train_a_step(family, gating):
    model, x = build(family, gating, attention=family == "bert")
    model.train()
    labels = torch.tensor([0, 1, 2, 0, 1])
    step = pact_zoo.training_loss(model, lambda: run(model, x), lambda out: F.cross_entropy(out, labels,
                                                                                           reduction="none"))
    loss = step.loss + (acm.budget_loss(model, 0.5) if gating == "acm" else 0.0)
    loss.backward()
    modules = acm.acm_modules(model)
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    assert all(m.gate[-1].weight.grad.abs().sum() > 0 for _, m in modules)  # the gates learn
    if gating == "condnet":
        assert modules[0][1].record.log_prob.shape == (5,)
        assert set(modules[0][1].record.terms) == {"L_b", "L_e", "L_v"}  # Bengio's regularisers, from the core


@pytest.mark.parametrize("gating", GATINGS)
def test_budget_loss_moves_the_executed_fraction(gating):
    model, x = build("vit", gating)
    for _, module in acm.acm_modules(model):  # start near full width
        with torch.no_grad():
            module.gate[-1].bias.fill_(3.0 if gating == "condnet" else 0.0)
            module.gate[-1].bias[-1] = 3.0
    labels = torch.tensor([0, 1, 2, 0, 1])
    batches = [{"pixel_values": x, "labels": labels}] * 6
    log = acm.finetune(model, batches, lambda out, b: F.cross_entropy(out, b["labels"], reduction="none"), beta=0.25,
                       lr=1e-3, gate_lr=5e-2, budget_weight=1.0, epochs=4)
    assert log[0]["fraction"] > log[-1]["fraction"] + 0.2
    assert abs(log[-1]["fraction"] - 0.25) < 0.2, log


def test_phase1_every_prefix_improves_on_the_one_before():
    torch.manual_seed(0)

    class Toy(nn.Module):  # a strongly non-linear target MLP
        def __init__(self):
            super().__init__()
            self.mlp = Mlp(8, 64, act_layer=nn.GELU)
            with torch.no_grad():
                self.mlp.fc1.weight.mul_(4.0)
                self.mlp.fc2.weight.mul_(2.0)

        def forward(self, x):
            return self.mlp(x)

    original = Toy().eval()
    model = acm.acmize(copy.deepcopy(original), num_learners=4, init="random")  # fresh learners, as the paper
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(64, 8, generator=generator) for _ in range(2)]
    before = acm.prefix_errors(model, original, batches)
    acm.distill_modules(model, original, batches, epochs=100, lr=1e-2)  # the paper's greedy (detached) mode
    after = acm.prefix_errors(model, original, batches)
    assert all(later < earlier for earlier, later in zip(after, after[1:])), after
    assert after[-1] < 0.2 * before[-1]


@pytest.mark.parametrize("family", ["vit", "bert"])
@pytest.mark.parametrize("gating", GATINGS)
def test_batch_composition_independence(family, gating):
    model, x = build(family, gating)
    spread_gates(model)
    with torch.no_grad():
        alone, units_alone = [], []
        for i in range(x.shape[0]):
            alone.append(run(model, x[i:i + 1]))
            units_alone.append(torch.cat([m.record.units_executed for _, m in acm.acm_modules(model)], 1))
        together = run(model, x)
        units_together = torch.cat([m.record.units_executed for _, m in acm.acm_modules(model)], 1)
        mixed = run(model, torch.cat([x[2:3], x[:2]]))  # another composition and order
    counts = units_together.sum(1)
    assert counts.min() < counts.max() or units_together.min() < units_together.max()  # the gates do vary
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed, torch.cat([alone[2], alone[0], alone[1]]), atol=1e-5, rtol=1e-5)
    assert torch.equal(units_together, torch.cat(units_alone))


@pytest.mark.parametrize("family", ["vit", "bert"])
@pytest.mark.parametrize("gating", GATINGS)
def test_compact_equals_masked(family, gating):
    model, x = build(family, gating, attention=True)
    spread_gates(model, seed=3)
    with torch.no_grad():
        compact = run(model, x)
        units = [m.record.units_executed.clone() for _, m in acm.acm_modules(model)]
        pact_zoo.set_execution(model, "masked")
        masked = run(model, x)
    torch.testing.assert_close(compact, masked, atol=1e-5, rtol=1e-5)
    assert all(torch.equal(u, m.record.units_executed) for u, (_, m) in zip(units, acm.acm_modules(model)))


@pytest.mark.parametrize("grad", [False, True])
def test_acm_width_groups_equal_masked(grad):
    """The sorted width groups (written in place without gradients, concatenated with them) give the masked
    reference's outputs, also when every token has the same width (no sort) and for an empty input."""
    module = acm.AdaptiveWidth(8, 6, num_learners=3, act_layer=nn.GELU()).eval()
    tokens = torch.randn(11, 8)
    widths = torch.tensor([0, 3, 1, 2, 3, 0, 1, 1, 2, 3, 0])
    grouped = acm.ACMGating.run_compact
    with torch.set_grad_enabled(grad):
        for k in (widths, torch.full((11,), 2)):
            out = grouped(module, tokens, k)
            expected = module.all_prefixes(tokens)[torch.arange(11), k]
            torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
            assert out.requires_grad == grad
        assert grouped(module, tokens[:0], widths[:0]).shape == (0, 8)
    if grad:  # gradients reach every learner a token ran
        grouped(module, tokens, widths).sum().backward()
        assert module.w1.grad is not None and module.w1.grad.abs().sum() > 0


@pytest.mark.parametrize("gating", GATINGS)
def test_flops_match_flop_counter_mode(gating):
    original = tiny_vit()
    model = spread_gates(acm.acmize(copy.deepcopy(original), method=gating))
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            model(x)
        report = pact_zoo.halting_report(model)
        with FlopCounterMode(display=False) as counter_original:
            original(x)
    # the model minus the original = executed learners and gates minus the original MLPs (same other layers)
    assert counter.get_total_flops() - counter_original.get_total_flops() == \
        int(report.flops.sum()) - x.shape[0] * report.full_flops
    assert report.token_flops.shape == (4, 17) and report.units_executed.shape == (4, 2)
    # one module alone: its per-token account is what ran
    module = acm.acm_modules(model)[0][1]
    tokens = torch.randn(4, 17, 16)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(tokens)
    assert counter.get_total_flops() == int(module.report_flops()[3].sum())


@pytest.mark.parametrize("gating", GATINGS)
def test_threshold_is_the_budget_knob(gating):
    model, x = build("vit", gating)
    spread_gates(model, seed=5, scale=0.7)
    ratios = []
    with torch.no_grad():
        for threshold in (0.05, 0.3, 0.5, 0.7, 0.9, 1.0):
            pact_zoo.set_threshold(model, threshold)
            model(x)
            ratios.append(pact_zoo.halting_report(model).flops_ratio)
        assert all(int(m.record.units_executed.min()) == m.num_learners for _, m in acm.acm_modules(model))
    assert ratios == sorted(ratios) and ratios[0] < ratios[-2] - 0.1
    target = 0.5 * (ratios[0] + ratios[-2])
    threshold, ratio = pact_zoo.calibrate_threshold(model, [x], target, tolerance=0.05)
    assert target - 0.05 <= ratio <= target and 0.0 < threshold < 1.0


def test_hf_save_and_load_with_auto_classes(tmp_path):
    model = acm.acmize(tiny_bert(), method="condnet", attention=True)
    assert type(model).__name__ == "AcmBertForSequenceClassification"
    spread_gates(model)
    pact_zoo.set_threshold(model, 0.3)
    x = torch.randint(0, 40, (3, 7))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) and loaded.config.acm_knobs["threshold"] == 0.3
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=x).logits, model.eval()(input_ids=x).logits)
    keys = set(model.state_dict())
    plain = set(tiny_bert().state_dict())
    acm_prefixes = tuple(name + "." for name, _ in acm.acm_modules(model))
    assert {k for k in keys if not k.startswith(acm_prefixes)} == {
        k for k in plain if not (".intermediate.dense." in k or ".output.dense." in k or ".self." in k)}


def test_timm_variants_keep_timm_keys_and_convert_pretrained_weights():
    assert {"acm_vit_tiny_patch16_224", "acm_vit_small_patch16_224", "acm_deit_small_patch16_224"} <= set(
        pact_zoo.list_models("acm_*"))
    kwargs = dict(img_size=32, depth=2, num_classes=5)
    torch.manual_seed(0)
    plain = timm.create_model("vit_tiny_patch16_224", **kwargs).eval()
    model = timm.create_model("acm_vit_tiny_patch16_224", method="condnet", **kwargs).eval()
    acm_prefixes = tuple(name + "." for name, _ in acm.acm_modules(model))
    assert {k for k in model.state_dict() if not k.startswith(acm_prefixes)} == {
        k for k in plain.state_dict() if ".mlp." not in k}
    from pact_zoo.models.acm_vit import _convert_checkpoint
    model.load_state_dict(_convert_checkpoint(plain.state_dict(), model))  # what pretrained=True does
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), pact_zoo.full_depth(model):
        torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=1e-5)
    pact_zoo.halting_report(model)


def test_bad_knobs_name_the_argument():
    with pytest.raises(ValueError, match="num_learners"):
        acm.acmize(tiny_vit(), num_learners=0)
    with pytest.raises(ValueError, match="num_learners"):
        acm.AdaptiveWidth(8, 4, num_learners=0)
    with pytest.raises(ValueError, match="method"):
        acm.acmize(tiny_vit(), method="moe")
    with pytest.raises(ValueError, match="no MLP blocks"):
        acm.acmize(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)))
    model, x = build("vit", "acm")
    model.train()
    model(x)
    for beta in (0.0, 1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="beta"):
            acm.budget_loss(model, beta)
        with pytest.raises(ValueError, match="beta"):
            acm.finetune(model, [], lambda o, b: o, beta=beta)
    with pytest.raises(ValueError, match="threshold"):
        acm.AdaptiveWidth(8, 4, threshold=0.0)
    with pytest.raises(ValueError, match="min_learners"):
        acm.AdaptiveWidth(8, 4, num_learners=2, min_learners=3)


def test_acmize_twice_says_already_acmized():
    model = acm.acmize(tiny_vit())
    with pytest.raises(ValueError, match="already ACMized"):
        acm.acmize(model)
    with pytest.raises(ValueError, match="already ACMized"):
        acm.acmize_structure(timm.create_model("acm_vit_tiny_patch16_224", img_size=16, depth=1))


@pytest.mark.parametrize("batches, match", [
    ([], "at least one batch, got an empty list"),
    (iter([torch.randn(2, 3, 16, 16)]), "re-iterable"),
    ((b for b in [torch.randn(2, 3, 16, 16)]), "re-iterable"),
])
def test_convert_rejects_empty_or_one_shot_batches(batches, match):
    with pytest.raises(ValueError, match=match):
        acm.convert(tiny_vit(), batches, lambda logits, batch: logits.sum(-1), beta=0.5)


def test_phases_reject_empty_batches():
    original = tiny_vit()
    model = acm.acmize(copy.deepcopy(original))
    for phase in (acm.distill_modules, acm.pretrain_gates, acm.prefix_errors):
        with pytest.raises(ValueError, match="at least one batch"):
            phase(model, original, [])
    with pytest.raises(ValueError, match="at least one batch"):
        acm.distill_modules(model, original, (b for b in []))  # a one-shot iterator read once: checked as it runs
    with pytest.raises(ValueError, match="at least one batch"):
        acm.finetune(model, [], lambda logits, batch: logits.sum(-1), beta=0.5)


@pytest.mark.parametrize("num_learners", [3, 5, 7])
def test_full_width_is_exact_when_learners_do_not_divide_the_width(num_learners):
    original = tiny_vit()  # MLP width 64: 3, 5, 7 learners do not divide it
    model = acm.acmize(copy.deepcopy(original), num_learners=num_learners).eval()
    module = acm.acm_modules(model)[0][1]
    assert module.num_learners * module.hidden_features >= 64  # every hidden unit has a learner
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad(), pact_zoo.full_depth(model):
        torch.testing.assert_close(model(x), original(x), atol=1e-5, rtol=1e-5)


def test_empty_batch_in_eval_gives_an_empty_output():
    for gating in GATINGS:
        model, _ = build("vit", gating)
        model.eval()
        for execution in ("compact", "masked"):
            pact_zoo.set_execution(model, execution)
            with torch.no_grad():
                assert model(torch.randn(0, 3, 16, 16)).shape == (0, 3)
            assert pact_zoo.halting_report(model).flops.shape == (0,)


@pytest.mark.skipif(sys.platform != "linux", reason="two-process CPU DDP test runs on Linux")
def test_two_process_ddp(two_process_runs):
    out, done = two_process_runs  # the "acm" scenario of tests/two_process_worker.py
    assert all((out / "acm" / f"rank{r}.json").is_file() for r in range(2)), done.stderr[-3000:]
    ranks = [json.loads((out / "acm" / f"rank{r}.json").read_text()) for r in range(2)]
    for gating in GATINGS:
        assert all(rank[gating]["all_grads"] for rank in ranks)
        assert ranks[0][gating]["grad_sum"] == pytest.approx(ranks[1][gating]["grad_sum"], rel=1e-6)
        assert ranks[0][gating]["param_sum"] == pytest.approx(ranks[1][gating]["param_sum"], rel=1e-6)
    assert ranks[0]["condnet"]["unused_module_steps"] > 0  # some learner ran on no token, and DDP was fine


def test_gate_labels_stop_where_a_learner_stops_helping():
    target = torch.zeros(2, 1)
    errors = torch.tensor([[4.0, 2.0, 1.9, 1.8, 0.5],   # 2 -> 1.9 helps by < 1.2: one learner
                           [4.0, 2.0, 1.0, 0.5, 0.25]])  # every learner helps: K
    prefixes = errors.unsqueeze(-1)  # |prefix - 0| = the error
    assert acm.gate_labels(prefixes, target).tolist() == [1, 4]
    assert acm.gate_labels(prefixes, target, min_learners=2).tolist() == [2, 4]  # 1.9 -> 1.8: two
