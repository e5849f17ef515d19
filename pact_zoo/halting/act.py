"""ACT halting weights and ponder cost (Graves 2016 eqs. 6-8; semantics of the official SACT ``act.py``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["ACTHalting", "act_halting"]


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
