"""PACT distributions over the number of executed units (Figurnov, Sobolev, Vetrov 2018, arXiv:1712.00386).

Conventions: one adaptive stage has ``L`` units; ``halting_logits`` ``[B, L-1]`` come from the halting heads
after units 1..L-1 (the last unit always halts). ``steps`` are 1-based unit counts in 1..L.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch.distributions import constraints

from .method import logit_threshold

__all__ = ["StoppingDistribution", "TruncatedGeometricPrior", "logistic_noise", "stick_breaking"]

# Uniform noise is clamped away from 0 and 1 before taking logit(u): log(0) would give inf logits.
UNIFORM_CLAMP = 1e-6


def _check_steps(steps: torch.Tensor, num_units: int) -> torch.Tensor:
    if steps.dtype.is_floating_point or steps.dtype == torch.bool:
        raise ValueError(f"steps must be an integer tensor of unit counts, got dtype {steps.dtype}")
    if steps.device.type != "meta" and ((steps < 1) | (steps > num_units)).any():
        raise ValueError(f"steps must lie in 1..{num_units}")
    return steps.long()


def stick_breaking(stop: torch.Tensor) -> torch.Tensor:
    """Weights of a sequential stop process.

    Args:
        stop: ``[B, L-1]`` probabilities (or relaxed decisions) of stopping after units 1..L-1.

    Returns:
        ``[B, L]``: w_n = s_n prod_{j<n} (1 - s_j), w_L = prod_{j<L} (1 - s_j). Rows sum to 1.
    """
    ones = stop.new_ones(stop.shape[:-1] + (1,))
    survive = torch.cumprod(torch.cat([ones, 1.0 - stop], dim=-1), dim=-1)  # [B, L]: prod_{j<n}(1 - s_j)
    return survive * torch.cat([stop, ones], dim=-1)


def logistic_noise(shape: torch.Size, *, device: torch.device, generator: Optional[torch.Generator] = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Logistic noise log u - log(1 - u), u ~ U(0, 1) clamped to [1e-6, 1 - 1e-6]."""
    # no generator argument unless one is given: torch.rand's generator overload takes no symbolic sizes, which
    # torch.compile passes once it treats the batch dimension as dynamic
    u = (torch.rand(shape, device=device, dtype=dtype) if generator is None
         else torch.rand(shape, device=device, dtype=dtype, generator=generator))
    u = u.clamp(UNIFORM_CLAMP, 1.0 - UNIFORM_CLAMP)
    return torch.log(u) - torch.log1p(-u)


class StoppingDistribution(torch.distributions.Distribution):
    """PACT's amortised posterior q(z | x) over the number of executed units z in 1..L.

    Stick-breaking over the halting heads (PACT §3.1; PonderNet, Banino et al. 2021, eq. 2):
    q(z = n) = h_n prod_{j<n}(1 - h_j) for n < L, q(z = L) = prod_{j<L}(1 - h_j), with h_n = sigmoid(a_n).

    Args:
        halting_logits: ``[B, L-1]`` halting logits a_n (``L - 1 >= 0``). Computation is done in float32
            or higher, whatever the input dtype.
    """

    arg_constraints = {"halting_logits": constraints.real}
    has_rsample = False

    def __init__(self, halting_logits: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        if halting_logits.dim() < 1:
            raise ValueError(f"halting_logits must be [..., L-1], got shape {tuple(halting_logits.shape)}")
        if not halting_logits.dtype.is_floating_point:
            raise ValueError(f"halting_logits must be floating point, got {halting_logits.dtype}")
        self.halting_logits = halting_logits.float() if halting_logits.dtype in (torch.float16, torch.bfloat16) \
            else halting_logits
        self.num_units = halting_logits.shape[-1] + 1
        super().__init__(batch_shape=halting_logits.shape[:-1], validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(1, self.num_units)

    @property
    def halting_probs(self) -> torch.Tensor:
        """``[B, L-1]`` h_n = sigmoid(a_n)."""
        return torch.sigmoid(self.halting_logits)

    @property
    def probs(self) -> torch.Tensor:
        """``[B, L]`` q(z = n), rows sum to 1."""
        return stick_breaking(self.halting_probs)

    @property
    def logits(self) -> torch.Tensor:
        """``[B, L]`` log q(z = n), computed stably with log-sigmoids."""
        a = self.halting_logits
        log_stop = F.logsigmoid(a)  # log h_n
        log_go = F.logsigmoid(-a)  # log(1 - h_n)
        zeros = a.new_zeros(a.shape[:-1] + (1,))
        log_survive = torch.cumsum(torch.cat([zeros, log_go], dim=-1), dim=-1)
        return log_survive + torch.cat([log_stop, zeros], dim=-1)

    @property
    def mean(self) -> torch.Tensor:
        """``[B]`` expected number of executed units E_q[z]."""
        n = torch.arange(1, self.num_units + 1, device=self.halting_logits.device, dtype=self.halting_logits.dtype)
        return (self.probs * n).sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        """``[B]`` argmax_n q(z = n) (needs every head; the greedy rule is what evaluation uses)."""
        return self.probs.argmax(-1) + 1

    def log_prob(self, steps: torch.Tensor) -> torch.Tensor:
        """Log q(z = steps); ``steps`` is a long tensor broadcastable to the batch shape, values in 1..L."""
        steps = _check_steps(steps, self.num_units)
        index, log_pmf = torch.broadcast_tensors((steps - 1).unsqueeze(-1), self.logits)  # as Categorical
        return log_pmf.gather(-1, index[..., :1]).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logits).sum(-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        """Exact samples of z (long, 1-based) through the sequential stop decisions."""
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.halting_logits.shape
            stops = torch.rand(shape, device=self.halting_logits.device) < self.halting_probs.expand(shape)
            stops = torch.cat([stops, stops.new_ones(shape[:-1] + (1,))], dim=-1)
            return stops.float().argmax(-1) + 1

    def relaxed_stops(self, temperature: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``[B, L-1]`` binary-Concrete relaxed stop decisions z~_n = sigmoid((a_n + log u - log(1-u)) / lambda)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        a = self.halting_logits
        noise = logistic_noise(a.shape, device=a.device, generator=generator, dtype=a.dtype)
        return torch.sigmoid((a + noise) / temperature)

    def relaxed_weights(self, temperature: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``[B, L]`` Concrete relaxation of the one-hot z (binary Concrete of Maddison et al. 2017 / Jang et al. 2017
        on each stop decision, PACT §3.2); rows sum to 1.

        Differentiable w.r.t. the halting logits (reparameterised logistic noise).
        """
        return stick_breaking(self.relaxed_stops(temperature, generator))

    def greedy_steps(self, threshold: float = 0.5) -> torch.Tensor:
        """``[B]`` long: the first n with h_n >= threshold, else L (PACT's deterministic test rule)."""
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        stops = self.halting_logits >= logit_threshold(threshold)  # h_n >= threshold; 1.0 never stops
        stops = torch.cat([stops, stops.new_ones(stops.shape[:-1] + (1,))], dim=-1)
        return stops.to(torch.uint8).argmax(-1) + 1


class TruncatedGeometricPrior(torch.distributions.Distribution):
    """PACT's prior p(z = n) proportional to exp(-tau n) on n in 1..L (PACT §3.1).

    Args:
        tau: log-scale cost per unit, >= 0 (``tau = 0`` is uniform).
        num_units: L >= 1.
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, tau: float, num_units: int, validate_args: Optional[bool] = None) -> None:
        if not (isinstance(tau, (int, float)) and tau >= 0):
            raise ValueError(f"tau must be a number >= 0, got {tau!r}")
        if not (isinstance(num_units, int) and num_units >= 1):
            raise ValueError(f"num_units must be an int >= 1, got {num_units!r}")
        self.tau = float(tau)
        self.num_units = num_units
        super().__init__(batch_shape=torch.Size(), validate_args=validate_args)

    @constraints.dependent_property
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(1, self.num_units)

    @property
    def logits(self) -> torch.Tensor:
        """``[L]`` log p(z = n) = -tau n - log sum_m exp(-tau m)."""
        n = torch.arange(1, self.num_units + 1, dtype=torch.float64)
        return torch.log_softmax(-self.tau * n, dim=0)

    @property
    def probs(self) -> torch.Tensor:
        """``[L]`` p(z = n), sums to 1."""
        return self.logits.exp()

    @property
    def mean(self) -> torch.Tensor:
        return (self.probs * torch.arange(1, self.num_units + 1, dtype=torch.float64)).sum()

    def log_prob(self, steps: torch.Tensor) -> torch.Tensor:
        steps = _check_steps(steps, self.num_units)
        return self.logits.to(steps.device)[steps - 1]

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return torch.multinomial(self.probs, int(torch.Size(sample_shape).numel()), replacement=True) \
            .reshape(sample_shape) + 1
