"""Compacted evaluation == per-sample evaluation == masked reference, for PACT and ACT.

Also: the PACT eval path keeps no stage-sized buffer besides the state (peak allocator memory below ACT's,
which keeps its weighted-sum accumulator), and the threshold calibration meets its FLOPs budget.
"""
import pytest
import timm
import torch
from torch import nn

import pact_zoo
from pact_zoo.benchmark import _allocator_peak_bytes
from pact_zoo.halting import (
    AdaptiveStage, HaltingHead, calibrate_threshold, halting_report, set_execution, synthesize_halting,
)

CHS = 4
TINY = dict(layers=(4, 4, 4), channels=(4, 8, 8))
TINY_INPUT = (3, 8, 8)


class ConvUnit(nn.Module):
    """Residual 3x3 conv unit ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, chs: int = CHS):
        super().__init__()
        self.conv = nn.Conv2d(chs, chs, 3, padding=1)
        self.norm = nn.BatchNorm2d(chs)

    def forward(self, x):
        return x + torch.tanh(self.norm(self.conv(x)))


def conv_stage(method: str, num_units: int = 6, bias: float = 0.0, weight_std: float = 3.0) -> AdaptiveStage:
    units = [ConvUnit() for _ in range(num_units)]
    heads = [HaltingHead(CHS, bias_init=bias) for _ in range(num_units - 1)]
    for head in heads:
        nn.init.normal_(head.fc.weight, std=weight_std)
    return AdaptiveStage(units, heads, method=method).eval()


def run_three_ways(module: nn.Module, x: torch.Tensor, stages: list) -> tuple:
    """(compact, per-sample, masked) outputs and the compact / masked units executed per stage."""
    with torch.inference_mode():
        set_execution(module, "compact")
        compact = module(x)
        steps = [s.record.units_executed.clone() for s in stages]
        costs = [s.record.cost.clone() for s in stages]
        single = torch.cat([module(x[i:i + 1]) for i in range(x.shape[0])])
        set_execution(module, "masked")
        masked = module(x)
        masked_steps = [s.record.units_executed.clone() for s in stages]
        masked_costs = [s.record.cost.clone() for s in stages]
        set_execution(module, "compact")
    return compact, single, masked, steps, masked_steps, costs, masked_costs


def check_equal(module, x, stages):
    compact, single, masked, steps, masked_steps, costs, masked_costs = run_three_ways(module, x, stages)
    torch.testing.assert_close(compact, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(compact, masked, atol=1e-5, rtol=0)
    for a, b in zip(steps, masked_steps):
        assert torch.equal(a, b)
    for a, b in zip(costs, masked_costs):
        torch.testing.assert_close(a, b)
    return steps


@pytest.mark.parametrize("method", ["pact", "act"])
@pytest.mark.parametrize("batch_size", [1, 2, 7, 33])
def test_conv_stage_compact_equals_per_sample_and_masked(method, batch_size):
    stage = conv_stage(method)
    x = torch.randn(batch_size, CHS, 5, 5)
    steps = check_equal(stage, x, [stage])[0]
    if batch_size == 33:
        assert steps.unique().numel() > 2, "test needs samples halting at different units"


@pytest.mark.parametrize("method", ["pact", "act"])
@pytest.mark.parametrize("bias, expected", [(-30.0, 6), (30.0, 1)])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_no_sample_or_every_sample_halts_at_first_unit(method, bias, expected, batch_size):
    stage = conv_stage(method, bias=bias, weight_std=1e-3)
    x = torch.randn(batch_size, CHS, 5, 5)
    steps = check_equal(stage, x, [stage])[0]
    assert torch.all(steps == expected)


@pytest.mark.parametrize("method", ["pact", "act"])
def test_channels_last_state_is_kept(method):
    stage = conv_stage(method).to(memory_format=torch.channels_last)
    x = torch.randn(9, CHS, 5, 5).contiguous(memory_format=torch.channels_last)
    check_equal(stage, x, [stage])
    with torch.inference_mode():
        out = stage(x)
    assert out.shape == x.shape


@pytest.fixture(scope="module")
def tiny_models():
    """Tiny PACT and ACT CIFAR ResNets with synthetic halting heads (depth spread over the units)."""
    models = {}
    for method in ("pact", "act"):
        torch.manual_seed(0)
        model = timm.create_model("pact_resnet32", method=method, **TINY).eval()
        synthesize_halting(model, seed=1, input_shape=TINY_INPUT, num_samples=64)
        models[method] = model
    return models


@pytest.mark.parametrize("method", ["pact", "act"])
@pytest.mark.parametrize("batch_size", [1, 8, 40])
def test_model_compact_equals_per_sample_and_masked(tiny_models, method, batch_size):
    model = tiny_models[method]
    stages = [s for _, s in pact_zoo.adaptive_stages(model)]
    x = torch.randn(batch_size, *TINY_INPUT)
    steps = check_equal(model, x, stages)
    if batch_size == 40 and method == "pact":
        assert all(s.unique().numel() > 2 for s in steps), "synthetic heads must spread the depth per sample"


def test_synthetic_halting_spreads_depth_around_half(tiny_models):
    model = tiny_models["pact"]
    with torch.inference_mode():
        model(torch.randn(256, *TINY_INPUT, generator=torch.Generator().manual_seed(5)))
    report = halting_report(model)
    fraction = report.units_executed.double().mean(0) / torch.tensor(report.num_units, dtype=torch.double)
    assert torch.all((fraction > 0.35) & (fraction < 0.8)), fraction
    for s in range(report.units_executed.shape[1]):
        assert report.units_executed[:, s].unique().numel() == report.num_units[s]


def test_pact_eval_peak_memory_below_act():
    """PACT keeps only the state (halted pieces + running rows); ACT also keeps its accumulator."""
    x = torch.randn(16, CHS, 16, 16)
    peaks = {}
    for method in ("pact", "act"):
        torch.manual_seed(0)
        for bias in (-30.0, 0.0):  # nobody halts / depths spread
            stage = conv_stage(method, num_units=5, bias=bias)
            with torch.inference_mode():
                stage(x)
                peaks[method, bias] = _allocator_peak_bytes(stage, x)
    state_bytes = x.numel() * x.element_size()
    for bias in (-30.0, 0.0):
        assert peaks["pact", bias] < peaks["act", bias], peaks
    assert peaks["act", -30.0] - peaks["pact", -30.0] >= state_bytes, peaks


def test_calibrate_threshold_meets_budget(tiny_models):
    model = tiny_models["pact"]
    generator = torch.Generator().manual_seed(3)
    data = torch.randn(96, *TINY_INPUT, generator=generator)
    loader = [(batch, torch.zeros(batch.shape[0], dtype=torch.long)) for batch in data.split(32)]
    for target in (0.5, 0.7):
        threshold, ratio = calibrate_threshold(model, loader, target)
        assert 0.0 < threshold <= 1.0
        assert target - 0.03 <= ratio <= target, (target, ratio)
        assert all(s.method.threshold == threshold for _, s in pact_zoo.adaptive_stages(model))
        with torch.inference_mode():  # the threshold is set: the same data gives the same ratio
            flops = sum(float(halting_report(model).flops.sum()) for _ in [model(data)])
        assert flops / (96 * halting_report(model).full_flops) == pytest.approx(ratio, abs=1e-9)
    assert not model.training


def test_calibrate_threshold_unreachable_budget_and_bad_input(tiny_models):
    model = tiny_models["pact"]
    data = [torch.randn(16, *TINY_INPUT)]
    pact_zoo.set_threshold(model, 1.0)
    with torch.inference_mode():
        model(data[0])
    # full depth is the plain computation (no head): at threshold 1.0 every head runs as well, above a budget of 1.0
    assert halting_report(model).flops_ratio > 1.0
    result = calibrate_threshold(model, data, 1.0)
    assert result.threshold < 1.0 and 0.9 < result.flops_ratio <= 1.0
    with pytest.warns(UserWarning, match="out of reach"):
        tiny = calibrate_threshold(model, data, 1e-3)  # below "every sample stops at its first unit"
    assert tiny.flops_ratio > 1e-3 and tiny.threshold < 1e-6
    with pytest.raises(ValueError, match="target_flops_ratio"):
        calibrate_threshold(model, data, 1.5)
    with pytest.raises(ValueError, match="threshold"):
        calibrate_threshold(tiny_models["act"], data, 0.5)
    with pytest.raises(ValueError, match="no batch"):
        calibrate_threshold(model, [], 0.5)
    with pytest.raises(TypeError, match="dataloader"):
        calibrate_threshold(model, ["not a tensor"], 0.5)
    pact_zoo.set_threshold(model, 0.5)
