"""The halting-method contract: every registered method x every adaptive model family, with no per-method code.

A toy method registered here from outside the package joins the registry before collection, so it runs through
every family too (timm CIFAR and ImageNet ResNets, the ViT, MobileNetV2 with an exit after every stage, the Hugging
Face PACT-LSTM and PACT-Encoder).
"""
import re
from typing import Callable

import pytest
import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import pact_zoo
from pact_zoo.halting import (
    HALTING_METHODS, HaltingMethod, Knob, Mixture, StopDecision, StoppingDistribution, register_halting_method,
    synthesize_halting,
)
from pact_zoo.halting.flops import torch_flop_counter_mapping
from pact_zoo.halting.method import check_number
from pact_zoo.hf import PactEncoderForSequenceClassification, PactLSTMConfig, PactLSTMForSequenceClassification

#: torch's FLOP counter misses the CPU attention kernel: count it with torch's own SDPA formula
SDPA_FLOPS = torch_flop_counter_mapping()


@register_halting_method
class ExpectedDepthToy(HaltingMethod):
    """A user's method: train on the expected output under the stopping distribution, stop where the logit
    crosses ``stop_logit`` in eval, cost = expected depth."""

    name = "expected_depth_toy"
    knobs = {"tau": Knob(0.01, check_number(0.0)), "stop_logit": Knob(0.0, check_number())}

    def mixture(self, halting_logits: torch.Tensor, training: bool) -> Mixture:
        dist = StoppingDistribution(halting_logits, validate_args=False)
        num_units = halting_logits.shape[1] + 1
        if training:
            units = torch.full((halting_logits.shape[0],), num_units, dtype=torch.long, device=halting_logits.device)
            return Mixture(weights=dist.probs, units_executed=units, cost=dist.mean)
        stops = torch.cat([halting_logits >= self.stop_logit,
                           torch.ones_like(halting_logits[:, :1], dtype=torch.bool)], dim=1)
        steps = stops.to(torch.uint8).argmax(1) + 1
        return Mixture(weights=F.one_hot(steps - 1, num_units).float(), units_executed=steps, cost=steps.float())

    def decide(self, index, logits, carry, mode, log) -> StopDecision:
        return StopDecision(stop=logits >= self.stop_logit)


METHODS = list(HALTING_METHODS)
BATCH = 6
LSTM_INPUT, LSTM_SEQ = 4, 3


def _image_family(name: str, input_shape: tuple, **overrides) -> Callable:
    def build(method: str):
        model = timm.create_model(name, method=method, num_classes=3, **overrides)
        return model, torch.randn(BATCH, *input_shape), input_shape
    return build


def _mobile_exits(method: str):
    """MobileNetV2 with an exit after every stage; a few train-mode passes set its BatchNorm statistics (a fresh
    timm CNN in eval mode has unit running variances: activations and logits grow with depth)."""
    model, x, input_shape = _image_family("pact_mobilenetv2_100", (3, 64, 64), halting_scope="network")(method)
    with torch.no_grad(), pact_zoo.full_depth(model):
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None  # cumulative average
        model.train()
        for _ in range(2):
            model(torch.randn_like(x))
    return model, x, input_shape


def _lstm(method: str):
    config = PactLSTMConfig(input_size=LSTM_INPUT, hidden_size=8, max_ponder_steps=4, method=method,
                            halting_bias_init=0.0, num_labels=3)
    model = PactLSTMForSequenceClassification(config)
    with torch.no_grad():
        for layer in model.pact_lstm.layers:
            if layer.halting_head is not None:
                layer.halting_head.fc.weight.normal_(0, 3.0)
    return model, torch.randn(BATCH, LSTM_SEQ, LSTM_INPUT), None


def _encoder(method: str):
    from transformers import BertConfig, BertModel

    backbone = BertModel(BertConfig(vocab_size=20, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                    intermediate_size=32, max_position_embeddings=8, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0))
    model = PactEncoderForSequenceClassification.from_backbone(backbone, num_labels=3, method=method,
                                                               halting_bias_init=0.0)
    with torch.no_grad():
        for head in model.pact_encoder.stage.heads or []:
            if hasattr(head, "fc"):  # exit rules read the classifier instead
                head.fc.weight.normal_(0, 3.0)
    return model, torch.randint(1, 20, (BATCH, LSTM_SEQ + 2)), None


FAMILIES = {
    "cifar_resnet": _image_family("pact_resnet32", (3, 16, 16), layers=(3, 3, 3), channels=(4, 8, 8)),
    "imagenet_resnet": _image_family("pact_resnet18", (3, 32, 32)),
    # ViT-Ti widths (attention matmuls, which the report does not count, stay < 1 % of the FLOPs at 5 tokens)
    "vit": _image_family("pact_vit_tiny_patch16_224", (3, 32, 32), img_size=32, depth=4),
    "vit_per_layer": _image_family("pact_vit_tiny_patch16_224", (3, 32, 32), img_size=32, depth=4,
                                   exit_classifiers="per_layer"),
    # whole stages as units, an exit after each (their states change shape; rows leave with exit logits)
    "mobilenet_exits": _mobile_exits,
    "pact_lstm": _lstm,
    "pact_encoder": _encoder,
}


def _forward(model, x):
    if isinstance(model, PactEncoderForSequenceClassification):
        return model(input_ids=x).logits
    return model(inputs_embeds=x).logits if isinstance(model, PactLSTMForSequenceClassification) else model(x)


def _heterogeneous(model, input_shape):
    """Heads under which samples halt at different units (image families: the core's synthetic heads)."""
    stages = [s for _, s in pact_zoo.adaptive_stages(model) if s.halting]
    if input_shape is not None and stages and not any(s.method.reads_exits for s in stages):
        synthesize_halting(model, seed=0, input_shape=input_shape, num_samples=32)
    return model.eval()


#: Families with exit classifiers, on which the exit rules (``reads_exits``) run; the others must refuse them.
EXIT_FAMILIES = ("pact_encoder", "vit", "vit_per_layer", "mobilenet_exits")
#: Output tolerance of batched against one-row forwards: float rounding of each family's kernels. timm's own
#: mobilenetv2_100 (17 blocks) differs by 1e-4 between a batch of 6 and its rows one at a time.
FAMILY_ATOL = {"mobilenet_exits": 3e-4}


@pytest.fixture(params=list(FAMILIES))
def family(request):
    name = request.param

    def build(method: str):
        if HALTING_METHODS[method].reads_exits and name not in EXIT_FAMILIES:
            with pytest.raises(ValueError, match="exit classifiers"):
                FAMILIES[name](method)
            pytest.skip(f"{name} has no exit classifiers: {method!r} is refused (checked)")
        return FAMILIES[name](method)
    build.atol = FAMILY_ATOL.get(name, 1e-5)
    return build


@pytest.mark.parametrize("method", METHODS)
def test_training_lowers_loss_and_reaches_heads_and_units(family, method):
    model, x, _ = family(method)
    labels = torch.arange(BATCH) % 3
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        optimizer.zero_grad()
        result = pact_zoo.training_loss(model, lambda: _forward(model, x),
                                        lambda logits: F.cross_entropy(logits, labels, reduction="none"))
        result.loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.grad is None]
            assert not missing, f"parameters without gradient (DDP would fail): {missing[:5]}"
            stages = [s for _, s in pact_zoo.adaptive_stages(model)]
            heads = [p for s in stages if s.halting for p in s.heads.parameters()]
            head_ids = {id(p) for p in heads} | {id(p) for m in model.modules()
                                                 if type(m).__name__ == "VectorHaltingHead" for p in m.parameters()}
            classifier = {id(p) for p in model.get_classifier().parameters()} if hasattr(model, "get_classifier") \
                else {id(p) for p in model.classifier.parameters()}
            units = [p for p in model.parameters() if id(p) not in head_ids | classifier]
            assert any(p.grad.abs().sum() > 0 for p in units), "no gradient reached the units"
            if heads:
                assert any(p.grad.abs().sum() > 0 for p in heads), "no gradient reached a halting head"
        optimizer.step()
        losses.append(result.task_loss.item())
    assert sum(losses[-3:]) < sum(losses[:3]), f"task loss did not fall: {losses}"


@pytest.mark.parametrize("method", METHODS)
def test_compact_eval_equals_per_sample_and_masked(family, method):
    model, x, input_shape = family(method)
    model = _heterogeneous(model, input_shape)
    with torch.no_grad():
        compact = _forward(model, x)
        units = pact_zoo.halting_report(model).units_executed
        single = torch.cat([_forward(model, x[i:i + 1]) for i in range(BATCH)])
        single_units = []
        for i in range(BATCH):
            _forward(model, x[i:i + 1])
            single_units.append(pact_zoo.halting_report(model).units_executed)
        pact_zoo.set_execution(model, "masked")
        masked = _forward(model, x)
        masked_units = pact_zoo.halting_report(model).units_executed
    torch.testing.assert_close(compact, single, atol=family.atol, rtol=0)
    torch.testing.assert_close(compact, masked, atol=family.atol, rtol=0)
    assert torch.equal(units, torch.cat(single_units)) and torch.equal(units, masked_units)


@pytest.mark.parametrize("method", METHODS)
def test_flops_report_agrees_with_flop_counter(family, method):
    model, x, input_shape = family(method)
    model = _heterogeneous(model, input_shape)
    for train in (False, True):
        model.train(train)
        with torch.set_grad_enabled(train), FlopCounterMode(display=False, custom_mapping=SDPA_FLOPS) as counter:
            _forward(model, x)
        report = pact_zoo.halting_report(model)
        counted = counter.get_total_flops()
        assert abs(report.flops.sum().item() - counted) <= 0.01 * counted, (train, report.flops, counted)
        assert 0 < report.units_fraction <= 1  # recurrent models: relative to every time step's units
        shown = re.findall(r"([\d.]+) of (\d+)", repr(report).split("at full depth), ")[1])
        assert len(shown) == len(report.num_units) and all(0 < float(u) <= int(n) for u, n in shown), repr(report)
    with pact_zoo.full_depth(model), torch.no_grad(), FlopCounterMode(display=False,
                                                                     custom_mapping=SDPA_FLOPS) as counter:
        model.eval()
        _forward(model, x)
    report = pact_zoo.halting_report(model)
    assert report.flops.tolist() == [report.full_flops] * BATCH and report.units_fraction == 1.0
    assert abs(report.full_flops * BATCH - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()


def test_toy_method_is_registered_and_validated():
    assert "expected_depth_toy" in HALTING_METHODS and "expected_depth_toy" in pact_zoo.HALTING_METHODS
    with pytest.raises(ValueError, match="stop_logit"):
        timm.create_model("pact_resnet32", method="expected_depth_toy", stop_logit="high")
    with pytest.raises(ValueError, match="has no knob 'threshold'"):
        timm.create_model("pact_resnet32", method="expected_depth_toy", threshold=0.5)
    model = timm.create_model("pact_resnet32", method="expected_depth_toy").eval()
    with pytest.raises(ValueError, match="no halting stage with a threshold"):
        pact_zoo.set_threshold(model, 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_anytime_batch_trains_every_family(family, method):
    """An anytime batch: per-sample random depth, no head runs, every parameter still gets a gradient (DDP)."""
    model, x, _ = family(method)
    model.train()
    labels = torch.arange(BATCH) % 3
    with pact_zoo.halting.anytime_depth(model):
        result = pact_zoo.training_loss(model, lambda: _forward(model, x),
                                        lambda logits: F.cross_entropy(logits, labels, reduction="none"))
        units = pact_zoo.halting_report(model).units_executed
    result.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert float(result.halting_loss.detach()) == 0.0
    num_units = torch.tensor(pact_zoo.halting_report(model).num_units)
    assert ((units >= 1) & (units <= num_units * (LSTM_SEQ if units.max() > num_units.max() else 1))).all()


def test_threshold_one_runs_every_unit_even_where_the_sigmoid_saturates():
    model = timm.create_model("pact_resnet32", layers=(3, 3, 3), channels=(4, 8, 8), halting_bias_init=30.0).eval()
    pact_zoo.set_threshold(model, 1.0)  # sigmoid(30) == 1.0 in float32: still no stop
    with torch.no_grad():
        model(torch.randn(4, 3, 16, 16))
    assert pact_zoo.halting_report(model).units_executed.tolist() == [[3, 3, 3]] * 4
    pact_zoo.set_threshold(model, 0.999)
    with torch.no_grad():
        model(torch.randn(4, 3, 16, 16))
    assert pact_zoo.halting_report(model).units_executed.tolist() == [[1, 1, 1]] * 4


@pytest.mark.parametrize("method", METHODS)
def test_declared_contract_attributes(method):
    """What the core reads from a method is declared: the cost weight, the rollout need, the paper."""
    cls = HALTING_METHODS[method]
    instance = cls(**{k: knob.default for k, knob in cls.knobs.items()})
    if cls.cost_knob is None:
        assert instance.cost_weight == 0.0
    else:
        assert cls.cost_knob in cls.knobs and instance.cost_weight == float(getattr(instance, cls.cost_knob))
    assert isinstance(instance.needs_rollout, bool) and isinstance(cls.paper, str)
    if cls.__module__.startswith("pact_zoo.") and cls.uses_heads:
        assert "arXiv:" in cls.paper, cls.paper
