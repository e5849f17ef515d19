"""PACT halting (Figurnov, Sobolev, Vetrov 2018, "Probabilistic Adaptive Computation Time", arXiv:1712.00386).

The number of executed units z in 1..L is a latent variable with a truncated-geometric prior p(z = n) ~ exp(-tau n);
the halting heads give the amortised posterior q(z | x) by stick-breaking (:class:`StoppingDistribution`).
Training: the output is the Concrete-relaxed mixture sum_n w_n x_n of every unit's state (paper §3.2), and the
prior's log-density contributes ``tau * cost`` with cost = sum_n n w_n (``"relaxed"``) or E_q[z] (``"expected"``).
Evaluation: the deterministic rule "stop at the first n with h_n >= threshold" and the state x_n at the stop
(paper §3.3): halted rows leave the batch.

Entropy bonus (``entropy_weight`` beta): training adds ``-beta * H(q(z | x))``. The ELBO has this term (beta = 1 with
the prior's cost); without it the Concrete noise drives every halting logit far past the noise (|a| ~ 5-8), the
depth becomes one constant per stage and the threshold stops mattering. With beta > 0 the per-sample optimum is
q(n) ~ exp(-(loss_n + tau n) / beta): the logits stay near the threshold and depth varies with the input.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .distributions import StoppingDistribution
from .method import (
    HaltingMethod, Knob, Mixture, StopDecision, check_choice, check_number, check_threshold, float32,
    logit_threshold, register_halting_method,
)

__all__ = ["PACTMethod", "COST_ESTIMATORS", "greedy_stop", "sampled_stop"]

#: PACT training cost: ``"relaxed"`` = sum_n n w_n on Concrete samples, ``"expected"`` = exact E_q[z].
COST_ESTIMATORS = ("relaxed", "expected")
#: tau = 0.01 is the SACT README's CIFAR-10 value; temperature 0.5 and threshold 0.5 are the paper's defaults.
DEFAULT_TAU, DEFAULT_TEMPERATURE, DEFAULT_THRESHOLD = 0.01, 0.5, 0.5
#: Entropy bonus weight: 0.1 keeps per-input depth on digits and Fashion-MNIST (docs/learning_quality.md).
DEFAULT_ENTROPY_WEIGHT = 0.1


def greedy_stop(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[A]`` bool: h >= threshold, evaluated on the logits (threshold 1.0 never stops)."""
    return logits >= logit_threshold(threshold)


def sampled_stop(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bernoulli(sigmoid(logits)) stop decisions ``[A]`` bool and their log-probabilities ``[A]`` (differentiable)."""
    stop = torch.rand(logits.shape, device=logits.device) < torch.sigmoid(logits.detach().float())
    log_prob = torch.where(stop, F.logsigmoid(logits.float()), F.logsigmoid(-logits.float()))
    return stop, log_prob


def one_hot_steps(steps: torch.Tensor, num_units: int, dtype: torch.dtype) -> torch.Tensor:
    """``[B, L]`` one-hot weights on the 1-based ``steps`` ``[B]``."""
    return F.one_hot(steps - 1, num_units).to(dtype)


@register_halting_method
class PACTMethod(HaltingMethod):
    """PACT: Concrete mixture in training, deterministic threshold rule (state at the stop) in evaluation."""

    name = "pact"
    paper = "Figurnov, Sobolev, Vetrov 2018, Probabilistic Adaptive Computation Time, arXiv:1712.00386"
    knobs = {
        "tau": Knob(DEFAULT_TAU, check_number(0.0), "cost per executed unit (prior's log-scale penalty), >= 0"),
        "temperature": Knob(DEFAULT_TEMPERATURE, check_number(0.0, min_open=True),
                            "Concrete relaxation temperature, > 0"),
        "threshold": Knob(DEFAULT_THRESHOLD, check_threshold,
                          "eval rule: stop at the first unit with h_n >= threshold, in (0, 1]; 1.0 runs every unit"),
        "cost_estimator": Knob("relaxed", check_choice(*COST_ESTIMATORS),
                               "training cost: 'relaxed' (sum_n n w_n) or 'expected' (E_q[z])"),
        "entropy_weight": Knob(DEFAULT_ENTROPY_WEIGHT, check_number(0.0),
                               "training adds -entropy_weight * H(q(z | x)), >= 0 (0: the paper's objective)"),
    }
    stochastic = True

    def mixture(self, halting_logits: torch.Tensor, training: bool) -> Mixture:
        dist = StoppingDistribution(halting_logits, validate_args=False)  # no host sync
        num_units = halting_logits.shape[1] + 1
        if training:
            weights = dist.relaxed_weights(self.temperature)
            if self.cost_estimator == "expected":
                cost = dist.mean
            else:
                grid = torch.arange(1, num_units + 1, device=weights.device, dtype=weights.dtype)
                cost = (weights * grid).sum(dim=1)
            units = torch.full((weights.shape[0],), num_units, dtype=torch.long, device=weights.device)
            terms = {"entropy": -self.entropy_weight * dist.entropy().mean()} if self.entropy_weight > 0 else {}
            return Mixture(weights=weights, units_executed=units, cost=cost, terms=terms)
        steps = dist.greedy_steps(self.threshold)
        return Mixture(weights=one_hot_steps(steps, num_units, dist.halting_logits.dtype), units_executed=steps,
                       cost=steps.to(torch.float32))

    def lone_row_threshold(self, mode: str) -> Optional[float]:
        return float32(logit_threshold(self.threshold)) if mode == "greedy" else None  # the rule of greedy_stop

    def decide(self, index: int, logits: torch.Tensor, carry: dict, mode: str, log: dict) -> StopDecision:
        if mode == "sample":  # exact samples of z ~ q(z | x)
            return StopDecision(stop=sampled_stop(logits)[0])
        return StopDecision(stop=greedy_stop(logits, self.threshold))
