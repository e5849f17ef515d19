"""Eval timing: the adaptive (compacted), full-depth, masked and plain evaluation of one model, and the same under
``torch.compile``, timed round robin per batch size, with the FLOPs of each mode
(:func:`~pact_zoo.halting.measure_flops`), the output check of the adaptive path against the masked one, and an
optional ``torch.profiler`` breakdown per operator."""
from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import torch
from torch import nn

from ..halting.calibrate import measure_flops
from .inputs import InputSpec, as_spec, main_output, make_batches, run_all, run_model
from .networks import halting_stages
from .machine import load_average
from .report import format_clock_row, format_eval_row
from .timing import clock_settings, medians as summarise, synchronize, threads, time_round_robin

__all__ = ["EFFICIENCY_TARGETS", "EVAL_MODES", "COMPILED_MODES", "DEFAULT_EVAL_MODES", "PROFILE_TOP_OPS",
           "execution", "compiled_networks", "set_compaction_costs", "executed_flops", "benchmark_eval",
           "profile_eval"]

#: Targets for ``efficiency`` (batch size -> upper bound), pact_resnet110 / pact_resnet50 on 2 CPU cores.
EFFICIENCY_TARGETS = {1: 1.15, 8: 1.25, 64: 1.08, 256: 1.08}
#: Modes under ``torch.compile``: the model (its stages' units compiled one by one, halting eager), a copy whose
#: stages take their dense path when compiled (every unit runs), and the plain network compiled whole.
COMPILED_MODES = ("compiled", "compiled_dense", "compiled_plain")
EVAL_MODES = ("adaptive", "full", "masked", "plain") + COMPILED_MODES
DEFAULT_EVAL_MODES = ("adaptive", "full", "masked")
#: Operators listed per mode in the profile breakdown.
PROFILE_TOP_OPS = 15


@contextlib.contextmanager
def execution(model: nn.Module, mode: str) -> Iterator[None]:
    """Eval mode ``adaptive`` / ``full`` / ``masked`` of ``model`` for the duration of the block (a plain model, with
    no adaptive stage, runs as it is in every mode)."""
    from ..halting import adaptive_stages, full_depth, set_execution

    if mode == "full" and adaptive_stages(model):
        with full_depth(model):
            yield
        return
    set_execution(model, "compact" if mode == "adaptive" else "masked")
    try:
        yield
    finally:
        set_execution(model, "compact")


def compiled_networks(model: nn.Module, plain: Optional[nn.Module], modes: Sequence[str],
                      options: Optional[dict] = None) -> dict[str, Callable]:
    """``torch.compile(network, **options)`` of each compiled mode in ``modes`` (:data:`COMPILED_MODES`):
    ``compiled`` the model itself (compiled units, eager halting: :func:`~pact_zoo.halting.set_unit_compile`),
    ``compiled_dense`` a copy whose stages take their dense path when compiled, ``compiled_plain`` the plain network.
    Compilation happens on each network's first call."""
    from ..halting import set_unit_compile

    options = dict(options or {})
    networks: dict[str, Callable] = {}
    if "compiled" in modes:
        networks["compiled"] = torch.compile(model, **options)
    if "compiled_dense" in modes:
        dense = copy.deepcopy(model)
        set_unit_compile(dense, None)
        networks["compiled_dense"] = torch.compile(dense, **options)
    if "compiled_plain" in modes:
        if plain is None:
            raise ValueError("mode 'compiled_plain' needs the plain network")
        networks["compiled_plain"] = torch.compile(plain, **options)
    return networks


def _first_calls(runs: dict[str, Callable], contexts: dict[str, Callable], modes: Sequence[str]) -> dict[str, float]:
    """Seconds of the first call of each of ``modes`` (under ``torch.compile``: the compilation for this shape)."""
    seconds = {}
    for mode in modes:
        with contexts[mode]() if mode in contexts else contextlib.nullcontext():
            start = time.perf_counter()
            runs[mode]()
            seconds[mode] = time.perf_counter() - start
    return seconds


@torch.inference_mode()
def set_compaction_costs(model: nn.Module, inputs: Union[InputSpec, Sequence[int]], batch_size: int, seed: int,
                         device: str = "cpu") -> list[dict]:
    """Measure every halting stage's :class:`~pact_zoo.halting.compaction.CompactionCost` on its own input of a
    ``batch_size`` batch (captured in one full-depth forward) and set it (``stage.compaction_cost``); returns them."""
    from ..halting import full_depth
    from ..halting.stage import measure_compaction_cost

    stages = halting_stages(model)
    captured: dict[int, tuple] = {}
    hooks = [stage.register_forward_pre_hook(lambda module, args, i=i: captured.setdefault(i, args))
             for i, stage in enumerate(stages)]
    try:
        with full_depth(model):
            run_model(model, make_batches(inputs, batch_size, batch_size, seed, False, device)[0])
    finally:
        for hook in hooks:
            hook.remove()
    costs = []
    for i, stage in enumerate(stages):
        args = captured[i]
        stage.compaction_cost = measure_compaction_cost(stage, args[0], args[1] if len(args) > 1 else None)
        costs.append({"row_seconds": list(stage.compaction_cost.row_seconds),
                      "gather_seconds": stage.compaction_cost.gather_seconds,
                      "gather_row_seconds": stage.compaction_cost.gather_row_seconds})
    return costs


def _flops(model: nn.Module, batches: list) -> dict[str, Any]:
    """Per-sample FLOPs and depths of the current eval mode over the batches, and the FLOPs ratio."""
    tally = measure_flops(model, batches, keep_samples=True)
    flops, units = tally.samples()
    return {"mean": tally.mean_flops, "min": float(flops.min()), "max": float(flops.max()), "ratio": tally.ratio,
            "mean_units": units.double().mean(0).tolist(),
            "units_fraction": tally.units_fraction,
            "distinct_depth_patterns": int(units.unique(dim=0).shape[0])}


@torch.inference_mode()
def executed_flops(model: nn.Module, input_shape: Union[InputSpec, Sequence[int]]) -> int:
    """FLOPs per sample of everything the model runs when no stage halts: every unit *and* every halting head (the
    masked mode's cost) for an adaptive model, the network's FLOPs for a plain one (any timm model)."""
    from ..halting import FlopsProfiler

    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with FlopsProfiler(model) as profiler:
            run_model(model, as_spec(input_shape).zeros(param.device, param.dtype))
    finally:
        model.train(was_training)
    return int(sum(profiler.flops.values()))


def _outputs(model: nn.Module, batches: list) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(main output, units executed) of the first two batches."""
    from ..halting import halting_report

    return [(main_output(run_model(model, b)), halting_report(model).units_executed) for b in batches[:2]]


def _ratios(record: dict, medians: dict, minima: dict, flops_ratio: float, adaptive_flops: float,
            flops_full: float, plain_flops: Optional[int]) -> None:
    """Time ratios against full depth (and the plain network), efficiencies and the target verdict."""
    batch_size = record["batch_size"]
    if "full" in medians:
        for mode in ("adaptive", "masked", "plain"):
            if mode in medians:
                record[f"time_ratio_{mode}"] = medians[mode] / medians["full"]
        for mode in ("adaptive", "masked"):
            if mode in medians:
                record[f"efficiency_{mode}"] = record[f"time_ratio_{mode}"] / flops_ratio
                # best-of-repeats: the least disturbed run of each mode (robust on a shared machine)
                record[f"efficiency_{mode}_min"] = minima[mode] / minima["full"] / flops_ratio
        target = EFFICIENCY_TARGETS.get(batch_size)
        record["efficiency"] = record.get("efficiency_adaptive")
        record["efficiency_target"] = target
        if target is not None and record["efficiency"] is not None:
            record["target_met"] = record["efficiency"] <= target
    if "compiled" in medians and "compiled_plain" in medians:  # both compiled: what compilation leaves of the saving
        record["time_compiled_vs_compiled_plain"] = medians["compiled"] / medians["compiled_plain"]
        record["efficiency_compiled_vs_compiled_plain"] = (record["time_compiled_vs_compiled_plain"]
                                                           / (adaptive_flops / plain_flops))
    if "plain" in medians:  # the original backbone as the baseline (e.g. timm resnet50)
        record["time_vs_plain"] = {mode: medians[mode] / medians["plain"] for mode in medians}
        record["flops_vs_plain"] = {"adaptive": adaptive_flops / plain_flops, "full": flops_full / plain_flops}
        if "adaptive" in medians:  # the target's reading: against the plain network with the same weights
            record["efficiency_vs_plain"] = (record["time_vs_plain"]["adaptive"]
                                             / record["flops_vs_plain"]["adaptive"])


@torch.inference_mode()
def benchmark_eval(model: nn.Module, input_shape: Union[InputSpec, Sequence[int]], batch_sizes: Sequence[int],
                   warmup: int, repeats: int, min_samples: int, seed: int, channels_last: bool,
                   modes: Sequence[str] = DEFAULT_EVAL_MODES, plain: Optional[nn.Module] = None,
                   device: str = "cpu", log: Callable[[str], None] = print, clock: str = "wall",
                   compile_options: Optional[dict] = None) -> list[dict]:
    """One record per batch size: median times, FLOPs, efficiency and the output check vs masked.

    The :data:`COMPILED_MODES` run ``torch.compile(network, **compile_options)`` (:func:`compiled_networks`); their
    first call at each batch size (the compilation) is timed on its own (``first_call_s``), the compiled model's
    halting report is checked against eager compact evaluation (``compiled_same_units``: the same depths, hence the
    same FLOPs; ``max_abs_diff_compiled_vs_adaptive``), and ``efficiency_compiled_vs_compiled_plain`` is its time
    ratio to the compiled plain network over the FLOPs ratio.

    ``clock`` is a clock of :data:`~pact_zoo.bench.timing.CLOCKS` (timed with the current threads), or ``"both"``:
    the modes are timed round robin with wall time at the current threads, then with process CPU time at one thread
    (:func:`~pact_zoo.bench.timing.clock_settings`). Each timing keeps its medians, ratios and the 1-minute load
    average before and after it in ``record["clocks"][clock]``; the record's own time fields are the first timing's.
    """
    if ("plain" in modes or "compiled_plain" in modes) and plain is None:
        raise ValueError("modes 'plain' and 'compiled_plain' need the plain network")
    compiled = compiled_networks(model, plain, modes, compile_options)
    masked_flops = executed_flops(model, input_shape)
    plain_flops = executed_flops(plain, input_shape) if plain is not None else None
    records = []
    for batch_size in batch_sizes:
        batches = make_batches(input_shape, batch_size, min_samples, seed, channels_last, device)
        num_samples = batch_size * len(batches)
        with execution(model, "adaptive"):
            adaptive = _flops(model, batches)
            adaptive_out = _outputs(model, batches)
        with execution(model, "full"):
            flops_full = _flops(model, batches)["mean"]
        with execution(model, "masked"):
            masked_out = _outputs(model, batches)
        max_diff = max(float((a - m).abs().max()) for (a, _), (m, _) in zip(adaptive_out, masked_out))
        scale = max(float(m.abs().max()) for m, _ in masked_out) or 1.0
        same_units = all(torch.equal(ua, um) for (_, ua), (_, um) in zip(adaptive_out, masked_out))
        networks = dict(compiled, plain=plain)
        runs = {mode: (lambda net=networks.get(mode, model): run_all(net, batches)) for mode in modes}
        contexts = {mode: (lambda mode=mode: execution(model, "adaptive" if mode == "compiled" else mode))
                    for mode in modes if mode in ("adaptive", "full", "masked", "compiled")}
        flops_ratio = adaptive["ratio"]
        first_calls = _first_calls(runs, contexts, [mode for mode in modes if mode in compiled])
        compiled_check: dict[str, Any] = {}
        if "compiled" in compiled:  # the report under compilation counts what ran: eager compact's depths
            with execution(model, "adaptive"):
                compiled_out = _outputs(compiled["compiled"], batches)
            compiled_check = {
                "compiled_same_units": all(torch.equal(uc, ua) for (_, uc), (_, ua) in zip(compiled_out, adaptive_out)),
                "max_abs_diff_compiled_vs_adaptive": max(float((c - a).abs().max()) for (c, _), (a, _)
                                                         in zip(compiled_out, adaptive_out))}
        timings = {}
        for clock_name, clock_threads in clock_settings(clock, torch.get_num_threads()):
            load_before = load_average()
            with threads(clock_threads):
                times = time_round_robin(runs, warmup, repeats, contexts=contexts, device=torch.device(device),
                                         clock=clock_name)
            medians, minima = summarise(times)
            timing: dict[str, Any] = {
                "batch_size": batch_size, "clock": clock_name, "threads": clock_threads, "times_s": times,
                "median_s": medians, "min_s": minima,
                "median_ms_per_sample": {m: 1e3 * t / num_samples for m, t in medians.items()},
                "load_average_before": load_before, "load_average_after": load_average()}
            _ratios(timing, medians, minima, flops_ratio, adaptive["mean"], flops_full, plain_flops)
            timings[clock_name] = timing
        primary = next(iter(timings.values()))
        record: dict[str, Any] = {
            "batch_size": batch_size, "num_batches": len(batches), "samples_per_repeat": num_samples,
            "clock": primary["clock"], "threads": primary["threads"], "times_s": primary["times_s"],
            "median_s": primary["median_s"], "min_s": primary["min_s"],
            "median_ms_per_sample": primary["median_ms_per_sample"],
            "load_average_before": primary["load_average_before"],
            "load_average_after": primary["load_average_after"],
            "flops_per_sample": {"adaptive": adaptive["mean"], "adaptive_min": adaptive["min"],
                                 "adaptive_max": adaptive["max"], "full": flops_full,
                                 "masked_executed": masked_flops, "plain": plain_flops},
            "flops_ratio": flops_ratio, "mean_units_per_stage": adaptive["mean_units"],
            "units_fraction": adaptive["units_fraction"],
            "distinct_depth_patterns": adaptive["distinct_depth_patterns"],
            "max_abs_diff_adaptive_vs_masked": max_diff,
            "max_rel_diff_adaptive_vs_masked": max_diff / scale,  # relative to max |output|
            "same_units_adaptive_vs_masked": same_units,
            "first_call_s": first_calls, **compiled_check,
        }
        _ratios(record, primary["median_s"], primary["min_s"], flops_ratio, adaptive["mean"], flops_full,
                plain_flops)
        record["clocks"] = timings  # every clock's medians and ratios (the record's own fields: the first clock's)
        records.append(record)
        log(format_eval_row(record))
        for timing in list(timings.values())[1:]:
            log(format_clock_row(timing))
    return records


@torch.inference_mode()
def profile_eval(model: nn.Module, inputs: Union[InputSpec, Sequence[int]], batch_size: int, seed: int,
                 device: str = "cpu", modes: Sequence[str] = ("adaptive", "full"), top: int = PROFILE_TOP_OPS
                 ) -> dict:
    """Per-operator breakdown (``torch.profiler``, self time) of one eval forward of ``batch_size`` samples in each
    of ``modes``, after one warm-up forward: where the adaptive model spends the time that the full-depth model
    does not (halting heads, the decision, gathers)."""
    from torch.profiler import ProfilerActivity, profile

    batch = make_batches(inputs, batch_size, batch_size, seed, False, device)[0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    result: dict[str, Any] = {"batch_size": batch_size, "modes": {}}
    for mode in modes:
        with execution(model, mode):
            run_model(model, batch)
            synchronize(torch.device(device))
            with profile(activities=activities) as prof:
                run_model(model, batch)
                synchronize(torch.device(device))
        averages = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in averages)
        ops = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        result["modes"][mode] = {
            "self_cpu_ms_total": total / 1e3,
            "ops": [{"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": getattr(e, "self_device_time_total", 0.0) / 1e3} for e in ops]}
    return result
