"""The halting math (Graves 2016; Figurnov et al. 2018): ACT test vectors, PACT distributions, configuration checks."""
import math

import pytest
import torch

from pact_zoo.halting import (
    HaltingConfig, StoppingDistribution, TruncatedGeometricPrior, act_halting, stick_breaking,
)

UNIT_OUTPUTS = torch.arange(5, dtype=torch.float64)  # L = 5 units whose outputs are 0, 1, 2, 3, 4

# SACT act_test.py vectors (mfigurnov/sact act_test.py): h, N, rho, p, d rho / d h, output
ACT_VECTORS = [
    ([0.01, 0.5, 0.6, 0.7], 3, 3.49, [0.01, 0.5, 0.49, 0.0, 0.0], [-1.0, -1.0, 0.0, 0.0], 1.48),
    ([0.999] * 4, 1, 2.0, [1.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 4, 0.0),
    ([0.01] * 4, 5, 5.96, [0.01] * 4 + [0.96], [-1.0] * 4, 3.90),
]


@pytest.mark.parametrize("h, steps, rho, weights, grad, output", ACT_VECTORS)
def test_act_vectors(h, steps, rho, weights, grad, output):
    probs = torch.tensor([h], dtype=torch.float64, requires_grad=True)
    act = act_halting(probs, eps=0.01)
    assert act.steps.dtype == torch.long and act.steps.tolist() == [steps]
    torch.testing.assert_close(act.ponder_cost, torch.tensor([rho], dtype=torch.float64))
    torch.testing.assert_close(act.weights, torch.tensor([weights], dtype=torch.float64))
    torch.testing.assert_close(act.weights @ UNIT_OUTPUTS, torch.tensor([output], dtype=torch.float64))
    act.ponder_cost.sum().backward()
    torch.testing.assert_close(probs.grad, torch.tensor([grad], dtype=torch.float64))


def test_act_batch_matches_rows():
    probs = torch.rand(7, 6)
    batch = act_halting(probs)
    for i in range(7):
        row = act_halting(probs[i:i + 1])
        assert torch.equal(row.weights, batch.weights[i:i + 1]) and row.steps.item() == batch.steps[i].item()
    torch.testing.assert_close(batch.weights.sum(1), torch.ones(7))


def test_act_rejects_bad_input():
    with pytest.raises(ValueError, match="halting_probs"):
        act_halting(torch.rand(4))
    with pytest.raises(ValueError, match="eps"):
        act_halting(torch.rand(2, 3), eps=1.5)


def test_stopping_probs_are_stick_breaking():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # h = 0.5, 0.75
    dist = StoppingDistribution(logits)
    torch.testing.assert_close(dist.probs, torch.tensor([[0.5, 0.375, 0.125]]))
    torch.testing.assert_close(dist.mean, torch.tensor([0.5 + 0.75 + 0.375]))
    torch.testing.assert_close(dist.log_prob(torch.tensor([1, 2, 3])), torch.log(torch.tensor([0.5, 0.375, 0.125])))


def test_stopping_distribution_normalised_and_differentiable():
    logits = (torch.randn(16, 9) * 3).requires_grad_()
    dist = StoppingDistribution(logits)
    torch.testing.assert_close(dist.probs.sum(-1), torch.ones(16))
    torch.testing.assert_close(dist.logits.exp(), dist.probs)
    weights = dist.relaxed_weights(0.5)
    assert weights.shape == (16, 10) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(16))
    (weights * torch.arange(1, 11.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_relaxed_weights_follow_generator_and_temperature():
    logits = torch.randn(4, 5)
    dist = StoppingDistribution(logits)
    a = dist.relaxed_weights(0.5, generator=torch.Generator().manual_seed(3))
    b = dist.relaxed_weights(0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    cold = dist.relaxed_weights(1e-3, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(cold.max(-1).values, torch.ones(4), atol=1e-3)  # near one-hot at low temperature
    with pytest.raises(ValueError, match="temperature"):
        dist.relaxed_weights(0.0)


def test_relaxed_weights_mean_tends_to_probs():
    logits = torch.tensor([[0.3, -1.0, 2.0]]).expand(20000, 3)
    dist = StoppingDistribution(logits)
    mean_weights = dist.relaxed_weights(0.05, generator=torch.Generator().manual_seed(0)).mean(0)
    torch.testing.assert_close(mean_weights, dist.probs[0], atol=0.02, rtol=0)


def test_greedy_rule():
    probs = torch.tensor([[0.2, 0.6, 0.9], [0.1, 0.1, 0.1], [0.7, 0.1, 0.1], [0.4, 0.49, 0.5]])
    dist = StoppingDistribution(torch.logit(probs))
    assert dist.greedy_steps(0.5).tolist() == [2, 4, 1, 3]
    assert dist.greedy_steps(0.95).tolist() == [4, 4, 4, 4]
    with pytest.raises(ValueError, match="threshold"):
        dist.greedy_steps(0.0)


def test_samples_match_probs():
    logits = torch.tensor([[0.5, -0.5, 0.0]])
    dist = StoppingDistribution(logits)
    samples = dist.sample((20000,)).flatten()
    freq = torch.bincount(samples, minlength=5)[1:].float() / samples.numel()
    torch.testing.assert_close(freq, dist.probs[0], atol=0.015, rtol=0)


def test_single_unit_stage():
    dist = StoppingDistribution(torch.zeros(3, 0))
    assert dist.probs.tolist() == [[1.0]] * 3 and dist.greedy_steps().tolist() == [1, 1, 1]


@pytest.mark.parametrize("tau", [0.0, 0.01, 0.7])
def test_truncated_geometric_prior(tau):
    prior = TruncatedGeometricPrior(tau, 6)
    torch.testing.assert_close(prior.probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    steps = torch.arange(1, 7)
    expected = -tau * steps.double() - math.log(sum(math.exp(-tau * m) for m in range(1, 7)))
    torch.testing.assert_close(prior.log_prob(steps), expected)
    with pytest.raises(ValueError, match="steps"):
        prior.log_prob(torch.tensor([7]))
    with pytest.raises(ValueError, match="tau"):
        TruncatedGeometricPrior(-0.1, 6)


def test_stick_breaking_sums_to_one():
    stop = torch.rand(5, 7)
    torch.testing.assert_close(stick_breaking(stop).sum(-1), torch.ones(5))


@pytest.mark.parametrize("field, value", [
    ("tau", -0.1), ("temperature", 0.0), ("threshold", 0.0), ("threshold", 1.5), ("act_eps", 0.0),
    ("act_eps", 1.0), ("method", "ponder"), ("cost_estimator", "exact"),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        HaltingConfig(**{field: value})
