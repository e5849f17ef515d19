"""``pact-zoo benchmark``: do saved FLOPs show up as saved wall-clock time?

For one model and a list of batch sizes it times eval forwards (warm-up, repeats, median; the modes run in
round-robin inside every repeat so that load on a shared machine hits them alike) of

* ``adaptive``: the deterministic halting rule with compaction (halted rows leave the batch),
* ``full``: the same modules at full depth (every unit, no halting head),
* ``masked``: every unit and head runs for every sample and the outputs are masked with the deterministic
  one-hot (PACT) / ACT weights, the way SACT, SkipNet, ConvNet-AIG and A-ViT evaluate,

and reports ``efficiency = (time_adaptive / time_full) / (flops_adaptive / flops_full)`` (1.0: the saved FLOPs
are fully realised; FLOPs from :func:`~pact_zoo.halting_report`, so head FLOPs count against the adaptive
model). It also measures the peak memory of one eval forward of the PACT deterministic, ACT and plain
networks, each in a fresh process, and the training-step time of the PACT network vs the plain network.

Untrained halting heads (bias -3) never stop, so the benchmark can set reproducible synthetic heads
(``--synthetic-halting SEED``, :func:`synthesize_halting`) under which per-sample depth is spread evenly
over the units of every stage (about half of the units on average), and/or calibrate the threshold to a
FLOPs budget (``--target-flops-ratio``, :func:`~pact_zoo.calibrate_threshold`) on generated data.

Output: a table on stdout and a JSON file (written to a temporary file, then renamed). See
``docs/benchmarks.md`` for the method and the measured numbers.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from .fileio import atomic_write_json

__all__ = ["main", "build_parser", "synthesize_halting", "full_depth", "EFFICIENCY_TARGETS"]

#: Issue 6 targets for ``efficiency`` (batch size -> upper bound), pact_resnet110 on 2 CPU cores.
EFFICIENCY_TARGETS = {1: 1.25, 8: 1.25, 64: 1.10, 256: 1.10}
#: Issue 6 target for a PACT training step relative to a plain network step.
TRAIN_STEP_TARGET = 1.15
EVAL_MODES = ("adaptive", "full", "masked")
MEMORY_NETWORKS = ("pact", "act", "plain")
#: Environment of the memory probes: glibc returns every block >= 64 KiB to the OS when freed, so the
#: resident set follows the live tensors (see docs/benchmarks.md).
MEMORY_PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# --------------------------------------------------------------------------------------------------------
# model set-up
def _parse_kwargs(text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--model-kwargs must be a JSON object, got {text!r}: {exc}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {text!r}")
    return kwargs


def create_model(name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    """``timm.create_model(name, **kwargs)`` in eval mode, weights drawn after ``torch.manual_seed(seed)``."""
    import timm

    import pact_zoo  # noqa: F401  (registers the models)

    torch.manual_seed(seed)
    return timm.create_model(name, **kwargs).eval()


def input_shape_of(model: nn.Module, override: Optional[Sequence[int]] = None) -> tuple[int, ...]:
    """Per-sample input shape: ``override``, else the model's ``pretrained_cfg['input_size']``."""
    if override:
        return tuple(int(v) for v in override)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" not in cfg:
        raise ValueError("the model has no pretrained_cfg['input_size']: pass --input-size C,H,W")
    return tuple(cfg["input_size"])


def _stages(model: nn.Module) -> list:
    from .halting import adaptive_stages

    return [stage for _, stage in adaptive_stages(model) if stage.adaptive]


@torch.no_grad()
def synthesize_halting(model: nn.Module, seed: int, input_shape: Sequence[int], num_samples: int = 128,
                       weight_scale: float = 3.0) -> None:
    """Set reproducible halting heads under which each sample's depth is spread over the units.

    For every adaptive stage, in order: the head weights are drawn from ``N(0, weight_scale^2 / C)`` with a
    generator seeded by ``seed`` (a different random direction of the features per head, so the samples
    that stop differ from unit to unit); the heads' BatchNorm statistics are set to the mean / variance of
    their pooled inputs on ``num_samples`` generated inputs (``N(0, 1)``, same seed); and the bias of head
    ``n`` is set so that, on those inputs and at threshold 0.5, a fraction ``1 / (L - n)`` of the samples still
    running stops there, i.e. the halting step is uniform on ``1..L``: each stage runs about half of its
    units on average, per sample, not all at once. Heads without a BatchNorm (``VectorHaltingHead``) only
    get the weights and biases. The model is left in eval mode with threshold 0.5 and compact execution.
    """
    from .halting import set_execution, set_threshold

    generator = torch.Generator().manual_seed(int(seed))
    stages = _stages(model)
    if not stages:
        raise ValueError("synthesize_halting needs a model with adaptive stages (method 'pact' or 'act')")
    param = next(model.parameters())
    inputs = torch.randn((num_samples,) + tuple(input_shape), generator=generator).to(param.device, param.dtype)
    for stage in stages:
        for head in stage.heads:
            fc = head.fc
            fc.weight.copy_(torch.randn(fc.weight.shape, generator=generator) * weight_scale
                            / fc.in_features ** 0.5)
            fc.bias.zero_()
    model.eval()
    set_threshold(model, 0.5)
    set_execution(model, "masked")  # every head sees every sample; outputs as at eval
    try:
        for stage in stages:  # in order: a stage's inputs depend on the depths chosen before it
            captured: dict[int, torch.Tensor] = {}
            hooks = []
            for index, head in enumerate(stage.heads):
                target = head.norm if hasattr(head, "norm") else head.fc
                hooks.append(target.register_forward_hook(
                    lambda _m, args, _out, index=index: captured.__setitem__(index, args[0].detach())))
            try:
                with torch.inference_mode():
                    model(inputs)
            finally:
                for hook in hooks:
                    hook.remove()
            running = torch.ones(num_samples, dtype=torch.bool, device=param.device)
            for index, head in enumerate(stage.heads):
                features = captured[index].float()
                if hasattr(head, "norm"):
                    head.norm.running_mean.copy_(features.mean(0))
                    head.norm.running_var.copy_(features.var(0))
                    features = head.act(head.norm(captured[index])).float()
                scores = features @ head.fc.weight.float().t()
                scores = scores.squeeze(-1)
                hazard = 1.0 / (stage.num_units - index)
                quantile = torch.quantile(scores[running], 1.0 - hazard) if running.any() else scores.max()
                head.fc.bias.fill_(-float(quantile))
                running &= scores < quantile
    finally:
        set_execution(model, "compact")


@contextlib.contextmanager
def full_depth(model: nn.Module) -> Iterator[None]:
    """Run every adaptive stage at full depth without its halting heads (the plain network's cost)."""
    stages = _stages(model)
    heads = [stage.heads for stage in stages]
    try:
        for stage in stages:
            stage.heads = None
        yield
    finally:
        for stage, stage_heads in zip(stages, heads):
            stage.heads = stage_heads


@contextlib.contextmanager
def execution(model: nn.Module, mode: str) -> Iterator[None]:
    """``mode`` in :data:`EVAL_MODES` for the duration of the block."""
    from .halting import set_execution

    if mode == "full":
        with full_depth(model):
            yield
        return
    set_execution(model, "compact" if mode == "adaptive" else "masked")
    try:
        yield
    finally:
        set_execution(model, "compact")


# --------------------------------------------------------------------------------------------------------
# eval timing
def _batches(input_shape: Sequence[int], batch_size: int, min_samples: int, seed: int,
             channels_last: bool) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + batch_size)
    num_batches = max(1, -(-min_samples // batch_size))
    batches = []
    for _ in range(num_batches):
        batch = torch.randn((batch_size,) + tuple(input_shape), generator=generator)
        if channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        batches.append(batch)
    return batches


def _run_all(model: nn.Module, batches: list[torch.Tensor]) -> None:
    for batch in batches:
        model(batch)


def _flops(model: nn.Module, batches: list[torch.Tensor]) -> tuple[float, float, list[float]]:
    """(mean per-sample FLOPs, full-depth FLOPs with heads, mean units per stage) over the batches."""
    from .halting import halting_report

    total, count, full, units = 0.0, 0, 0.0, None
    for batch in batches:
        model(batch)
        report = halting_report(model)
        total += float(report.flops.double().sum())
        count += report.flops.shape[0]
        full = float(report.full_flops)
        batch_units = report.units_executed.double().sum(0)
        units = batch_units if units is None else units + batch_units
    return total / count, full, (units / count).tolist()


def _units(model: nn.Module) -> torch.Tensor:
    from .halting import halting_report

    return halting_report(model).units_executed


def _time_round_robin(model: nn.Module, batches: list[torch.Tensor], modes: Sequence[str], warmup: int,
                      repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for repeat in range(warmup + repeats):
        order = list(modes[repeat % len(modes):]) + list(modes[:repeat % len(modes)])  # rotate the start
        for mode in order:
            with execution(model, mode):
                gc.collect()
                start = time.perf_counter()
                _run_all(model, batches)
                elapsed = time.perf_counter() - start
            if repeat >= warmup:
                times[mode].append(elapsed)
    return times


@torch.inference_mode()
def benchmark_eval(model: nn.Module, input_shape: Sequence[int], batch_sizes: Sequence[int], warmup: int,
                   repeats: int, min_samples: int, seed: int, channels_last: bool,
                   modes: Sequence[str] = EVAL_MODES, log: Callable[[str], None] = print) -> list[dict]:
    """One record per batch size: median times, FLOPs, efficiency and the output check vs masked."""
    records = []
    for batch_size in batch_sizes:
        batches = _batches(input_shape, batch_size, min_samples, seed, channels_last)
        num_samples = batch_size * len(batches)
        with execution(model, "adaptive"):
            flops_adaptive, flops_with_heads, mean_units = _flops(model, batches)
            adaptive_out = [(model(b), _units(model)) for b in batches[:2]]
        with execution(model, "full"):
            flops_full, _, _ = _flops(model, batches)
        with execution(model, "masked"):
            masked_out = [(model(b), _units(model)) for b in batches[:2]]
        max_diff = max(float((a - m).abs().max()) for (a, _), (m, _) in zip(adaptive_out, masked_out))
        scale = max(float(m.abs().max()) for m, _ in masked_out) or 1.0
        same_units = all(torch.equal(ua, um) for (_, ua), (_, um) in zip(adaptive_out, masked_out))
        times = _time_round_robin(model, batches, modes, warmup, repeats)
        medians = {mode: statistics.median(values) for mode, values in times.items()}
        minima = {mode: min(values) for mode, values in times.items()}
        flops_ratio = flops_adaptive / flops_full
        record: dict[str, Any] = {
            "batch_size": batch_size, "num_batches": len(batches), "samples_per_repeat": num_samples,
            "times_s": times, "median_s": medians, "min_s": minima,
            "median_ms_per_sample": {m: 1e3 * t / num_samples for m, t in medians.items()},
            "flops_per_sample": {"adaptive": flops_adaptive, "full": flops_full,
                                 "masked_executed": flops_with_heads},
            "flops_ratio": flops_ratio, "mean_units_per_stage": mean_units,
            "max_abs_diff_adaptive_vs_masked": max_diff,
            "max_rel_diff_adaptive_vs_masked": max_diff / scale,  # relative to max |output|
            "same_units_adaptive_vs_masked": same_units,
        }
        if "full" in medians:
            for mode in ("adaptive", "masked"):
                if mode in medians:
                    record[f"time_ratio_{mode}"] = medians[mode] / medians["full"]
                    record[f"efficiency_{mode}"] = record[f"time_ratio_{mode}"] / flops_ratio
                    # best-of-repeats: the least disturbed run of each mode (robust on a shared machine)
                    record[f"efficiency_{mode}_min"] = minima[mode] / minima["full"] / flops_ratio
            target = EFFICIENCY_TARGETS.get(batch_size)
            record["efficiency"] = record.get("efficiency_adaptive")
            record["efficiency_target"] = target
            if target is not None and record["efficiency"] is not None:
                record["target_met"] = record["efficiency"] <= target
        records.append(record)
        log(_format_eval_row(record))
    return records


# --------------------------------------------------------------------------------------------------------
# memory (one fresh process per network)
def _read_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _allocator_peak_bytes(model: nn.Module, batch: torch.Tensor) -> int:
    """Peak of live bytes allocated through PyTorch's CPU allocator during one forward (profiler events)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model(batch)
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


@torch.inference_mode()
def _memory_probe(spec: dict) -> dict:
    """Runs in a fresh process: peak memory of one eval forward of one network (see docs/benchmarks.md)."""
    from .halting import halting_report, set_threshold

    torch.set_num_threads(spec["threads"])
    model = create_model(spec["model"], spec["kwargs"], spec["seed"])
    shape = tuple(spec["input_shape"])
    if spec.get("synthetic_halting") is not None and _stages(model):
        synthesize_halting(model, spec["synthetic_halting"], shape)
    if spec.get("threshold") is not None and any(s.method == "pact" for s in _stages(model)):
        set_threshold(model, spec["threshold"])
    batch = _batches(shape, spec["batch_size"], spec["batch_size"], spec["seed"], spec["channels_last"])[0]
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model(batch)  # warm-up: one-time allocations (primitive caches, FLOPs tables) are not the forward's
    flops_ratio = None
    if _stages(model):
        flops_ratio = halting_report(model).flops_ratio
    gc.collect()
    allocator_peak = _allocator_peak_bytes(model, batch)
    gc.collect()
    rss_before_kib = _read_status_kib("VmRSS")
    reset = _reset_peak_rss()
    model(batch)
    rss_peak_kib = _read_status_kib("VmHWM")
    return {"allocator_peak_bytes": allocator_peak,
            "rss_peak_delta_bytes": 1024 * (rss_peak_kib - rss_before_kib) if reset else None,
            "flops_ratio": flops_ratio}


def _memory_probe_main() -> int:
    spec = json.loads(sys.argv[1])
    print("PACT_ZOO_MEMORY " + json.dumps(_memory_probe(spec)))
    return 0


def measure_memory(spec: dict, timeout_s: float = 600.0) -> dict:
    """Run :func:`_memory_probe` in a fresh Python process (its own allocator state and RSS)."""
    env = dict(os.environ, **MEMORY_PROBE_ENV)
    code = "import sys; from pact_zoo.benchmark import _memory_probe_main; sys.exit(_memory_probe_main())"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True,
                          text=True, timeout=timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("PACT_ZOO_MEMORY "):
            return json.loads(line[len("PACT_ZOO_MEMORY "):])
    raise RuntimeError(f"memory probe for {spec['model']} {spec['kwargs']} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-2000:]}")


# --------------------------------------------------------------------------------------------------------
# training step
def benchmark_training(adaptive: nn.Module, plain: nn.Module, input_shape: Sequence[int], batch_size: int,
                       warmup: int, repeats: int, seed: int, channels_last: bool) -> dict:
    """Median time of one SGD step (forward, loss incl. the halting cost, backward, update), round-robin."""
    from .halting import halting_loss

    generator = torch.Generator().manual_seed(seed)
    batch = _batches(input_shape, batch_size, batch_size, seed, channels_last)[0]
    num_classes = getattr(adaptive, "num_classes", 10) or 10
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
    models = {"adaptive": adaptive.train(), "plain": plain.train()}
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for repeat in range(warmup + repeats):
        for name in names[repeat % 2:] + names[:repeat % 2]:
            model, optimizer = models[name], optimizers[name]
            gc.collect()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(batch), labels) + halting_loss(model)
            loss.backward()
            optimizer.step()
            elapsed = time.perf_counter() - start
            if repeat >= warmup:
                times[name].append(elapsed)
    for model in models.values():
        model.eval()
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["adaptive"] / medians["plain"]
    return {"batch_size": batch_size, "times_s": times, "median_s": medians, "ratio": ratio,
            "target": TRAIN_STEP_TARGET, "target_met": ratio <= TRAIN_STEP_TARGET}


# --------------------------------------------------------------------------------------------------------
# output
def _format_eval_row(record: dict) -> str:
    med = record["median_ms_per_sample"]
    eff = record.get("efficiency")
    target = record.get("efficiency_target")
    verdict = "" if target is None else ("met" if record.get("target_met") else "MISSED")
    return (f"{record['batch_size']:>6} {med.get('adaptive', float('nan')):>11.3f} "
            f"{med.get('full', float('nan')):>9.3f} {med.get('masked', float('nan')):>10.3f} "
            f"{record['flops_ratio']:>7.3f} {record.get('time_ratio_adaptive', float('nan')):>7.3f} "
            f"{eff if eff is not None else float('nan'):>7.3f} "
            f"{record.get('efficiency_masked', float('nan')):>7.3f} "
            f"{record.get('efficiency_adaptive_min', float('nan')):>7.3f} "
            f"{'' if target is None else f'<= {target:.2f}':>8} {verdict}")


EVAL_HEADER = (f"{'batch':>6} {'adaptive':>11} {'full':>9} {'masked':>10} {'FLOPs':>7} {'time':>7} "
               f"{'eff':>7} {'eff':>7} {'eff':>7} {'target':>8}\n"
               f"{'':>6} {'ms/sample':>11} {'ms/smp':>9} {'ms/smp':>10} {'ratio':>7} {'ratio':>7} "
               f"{'adapt':>7} {'masked':>7} {'(min)':>7}")


def format_report(result: dict) -> str:
    lines = [f"model {result['model']} {result['model_kwargs'] or ''} threshold {result['threshold']:.6g}"
             f" ({result['threads']} threads, {result['platform']['torch']})"]
    if result.get("calibration"):
        cal = result["calibration"]
        lines.append(f"calibration: target FLOPs ratio {cal['target_flops_ratio']}, achieved "
                     f"{cal['flops_ratio']:.4f} on {cal['num_samples']} generated samples")
    if result.get("eval"):
        lines += ["", "eval wall time (median of repeats; efficiency = time ratio / FLOPs ratio)", EVAL_HEADER]
        lines += [_format_eval_row(r) for r in result["eval"]]
    if result.get("memory"):
        lines += ["", f"peak memory of one eval forward, batch {result['memory_batch_size']} (fresh process each)",
                  f"{'network':>10} {'allocator MiB':>14} {'RSS delta MiB':>14} {'FLOPs ratio':>12}"]
        for name, mem in result["memory"].items():
            rss = mem.get("rss_peak_delta_bytes")
            ratio = mem.get("flops_ratio")
            lines.append(f"{name:>10} {mem['allocator_peak_bytes'] / 2**20:>14.2f} "
                         f"{'n/a' if rss is None else f'{rss / 2**20:.2f}':>14} "
                         f"{'-' if ratio is None else f'{ratio:.3f}':>12}")
        if "pact_below_act" in result:
            lines.append(f"PACT peak below ACT peak: {'met' if result['pact_below_act'] else 'MISSED'}")
    if result.get("training"):
        tr = result["training"]
        lines += ["", f"training step, batch {tr['batch_size']}: adaptive {1e3 * tr['median_s']['adaptive']:.1f} ms,"
                  f" plain {1e3 * tr['median_s']['plain']:.1f} ms, ratio {tr['ratio']:.3f} "
                  f"(target <= {tr['target']}: {'met' if tr['target_met'] else 'MISSED'})"]
    return "\n".join(lines)


def write_json_atomic(path: str, payload: dict) -> None:
    """Write ``payload`` as JSON (keys in insertion order) to ``path`` atomically."""
    atomic_write_json(path, payload, sort_keys=False)


# --------------------------------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pact-zoo benchmark", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default="pact_resnet110", help="registered timm model name (pact_* / act_*)")
    parser.add_argument("--model-kwargs", default=None, help="JSON object of timm.create_model kwargs")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--threshold", type=_unit_interval, default=None,
                        help="PACT halting threshold (default: the model's)")
    budget.add_argument("--target-flops-ratio", type=_unit_interval, default=None,
                        help="calibrate the threshold to this FLOPs budget on generated data")
    parser.add_argument("--calibration-samples", type=_positive_int, default=256)
    parser.add_argument("--synthetic-halting", type=int, default=None, metavar="SEED",
                        help="set reproducible synthetic halting heads (depth uniform over each stage's units, "
                             "about half of the units on average); without it the model's heads are used")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 64, 256])
    parser.add_argument("--min-samples", type=_positive_int, default=64,
                        help="every timed repeat runs at least this many samples (several batches when small)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=_positive_int, default=5)
    parser.add_argument("--modes", default=",".join(EVAL_MODES), help="eval modes to time: adaptive,full,masked")
    parser.add_argument("--input-size", type=_int_list, default=None, help="C,H,W (default: pretrained_cfg)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the generated inputs")
    parser.add_argument("--memory-batch-size", type=_positive_int, default=64)
    parser.add_argument("--memory-networks", default="pact,act,plain",
                        help="networks whose eval peak memory is probed, each in a fresh process")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--train-batch-size", type=_positive_int, default=32)
    parser.add_argument("--train-repeats", type=_positive_int, default=5)
    parser.add_argument("--plain-model", default=None,
                        help="plain network for the training/memory comparison (default: --model with "
                             "method='none', e.g. resnet110_cifar's network for pact_resnet110)")
    parser.add_argument("--no-training", action="store_true", help="skip the training-step timing")
    parser.add_argument("--no-eval", action="store_true", help="skip the eval timing")
    parser.add_argument("--output", default="benchmark.json", help="JSON result file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .halting import calibrate_threshold, set_threshold

    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        kwargs = _parse_kwargs(args.model_kwargs)
        modes = [m for m in args.modes.split(",") if m]
        if not modes or any(m not in EVAL_MODES for m in modes):
            raise ValueError(f"--modes must be a comma-separated subset of {EVAL_MODES}, got {args.modes!r}")
        memory_networks = [m for m in args.memory_networks.split(",") if m]
        if not memory_networks or any(m not in MEMORY_NETWORKS for m in memory_networks):
            raise ValueError(f"--memory-networks must be a comma-separated subset of {MEMORY_NETWORKS}, "
                             f"got {args.memory_networks!r}")
        if args.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    except ValueError as exc:
        print(f"pact-zoo benchmark: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    model = create_model(args.model, kwargs, args.seed)
    stages = _stages(model)
    if not stages:
        print(f"pact-zoo benchmark: {args.model} has no halting stage (method 'none'?)", file=sys.stderr)
        return 2
    method = stages[0].method
    shape = input_shape_of(model, args.input_size)
    if args.synthetic_halting is not None:
        synthesize_halting(model, args.synthetic_halting, shape)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    calibration = None
    if args.target_flops_ratio is not None:
        if method != "pact":
            print("pact-zoo benchmark: --target-flops-ratio needs a PACT model", file=sys.stderr)
            return 2
        generator = torch.Generator().manual_seed(args.seed + 1)
        data = torch.randn((args.calibration_samples,) + shape, generator=generator)
        if args.channels_last and data.dim() == 4:
            data = data.contiguous(memory_format=torch.channels_last)
        loader = list(data.split(64))
        found = calibrate_threshold(model, loader, args.target_flops_ratio)
        calibration = {"target_flops_ratio": args.target_flops_ratio, "threshold": found.threshold,
                       "flops_ratio": found.flops_ratio, "num_samples": args.calibration_samples}
    elif args.threshold is not None:
        set_threshold(model, args.threshold)
    threshold = stages[0].threshold
    result: dict[str, Any] = {
        "model": args.model, "model_kwargs": kwargs, "method": method, "threshold": threshold,
        "synthetic_halting": args.synthetic_halting, "calibration": calibration, "input_shape": list(shape),
        "channels_last": args.channels_last, "threads": threads, "warmup": args.warmup, "repeats": args.repeats,
        "platform": {"torch": torch.__version__, "python": platform.python_version(),
                     "machine": platform.machine(), "processor": platform.processor(),
                     "cpu_count": os.cpu_count(),
                     "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
    }
    print(format_report(result))
    if not args.no_eval:
        print("\neval wall time (median of repeats; efficiency = time ratio / FLOPs ratio)\n" + EVAL_HEADER)
        result["eval"] = benchmark_eval(model, shape, args.batch_sizes, args.warmup, args.repeats,
                                        args.min_samples, args.seed, args.channels_last, modes)
    if not args.no_memory:
        base = {"model": args.model, "seed": args.seed, "input_shape": list(shape), "threads": threads,
                "batch_size": args.memory_batch_size, "channels_last": args.channels_last,
                "synthetic_halting": args.synthetic_halting, "threshold": threshold}
        specs = {"pact": dict(base, kwargs=dict(kwargs, method="pact")),
                 "act": dict(base, kwargs=dict(kwargs, method="act")),
                 "plain": (dict(base, model=args.plain_model, kwargs={}) if args.plain_model
                           else dict(base, kwargs=dict(kwargs, method="none")))}
        result["memory_batch_size"] = args.memory_batch_size
        result["memory"] = {name: measure_memory(specs[name]) for name in memory_networks}
        if "pact" in result["memory"] and "act" in result["memory"]:
            result["pact_below_act"] = (result["memory"]["pact"]["allocator_peak_bytes"]
                                        < result["memory"]["act"]["allocator_peak_bytes"])
    if not args.no_training:
        plain = (create_model(args.plain_model, {}, args.seed) if args.plain_model
                 else create_model(args.model, dict(kwargs, method="none"), args.seed))
        if args.channels_last:
            plain = plain.to(memory_format=torch.channels_last)
        result["training"] = benchmark_training(model, plain, shape, args.train_batch_size, 1,
                                                args.train_repeats, args.seed, args.channels_last)
    result["platform"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    print("\n" + format_report(result))
    write_json_atomic(args.output, result)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
