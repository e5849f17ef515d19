"""The one timer of the benchmark: a stopwatch (CUDA events, wall time or process CPU time) and an interleaved
round robin over the configurations, whose repeats are summarised by their median (and minimum)."""
from __future__ import annotations

import contextlib
import gc
import statistics
import time
from typing import Any, Callable, ContextManager, Iterator, Mapping, Optional

import torch

__all__ = ["CLOCKS", "CLOCK_CHOICES", "BOTH_CLOCKS", "Stopwatch", "clock_settings", "synchronize", "threads",
           "time_round_robin", "medians"]

CLOCKS = ("wall", "process")
#: ``--clock``: one of :data:`CLOCKS`, or ``"both"``: wall time with the default threads and process CPU time with one.
BOTH_CLOCKS = "both"
CLOCK_CHOICES = CLOCKS + (BOTH_CLOCKS,)
#: Threads of the process-clock timing of ``"both"``: one thread is not charged for the time other jobs hold the core.
PROCESS_CLOCK_THREADS = 1


def clock_settings(clock: str, default_threads: int) -> list[tuple[str, int]]:
    """``(clock, threads)`` of each timing a ``--clock`` value asks for: ``"both"`` gives wall time with
    ``default_threads`` and process CPU time with :data:`PROCESS_CLOCK_THREADS`, the first being the primary one."""
    if clock == BOTH_CLOCKS:
        return [("wall", default_threads), ("process", PROCESS_CLOCK_THREADS)]
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCK_CHOICES}, got {clock!r}")
    return [(clock, default_threads)]


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    """``torch.set_num_threads(count)`` for the duration of the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Times one run: CUDA events on a CUDA device (recorded on the current stream, read after a synchronisation),
    else ``time.perf_counter`` (``clock="wall"``) or the process's CPU time (``clock="process"``: on an
    oversubscribed machine a one-thread run is then not charged for the time it was descheduled)."""

    def __init__(self, device: torch.device, clock: str = "wall") -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}, got {clock!r}")
        if device.type == "cuda" and clock != "wall":
            raise ValueError("a CUDA device is timed with CUDA events: clock must be 'wall'")
        self.device, self.clock = device, clock
        self._events = None
        self._start = 0.0

    def start(self) -> None:
        synchronize(self.device)
        if self.device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._events[0].record()
        else:
            self._start = time.process_time() if self.clock == "process" else time.perf_counter()

    def stop(self) -> float:
        """Seconds since :meth:`start`."""
        if self.device.type == "cuda":
            self._events[1].record()
            self._events[1].synchronize()
            return self._events[0].elapsed_time(self._events[1]) / 1e3
        now = time.process_time() if self.clock == "process" else time.perf_counter()
        return now - self._start


def time_round_robin(runs: Mapping[str, Callable[[], Any]], warmup: int, repeats: int,
                     contexts: Optional[Mapping[str, Callable[[], ContextManager]]] = None,
                     device: Optional[torch.device] = None, clock: str = "wall") -> dict[str, list[float]]:
    """Wall time of every run, interleaved: each of ``warmup + repeats`` rounds runs every entry once, starting
    one entry later than the round before, so that load from other processes hits all of them alike.

    Args:
        runs: name -> callable doing the work that is timed.
        warmup: untimed rounds first.
        repeats: timed rounds.
        contexts: name -> context-manager factory entered around the run, outside the timed region (e.g. an eval
            mode of the model).
        device: synchronised before the clock starts; a CUDA device is timed with CUDA events.
        clock: ``"wall"`` (default) or ``"process"`` (CPU time of this process, CPU only).

    Returns:
        name -> ``repeats`` times in seconds (take the median).
    """
    names = list(runs)
    watch = Stopwatch(device or torch.device("cpu"), clock)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(warmup + repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            with contexts[name]() if contexts and name in contexts else contextlib.nullcontext():
                gc.collect()
                watch.start()
                runs[name]()
                elapsed = watch.stop()
            if repeat >= warmup:
                times[name].append(elapsed)
    return times


def medians(times: Mapping[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    """``(name -> median, name -> minimum)`` of the repeats of :func:`time_round_robin`."""
    return ({name: statistics.median(values) for name, values in times.items()},
            {name: min(values) for name, values in times.items()})
