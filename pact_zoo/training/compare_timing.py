"""Measured time per sample of a comparison's entries (the ``timing:`` key of a comparison recipe).

Every entry's model runs at its own rule (an adaptive model also at full depth, the plain computation of the same
weights) on the first ``samples`` samples of the evaluation split, cut into batches of each of ``batch_sizes``
(padded per batch, as evaluation pads them). All entries are timed round robin
(:func:`~pact_zoo.bench.time_round_robin`), so that load from other processes hits them alike; the median of
``repeats`` rounds after ``warmup`` rounds is reported, with the clock, the intra-op threads and the 1-minute load
average before and after each batch size.

    timing: {batch_sizes: [1, 8, 64], samples: 64, repeats: 3, warmup: 1, clock: wall}
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from .config import ConfigError

__all__ = ["TIMING_KEYS", "DEFAULT_TIMING", "FULL_DEPTH_SUFFIX", "load_timing", "time_entries", "format_timing"]

DEFAULT_TIMING: Dict[str, Any] = {"batch_sizes": [1, 8, 64], "samples": 64, "repeats": 3, "warmup": 1,
                                  "clock": "wall"}
TIMING_KEYS = set(DEFAULT_TIMING)
#: the timed name of an adaptive entry at full depth
FULL_DEPTH_SUFFIX = " (full depth)"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def load_timing(raw: Any, where: str) -> Optional[Dict[str, Any]]:
    """The checked ``timing:`` mapping with its defaults filled in (None when the recipe has none)."""
    from ..bench.timing import CLOCKS

    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - TIMING_KEYS:
        raise ConfigError(f"{where}: timing must be a mapping of any of {', '.join(sorted(TIMING_KEYS))}, got {raw!r}")
    timing = {**DEFAULT_TIMING, **raw}
    sizes = timing["batch_sizes"]
    if not isinstance(sizes, list) or not sizes or not all(_positive_int(b) for b in sizes):
        raise ConfigError(f"{where}: timing.batch_sizes must be a non-empty list of positive integers, got {sizes!r}")
    for key in ("samples", "repeats"):
        if not _positive_int(timing[key]):
            raise ConfigError(f"{where}: timing.{key} must be a positive integer, got {timing[key]!r}")
    if not (isinstance(timing["warmup"], int) and not isinstance(timing["warmup"], bool) and timing["warmup"] >= 0):
        raise ConfigError(f"{where}: timing.warmup must be an integer >= 0, got {timing['warmup']!r}")
    if timing["clock"] not in CLOCKS:
        raise ConfigError(f"{where}: timing.clock must be one of {CLOCKS}, got {timing['clock']!r}")
    return timing


def _batches(dataset: Any, collate_fn: Optional[Callable], samples: int, batch_size: int) -> list:
    """The first ``samples`` samples of ``dataset`` in batches of ``batch_size``, in order."""
    from torch.utils.data import DataLoader, Subset

    subset = Subset(dataset, range(min(samples, len(dataset))))
    return list(DataLoader(subset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn))


def time_entries(models: Dict[str, nn.Module], datasets: Dict[str, tuple], timing: Dict[str, Any]
                 ) -> Dict[str, Any]:
    """Time every model (``name -> model``; ``datasets``: ``name -> (evaluation dataset, collate_fn)``, each
    model's own so that its tokenizer or transform applies) as the module docstring says.

    Returns ``{"clock", "threads", "samples", "batch_sizes": {batch size: {"ms_per_sample": {name: ms},
    "load_average_before", "load_average_after"}}}``."""
    from ..bench.inputs import run_all
    from ..bench.machine import load_average
    from ..bench.timing import medians, time_round_robin
    from ..halting import adaptive_stages, full_depth

    result: Dict[str, Any] = {"clock": timing["clock"], "threads": torch.get_num_threads(),
                              "samples": timing["samples"], "batch_sizes": {}}
    for batch_size in timing["batch_sizes"]:
        runs: Dict[str, Callable[[], None]] = {}
        contexts: Dict[str, Callable] = {}
        counts: Dict[str, int] = {}
        for name, model in models.items():
            dataset, collate_fn = datasets[name]
            batches = _batches(dataset, collate_fn, timing["samples"], batch_size)
            runs[name] = lambda model=model, batches=batches: run_all(model, batches)
            counts[name] = min(timing["samples"], len(dataset))
            if any(stage.adaptive for _, stage in adaptive_stages(model)):  # it halts: also time it at full depth
                runs[name + FULL_DEPTH_SUFFIX] = runs[name]
                contexts[name + FULL_DEPTH_SUFFIX] = lambda model=model: full_depth(model)
                counts[name + FULL_DEPTH_SUFFIX] = counts[name]
        before = load_average()
        with torch.inference_mode():
            times = time_round_robin(runs, timing["warmup"], timing["repeats"], contexts=contexts,
                                     clock=timing["clock"])
        median, _ = medians(times)
        result["batch_sizes"][str(batch_size)] = {
            "ms_per_sample": {name: 1e3 * seconds / counts[name] for name, seconds in median.items()},
            "load_average_before": before, "load_average_after": load_average()}
        print(f"   timing, batch {batch_size}: " + ", ".join(
            f"{name} {ms:.3f}" for name, ms in result["batch_sizes"][str(batch_size)]["ms_per_sample"].items())
              + " ms/sample", flush=True)
    return result


def format_timing(timing: Dict[str, Any], baseline: Optional[str]) -> str:
    """The timing table: ms per sample per batch size, and each time relative to the baseline's full depth."""
    from ..bench.report import format_load

    sizes: List[str] = list(timing["batch_sizes"])
    first = timing["batch_sizes"][sizes[0]]["ms_per_sample"]
    reference = None
    if baseline is not None:
        reference = baseline + FULL_DEPTH_SUFFIX if baseline + FULL_DEPTH_SUFFIX in first else baseline
    header = "| model | " + " | ".join(f"ms/sample b={b}" for b in sizes)
    header += "" if reference is None else " | " + " | ".join(f"vs {reference} b={b}" for b in sizes)
    lines = [header + " |", "|" + "---|" * (1 + len(sizes) * (1 if reference is None else 2))]
    for name in first:
        times = [timing["batch_sizes"][b]["ms_per_sample"] for b in sizes]
        cells = [f"{ms[name]:.3f}" for ms in times]
        if reference is not None:
            cells += [f"{ms[name] / ms[reference]:.3f}" for ms in times]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    loads = ", ".join(f"b={b}: {format_load(record['load_average_before'], record['load_average_after'])}"
                      for b, record in timing["batch_sizes"].items())
    lines.append(f"\n{timing['clock']} clock, {timing['threads']} thread(s), the first {timing['samples']} evaluation "
                 f"samples, median of interleaved repeats; 1-minute load before -> after: {loads}")
    return "\n".join(lines) + "\n"

