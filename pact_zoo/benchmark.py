"""``pact-zoo benchmark``: do saved FLOPs show up as saved wall-clock time?

For one model (a CIFAR ResNet at 32x32, an ImageNet ResNet at 224x224, ...) and a list of batch sizes it times
eval forwards of

* ``adaptive``: the deterministic halting rule with compaction (halted rows leave the batch),
* ``full``: the same modules at full depth (:func:`~pact_zoo.halting.full_depth`: every unit, no halting head,
  the plain network's computation),
* ``masked``: every unit and head runs for every sample and the outputs are masked with the deterministic
  weights, the way SACT, SkipNet, ConvNet-AIG and A-ViT evaluate,
* ``plain`` (optional): a separate plain network with the same weights (``--plain-model``, e.g. timm's own
  ``resnet50`` for ``pact_resnet50``; default ``--model`` with ``method="none"``),

and reports ``efficiency = (time_adaptive / time_full) / (flops_adaptive / flops_full)`` (1.0: the saved FLOPs
are fully realised; FLOPs from :func:`~pact_zoo.halting_report`, so head FLOPs count against the adaptive
model). It also measures the peak memory of one eval forward of the PACT deterministic, ACT and plain
networks, each in a fresh process, and the time of one training step of the plain network, the PACT network and
the policy-gradient network (sampled depth, with the self-critical baseline forward, and with the batch-mean
baseline that needs none).

Every timing goes through one round-robin timer (:func:`time_round_robin`): the configurations run in rotating
order inside every repeat, so load on a shared machine hits them alike, and the median of the repeats is reported.

Untrained halting heads (bias -3) never stop, so the benchmark can set reproducible synthetic heads
(``--synthetic-halting SEED``, :func:`~pact_zoo.halting.synthesize_halting`) under which per-sample depth is
spread evenly over the units of every stage (about half of the units on average), and/or calibrate the threshold
to a FLOPs budget (``--target-flops-ratio``, :func:`~pact_zoo.calibrate_threshold`) on generated data.

Inputs: images (``--input-size``, default the model's ``pretrained_cfg``) or token sequences (``--inputs tokens
--seq-len 64``: random ``input_ids`` below the config's ``vocab_size`` and an all-ones ``attention_mask``; the
default ``--inputs auto`` picks tokens for models whose ``halting_profile_inputs()`` takes ``input_ids``).
``--model hf:<ClassName>`` builds a pact_zoo Hugging Face class from its config class (``--model-kwargs`` are the
config's kwargs; the plain / PACT / ACT twins set ``halting_method``).

GPU (``--device cuda``): every timing is taken with CUDA events around the run (after a synchronisation);
``--buckets`` pads the compacted sub-batches to a few sizes and ``--cuda-graphs`` replays one CUDA graph per
(unit, bucket) (:func:`~pact_zoo.halting.set_bucketing`).

Output: a table on stdout and a JSON file (written to a temporary file, then renamed; by default under
``out/benchmarks/``, which git ignores) that records the torch / timm versions, the threads, the load average
before and after, and the machine. See ``docs/benchmarks.md`` for the method and the measured numbers.
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
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .fileio import atomic_write_json

__all__ = ["main", "build_parser", "time_round_robin", "set_synthetic_heads", "InputSpec", "resolve_inputs",
           "machine_info", "EFFICIENCY_TARGETS", "TRAIN_NETWORKS", "DEFAULT_OUTPUT_DIR"]

#: Targets for ``efficiency`` (batch size -> upper bound), pact_resnet110 / pact_resnet50 on 2 CPU cores.
EFFICIENCY_TARGETS = {1: 1.15, 8: 1.25, 64: 1.08, 256: 1.08}
#: Target for a PACT training step relative to a plain network step.
TRAIN_STEP_TARGET = 1.10
#: Where the JSON goes without ``--output`` (git ignores ``out/``): ``<dir>/<model>-<UTC time>.json``.
DEFAULT_OUTPUT_DIR = os.path.join("out", "benchmarks")
INPUT_KINDS = ("auto", "image", "tokens")
#: Sequence length of token inputs (the issue's encoder setting).
DEFAULT_SEQ_LEN = 64
CLOCKS = ("wall", "process")
EVAL_MODES = ("adaptive", "full", "masked", "plain")
DEFAULT_EVAL_MODES = ("adaptive", "full", "masked")
MEMORY_NETWORKS = ("pact", "act", "plain")
#: Networks whose training step is timed: ``model`` (the benchmarked model as configured), ``plain`` (no halting),
#: and twins of ``--model`` with the same weights under another halting method (name, extra knobs).
TRAIN_TWINS = {
    "pact": ("pact", {}),
    "pg": ("policy_gradient", {"baseline": "greedy"}),  # self-critical: one extra gradient-free forward
    "pg_batch_mean": ("policy_gradient", {"baseline": "batch_mean"}),  # no extra forward
}
TRAIN_NETWORKS = ("model", "plain") + tuple(TRAIN_TWINS)
DEFAULT_TRAIN_NETWORKS = ("plain", "pact", "pg", "pg_batch_mean")
#: Head weight scale of the synthetic heads of a method whose training *samples* its depth: confident heads
#: (logits of magnitude ~10), so that the sampled depth follows the deterministic one (about half of the units);
#: at the default scale 3 the sampled stops come early and a stage runs ~30 % of its units.
SAMPLED_HEAD_WEIGHT_SCALE = 10.0
#: Environment of the memory probes: glibc returns every block >= 64 KiB to the OS when freed, so the
#: resident set follows the live tensors (see docs/benchmarks.md).
MEMORY_PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


# --------------------------------------------------------------------------------------------------------
# model set-up
HF_PREFIX = "hf:"


def _hf_class(name: str) -> type:
    """The pact_zoo Hugging Face model class ``name`` (``pact_zoo.hf`` or one of its ``modeling_*`` modules)."""
    import importlib
    import pkgutil

    import pact_zoo.hf as hf

    if hasattr(hf, name):
        return getattr(hf, name)
    for info in pkgutil.iter_modules(hf.__path__):
        if info.name.startswith("modeling_"):
            module = importlib.import_module(f"pact_zoo.hf.{info.name}")
            if hasattr(module, name):
                return getattr(module, name)
    raise ValueError(f"--model {HF_PREFIX}{name}: no such class in pact_zoo.hf")


def create_model(name: str, kwargs: dict, seed: int = 0, device: str = "cpu") -> nn.Module:
    """``timm.create_model(name, **kwargs)`` (or, for ``hf:<ClassName>``, that pact_zoo Hugging Face class built
    from ``config_class(**kwargs)``) in eval mode on ``device``, weights drawn after ``torch.manual_seed(seed)``."""
    import pact_zoo  # noqa: F401  (registers the models)

    torch.manual_seed(seed)
    if name.startswith(HF_PREFIX):
        cls = _hf_class(name[len(HF_PREFIX):])
        return cls(cls.config_class(**kwargs)).to(device).eval()
    import timm

    return timm.create_model(name, **kwargs).to(device).eval()


@dataclass(frozen=True)
class InputSpec:
    """What one benchmark sample is: an image ``[C, H, W]`` (``kind="image"``, ``shape=(C, H, W)``) or a token
    sequence (``kind="tokens"``, ``shape=(T,)``, ids below ``vocab_size``, all-ones attention mask)."""

    kind: str
    shape: tuple[int, ...]
    vocab_size: Optional[int] = None
    channels_last: bool = False

    def batch(self, batch_size: int, generator: torch.Generator, device: Union[str, torch.device] = "cpu"
              ) -> Union[torch.Tensor, dict[str, torch.Tensor]]:
        """A random batch: ``[B, C, H, W]`` N(0, 1) images, or ``{"input_ids": [B, T], "attention_mask": [B, T]}``."""
        if self.kind == "tokens":
            ids = torch.randint(0, self.vocab_size, (batch_size,) + self.shape, generator=generator)
            return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
        batch = torch.randn((batch_size,) + self.shape, generator=generator).to(device)
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def zeros(self, device: Union[str, torch.device], dtype: torch.dtype) -> Union[torch.Tensor, dict]:
        """One all-zero sample (FLOPs profiling)."""
        if self.kind == "tokens":
            ids = torch.zeros((1,) + self.shape, dtype=torch.long, device=device)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return torch.zeros((1,) + self.shape, dtype=dtype, device=device)


def _takes_tokens(model: nn.Module) -> bool:
    """True when the model's ``halting_profile_inputs()`` protocol feeds ``input_ids`` (a token model)."""
    from .halting.report import PROFILE_INPUTS_METHOD

    profile = getattr(model, PROFILE_INPUTS_METHOD, None)
    if not callable(profile):
        return False
    _, kwargs = profile()
    return "input_ids" in kwargs


def resolve_inputs(model: nn.Module, kind: str = "auto", input_size: Optional[Sequence[int]] = None,
                   seq_len: int = DEFAULT_SEQ_LEN, channels_last: bool = False) -> InputSpec:
    """The :class:`InputSpec` of ``model``: ``kind`` ``"image"`` (``input_size`` or the model's pretrained_cfg),
    ``"tokens"`` (``seq_len`` tokens, the config's ``vocab_size``) or ``"auto"`` (tokens for models whose
    ``halting_profile_inputs()`` takes ``input_ids``, images otherwise)."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"--inputs must be one of {INPUT_KINDS}, got {kind!r}")
    if kind == "auto":
        kind = "tokens" if _takes_tokens(model) else "image"
    if kind == "tokens":
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if not vocab:
            raise ValueError("--inputs tokens needs a model whose config has a vocab_size")
        if seq_len < 1:
            raise ValueError(f"--seq-len must be >= 1, got {seq_len}")
        return InputSpec("tokens", (int(seq_len),), vocab_size=int(vocab))
    return InputSpec("image", input_shape_of(model, input_size), channels_last=channels_last)


def _call(model: nn.Module, batch: Union[torch.Tensor, Mapping[str, torch.Tensor]]) -> Any:
    return model(**batch) if isinstance(batch, Mapping) else model(batch)


def _main_output(output: Any) -> torch.Tensor:
    """The tensor to compare of a model output: itself, ``.logits`` (Hugging Face ModelOutput) or the first item."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    return output[0]


def input_shape_of(model: nn.Module, override: Optional[Sequence[int]] = None) -> tuple[int, ...]:
    """Per-sample input shape: ``override``, else the model's ``pretrained_cfg['input_size']``."""
    if override:
        return tuple(int(v) for v in override)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" not in cfg:
        raise ValueError("the model has no pretrained_cfg['input_size']: pass --input-size C,H,W")
    return tuple(cfg["input_size"])


def _stages(model: nn.Module) -> list:
    """The model's stages that have halting heads."""
    from .halting import adaptive_stages

    return [stage for _, stage in adaptive_stages(model) if stage.adaptive]


def _twin_kwargs(kwargs: dict, method: str, extra: dict, hf: bool = False) -> dict:
    """``kwargs`` for ``method`` instead of the model's own: knobs the target method does not have are dropped
    (e.g. PACT's ``temperature`` for a policy-gradient twin), ``extra`` knobs are added."""
    from .halting import HaltingConfig, get_halting_method

    rest = dict(kwargs)
    knobs = HaltingConfig.pop_knob_kwargs(rest)
    target = get_halting_method(method).knobs
    kept = {k: v for k, v in knobs.items() if k in target}
    if hf:  # a Hugging Face config: halting_method / halting_knobs
        rest.pop("method", None)
        old = rest.pop("halting_knobs", None) or {}
        return dict(rest, halting_method=method,
                    halting_knobs=dict({k: v for k, v in old.items() if k in target}, **kept, **extra))
    return dict(rest, **kept, method=method, **extra)


def _copy_weights(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy every parameter / buffer of ``target`` that ``source`` has (same name and shape); returns the names of
    the target's entries that were left as they were (e.g. a plain network has no halting heads to receive)."""
    src = source.state_dict()
    dst = target.state_dict()
    copied = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    target.load_state_dict(copied, strict=False)
    return sorted(set(dst) - set(copied))


@torch.no_grad()
def _samples_depth_in_training(model: nn.Module) -> bool:
    """True when a halting stage's method samples its depth in training (asks the method: ``dense_training``)."""
    return any(not stage.method.dense_training for stage in _stages(model))


def set_synthetic_heads(model: nn.Module, seed: int, input_shape: Sequence[int], num_samples: int = 128) -> None:
    """Synthetic halting heads for the benchmark: :func:`~pact_zoo.halting.synthesize_halting` (depth uniform over
    each stage's units under the deterministic rule). For a method whose training samples the depth the backbone
    BatchNorms are calibrated first (:func:`~pact_zoo.halting.calibrate_batchnorm`) and the heads are confident
    (:data:`SAMPLED_HEAD_WEIGHT_SCALE`), so that the sampled training depth is also about half of the units."""
    from .halting import synthesize_halting

    if _samples_depth_in_training(model):
        synthesize_halting(model, seed, input_shape, num_samples=num_samples,
                           weight_scale=SAMPLED_HEAD_WEIGHT_SCALE, calibrate_norms=True)
    else:
        synthesize_halting(model, seed, input_shape, num_samples=num_samples)


@contextlib.contextmanager
def execution(model: nn.Module, mode: str) -> Iterator[None]:
    """Eval mode ``adaptive`` / ``full`` / ``masked`` of ``model`` for the duration of the block (a plain model, with
    no adaptive stage, runs as it is in every mode)."""
    from .halting import adaptive_stages, full_depth, set_execution

    if mode == "full" and adaptive_stages(model):
        with full_depth(model):
            yield
        return
    set_execution(model, "compact" if mode == "adaptive" else "masked")
    try:
        yield
    finally:
        set_execution(model, "compact")


@torch.inference_mode()
def set_compaction_costs(model: nn.Module, inputs: Union[InputSpec, Sequence[int]], batch_size: int, seed: int,
                         device: str = "cpu") -> list[dict]:
    """Measure every halting stage's :class:`~pact_zoo.halting.compaction.CompactionCost` on its own input of a
    ``batch_size`` batch (captured in one full-depth forward) and set it (``stage.compaction_cost``); returns them."""
    from .halting import full_depth
    from .halting.stage import measure_compaction_cost

    stages = _stages(model)
    captured: dict[int, tuple] = {}
    hooks = [stage.register_forward_pre_hook(lambda module, args, i=i: captured.setdefault(i, args))
             for i, stage in enumerate(stages)]
    try:
        with full_depth(model):
            _call(model, _batches(inputs, batch_size, batch_size, seed, False, device)[0])
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


# --------------------------------------------------------------------------------------------------------
# the one timer
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Stopwatch:
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
        _synchronize(self.device)
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
    watch = _Stopwatch(device or torch.device("cpu"), clock)
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


def _medians(times: Mapping[str, list[float]]) -> tuple[dict[str, float], dict[str, float]]:
    return ({name: statistics.median(values) for name, values in times.items()},
            {name: min(values) for name, values in times.items()})


# --------------------------------------------------------------------------------------------------------
# eval timing
def _spec(inputs: Union[InputSpec, Sequence[int]], channels_last: bool = False) -> InputSpec:
    """An :class:`InputSpec` (a bare ``C, H, W`` shape is an image)."""
    if isinstance(inputs, InputSpec):
        return inputs
    return InputSpec("image", tuple(int(v) for v in inputs), channels_last=channels_last)


def _batches(inputs: Union[InputSpec, Sequence[int]], batch_size: int, min_samples: int, seed: int,
             channels_last: bool, device: str = "cpu") -> list:
    spec = _spec(inputs, channels_last)
    generator = torch.Generator().manual_seed(seed + batch_size)
    num_batches = max(1, -(-min_samples // batch_size))
    return [spec.batch(batch_size, generator, device) for _ in range(num_batches)]


def _run_all(model: nn.Module, batches: list) -> None:
    for batch in batches:
        _call(model, batch)


def _flops(model: nn.Module, batches: list) -> dict[str, Any]:
    """Per-sample FLOPs and depths of the current eval mode over the batches (``halting_report``)."""
    from .halting import halting_report

    flops, units = [], []
    full = num_units = None
    for batch in batches:
        _call(model, batch)
        report = halting_report(model)
        flops.append(report.flops.double())
        units.append(report.units_executed)
        full, num_units = float(report.full_flops), report.num_units
    flops_all, units_all = torch.cat(flops), torch.cat(units)
    return {"mean": float(flops_all.mean()), "min": float(flops_all.min()), "max": float(flops_all.max()),
            "full": full, "mean_units": units_all.double().mean(0).tolist(),
            "units_fraction": float(units_all.double().sum(1).mean() / sum(num_units)),
            "distinct_depth_patterns": int(units_all.unique(dim=0).shape[0])}


@torch.inference_mode()
def executed_flops(model: nn.Module, input_shape: Union[InputSpec, Sequence[int]]) -> int:
    """FLOPs per sample of everything the model runs when no stage halts: every unit *and* every halting head (the
    masked mode's cost) for an adaptive model, the network's FLOPs for a plain one (any timm model)."""
    from .halting import FlopsProfiler

    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with FlopsProfiler(model) as profiler:
            _call(model, _spec(input_shape).zeros(param.device, param.dtype))
    finally:
        model.train(was_training)
    return int(sum(profiler.flops.values()))


def _units(model: nn.Module) -> torch.Tensor:
    from .halting import halting_report

    return halting_report(model).units_executed


@torch.inference_mode()
def benchmark_eval(model: nn.Module, input_shape: Union[InputSpec, Sequence[int]], batch_sizes: Sequence[int],
                   warmup: int, repeats: int, min_samples: int, seed: int, channels_last: bool,
                   modes: Sequence[str] = DEFAULT_EVAL_MODES, plain: Optional[nn.Module] = None,
                   device: str = "cpu", log: Callable[[str], None] = print, clock: str = "wall") -> list[dict]:
    """One record per batch size: median times, FLOPs, efficiency and the output check vs masked."""
    if "plain" in modes and plain is None:
        raise ValueError("mode 'plain' needs the plain network")
    masked_flops = executed_flops(model, input_shape)
    plain_flops = executed_flops(plain, input_shape) if plain is not None else None
    records = []
    for batch_size in batch_sizes:
        batches = _batches(input_shape, batch_size, min_samples, seed, channels_last, device)
        num_samples = batch_size * len(batches)
        with execution(model, "adaptive"):
            adaptive = _flops(model, batches)
            adaptive_out = [(_main_output(_call(model, b)), _units(model)) for b in batches[:2]]
        with execution(model, "full"):
            flops_full = _flops(model, batches)["mean"]
        with execution(model, "masked"):
            masked_out = [(_main_output(_call(model, b)), _units(model)) for b in batches[:2]]
        max_diff = max(float((a - m).abs().max()) for (a, _), (m, _) in zip(adaptive_out, masked_out))
        scale = max(float(m.abs().max()) for m, _ in masked_out) or 1.0
        same_units = all(torch.equal(ua, um) for (_, ua), (_, um) in zip(adaptive_out, masked_out))
        runs = {mode: (lambda: _run_all(plain, batches)) if mode == "plain" else (lambda: _run_all(model, batches))
                for mode in modes}
        contexts = {mode: (lambda mode=mode: execution(model, mode)) for mode in modes if mode != "plain"}
        times = time_round_robin(runs, warmup, repeats, contexts=contexts, device=torch.device(device), clock=clock)
        medians, minima = _medians(times)
        flops_ratio = adaptive["mean"] / flops_full
        record: dict[str, Any] = {
            "batch_size": batch_size, "num_batches": len(batches), "samples_per_repeat": num_samples,
            "times_s": times, "median_s": medians, "min_s": minima,
            "median_ms_per_sample": {m: 1e3 * t / num_samples for m, t in medians.items()},
            "flops_per_sample": {"adaptive": adaptive["mean"], "adaptive_min": adaptive["min"],
                                 "adaptive_max": adaptive["max"], "full": flops_full,
                                 "masked_executed": masked_flops, "plain": plain_flops},
            "flops_ratio": flops_ratio, "mean_units_per_stage": adaptive["mean_units"],
            "units_fraction": adaptive["units_fraction"],
            "distinct_depth_patterns": adaptive["distinct_depth_patterns"],
            "max_abs_diff_adaptive_vs_masked": max_diff,
            "max_rel_diff_adaptive_vs_masked": max_diff / scale,  # relative to max |output|
            "same_units_adaptive_vs_masked": same_units,
        }
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
        if "plain" in medians:  # the original backbone as the baseline (e.g. timm resnet50)
            record["time_vs_plain"] = {mode: medians[mode] / medians["plain"] for mode in medians}
            record["flops_vs_plain"] = {"adaptive": adaptive["mean"] / plain_flops, "full": flops_full / plain_flops}
            if "adaptive" in medians:  # the target's reading: against the plain network with the same weights
                record["efficiency_vs_plain"] = (record["time_vs_plain"]["adaptive"]
                                                 / record["flops_vs_plain"]["adaptive"])
        records.append(record)
        log(_format_eval_row(record))
    return records


#: Operators listed per mode in the profile breakdown.
PROFILE_TOP_OPS = 15


@torch.inference_mode()
def profile_eval(model: nn.Module, inputs: Union[InputSpec, Sequence[int]], batch_size: int, seed: int,
                 device: str = "cpu", modes: Sequence[str] = ("adaptive", "full"), top: int = PROFILE_TOP_OPS
                 ) -> dict:
    """Per-operator breakdown (``torch.profiler``, self time) of one eval forward of ``batch_size`` samples in each
    of ``modes``, after one warm-up forward: where the adaptive model spends the time that the full-depth model
    does not (halting heads, the decision, gathers)."""
    from torch.profiler import ProfilerActivity, profile

    batch = _batches(inputs, batch_size, batch_size, seed, False, device)[0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    result: dict[str, Any] = {"batch_size": batch_size, "modes": {}}
    for mode in modes:
        with execution(model, mode):
            _call(model, batch)
            _synchronize(torch.device(device))
            with profile(activities=activities) as prof:
                _call(model, batch)
                _synchronize(torch.device(device))
        averages = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in averages)
        ops = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
        result["modes"][mode] = {
            "self_cpu_ms_total": total / 1e3,
            "ops": [{"name": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": getattr(e, "self_device_time_total", 0.0) / 1e3} for e in ops]}
    return result


def format_profile(profile: dict) -> str:
    lines = [f"per-operator self CPU time of one eval forward, batch {profile['batch_size']} (torch.profiler)"]
    for mode, entry in profile["modes"].items():
        lines.append(f"{mode}: {entry['self_cpu_ms_total']:.2f} ms in all")
        lines += [f"  {op['name']:<36} {op['calls']:>6} calls {op['self_cpu_ms']:>9.3f} ms" for op in entry["ops"]]
    return "\n".join(lines)


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


def _allocator_peak_bytes(model: nn.Module, batch: Union[torch.Tensor, Mapping[str, torch.Tensor]]) -> int:
    """Peak of live bytes allocated by one forward: through PyTorch's CPU allocator (profiler events), or through
    the CUDA caching allocator (its peak statistics) for a CUDA batch."""
    device = next(iter(batch.values())).device if isinstance(batch, Mapping) else batch.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _call(model, batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _call(model, batch)
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
    device = spec.get("device", "cpu")
    model = create_model(spec["model"], spec["kwargs"], spec["seed"], device)
    shape = tuple(spec["input_shape"])
    inputs = InputSpec(spec.get("input_kind", "image"), shape, spec.get("vocab_size"), spec["channels_last"])
    if spec.get("synthetic_halting") is not None and _stages(model):
        set_synthetic_heads(model, spec["synthetic_halting"], shape, spec.get("synthetic_samples", 128))
    if spec.get("threshold") is not None and any(s.method.has_threshold for s in _stages(model)):
        set_threshold(model, spec["threshold"])
    batch = _batches(inputs, spec["batch_size"], spec["batch_size"], spec["seed"], spec["channels_last"], device)[0]
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    _call(model, batch)  # warm-up: one-time allocations (primitive caches, FLOPs tables) are not the forward's
    flops_ratio = None
    if _stages(model):
        flops_ratio = halting_report(model).flops_ratio
    gc.collect()
    allocator_peak = _allocator_peak_bytes(model, batch)
    rss_delta = None
    if device == "cpu" or str(device).startswith("cpu"):
        gc.collect()
        rss_before_kib = _read_status_kib("VmRSS")
        reset = _reset_peak_rss()
        _call(model, batch)
        rss_peak_kib = _read_status_kib("VmHWM")
        rss_delta = 1024 * (rss_peak_kib - rss_before_kib) if reset else None
    return {"allocator_peak_bytes": allocator_peak, "rss_peak_delta_bytes": rss_delta, "flops_ratio": flops_ratio}


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
def _is_hf(name: str) -> bool:
    return name.startswith(HF_PREFIX)


def _describe(model: nn.Module) -> str:
    """``method`` (and ``baseline`` where the method has one) of the model's halting stages, or ``plain``."""
    stages = _stages(model)
    if not stages:
        return "plain"
    method = stages[0].method
    baseline = getattr(method, "baseline", None)
    return method.name + (f" (baseline {baseline})" if baseline is not None else "")


def build_training_networks(model: nn.Module, names: Sequence[str], model_name: str, kwargs: dict,
                            plain_model: Optional[str], seed: int, input_shape: Sequence[int],
                            synthetic_halting: Optional[int], synthetic_samples: int = 128,
                            device: str = "cpu", channels_last: bool = False) -> dict[str, nn.Module]:
    """The networks of the training comparison, every one with ``model``'s weights where it has them.

    ``model`` is the benchmarked model itself; ``plain`` is ``plain_model`` (or ``model_name`` with
    ``method="none"``); the others are twins of ``model_name`` under another method (:data:`TRAIN_TWINS`). With
    ``synthetic_halting`` the twins get synthetic heads (:func:`set_synthetic_heads`).
    """
    networks: dict[str, nn.Module] = {}
    for name in names:
        if name == "model":
            networks[name] = model
            continue
        if name == "plain":
            net = (create_model(plain_model, {}, seed, device) if plain_model
                   else create_model(model_name, _twin_kwargs(kwargs, "none", {}, _is_hf(model_name)), seed, device))
            _copy_weights(model, net)
        else:
            method, extra = TRAIN_TWINS[name]
            net = create_model(model_name, _twin_kwargs(kwargs, method, extra, _is_hf(model_name)), seed, device)
            missing = _copy_weights(model, net)
            if missing and any(".method_state." not in key for key in missing):
                raise ValueError(f"training twin {name!r} of {model_name} does not take the model's weights: "
                                 f"{missing[:5]}")
            if synthetic_halting is not None and _stages(net):
                set_synthetic_heads(net, synthetic_halting, input_shape, synthetic_samples)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        networks[name] = net
    return networks


def benchmark_training(networks: Mapping[str, nn.Module], input_shape: Union[InputSpec, Sequence[int]],
                       batch_size: int, warmup: int, repeats: int, seed: int, channels_last: bool,
                       device: str = "cpu", clock: str = "wall") -> dict:
    """Median time of one SGD step per network, round-robin.

    A step is what the training loop does per batch (:func:`~pact_zoo.halting.training_loss`): the self-critical
    baseline forward where the method needs one, the training forward, the per-sample cross-entropy plus
    ``halting_loss``, backward, update. The JSON also gives the fraction of units each training forward ran.
    """
    from .halting import adaptive_stages, training_loss

    generator = torch.Generator().manual_seed(seed)
    batch = _batches(input_shape, batch_size, batch_size, seed, channels_last, device)[0]
    first = next(iter(networks.values()))
    num_classes = (getattr(first, "num_classes", None) or getattr(getattr(first, "config", None), "num_labels", None)
                   or 10)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for name, m in networks.items()}
    units: dict[str, list[list[torch.Tensor]]] = {name: [] for name in networks}

    def step(name: str) -> None:
        model, optimizer = networks[name], optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss = training_loss(model, lambda: _main_output(_call(model, batch)),
                             lambda logits: nn.functional.cross_entropy(logits, labels, reduction="none")).loss
        loss.backward()
        optimizer.step()
        units[name].append([stage.record.total_units for _, stage in adaptive_stages(model)])

    for model in networks.values():
        model.train()
    try:
        times = time_round_robin({name: (lambda name=name: step(name)) for name in networks}, warmup, repeats,
                                 device=torch.device(device), clock=clock)
    finally:
        for model in networks.values():
            model.eval()
    medians, minima = _medians(times)
    fractions = {}
    for name, model in networks.items():
        stages = [stage for _, stage in adaptive_stages(model)]
        timed = units[name][warmup:]
        if stages and timed:
            total_units = sum(stage.num_units for stage in stages)
            fractions[name] = float(torch.stack([sum(u.double() for u in step_units) for step_units in timed])
                                    .mean() / total_units)
    ratios = {}
    for base in ("plain", "pact"):
        for name in networks:
            if base in medians and name not in ("plain", base):
                ratios[f"{name}_vs_{base}"] = medians[name] / medians[base]
    ratio = ratios.get("pact_vs_plain")
    return {"batch_size": batch_size, "networks": {name: _describe(m) for name, m in networks.items()},
            "times_s": times, "median_s": medians, "min_s": minima, "units_fraction": fractions,
            "ratios": ratios, "ratio": ratio, "target": TRAIN_STEP_TARGET,
            "target_met": None if ratio is None else ratio <= TRAIN_STEP_TARGET}


# --------------------------------------------------------------------------------------------------------
# output
def _format_eval_row(record: dict) -> str:
    med = record["median_ms_per_sample"]
    eff = record.get("efficiency")
    target = record.get("efficiency_target")
    verdict = "" if target is None else ("met" if record.get("target_met") else "MISSED")
    plain = med.get("plain")
    return (f"{record['batch_size']:>6} {med.get('adaptive', float('nan')):>11.3f} "
            f"{med.get('full', float('nan')):>9.3f} {med.get('masked', float('nan')):>10.3f} "
            f"{record['flops_ratio']:>7.3f} {record.get('time_ratio_adaptive', float('nan')):>7.3f} "
            f"{eff if eff is not None else float('nan'):>7.3f} "
            f"{record.get('efficiency_masked', float('nan')):>7.3f} "
            f"{record.get('efficiency_adaptive_min', float('nan')):>7.3f} "
            f"{'' if target is None else f'<= {target:.2f}':>8} {verdict:<6}"
            + ("" if plain is None else f" plain {plain:.3f} ms/smp, eff vs plain "
                                        f"{record.get('efficiency_vs_plain', float('nan')):.3f}"))


EVAL_HEADER = (f"{'batch':>6} {'adaptive':>11} {'full':>9} {'masked':>10} {'FLOPs':>7} {'time':>7} "
               f"{'eff':>7} {'eff':>7} {'eff':>7} {'target':>8}\n"
               f"{'':>6} {'ms/sample':>11} {'ms/smp':>9} {'ms/smp':>10} {'ratio':>7} {'ratio':>7} "
               f"{'adapt':>7} {'masked':>7} {'(min)':>7}")


def _format_training(tr: dict) -> list[str]:
    med, ratios = tr["median_s"], tr["ratios"]
    lines = [f"training step, batch {tr['batch_size']} (median of {len(next(iter(tr['times_s'].values())))}; "
             "units = fraction of the units the training forward ran)",
             f"{'network':>14} {'method':<36} {'units':>6} {'ms':>9} {'vs plain':>9} {'vs pact':>8}"]
    for name, seconds in med.items():
        units = tr["units_fraction"].get(name)
        vs_plain = 1.0 if name == "plain" else ratios.get(f"{name}_vs_plain")
        vs_pact = 1.0 if name == "pact" else ratios.get(f"{name}_vs_pact")
        lines.append(f"{name:>14} {tr['networks'][name]:<36} {'-' if units is None else f'{units:.3f}':>6} "
                     f"{1e3 * seconds:>9.1f} {'-' if vs_plain is None else f'{vs_plain:.3f}':>9} "
                     f"{'-' if vs_pact is None else f'{vs_pact:.3f}':>8}")
    if tr.get("ratio") is not None:
        lines.append(f"PACT step / plain step {tr['ratio']:.3f} (target <= {tr['target']}: "
                     f"{'met' if tr['target_met'] else 'MISSED'})")
    return lines


def _clock_name(clock: str) -> str:
    return "wall time" if clock == "wall" else "process CPU time"


def format_report(result: dict) -> str:
    threshold = result.get("threshold")
    lines = [f"model {result['model']} {result['model_kwargs'] or ''} method {result['method']} threshold "
             f"{'-' if threshold is None else f'{threshold:.6g}'} input {'x'.join(map(str, result['input_shape']))}"
             f" on {result.get('device', 'cpu')} ({result['threads']} threads, {result['platform']['torch']})"]
    if result.get("calibration"):
        cal = result["calibration"]
        lines.append(f"calibration: target FLOPs ratio {cal['target_flops_ratio']}, achieved "
                     f"{cal['flops_ratio']:.4f} on {cal['num_samples']} generated samples")
    if result.get("eval"):
        first = result["eval"][0]
        flops = first["flops_per_sample"]
        lines += ["", f"FLOPs/sample: full depth (plain computation) {flops['full'] / 1e9:.4g} G, every unit and head "
                      f"{flops['masked_executed'] / 1e9:.4g} G"
                  + ("" if flops.get("plain") is None else f", plain network {flops['plain'] / 1e9:.4g} G")]
        lines += ["", f"eval {_clock_name(result.get('clock', 'wall'))} (median of repeats; efficiency = time ratio / "
                      "FLOPs ratio)", EVAL_HEADER]
        lines += [_format_eval_row(r) for r in result["eval"]]
        lines += [f"batch {r['batch_size']}: units run {r['units_fraction']:.3f}, "
                  f"{r['distinct_depth_patterns']} distinct depth patterns"
                  + ("" if "time_vs_plain" not in r else
                     ", time vs plain: " + ", ".join(f"{m} {v:.3f}" for m, v in r["time_vs_plain"].items()))
                  for r in result["eval"]]
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
        lines += [""] + _format_training(result["training"])
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


def _names(text: str, allowed: Sequence[str], option: str) -> list[str]:
    names = [m for m in text.split(",") if m]
    if not names or any(m not in allowed for m in names) or len(set(names)) != len(names):
        raise ValueError(f"{option} must be a comma-separated subset of {tuple(allowed)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    from .cli import ArgumentParser
    from .training.config import parse_yaml_mapping

    parser = ArgumentParser(prog="pact-zoo benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pact_resnet110",
                        help="registered timm model name (pact_* / act_* / pg_*, CIFAR or ImageNet ResNets; "
                             "default: pact_resnet110)")
    parser.add_argument("--model-kwargs", type=parse_yaml_mapping, default=None,
                        help="timm.create_model kwargs as YAML (or JSON), as in pact-zoo train: '{tau: 0.02}'")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--threshold", type=_unit_interval, default=None,
                        help="halting threshold (default: the model's)")
    budget.add_argument("--target-flops-ratio", type=_unit_interval, default=None,
                        help="calibrate the threshold to this FLOPs budget on generated data")
    parser.add_argument("--calibration-samples", type=_positive_int, default=256,
                        help="generated inputs for --target-flops-ratio (default: 256)")
    parser.add_argument("--synthetic-halting", type=int, default=None, metavar="SEED",
                        help="set reproducible synthetic halting heads (depth uniform over each stage's units, "
                             "about half of the units on average); without it the model's heads are used")
    parser.add_argument("--synthetic-samples", type=_positive_int, default=128,
                        help="generated inputs the synthetic heads are set on (default: 128)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 64, 256],
                        help="comma-separated eval batch sizes (default: 1,8,64,256)")
    parser.add_argument("--min-samples", type=_positive_int, default=64,
                        help="every timed repeat runs at least this many samples (several batches when small; "
                             "default: 64)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repeats before timing (default: 2)")
    parser.add_argument("--repeats", type=_positive_int, default=5,
                        help="timed repeats per mode, interleaved; the median is reported (default: 5)")
    parser.add_argument("--modes", default=",".join(DEFAULT_EVAL_MODES),
                        help=f"eval modes to time, a subset of {','.join(EVAL_MODES)} (plain: the plain network; "
                             f"default: {','.join(DEFAULT_EVAL_MODES)})")
    parser.add_argument("--input-size", type=_int_list, default=None,
                        help="C,H,W (default: the model's pretrained_cfg, e.g. 3,224,224 for pact_resnet50)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda[:N] (timings synchronise the device; default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the generated inputs (default: 0)")
    parser.add_argument("--memory-batch-size", type=_positive_int, default=64,
                        help="batch size of the peak-memory probes (default: 64)")
    parser.add_argument("--memory-networks", default="pact,act,plain",
                        help="networks whose eval peak memory is probed, each in a fresh process (default: "
                             "pact,act,plain)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--train-batch-size", type=_positive_int, default=32,
                        help="batch size of the training-step timing (default: 32)")
    parser.add_argument("--train-repeats", type=_positive_int, default=5,
                        help="timed training steps per network (default: 5)")
    parser.add_argument("--train-warmup", type=int, default=1, help="untimed training steps first (default: 1)")
    parser.add_argument("--train-networks", default=",".join(DEFAULT_TRAIN_NETWORKS),
                        help=f"networks whose training step is timed, a subset of {','.join(TRAIN_NETWORKS)}: "
                             "model = --model as configured, plain = no halting, pact / pg / pg_batch_mean = "
                             "--model under PACT / policy gradient with the self-critical (greedy) or batch-mean "
                             f"baseline, same weights (default: {','.join(DEFAULT_TRAIN_NETWORKS)})")
    parser.add_argument("--plain-model", default=None,
                        help="plain network for the plain eval mode, training and memory (default: --model with "
                             "method='none', e.g. resnet110_cifar's network for pact_resnet110; timm's resnet50 "
                             "for pact_resnet50)")
    parser.add_argument("--no-training", action="store_true", help="skip the training-step timing")
    parser.add_argument("--no-eval", action="store_true", help="skip the eval timing")
    parser.add_argument("--output", default=None,
                        help=f"JSON result file (default: {DEFAULT_OUTPUT_DIR}/<model>-<UTC time>.json)")
    parser.add_argument("--inputs", default="auto", choices=INPUT_KINDS,
                        help="image (--input-size), tokens (--seq-len random input_ids, all-ones attention mask), "
                             "or auto: tokens for models whose halting_profile_inputs() takes input_ids")
    parser.add_argument("--seq-len", type=_positive_int, default=DEFAULT_SEQ_LEN, help="tokens per sequence")
    parser.add_argument("--buckets", default=None,
                        help="pad compacted sub-batches up to these sizes (comma-separated, ascending; 'default' "
                             "for powers of two to 64, then multiples of 64); none by default")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="with --buckets on a CUDA device: replay one CUDA graph per (unit, bucket)")
    parser.add_argument("--clock", default="wall", choices=CLOCKS,
                        help="wall time, or this process's CPU time (CPU only; robust to a loaded machine with "
                             "--threads 1)")
    parser.add_argument("--compaction-cost", default=None, type=_positive_int, metavar="BATCH",
                        help="measure each stage's compaction cost model at this batch size (units on 1 and BATCH "
                             "rows, gathers) and compact only when it pays; default: compact at every halt")
    parser.add_argument("--profile-batch-size", type=_positive_int, default=None,
                        help="also record a torch.profiler per-operator breakdown of the adaptive and full-depth "
                             "eval at this batch size")
    return parser


def _load_average() -> Optional[list[float]]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def _version(package: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> Optional[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_info(device: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """What a timing depends on: package versions, threads, the machine and its load right now."""
    device = torch.device(device)
    return {
        "torch": torch.__version__, "timm": _version("timm"), "transformers": _version("transformers"),
        "pact_zoo": _version("pact_zoo"), "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor(), "cpu_model": _cpu_model(),
        "hostname": platform.node(), "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "mkldnn": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "load_average": _load_average(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def default_output_path(model: str) -> str:
    """``out/benchmarks/<model>-<UTC time>.json`` (``out/`` is git-ignored: no stray file in the repo root)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return os.path.join(DEFAULT_OUTPUT_DIR, f"{safe}-{stamp}.json")


def parse_buckets(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """``--buckets``: None, ``"default"`` (:data:`~pact_zoo.halting.stage.DEFAULT_BUCKETS`) or ascending integers."""
    from .halting.stage import DEFAULT_BUCKETS

    if text is None:
        return None
    if text == "default":
        return DEFAULT_BUCKETS
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise ValueError(f"--buckets must be 'default' or ascending comma-separated integers >= 1, got {text!r}")
    return values


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .halting import calibrate_threshold, set_threshold

    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        kwargs = dict(args.model_kwargs or {})
        import timm

        if not args.model.startswith(HF_PREFIX) and not timm.is_model(args.model):
            raise ValueError(f"--model {args.model!r} is not a registered timm model (pact_zoo.list_models() lists "
                             f"the adaptive ones)")
        if args.input_size is not None and len(args.input_size) != 3:
            raise ValueError(f"--input-size must be C,H,W (three integers), got {args.input_size}")
        modes = _names(args.modes, EVAL_MODES, "--modes")
        memory_networks = _names(args.memory_networks, MEMORY_NETWORKS, "--memory-networks")
        train_networks = _names(args.train_networks, TRAIN_NETWORKS, "--train-networks")
        if args.warmup < 0 or args.train_warmup < 0:
            raise ValueError(f"--warmup and --train-warmup must be >= 0, got {args.warmup}, {args.train_warmup}")
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"--device {args.device}: CUDA is not available")
        if device.type == "cuda" and args.clock != "wall":
            raise ValueError("--clock process is for CPU runs (a CUDA device is timed with CUDA events)")
        buckets = parse_buckets(args.buckets)
        if args.cuda_graphs and (buckets is None or device.type != "cuda"):
            raise ValueError("--cuda-graphs needs --buckets and --device cuda")
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_start = _load_average()
    model = create_model(args.model, kwargs, args.seed, args.device)
    stages = _stages(model)
    if not stages:
        print(f"error: --model {args.model} has no halting stage (method 'none'?)", file=sys.stderr)
        return 2
    method = stages[0].method
    has_threshold = all(stage.method.has_threshold for stage in stages)
    if (args.target_flops_ratio is not None or args.threshold is not None) and not has_threshold:
        print(f"error: --target-flops-ratio / --threshold need a halting method with a threshold; "
              f"{args.model} uses {method.name!r}", file=sys.stderr)
        return 2
    try:
        inputs = resolve_inputs(model, args.inputs, args.input_size, args.seq_len, args.channels_last)
        if args.synthetic_halting is not None and inputs.kind != "image":
            raise ValueError("--synthetic-halting generates images (synthesize_halting): use a trained model's "
                             "heads or --threshold for token inputs")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shape = inputs.shape
    if args.synthetic_halting is not None:
        set_synthetic_heads(model, args.synthetic_halting, shape, args.synthetic_samples)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if buckets is not None:
        from .halting.stage import set_bucketing

        set_bucketing(model, buckets, cuda_graphs=args.cuda_graphs)
    compaction_costs = None
    if args.compaction_cost is not None:
        compaction_costs = set_compaction_costs(model, inputs, args.compaction_cost, args.seed, args.device)
    calibration = None
    if args.target_flops_ratio is not None:
        generator = torch.Generator().manual_seed(args.seed + 1)
        data = [inputs.batch(min(64, args.calibration_samples - start), generator, args.device)
                for start in range(0, args.calibration_samples, 64)]
        found = calibrate_threshold(model, data, args.target_flops_ratio)
        calibration = {"target_flops_ratio": args.target_flops_ratio, "threshold": found.threshold,
                       "flops_ratio": found.flops_ratio, "num_samples": args.calibration_samples}
    elif args.threshold is not None:
        set_threshold(model, args.threshold)
    threshold = method.threshold if method.has_threshold else None
    result: dict[str, Any] = {
        "model": args.model, "model_kwargs": kwargs, "method": method.name, "knobs": method.knob_values(),
        "threshold": threshold, "synthetic_halting": args.synthetic_halting, "calibration": calibration,
        "input_shape": list(shape), "inputs": inputs.kind, "channels_last": args.channels_last,
        "device": str(device), "threads": threads, "clock": args.clock,
        "buckets": None if buckets is None else list(buckets), "cuda_graphs": args.cuda_graphs,
        "compaction_costs": compaction_costs,
        "warmup": args.warmup, "repeats": args.repeats, "plain_model": args.plain_model,
        "platform": dict(machine_info(device), load_average=load_start),
    }
    print(format_report(result))

    def plain_network() -> nn.Module:
        plain = (create_model(args.plain_model, {}, args.seed, args.device) if args.plain_model
                 else create_model(args.model, _twin_kwargs(kwargs, "none", {}, _is_hf(args.model)), args.seed,
                                   args.device))
        _copy_weights(model, plain)
        return plain.to(memory_format=torch.channels_last) if args.channels_last else plain

    if not args.no_eval:
        print(f"\neval {_clock_name(args.clock)} (median of repeats; efficiency = time ratio / FLOPs ratio)\n"
              + EVAL_HEADER)
        plain = plain_network() if "plain" in modes else None
        result["eval"] = benchmark_eval(model, inputs, args.batch_sizes, args.warmup, args.repeats,
                                        args.min_samples, args.seed, args.channels_last, modes, plain=plain,
                                        device=args.device, clock=args.clock)
        del plain
    if args.profile_batch_size is not None:
        result["profile"] = profile_eval(model, inputs, args.profile_batch_size, args.seed, args.device)
        print("\n" + format_profile(result["profile"]))
    if not args.no_memory:
        base = {"model": args.model, "seed": args.seed, "input_shape": list(shape), "threads": threads,
                "input_kind": inputs.kind, "vocab_size": inputs.vocab_size,
                "batch_size": args.memory_batch_size, "channels_last": args.channels_last, "device": args.device,
                "synthetic_halting": args.synthetic_halting, "synthetic_samples": args.synthetic_samples,
                "threshold": threshold}
        hf = _is_hf(args.model)
        specs = {"pact": dict(base, kwargs=_twin_kwargs(kwargs, "pact", {}, hf)),
                 "act": dict(base, kwargs=_twin_kwargs(kwargs, "act", {}, hf)),
                 "plain": (dict(base, model=args.plain_model, kwargs={}) if args.plain_model
                           else dict(base, kwargs=_twin_kwargs(kwargs, "none", {}, hf)))}
        result["memory_batch_size"] = args.memory_batch_size
        result["memory"] = {name: measure_memory(specs[name]) for name in memory_networks}
        if "pact" in result["memory"] and "act" in result["memory"]:
            result["pact_below_act"] = (result["memory"]["pact"]["allocator_peak_bytes"]
                                        < result["memory"]["act"]["allocator_peak_bytes"])
    if not args.no_training:
        print(f"\ntraining step, batch {args.train_batch_size}: {', '.join(train_networks)} ...", flush=True)
        networks = build_training_networks(model, train_networks, args.model, kwargs, args.plain_model, args.seed,
                                           shape, args.synthetic_halting, args.synthetic_samples, args.device,
                                           args.channels_last)
        result["training"] = benchmark_training(networks, inputs, args.train_batch_size, args.train_warmup,
                                                args.train_repeats, args.seed, args.channels_last, args.device,
                                                clock=args.clock)
        del networks
    result["platform"]["load_average_end"] = _load_average()
    print("\n" + format_report(result))
    output = args.output or default_output_path(args.model)
    write_json_atomic(output, result)
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
