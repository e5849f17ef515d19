"""Peak memory of one eval forward, each network in a fresh Python process (its own allocator state and RSS): the
allocator's peak of live bytes (PyTorch's CPU allocator through profiler events, or the CUDA caching allocator)
and, on CPU, the growth of the resident set (see docs/benchmarks.md)."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from typing import Mapping, Optional, Union

import torch
from torch import nn

from .inputs import InputSpec, make_batches, run_model
from .networks import halting_stages, is_hf, plain_method, create_model, set_synthetic_heads, twin_kwargs

__all__ = ["MEMORY_PROBE_ENV", "allocator_peak_bytes", "memory_probe", "memory_probe_main", "measure_memory",
           "memory_specs"]

#: Environment of the memory probes: glibc returns every block >= 64 KiB to the OS when freed, so the
#: resident set follows the live tensors (see docs/benchmarks.md).
MEMORY_PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
_RESULT_PREFIX = "PACT_ZOO_MEMORY "


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


def allocator_peak_bytes(model: nn.Module, batch: Union[torch.Tensor, Mapping[str, torch.Tensor]]) -> int:
    """Peak of live bytes allocated by one forward: through PyTorch's CPU allocator (profiler events), or through
    the CUDA caching allocator (its peak statistics) for a CUDA batch."""
    device = next(iter(batch.values())).device if isinstance(batch, Mapping) else batch.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run_model(model, batch)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run_model(model, batch)
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return peak


@torch.inference_mode()
def memory_probe(spec: dict) -> dict:
    """Runs in a fresh process: peak memory of one eval forward of one network (see docs/benchmarks.md)."""
    from ..halting import halting_report, set_threshold

    torch.set_num_threads(spec["threads"])
    device = spec.get("device", "cpu")
    model = create_model(spec["model"], spec["kwargs"], spec["seed"], device)
    shape = tuple(spec["input_shape"])
    inputs = InputSpec(spec.get("input_kind", "image"), shape, spec.get("vocab_size"), spec["channels_last"])
    if spec.get("synthetic_halting") is not None and halting_stages(model):
        set_synthetic_heads(model, spec["synthetic_halting"], shape, spec.get("synthetic_samples", 128))
    if spec.get("threshold") is not None and any(s.method.has_threshold for s in halting_stages(model)):
        set_threshold(model, spec["threshold"])
    batch = make_batches(inputs, spec["batch_size"], spec["batch_size"], spec["seed"], spec["channels_last"],
                         device)[0]
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    run_model(model, batch)  # warm-up: one-time allocations (primitive caches, FLOPs tables) are not the forward's
    flops_ratio = None
    if halting_stages(model):
        flops_ratio = halting_report(model).flops_ratio
    gc.collect()
    allocator_peak = allocator_peak_bytes(model, batch)
    rss_delta = None
    if device == "cpu" or str(device).startswith("cpu"):
        gc.collect()
        rss_before_kib = _read_status_kib("VmRSS")
        reset = _reset_peak_rss()
        run_model(model, batch)
        rss_peak_kib = _read_status_kib("VmHWM")
        rss_delta = 1024 * (rss_peak_kib - rss_before_kib) if reset else None
    return {"allocator_peak_bytes": allocator_peak, "rss_peak_delta_bytes": rss_delta, "flops_ratio": flops_ratio}


def memory_probe_main() -> int:
    from ..cli import import_plugins

    import_plugins()  # the parent's --import modules (PACT_ZOO_IMPORT): a user's method or family
    spec = json.loads(sys.argv[1])
    print(_RESULT_PREFIX + json.dumps(memory_probe(spec)))
    return 0


def measure_memory(spec: dict, timeout_s: float = 600.0) -> dict:
    """Run :func:`memory_probe` in a fresh Python process (its own allocator state and RSS)."""
    env = dict(os.environ, **MEMORY_PROBE_ENV)
    code = "import sys; from pact_zoo.bench.memory import memory_probe_main; sys.exit(memory_probe_main())"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True,
                          text=True, timeout=timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX):])
    raise RuntimeError(f"memory probe for {spec['model']} {spec['kwargs']} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-2000:]}")


def memory_specs(base: dict, names: list[str], kwargs: dict, plain_model: Optional[str]) -> dict[str, dict]:
    """The probe spec of every network in ``names``: ``plain`` (``plain_model``, else the model under the plain
    method) or a head method's twin of the model (same seed, so the same weights)."""
    hf = is_hf(base["model"])
    specs = {}
    for name in names:
        if name != "plain":
            specs[name] = dict(base, kwargs=twin_kwargs(kwargs, name, {}, hf))
        elif plain_model:
            specs[name] = dict(base, model=plain_model, kwargs={})
        else:
            specs[name] = dict(base, kwargs=twin_kwargs(kwargs, plain_method(), {}, hf))
    return specs
