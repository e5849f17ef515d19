"""Compaction primitives: run a unit only on the rows that still need it.

A *row* is whatever the first dimension of a state indexes: a sample of a ``[B, C, H, W]`` feature map or a
``[B, H]`` recurrent state, or a token of a flattened ``[B*T, D]`` sequence. The compact loops of
:class:`~pact_zoo.halting.AdaptiveStage` (and per-token modules) are written with four pieces:

* :func:`count_true`: how many rows stop after a unit - the one host synchronisation per unit;
* :func:`split_rows`: local positions of the rows that go on and of those that stop (no synchronisation);
* :func:`take_rows`: gather rows of a state of any rank, keeping a channels_last layout;
* :class:`ActiveRows`: the map from the compacted state back to the original rows, and
  :class:`RowCollector`: finished rows as they leave, assembled into the ``[B, ...]`` output once;
* :func:`bucket_size` / :func:`pad_rows`: round a sub-batch up to one of a few sizes (GPU: bounded shapes for
  cuDNN autotuning and one CUDA graph per (unit, bucket));
* :class:`PaddingTrim`: a padded sequence sub-batch cut to the positions its own rows use (their longest row), and
  the finished rows padded back to the full length;
* :class:`CompactionCost` / :func:`measure_compaction_cost`: when dropping halted rows pays (deferred compaction).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["ActiveRows", "CompactionCost", "PaddingTrim", "RowCollector", "bucket_size", "count_true", "empty_rows",
           "measure_compaction_cost", "pad_rows", "split_rows", "take_rows"]


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def empty_rows(like: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Uninitialised ``[num_rows, ...]`` tensor shaped, typed and laid out (channels_last or not) like ``like``."""
    memory_format = torch.channels_last if _is_channels_last(like) else torch.contiguous_format
    return torch.empty((num_rows,) + tuple(like.shape[1:]), dtype=like.dtype, device=like.device,
                       memory_format=memory_format)


def take_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]`` (``[A, ...]`` -> ``[len(rows), ...]``) in the layout of ``x``, with ``index_select`` (3-5x faster
    than advanced indexing on CPU); a channels_last state is gathered as its contiguous NHWC view."""
    if x.is_contiguous():
        return x.index_select(0, rows)
    if _is_channels_last(x):
        return x.permute(0, 2, 3, 1).index_select(0, rows).permute(0, 3, 1, 2)
    return x[rows]


def count_true(mask: torch.Tensor) -> int:
    """Number of True entries of a ``[A]`` bool mask: the one host synchronisation of a unit."""
    return int(torch.count_nonzero(mask))  # one operator (sum of a bool mask is a cast and a reduction)


def split_rows(stop: torch.Tensor, num_stop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Local positions of the continuing rows and of the stopping rows, each in order (no host synchronisation).

    Args:
        stop: ``[A]`` bool.
        num_stop: ``count_true(stop)``.

    Returns:
        ``keep`` ``[A - num_stop]`` and ``stop_rows`` ``[num_stop]`` long.
    """
    if stop.device.type == "cpu":  # no device to synchronise with: two nonzero() beat a cast, a sort and slices
        return torch.nonzero(~stop).view(-1), torch.nonzero(stop).view(-1)
    order = torch.argsort(stop.to(torch.int8), stable=True)  # continuing rows first
    num_keep = stop.shape[0] - num_stop
    return order[:num_keep], order[num_keep:]


def bucket_size(num_rows: int, buckets: tuple[int, ...]) -> int:
    """The smallest of the ascending ``buckets`` that holds ``num_rows`` (``num_rows`` itself past the last one)."""
    for size in buckets:
        if size >= num_rows:
            return size
    return num_rows


def pad_rows(x: torch.Tensor, num_rows: int) -> torch.Tensor:
    """``[A, ...]`` -> ``[num_rows, ...]`` (``num_rows >= A``, same layout): the extra rows repeat row 0, so they
    hold valid inputs (an all-zero attention mask, say, would not); their outputs are never read."""
    if num_rows == x.shape[0]:
        return x
    out = empty_rows(x, num_rows)
    out[:x.shape[0]].copy_(x)
    out[x.shape[0]:].copy_(x[:1].expand((num_rows - x.shape[0],) + tuple(x.shape[1:])))
    return out


class PaddingTrim:
    """Keeps a padded sequence sub-batch cut to the span of positions that hold a real token in any of its rows.

    A compacted sub-batch holds fewer rows than the batch, so its longest row is often shorter than the batch's: the
    positions past it (right padding) or before it (left padding) are padding in every row, and attention masked to
    the real tokens gives every real position the same state with or without them. :meth:`trim` cuts the state and
    the mask to the span ``[start, stop)`` of the full length T (positions are kept in order, so absolute position
    embeddings, added before, stay right); :meth:`restore` pads a finished ``[A, t, ...]`` piece back to ``[A, T,
    ...]`` with zeros at the positions it no longer held (padding: no pooling reads it).

    Args:
        length: T, the full sequence length of the batch.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self.start, self.stop = 0, length

    def trim(self, state: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[A, t, ...]`` state and ``[A, t]`` mask (1 = real) of the current span -> both cut to the span of
        positions real in some row (one host synchronisation; unchanged when every position is used)."""
        if state.shape[:2] != mask.shape:
            raise ValueError(f"a trimmed state must be [rows, positions, ...] with a [rows, positions] mask, got "
                             f"state {tuple(state.shape)} and mask {tuple(mask.shape)}")
        used = torch.nonzero(mask.any(0)).view(-1)
        if used.shape[0] == 0:  # no real token (cannot happen for validated inputs): keep the span
            return state, mask
        first, last = torch.stack([used[0], used[-1]]).tolist()
        if first == 0 and last == mask.shape[1] - 1:
            return state, mask
        self.start, self.stop = self.start + first, self.start + last + 1
        return state[:, first:last + 1].contiguous(), mask[:, first:last + 1].contiguous()

    def restore(self, piece: torch.Tensor) -> torch.Tensor:
        """``[A, stop - start, ...]`` -> ``[A, T, ...]``, zeros outside the span."""
        if self.start == 0 and self.stop == self.length:
            return piece
        out = piece.new_zeros((piece.shape[0], self.length) + tuple(piece.shape[2:]))
        out[:, self.start:self.stop] = piece
        return out


class ActiveRows:
    """Which original rows a compacted state holds, in order. ``index`` is None while it holds all of them."""

    def __init__(self, num_rows: int, device: torch.device) -> None:
        self.num_rows = num_rows
        self.device = device
        self.index: Optional[torch.Tensor] = None

    def original(self, local: torch.Tensor) -> torch.Tensor:
        """Original row numbers of the ``local`` positions of the current state."""
        return local if self.index is None else self.index.index_select(0, local)

    def all(self) -> torch.Tensor:
        """``[A]`` original row numbers of every row the current state holds."""
        if self.index is None:
            return torch.arange(self.num_rows, device=self.device)
        return self.index

    def keep(self, local: torch.Tensor) -> None:
        """Only the ``local`` positions of the current state go on."""
        self.index = local if self.index is None else self.index.index_select(0, local)

    def add_into(self, out: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``out[rows] += values`` for the current rows (in place when no gradient is recorded)."""
        differentiable = torch.is_grad_enabled() and (out.requires_grad or values.requires_grad)
        if self.index is None:
            return out + values if differentiable else out.add_(values)
        return out.index_add(0, self.index, values) if differentiable else out.index_add_(0, self.index, values)


class RowCollector:
    """Finished rows of a ``[B, ...]`` result, collected as they leave and assembled once.

    While no gradient is recorded every piece is freed as soon as it is copied into place (peak memory: one
    result of B rows); with gradients the pieces are concatenated and put in order with one gather.
    """

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self._rows: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []

    def __bool__(self) -> bool:
        return bool(self._rows)

    def add(self, rows: torch.Tensor, values: torch.Tensor) -> None:
        """``rows`` ``[H]`` original row numbers and their ``[H, ...]`` values."""
        self._rows.append(rows)
        self._values.append(values)

    def assemble(self) -> torch.Tensor:
        """The ``[B, ...]`` result (every row must have been added once)."""
        if len(self._rows) == 1 and self._rows[0].shape[0] == self.num_rows:
            values = self._values[0]
            rows = self._rows[0]
            self._rows, self._values = [], []
            if rows.device.type == "meta" or self.num_rows == 1:  # one row is in order
                return values
            inverse = torch.empty_like(rows).scatter_(0, rows, torch.arange(rows.shape[0], device=rows.device))
            return take_rows(values, inverse)
        if torch.is_grad_enabled() and any(v.requires_grad for v in self._values):
            rows = torch.cat(self._rows)
            values = torch.cat(self._values)
            self._rows, self._values = [], []
            inverse = torch.empty_like(rows).scatter_(0, rows, torch.arange(rows.shape[0], device=rows.device))
            return values.index_select(0, inverse)
        out = empty_rows(self._values[0], self.num_rows)
        while self._rows:  # free every piece once it is in place
            rows, values = self._rows.pop(), self._values.pop()
            out.index_copy_(0, rows, values)
            del values
        return out


@dataclass(frozen=True)
class CompactionCost:
    """Measured costs (seconds) that decide when dropping halted rows from a batch pays.

    Attributes:
        row_seconds: per unit of the stage, the marginal time of one more row in that unit.
        gather_seconds: fixed time of one gather of the running rows (state, index and carry).
        gather_row_seconds: time per gathered row.
    """

    row_seconds: Sequence[float]
    gather_seconds: float
    gather_row_seconds: float

    def pays(self, unit: int, dead: int, live: int) -> bool:
        """Whether to gather the ``live`` rows before unit ``unit`` now instead of running ``dead`` halted rows
        through it: the dead rows' share of the unit against the gather (greedy: dead rows pile up until it pays)."""
        return dead * self.row_seconds[unit] >= self.gather_seconds + live * self.gather_row_seconds


def _median_seconds(fn, device: torch.device, repeats: int) -> float:
    import statistics
    import time

    times = []
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


@torch.inference_mode()
def measure_compaction_cost(stage: nn.Module, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                            repeats: int = 5) -> CompactionCost:
    """Measure on ``x``'s device what compaction costs and saves in ``stage`` (eval mode, full depth).

    Args:
        stage: an :class:`~pact_zoo.halting.AdaptiveStage`.
        x: ``[B, ...]`` stage input, B >= 2 (the batch size the cost model is for).
        context: optional ``[B, ...]`` per-row context of the units.
        repeats: timed calls per measurement (median).

    Returns:
        per unit, the marginal time of a row, ``(t(B rows) - t(1 row)) / (B - 1)``; the fixed and per-row time of
        gathering the running rows (state and index), from gathers of 1 and B - 1 rows of every unit's input.
    """
    batch = x.shape[0]
    if batch < 2:
        raise ValueError(f"x must hold at least 2 rows to measure a per-row cost, got {batch}")
    device = x.device
    row_seconds, gather_one, gather_many = [], [], []
    one, many = torch.zeros(1, dtype=torch.long, device=device), torch.arange(batch - 1, device=device)
    state = x
    for n in range(stage.num_units):
        ctx_one = None if context is None else context[:1]
        full = _median_seconds(lambda: stage._run_unit(n, state, context), device, repeats)
        single = _median_seconds(lambda: stage._run_unit(n, state[:1], ctx_one), device, repeats)
        row_seconds.append(max(full - single, 0.0) / (batch - 1))
        gather_one.append(_median_seconds(lambda: (take_rows(state, one), many.index_select(0, one)), device, repeats))
        gather_many.append(_median_seconds(lambda: (take_rows(state, many), many.index_select(0, many)), device,
                                           repeats))
        state = stage._run_unit(n, state, context)
    one_s, many_s = sum(gather_one) / len(gather_one), sum(gather_many) / len(gather_many)
    per_row = max(many_s - one_s, 0.0) / max(batch - 2, 1)
    return CompactionCost(row_seconds=tuple(row_seconds), gather_seconds=max(one_s - per_row, 0.0),
                          gather_row_seconds=per_row)
