"""ACT halting (Graves 2016, "Adaptive Computation Time for Recurrent Neural Networks", arXiv:1603.08983; SACT,
Figurnov et al. CVPR 2017): the output is the mean-field mixture sum_n p_n x_n, p_n = h_n until the cumulative
halting probability reaches 1 - eps and the remainder R after; the ponder cost is rho = N + R (eqs. 6-8; semantics
of the official SACT ``act.py``). Training and evaluation use the same weights; evaluation compacts the rows that
halted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .method import HaltingMethod, Knob, Mixture, StopDecision, check_number, register_halting_method

__all__ = ["ACTHalting", "ACTMethod", "act_halting"]

#: Graves 2016 / SACT: halt once sum_n h_n >= 1 - eps.
DEFAULT_ACT_EPS = 0.01
DEFAULT_TAU = 0.01


@dataclass
class ACTHalting:
    """Result of :func:`act_halting`.

    Attributes:
        weights: ``[B, L]`` p_n = h_n (n < N), p_N = R, 0 after; rows sum to 1.
        steps: ``[B]`` long, N (1-based number of executed units).
        ponder_cost: ``[B]`` rho = N + R, gradient only through R.
        remainder: ``[B]`` R = 1 - sum_{n<N} h_n.
    """

    weights: torch.Tensor
    steps: torch.Tensor
    ponder_cost: torch.Tensor
    remainder: torch.Tensor


def act_halting(halting_probs: torch.Tensor, eps: float = 0.01) -> ACTHalting:
    """ACT over one stage of L units.

    Args:
        halting_probs: ``[B, L-1]`` h_n for units 1..L-1 (h_L := 1).
        eps: halt once sum_{j<=n} h_j >= 1 - eps.

    Returns:
        :class:`ACTHalting` with ``weights`` ``[B, L]``, ``steps`` ``[B]``, ``ponder_cost`` ``[B]``.
    """
    if halting_probs.dim() != 2:
        raise ValueError(f"halting_probs must be [B, L-1], got shape {tuple(halting_probs.shape)}")
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    # h_L = 1, written as h*0 + 1 so that no head drops out of the autograd graph.
    last = halting_probs[:, :1] * 0 + 1 if halting_probs.shape[1] else halting_probs.new_ones(
        halting_probs.shape[0], 1)
    h = torch.cat([halting_probs, last], dim=1)  # [B, L]
    num_units = h.shape[1]
    cumulative = torch.cumsum(h, dim=1)
    reached = cumulative.detach() >= 1.0 - eps
    reached[:, -1] = True
    halt_index = reached.to(torch.uint8).argmax(dim=1)  # N - 1, no gradient (SACT stop_gradient)
    position = torch.arange(num_units, device=h.device).unsqueeze(0)
    before = position < halt_index.unsqueeze(1)
    remainder = 1.0 - (h * before).sum(dim=1)  # R = 1 - sum_{n<N} h_n
    at_halt = position == halt_index.unsqueeze(1)
    weights = torch.where(before, h, h.new_zeros(())) + at_halt * remainder.unsqueeze(1)
    steps = halt_index + 1
    ponder_cost = steps.to(h.dtype) + remainder
    return ACTHalting(weights=weights, steps=steps, ponder_cost=ponder_cost, remainder=remainder)


@register_halting_method
class ACTMethod(HaltingMethod):
    """ACT: the same mean-field mixture in training and evaluation; the output accumulates sum_n p_n x_n."""

    name = "act"
    paper = "Graves 2016, Adaptive Computation Time for Recurrent Neural Networks, arXiv:1603.08983"
    knobs = {
        "tau": Knob(DEFAULT_TAU, check_number(0.0), "ponder-cost weight, >= 0"),
        "act_eps": Knob(DEFAULT_ACT_EPS, check_number(0.0, 1.0, min_open=True, max_open=True),
                        "halt once the cumulative halting probability reaches 1 - act_eps, in (0, 1)"),
    }
    accumulates = True

    def mixture(self, halting_logits: torch.Tensor, training: bool) -> Mixture:
        act = act_halting(torch.sigmoid(halting_logits), self.act_eps)
        units = torch.full_like(act.steps, act.weights.shape[1]) if training else act.steps
        return Mixture(weights=act.weights, units_executed=units, cost=act.ponder_cost)

    def start(self, batch_size: int, device: torch.device, mode: str) -> dict:
        return {"cumulative": torch.zeros(batch_size, device=device),
                "remainder": torch.ones(batch_size, device=device)}

    def decide(self, index: int, logits: torch.Tensor, carry: dict, mode: str, log: dict) -> StopDecision:
        h = torch.sigmoid(logits.float())
        remainder = 1.0 - carry["cumulative"]
        cumulative = carry["cumulative"] + h
        stop = cumulative >= 1.0 - self.act_eps  # Graves eq. 6 / SACT act.py
        carry["cumulative"], carry["remainder"] = cumulative, remainder
        return StopDecision(stop=stop, weight=torch.where(stop, remainder, h))

    def last_weight(self, carry: dict) -> Optional[torch.Tensor]:
        carry["remainder"] = 1.0 - carry["cumulative"]
        return carry["remainder"]

    def finish(self, units: int, carry: dict, rows: torch.Tensor) -> dict:
        return {"cost": units + carry["remainder"][rows]}  # rho = N + R
