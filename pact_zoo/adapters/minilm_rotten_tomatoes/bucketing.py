"""Bucketed compact evaluation: every unit runs on the running rows padded up to one of a few sub-batch sizes, so that
a GPU sees a few shapes (cuDNN autotuning, compiled graphs), optionally replayed as one captured CUDA graph per
(unit, bucket). Outputs and depths are those of unbucketed compaction (a padded row is never read).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .compaction import bucket_size, pad_rows
from .flops import current_profiler

__all__ = ["BucketedUnits", "DEFAULT_BUCKETS", "set_bucketing"]

#: Sub-batch sizes of bucketed eval (:func:`set_bucketing`): powers of two up to 64, then multiples of 64.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64) + tuple(range(128, 4097, 64))


class BucketedUnits:
    """Mixin of :class:`~pact_zoo.halting.AdaptiveStage`: runs unit ``n`` of the compact loop padded to a bucket and,
    with ``cuda_graphs``, through a captured CUDA graph. The host class provides ``_run_unit(n, x, context)``
    (``[A, ...]`` -> ``[A, ...]``) and ``training``.

    Attributes:
        buckets: ascending sub-batch sizes, or None (no bucketing).
        cuda_graphs: with ``buckets``, replay one captured CUDA graph per (unit, bucket) on a CUDA state.
    """

    # class-level defaults: a stage unpickled from before these options existed still runs
    buckets: Optional[tuple[int, ...]] = None
    cuda_graphs: bool = False

    def _run_unit_compact(self, n: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`_run_unit` of the compact loop: padded to a bucket (and replayed as a CUDA graph) when asked."""
        if self.buckets is None or self.training or torch.is_grad_enabled() or current_profiler() is not None:
            return self._run_unit(n, x, context)
        rows = x.shape[0]
        size = bucket_size(rows, self.buckets)
        if self.cuda_graphs and x.is_cuda:
            return self._replay_graph(n, size, x, context)
        if size == rows:
            return self._run_unit(n, x, context)
        out = self._run_unit(n, pad_rows(x, size), None if context is None else pad_rows(context, size))
        return out[:rows]

    def _replay_graph(self, n: int, size: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """Unit ``n`` on ``x`` (``[A, ...]``, A <= size) through the CUDA graph captured for (n, size)."""
        key = (n, size, tuple(x.shape[1:]), x.dtype, None if context is None else tuple(context.shape[1:]))
        graphs = self.__dict__.setdefault("_graphs", {})
        entry = graphs.get(key)
        if entry is None:
            entry = self._capture_graph(n, size, x, context)
            graphs[key] = entry
        graph, static_x, static_context, static_out = entry
        rows = x.shape[0]
        static_x[:rows].copy_(x)  # rows past A keep earlier valid inputs: their outputs are never read
        if context is not None:
            static_context[:rows].copy_(context)
        graph.replay()
        return static_out[:rows].clone()  # the next replay overwrites the static output

    def _capture_graph(self, n: int, size: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> tuple:
        static_x = pad_rows(x, size).clone()
        static_context = None if context is None else pad_rows(context, size).clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the capture (cuDNN autotuning, lazy initialisation)
                self._run_unit(n, static_x, static_context)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        pool = self.__dict__.get("_graph_pool")
        if pool is None:
            pool = self.__dict__["_graph_pool"] = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=pool):
            static_out = self._run_unit(n, static_x, static_context)
        return graph, static_x, static_context, static_out


def set_bucketing(model: nn.Module, buckets: Optional[Sequence[int]] = DEFAULT_BUCKETS,
                  cuda_graphs: bool = False) -> None:
    """Bucketed compact eval for every :class:`~pact_zoo.halting.AdaptiveStage` of ``model``: each unit runs on the
    running rows padded up to the next of ``buckets`` (ascending sizes; None switches bucketing off), so that a GPU
    sees a few shapes (cuDNN autotuning, compiled graphs); with ``cuda_graphs`` one CUDA graph per (unit, bucket) is
    captured on first use and replayed. Outputs and depths are those of unbucketed compaction (a padded row is never
    read; eval normalisation is per row). Only gradient-free eval forwards are bucketed."""
    if buckets is not None:
        buckets = tuple(int(b) for b in buckets)
        if not buckets or any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"buckets must be ascending distinct integers >= 1, got {buckets!r}")
    if cuda_graphs and buckets is None:
        raise ValueError("cuda_graphs needs buckets (one graph per (unit, bucket))")
    for module in model.modules():
        if isinstance(module, BucketedUnits) or (hasattr(module, "buckets") and hasattr(module, "_graphs")):
            module.buckets = buckets
            module.cuda_graphs = cuda_graphs
            module._graphs = {}

