"""The compact execution loop of :class:`~pact_zoo.halting.AdaptiveStage`: after every unit the stage's method
decides which rows stop, and stopped rows leave the batch (a halted sample costs nothing more). Evaluation of every
method and sampled-path training (policy gradient, anytime batches) run here; the dense loop stays in the stage.

Also the zero-valued "touch" that keeps parameters no row reached in the autograd graph (DDP).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .compaction import ActiveRows, PaddingTrim, RowCollector, count_true, split_rows, take_rows
from .flops import current_profiler
from .method import HaltingMethod, HaltingRecord

__all__ = ["forward_compact", "row_weights", "with_touch", "zero_touch"]


def _split_live(stop: torch.Tensor, live: torch.Tensor, num_keep: int, num_stop: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Local positions of the live rows that go on and of those that stop (``stop`` is within ``live``), in order;
    one stable sort, no host synchronisation."""
    key = stop.to(torch.int8) + 2 * (~live).to(torch.int8)  # going on 0, stopping 1, dead 2
    order = torch.argsort(key, stable=True)
    return order[:num_keep], order[num_keep:num_keep + num_stop]


def row_weights(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View ``[B]`` weights so they broadcast against a ``[B, ...]`` state, in the state's dtype."""
    return weights.to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))


def zero_touch(module: nn.Module) -> Optional[torch.Tensor]:
    """A zero-valued scalar that depends on every trainable parameter of ``module`` (None if it has none), including
    those its submodules use without registering them (``referenced_parameters()``, e.g. an exit that is the model's
    own head)."""
    params = list(module.parameters())
    for sub in module.modules():
        referenced = getattr(sub, "referenced_parameters", None)
        if callable(referenced):
            params.extend(referenced())
    params = [p.reshape(-1)[0] for p in params if p.requires_grad]
    return torch.stack(params).sum() * 0.0 if params else None


def with_touch(out: torch.Tensor, touch: Optional[torch.Tensor]) -> torch.Tensor:
    """``out`` made to depend on the parameters behind a :func:`zero_touch` (value unchanged)."""
    return out if touch is None else out + touch.to(out.dtype)


def forward_compact(stage: nn.Module, x: torch.Tensor, context: Optional[torch.Tensor], mode: str,
                    method: Optional[HaltingMethod] = None, units: Optional[Sequence[Callable]] = None
                    ) -> torch.Tensor:
    """Decide after every unit; stopped rows leave the batch. One host synchronisation per unit.

    Methods that take the state at the stop (PACT, policy gradient) keep each stopped row's final state as it
    is (one piece per unit) and assemble the output once: memory is one stage state of B rows, with no
    accumulator (PACT's memory claim). Accumulating methods (ACT) add w_n x_n of the running rows to the output.

    A lone running row (a batch of one, or the last row left of a batch) takes a lean loop: no split, gather or
    count, one host read per unit (for a rule that is a threshold on the logit,
    :meth:`~pact_zoo.halting.HaltingMethod.lone_row_threshold`, one Python comparison instead of tensor
    operators), and the loop ends when the row stops. With
    :attr:`trim_padding` the sub-batch is cut to its own longest row at the start and after every compaction.
    ``units`` replaces what is called for the stage's units (its compiled units under ``torch.compile``).
    """
    method = stage.method if method is None else method
    num_units, last_unit = len(stage.units), len(stage.units) - 1
    profiler = current_profiler()
    trim: Optional[PaddingTrim] = None
    if stage.trim_padding and context is not None and stage.exits is None:
        trim = PaddingTrim(x.shape[1])
        x, context = trim.trim(x, context)
    units = list(stage.units) if units is None else units
    direct = (stage.buckets is None and profiler is None
              and not (stage.grad_checkpointing and stage.training and torch.is_grad_enabled()))

    def run(n: int, state: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        if not direct:
            return stage._run_unit_compact(n, state, context)
        return units[n](state) if context is None else units[n](state, context)

    heads = list(stage.decision_heads) if method.uses_heads else []
    with_context = [context is not None and getattr(head, "uses_context", False) for head in heads]

    def head_logits(n: int, state: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        if profiler is not None:
            return stage._halting_logit(n, state, context)
        return (heads[n](state, context) if with_context[n] else heads[n](state)).float()

    state = run(0, x, context)
    batch_size, device = state.shape[0], state.device
    active = ActiveRows(batch_size, device)
    steps = torch.full((batch_size,), num_units, dtype=torch.long, device=device)
    carry = method.start(batch_size, device, mode)
    log: dict[str, list] = defaultdict(list)
    pieces = RowCollector(batch_size)
    values: dict[str, RowCollector] = {}
    out: Optional[torch.Tensor] = None
    limit = method.lone_row_threshold(mode) if method.uses_heads else None

    def accumulate(n: int, state: torch.Tensor, context: Optional[torch.Tensor], logits: Optional[torch.Tensor],
                   weight: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
        """ACT: adds w_n times this unit's output (its exit's, with exits) of the running rows to ``out``."""
        unit_out = stage._stop_output(n, state, context, logits)
        contribution = unit_out * row_weights(weight, unit_out)
        if trim is not None:
            contribution = trim.restore(contribution)
        return contribution if out is None else active.add_into(out, contribution)

    # deferred compaction (compaction_cost set): halted rows may stay in the state as dead rows (their output is
    # taken when they halt, their decisions are ignored) until a gather pays; greedy, non-accumulating only
    cost_model = stage.compaction_cost
    defer = (cost_model is not None and not method.accumulates and mode == "greedy"
             and not torch.is_grad_enabled())
    live: Optional[torch.Tensor] = None  # [A] bool: rows of the state still running; None: every row
    num_live = batch_size
    last, logits = last_unit, None  # the unit whose state the loop ends with, its decision logits
    n = 0
    while n < num_units:
        num_rows = state.shape[0]
        logits = None
        if num_rows == 1 and live is None:  # a lone row: run on until it stops, one host read per unit
            stops = False
            while n < last_unit:
                logits = head_logits(n, state, context) if method.uses_heads else None
                if limit is not None:
                    stops, weight = logits.item() >= limit, None
                else:
                    decision = method.decide(n, logits, carry, mode, log)
                    stops, weight = bool(decision.stop.item()), decision.weight
                if method.accumulates:
                    out = accumulate(n, state, context, logits, weight, out)
                if stops:
                    break
                n += 1
                state = run(n, state, context)
            if not stops:  # the last unit
                logits = None
                if method.accumulates:
                    out = accumulate(n, state, context, None, method.last_weight(carry), out)
            stop, num_stop = None, 1
        else:
            if n < last_unit:
                logits = head_logits(n, state, context) if method.uses_heads else None
                decision = method.decide(n, logits, carry, mode, log)
                stop, weight = decision.stop, decision.weight
                if live is not None:
                    stop = stop & live
                num_stop = count_true(stop)
            else:
                stop, weight, num_stop = None, method.last_weight(carry), num_live
            if method.accumulates:
                out = accumulate(n, state, context, logits, weight, out)
            if num_stop == 0 and n < last_unit:  # (at the last unit every live row stops, also of none)
                n += 1
                state = run(n, state, context)
                continue
        if num_stop == num_live:
            keep = None
            halted = (torch.arange(num_rows, device=device) if live is None
                      else torch.nonzero(live if stop is None else stop).view(-1))
        elif live is None:
            keep, halted = split_rows(stop, num_stop)
        else:
            keep, halted = _split_live(stop, live, num_live - num_stop, num_stop)
        halted_rows = active.original(halted)
        if keep is None and active.index is None and live is None:
            steps.fill_(n + 1)
        else:
            steps.index_fill_(0, halted_rows, n + 1)
        for key, value in method.finish(n + 1, carry, halted).items():
            values.setdefault(key, RowCollector(batch_size)).add(halted_rows, value)
        if keep is None:
            last = n
            break
        if not method.accumulates:
            piece = stage._stop_output(
                n, take_rows(state, halted), None if context is None else take_rows(context, halted),
                None if logits is None else take_rows(logits, halted))
            pieces.add(halted_rows, piece if trim is None else trim.restore(piece))
        num_live -= num_stop
        if defer and not cost_model.pays(n + 1, num_rows - num_live, num_live):
            live = ~stop if live is None else live & ~stop  # the halted rows stay, dead
        else:
            state = take_rows(state, keep)
            carry = {key: value.index_select(0, keep) for key, value in carry.items()}
            if context is not None:
                context = take_rows(context, keep)
                if trim is not None:
                    state, context = trim.trim(state, context)
            active.keep(keep)
            live = None
        n += 1
        state = run(n, state, context)
    if not method.accumulates:
        if live is not None:
            rows = torch.nonzero(live).view(-1)
            state = take_rows(state, rows)
            context = None if context is None else take_rows(context, rows)
            logits = None if logits is None else take_rows(logits, rows)
        final = stage._stop_output(last, state, context, logits)
        if trim is not None:
            final = trim.restore(final)
        if pieces:
            pieces.add(active.all() if live is None else active.original(rows), final)
            out = pieces.assemble()
        else:  # no row left early: the final output is the output, in order
            out = final
    del state
    row_values = {key: collector.assemble() for key, collector in values.items()}
    record = HaltingRecord(units_executed=steps, cost=row_values.pop("cost", None), num_units=num_units,
                           method=method, log_prob=row_values.pop("log_prob", None),
                           heads_ran=method.uses_heads)
    if mode in ("sample", "uniform") and stage.training and torch.is_grad_enabled():
        record.terms = method.terms(log, row_values)
        # units no row reached get no gradient; a zero-valued touch keeps every parameter in the graph (DDP)
        record.touch = zero_touch(stage)
        out = with_touch(out, record.touch)  # the output itself depends on every parameter (DDP)
    stage._keep(record)
    return out
