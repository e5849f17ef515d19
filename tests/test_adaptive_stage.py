"""AdaptiveStage: dense training, compacted evaluation vs per-sample and masked references."""
import pytest
import torch
from torch import nn

import pact_zoo
from pact_zoo.halting import AdaptiveStage, VectorHaltingHead

WIDTH = 6


class ResidualMLP(nn.Module):
    def __init__(self, width: int = WIDTH):
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x):
        return x + torch.tanh(self.fc(x))


class ContextUnit(ResidualMLP):
    def forward(self, x, context):
        return x + torch.tanh(self.fc(x) + context)


def make_stage(method: str, num_units: int = 5, head_scale: float = 3.0, bias: float = 0.0,
               unit_cls=ResidualMLP, **kwargs) -> AdaptiveStage:
    units = [unit_cls() for _ in range(num_units)]
    heads = [VectorHaltingHead(WIDTH, bias_init=bias) for _ in range(num_units - 1)]
    for head in heads:
        nn.init.normal_(head.fc.weight, std=head_scale)
    return AdaptiveStage(units, heads, method=method, **kwargs)


def per_sample(stage, x, context=None):
    rows = [stage(x[i:i + 1], None if context is None else context[i:i + 1]) for i in range(x.shape[0])]
    return torch.cat(rows)


@pytest.mark.parametrize("method", ["pact", "act"])
@pytest.mark.parametrize("batch_size", [1, 3, 17, 64])
def test_compact_equals_per_sample_and_masked(method, batch_size):
    stage = make_stage(method).eval()
    x = torch.randn(batch_size, WIDTH)
    with torch.no_grad():
        compact = stage(x)
        steps = stage.record.units_executed.clone()
        cost = stage.record.cost.clone()
        single = per_sample(stage, x)
        stage.execution = "masked"
        masked = stage(x)
    torch.testing.assert_close(compact, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(compact, masked, atol=1e-5, rtol=0)
    assert torch.equal(steps, stage.record.units_executed)
    torch.testing.assert_close(cost, stage.record.cost)
    if batch_size == 64:
        assert steps.unique().numel() > 2, "test needs samples halting at different units"


@pytest.mark.parametrize("method", ["pact", "act"])
@pytest.mark.parametrize("bias, expected_steps", [(30.0, 1), (-30.0, 5)])
def test_all_or_none_halt_at_first_unit(method, bias, expected_steps):
    stage = make_stage(method, head_scale=0.0, bias=bias).eval()
    x = torch.randn(9, WIDTH)
    with torch.no_grad():
        out = stage(x)
        assert stage.record.units_executed.tolist() == [expected_steps] * 9
        reference = x
        for unit in stage.units[:expected_steps]:
            reference = unit(reference)
        if method == "act" and expected_steps == 5:  # ACT mixes the states with weights h ~ 0
            stage.execution = "masked"
            reference = stage(x)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)


def test_pact_eval_output_is_the_halting_state():
    stage = make_stage("pact").eval()
    x = torch.randn(32, WIDTH)
    with torch.no_grad():
        out = stage(x)
        steps = stage.record.units_executed
        states, state = [], x
        for unit in stage.units:
            state = unit(state)
            states.append(state)
        expected = torch.stack(states, 1)[torch.arange(32), steps - 1]
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_threshold_controls_depth():
    stage = make_stage("pact").eval()
    x = torch.randn(128, WIDTH)
    means = []
    for threshold in (0.1, 0.5, 0.9, 1.0):
        pact_zoo.set_threshold(stage, threshold)
        with torch.no_grad():
            stage(x)
        means.append(stage.record.units_executed.float().mean().item())
    assert means == sorted(means) and means[0] < means[-1]
    with pytest.raises(ValueError, match="threshold"):
        pact_zoo.set_threshold(stage, 0.0)


def test_context_is_gathered_with_rows():
    stage = make_stage("pact", unit_cls=ContextUnit).eval()
    x, context = torch.randn(40, WIDTH), torch.randn(40, WIDTH)
    with torch.no_grad():
        compact = stage(x, context)
        assert stage.record.units_executed.unique().numel() > 1
        single = per_sample(stage, x, context)
    torch.testing.assert_close(compact, single, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["pact", "act"])
def test_training_runs_every_unit_and_gives_gradients(method):
    stage = make_stage(method).train()
    x = torch.randn(8, WIDTH)
    out = stage(x)
    assert stage.record.units_executed.tolist() == [5] * 8
    loss = out.pow(2).mean() + pact_zoo.halting_loss(stage)
    loss.backward()
    for name, param in stage.named_parameters():
        assert param.grad is not None, name  # in the graph, as DDP needs
        if method == "pact":  # Concrete weights are never exactly 0; ACT's are 0 after unit N
            assert param.grad.abs().sum() > 0, name


def test_pact_cost_estimators():
    stage = make_stage("pact", cost_estimator="expected").train()
    stage(torch.randn(8, WIDTH))
    cost = stage.record.cost
    assert cost.requires_grad and ((cost >= 1) & (cost <= 5)).all()


def test_halting_loss_is_tau_weighted_mean_cost():
    stage = make_stage("act", tau=0.25).eval()
    with torch.no_grad():
        stage(torch.randn(10, WIDTH))
    torch.testing.assert_close(pact_zoo.halting_loss(stage), 0.25 * stage.record.cost.mean())


def test_meta_device_has_no_data_dependent_control_flow():
    with torch.device("meta"):
        stage = make_stage("pact")
    stage.eval()
    out = stage(torch.empty(4, WIDTH, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, WIDTH)


def test_stage_rejects_bad_arguments():
    units = [ResidualMLP() for _ in range(3)]
    with pytest.raises(ValueError, match="heads"):
        AdaptiveStage(units, [VectorHaltingHead(WIDTH)], method="pact")
    with pytest.raises(ValueError, match="method"):
        AdaptiveStage(units, None, method="skip")
    with pytest.raises(ValueError, match="execution"):
        AdaptiveStage(units, None, method="none", execution="lazy")
    with pytest.raises(ValueError, match="units"):
        AdaptiveStage([], None, method="none")


def test_halting_loss_needs_a_forward():
    with pytest.raises(RuntimeError, match="forward"):
        pact_zoo.halting_loss(make_stage("pact"))
