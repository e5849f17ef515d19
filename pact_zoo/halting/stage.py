"""AdaptiveStage: runs L units on a state under a halting method (DESIGN §1-2).

Training runs every unit for every sample (the Concrete / ACT mixture needs all of them, and DDP needs every
parameter in the graph). Evaluation is deterministic and compacts the batch: after each unit the halted rows
are written to the stage output and only the still-active rows go on to the next unit, so a halted sample
costs nothing. The ``"masked"`` execution mode runs every unit for every sample and multiplies by the
deterministic weights instead (the way SACT and its peers evaluate); it exists as a reference and a baseline.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional, Sequence

import torch
import torch.utils.checkpoint
from torch import nn

try:  # timm's FX tracing treats the stage as a leaf; the core itself does not need timm (remote-code checkpoints)
    from timm.layers import register_notrace_module
except ImportError:  # pragma: no cover - exercised only where timm is absent
    def register_notrace_module(module: type) -> type:
        return module

from .act import act_halting
from .config import HaltingConfig, validate_threshold
from .distributions import StoppingDistribution
from .flops import current_profiler

__all__ = ["AdaptiveStage", "EXECUTION_MODES"]

#: ``"compact"``: halted rows leave the batch in eval; ``"masked"``: every unit runs, results are masked.
EXECUTION_MODES = ("compact", "masked")


def _rows(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View ``[B]`` weights so they broadcast against a ``[B, ...]`` state, in the state's dtype."""
    return weights.to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))


def _empty_rows(like: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Uninitialised ``[batch_size, ...]`` tensor shaped, typed and laid out (channels_last or not) like ``like``."""
    channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last)
    return torch.empty((batch_size,) + tuple(like.shape[1:]), dtype=like.dtype, device=like.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]`` (``[A, ...]`` -> ``[len(rows), ...]``) in the layout of ``x``, with ``index_select`` (3-5x
    faster than advanced indexing on CPU); a channels_last state is gathered as its contiguous NHWC view."""
    if x.is_contiguous():
        return x.index_select(0, rows)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).index_select(0, rows).permute(0, 3, 1, 2)
    return x[rows]


@register_notrace_module
class AdaptiveStage(nn.Module):
    """A sequence of units whose depth each sample chooses.

    Args:
        units: L modules ``[B, ...] -> [B, ...]`` applied in order (a ResNet stage, or the ponder steps of one
            recurrent time step). If ``context`` is given to :meth:`forward`, units are called ``unit(x, context)``.
        heads: L - 1 halting heads ``[B, ...] -> [B]`` logits, one after every unit but the last; ``None``
            (or empty) only for ``method="none"``.
        method: ``"pact"``, ``"act"`` or ``"none"``.
        tau, temperature, threshold, act_eps, cost_estimator: see :class:`~pact_zoo.halting.HaltingConfig`.
        execution: eval strategy, ``"compact"`` (default) or ``"masked"``.

    After every forward the stage records ``last_units_executed`` (``[B]`` long) and ``last_cost`` (``[B]``
    float, the per-sample cost that ``tau`` multiplies: E_q[z] / relaxed sum_n n w_n for PACT, N + R for ACT).
    """

    def __init__(
            self,
            units: Sequence[nn.Module],
            heads: Optional[Sequence[nn.Module]] = None,
            method: str = "pact",
            tau: float = HaltingConfig.tau,
            temperature: float = HaltingConfig.temperature,
            threshold: float = HaltingConfig.threshold,
            act_eps: float = HaltingConfig.act_eps,
            cost_estimator: str = HaltingConfig.cost_estimator,
            execution: str = "compact",
    ) -> None:
        super().__init__()
        config = HaltingConfig(method=method, tau=tau, temperature=temperature, threshold=threshold,
                               act_eps=act_eps, cost_estimator=cost_estimator)
        if len(units) < 1:
            raise ValueError("units must hold at least one module")
        self.units = nn.ModuleList(units)
        heads = list(heads) if heads is not None else []
        if config.adaptive and len(heads) != len(units) - 1:
            raise ValueError(f"heads must hold len(units) - 1 = {len(units) - 1} modules for method "
                             f"{method!r}, got {len(heads)}")
        self.heads = nn.ModuleList(heads) if heads else None
        self.method = config.method
        self.tau = config.tau
        self.temperature = config.temperature
        self.threshold = config.threshold
        self.act_eps = config.act_eps
        self.cost_estimator = config.cost_estimator
        self.execution = execution
        if execution not in EXECUTION_MODES:
            raise ValueError(f"execution must be one of {EXECUTION_MODES}, got {execution!r}")
        self.grad_checkpointing = False
        self.last_units_executed: Optional[torch.Tensor] = None
        self.last_cost: Optional[torch.Tensor] = None

    @property
    def num_units(self) -> int:
        return len(self.units)

    @property
    def adaptive(self) -> bool:
        """True when the stage halts (method other than ``"none"`` and heads present)."""
        return self.method != "none" and self.heads is not None

    def set_threshold(self, threshold: float) -> None:
        self.threshold = validate_threshold(threshold)

    def extra_repr(self) -> str:
        if not self.adaptive:
            return f"method='none', num_units={self.num_units}"
        return (f"method={self.method!r}, num_units={self.num_units}, tau={self.tau}, "
                f"temperature={self.temperature}, threshold={self.threshold}, act_eps={self.act_eps}")

    # ----------------------------------------------------------------------------------------------------
    def _run_unit(self, n: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        unit = self.units[n]
        profiler = current_profiler()
        with profiler.slot(self, "unit", n) if profiler is not None else nullcontext():
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                if context is None:
                    return torch.utils.checkpoint.checkpoint(unit, x, use_reentrant=False)
                return torch.utils.checkpoint.checkpoint(unit, x, context, use_reentrant=False)
            return unit(x) if context is None else unit(x, context)

    def _halting_logit(self, n: int, x: torch.Tensor) -> torch.Tensor:
        profiler = current_profiler()
        with profiler.slot(self, "head", n) if profiler is not None else nullcontext():
            return self.heads[n](x).float()

    def _record(self, units_executed: torch.Tensor, cost: Optional[torch.Tensor]) -> None:
        self.last_units_executed = units_executed
        self.last_cost = cost

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args:
            x: ``[B, ...]`` stage input.
            context: optional ``[B, ...]`` per-sample tensor passed to every unit (e.g. an RNN input).

        Returns:
            ``[B, ...]`` stage output (the shape the units produce).
        """
        batch_size = x.shape[0]
        if not self.adaptive:
            for n in range(self.num_units):
                x = self._run_unit(n, x, context)
            self._record(torch.full((batch_size,), self.num_units, dtype=torch.long, device=x.device), None)
            return x
        dense = (self.training or self.execution == "masked" or x.device.type == "meta"
                 or current_profiler() is not None or torch.jit.is_scripting())
        if dense:
            return self._forward_dense(x, context)
        if self.method == "pact":
            return self._forward_pact_compact(x, context)
        return self._forward_act_compact(x, context)

    # ----------------------------------------------------------------------------------------------------
    def _forward_dense(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """Every unit and head runs for every sample; the output is the weighted sum of unit outputs."""
        states, logits = [], []
        for n in range(self.num_units):
            x = self._run_unit(n, x, context)
            states.append(x)
            if n < self.num_units - 1:
                logits.append(self._halting_logit(n, x))
        batch_size = x.shape[0]
        halting_logits = torch.stack(logits, dim=1) if logits else x.new_zeros(batch_size, 0, dtype=torch.float32)
        num_units = torch.full((batch_size,), self.num_units, dtype=torch.long, device=x.device)

        if self.method == "pact":
            dist = StoppingDistribution(halting_logits, validate_args=False)  # no host sync
            if self.training:
                weights = dist.relaxed_weights(self.temperature)  # Concrete relaxation (DESIGN §1)
                if self.cost_estimator == "expected":
                    cost = dist.mean
                else:
                    steps_grid = torch.arange(1, self.num_units + 1, device=x.device, dtype=weights.dtype)
                    cost = (weights * steps_grid).sum(dim=1)
                units_executed = num_units
            else:  # deterministic rule, masked: one-hot on the greedy step
                steps = dist.greedy_steps(self.threshold)
                weights = nn.functional.one_hot(steps - 1, self.num_units).to(halting_logits.dtype)
                cost, units_executed = steps.to(halting_logits.dtype), steps
        else:  # ACT
            act = act_halting(torch.sigmoid(halting_logits), self.act_eps)
            weights, cost = act.weights, act.ponder_cost
            units_executed = num_units if self.training else act.steps

        out = states[0] * _rows(weights[:, 0], states[0])
        for n in range(1, self.num_units):
            out = out + states[n] * _rows(weights[:, n], states[n])
        self._record(units_executed, cost)
        return out

    # ----------------------------------------------------------------------------------------------------
    @staticmethod
    def _num_halted(stop: torch.Tensor) -> int:
        """How many rows stop: the one host synchronisation of a unit (``stop``: ``[A]`` bool)."""
        return int(stop.sum())

    @staticmethod
    def _split(stop: torch.Tensor, num_halted: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of continuing and halting rows, continuing first (no host synchronisation)."""
        order = torch.argsort(stop.to(torch.int8), stable=True)  # continuing rows first
        num_continue = stop.shape[0] - num_halted
        return order[:num_continue], order[num_continue:]

    def _forward_pact_compact(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """PACT deterministic evaluation: stop at the first n with h_n >= threshold, output x_n.

        Halted rows leave the batch for good: their final states are kept as they are (one piece per halting
        unit) and the stage output is assembled from the pieces at the end. Memory: the states of the halted
        rows plus the running rows, i.e. one stage state of ``B`` rows; no accumulator and no second
        stage-sized buffer while units run (the paper's memory claim). One host synchronisation per unit.
        """
        state = self._run_unit(0, x, context)
        batch_size = state.shape[0]
        steps = torch.full((batch_size,), self.num_units, dtype=torch.long, device=state.device)
        finished: list[tuple[Optional[torch.Tensor], torch.Tensor]] = []  # (rows, their final states)
        active_index: Optional[torch.Tensor] = None  # rows of the batch held by ``state``; None = all, in order
        active_context = context
        for n in range(self.num_units - 1):
            stop = torch.sigmoid(self._halting_logit(n, state)) >= self.threshold
            num_halted = self._num_halted(stop)
            if num_halted:
                if num_halted == state.shape[0]:  # every running row stops here: ``state`` is final
                    if active_index is None:
                        steps.fill_(n + 1)
                    else:
                        steps.index_fill_(0, active_index, n + 1)
                    break
                keep, halt = self._split(stop, num_halted)
                halt_rows = halt if active_index is None else active_index[halt]
                steps.index_fill_(0, halt_rows, n + 1)
                finished.append((halt_rows, _take_rows(state, halt)))
                state = _take_rows(state, keep)
                active_index = keep if active_index is None else active_index[keep]
                if active_context is not None:
                    active_context = _take_rows(active_context, keep)
            state = self._run_unit(n + 1, state, active_context)
        self._record(steps, steps.to(torch.float32))
        if active_index is None:  # no row left the batch: the state is the output
            return state
        finished.append((active_index, state))
        del state
        out = _empty_rows(finished[0][1], batch_size)
        while finished:  # free every piece once it is in place
            rows, rows_state = finished.pop()
            out.index_copy_(0, rows, rows_state)
            del rows_state
        return out

    def _forward_act_compact(self, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """ACT evaluation with compaction: out = sum_n p_n x_n accumulated over the rows still running."""
        active_state = self._run_unit(0, x, context)
        batch_size = active_state.shape[0]
        device = active_state.device
        steps = torch.full((batch_size,), self.num_units, dtype=torch.long, device=device)
        cost = torch.zeros(batch_size, dtype=torch.float32, device=device)
        cumulative = torch.zeros(batch_size, dtype=torch.float32, device=device)  # of the active rows
        active_index: Optional[torch.Tensor] = None
        active_context = context
        out: Optional[torch.Tensor] = None
        for n in range(self.num_units):
            if n > 0:
                active_state = self._run_unit(n, active_state, active_context)
            remainder = 1.0 - cumulative
            if n < self.num_units - 1:
                h = torch.sigmoid(self._halting_logit(n, active_state))
                cumulative = cumulative + h
                stop = cumulative >= 1.0 - self.act_eps  # Graves eq. 6 / SACT act.py
                weight = torch.where(stop, remainder, h)
            else:
                stop = torch.ones_like(remainder, dtype=torch.bool)
                weight = remainder
            contribution = active_state * _rows(weight, active_state)
            if out is None:
                out = contribution
            elif active_index is None:
                out.add_(contribution)
            else:
                out.index_add_(0, active_index, contribution)
            num_halted = self._num_halted(stop)
            if num_halted:
                keep, halt = self._split(stop, num_halted)
                halt_rows = halt if active_index is None else active_index[halt]
                steps.index_fill_(0, halt_rows, n + 1)
                cost.index_copy_(0, halt_rows, (n + 1) + remainder[halt])  # rho = N + R
                if num_halted == active_state.shape[0]:
                    break
                active_state, cumulative = _take_rows(active_state, keep), cumulative[keep]
                active_index = keep if active_index is None else active_index[keep]
                if active_context is not None:
                    active_context = _take_rows(active_context, keep)
        self._record(steps, cost)
        return out
