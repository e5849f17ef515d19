"""FLOPs and wall time of an adaptive ImageNet ResNet, adaptive vs full depth (issue 3, point 5).

The halting heads are set so that about ``--target-units`` of the residual units run, varying per sample: every
head gets input-dependent weights (halting logits ~ N(offset, ``--logit-std``) over samples, after one
batch-statistics calibration of all BatchNorms), and one common bias ``offset`` is solved on the measured
inputs so that the deterministic PACT rule runs that fraction of units. Weights are random (no download); the
cost of a convolution does not depend on its values.

Configurations, timed in the same run, interleaved repeat by repeat (so load from other processes hits all
of them alike), median of ``--repeats`` after ``--warmup`` passes, under ``torch.inference_mode``:

* ``timm``      timm's own ``resnet50`` (full depth, no heads): the baseline of every ratio;
* ``full``      the adaptive model with threshold 1.0 (no head halts: full depth plus the heads' cost);
* ``adaptive``  the adaptive model, deterministic halting, halted rows leave the batch ("compact");
* ``masked``    (``--masked``) the adaptive model run SACT-style: every unit on every sample, then masked.

Batch 1 is timed as the mean latency over the same ``--samples`` inputs run one at a time; batch B as whole
batches of B over those inputs.

Usage: python scripts/measure_imagenet_resnet.py [--model pact_resnet50] [--batch-sizes 1 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Callable, Dict, List

import timm
import torch
from torch import nn

import pact_zoo
from pact_zoo.fileio import atomic_write_json


def calibrate_batchnorm(model: nn.Module, x: torch.Tensor) -> None:
    """Running statistics of every BN from one train-mode pass over ``x`` (as after training)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    was_training = model.training
    model.train()
    with torch.no_grad():
        model(x)
    model.train(was_training)


def head_logits(model: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """``[B, L - 1]`` halting logits of every stage, with every unit run for every sample (masked execution)."""
    stages = [stage for _, stage in pact_zoo.adaptive_stages(model)]
    captured: Dict[int, List[torch.Tensor]] = {id(s): [] for s in stages}
    handles = [head.register_forward_hook(lambda m, i, o, key=id(s): captured[key].append(o.float()))
               for s in stages for head in s.heads]
    pact_zoo.set_execution(model, "masked")
    try:
        with torch.inference_mode():
            model(x)
    finally:
        pact_zoo.set_execution(model, "compact")
        for handle in handles:
            handle.remove()
    return [torch.stack(captured[id(s)], dim=1) for s in stages]


def units_fraction(logits: List[torch.Tensor], offset: float, threshold: float) -> float:
    """Fraction of units the deterministic rule runs when every head's logit is shifted by ``offset``."""
    prob_threshold = torch.logit(torch.tensor(threshold)).item() if threshold < 1 else float("inf")
    run, total = 0, 0
    for stage_logits in logits:
        num_units = stage_logits.shape[1] + 1
        stop = (stage_logits + offset) >= prob_threshold
        first = torch.where(stop.any(1), stop.float().argmax(1) + 1, torch.full_like(stop[:, 0], num_units,
                                                                                  dtype=torch.long))
        run += int(first.sum())
        total += num_units * stage_logits.shape[0]
    return run / total


def set_heads_for_fraction(model: nn.Module, x: torch.Tensor, target: float, logit_std: float, seed: int) -> float:
    """Random input-dependent heads, then one common bias solved by bisection for ``target`` of the units."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, stage in pact_zoo.adaptive_stages(model):
            for head in stage.heads:
                weight = torch.randn(head.fc.weight.shape, generator=generator) * logit_std
                head.fc.weight.copy_(weight / head.fc.in_features ** 0.5)
                head.fc.bias.zero_()
    calibrate_batchnorm(model, x)
    model.eval()
    logits = head_logits(model, x)
    threshold = model.halting_cfg.threshold
    low, high = -50.0, 50.0  # units_fraction decreases with the offset
    for _ in range(60):
        mid = (low + high) / 2
        if units_fraction(logits, mid, threshold) > target:
            low = mid
        else:
            high = mid
    offset = (low + high) / 2
    with torch.no_grad():
        for _, stage in pact_zoo.adaptive_stages(model):
            for head in stage.heads:
                head.fc.bias.fill_(offset)
    return offset


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_runner(model: nn.Module, x: torch.Tensor, batch_size: int) -> Callable[[], None]:
    chunks = list(torch.split(x, batch_size))

    def run() -> None:
        for chunk in chunks:
            model(chunk)
    return run


def measure(runners: Dict[str, Callable[[], None]], repeats: int, warmup: int, device: torch.device,
            num_samples: int) -> Dict[str, Dict[str, float]]:
    """Median and spread of the time per sample, interleaving the configurations on every repeat."""
    times: Dict[str, List[float]] = {name: [] for name in runners}
    with torch.inference_mode():
        for step in range(warmup + repeats):
            for name, run in runners.items():
                sync(device)
                start = time.perf_counter()
                run()
                sync(device)
                if step >= warmup:
                    times[name].append((time.perf_counter() - start) / num_samples)
    return {name: dict(median_ms=1e3 * statistics.median(t), min_ms=1e3 * min(t), max_ms=1e3 * max(t))
            for name, t in times.items()}


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="pact_resnet50")
    parser.add_argument("--backbone", default=None, help="timm baseline (default: the model name without prefix)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--samples", type=int, default=32, help="inputs measured (a multiple of every batch size)")
    parser.add_argument("--target-units", type=float, default=0.5)
    parser.add_argument("--logit-std", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--masked", action="store_true", help="also time SACT-style masked execution")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here (temp file, then rename)")
    args = parser.parse_args(argv)
    if any(args.samples % b for b in args.batch_sizes):
        parser.error(f"--samples ({args.samples}) must be a multiple of every batch size {args.batch_sizes}")
    if not 0 < args.target_units <= 1:
        parser.error(f"--target-units must be in (0, 1], got {args.target_units}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    backbone = args.backbone or args.model.split("_", 1)[1]
    x = torch.randn(args.samples, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed))

    model = timm.create_model(args.model, zero_init_last=False)
    offset = set_heads_for_fraction(model, x, args.target_units, args.logit_std, args.seed)
    plain = timm.create_model(backbone, zero_init_last=False)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if ".heads." not in k})
    model, plain, x = model.to(device).eval(), plain.to(device).eval(), x.to(device)
    full = timm.create_model(args.model, zero_init_last=False, threshold=1.0).to(device).eval()
    full.load_state_dict(model.state_dict())

    with torch.inference_mode():
        model(x)
        adaptive_report = pact_zoo.halting_report(model)
        full(x[:1])
        full_flops_with_heads = pact_zoo.halting_report(full).full_flops
    # FLOPs of the plain backbone (no heads): analytic per-unit profile of the same network.
    with torch.no_grad():
        plain_model = timm.create_model(args.model, method="none").eval()
        plain_model(x[:1].cpu())
        backbone_flops = pact_zoo.halting_report(plain_model).full_flops

    units = adaptive_report.units_executed.double()
    num_units = sum(adaptive_report.num_units)
    result = {
        "model": args.model, "backbone": backbone, "input": [3, args.size, args.size], "samples": args.samples,
        "threads": args.threads, "device": str(device), "torch": torch.__version__, "timm": timm.__version__,
        "cpu_count": os.cpu_count(), "head_bias_offset": offset,
        "units_fraction": float(units.sum(1).mean() / num_units),
        "units_per_stage_mean": [round(v, 3) for v in units.mean(0).tolist()],
        "distinct_depth_patterns": int(adaptive_report.units_executed.unique(dim=0).shape[0]),
        "flops": {
            "timm": backbone_flops, "full": full_flops_with_heads, "adaptive_mean": adaptive_report.mean_flops,
            "adaptive_min": int(adaptive_report.flops.min()), "adaptive_max": int(adaptive_report.flops.max()),
        },
        "wall": {},
    }
    print(f"{args.model} @ {args.size}x{args.size}, {args.samples} inputs, {args.threads} thread(s), {device}: "
          f"units run {result['units_fraction']:.3f} of {num_units} (per stage {result['units_per_stage_mean']}), "
          f"{result['distinct_depth_patterns']} distinct depth patterns", flush=True)
    print(f"FLOPs/sample: timm {backbone_flops / 1e9:.3f} G, full (with heads) {full_flops_with_heads / 1e9:.3f} G, "
          f"adaptive {adaptive_report.mean_flops / 1e9:.3f} G -> ratio vs timm "
          f"{adaptive_report.mean_flops / backbone_flops:.3f}", flush=True)

    for batch_size in args.batch_sizes:
        runners = {"timm": make_runner(plain, x, batch_size), "full": make_runner(full, x, batch_size),
                   "adaptive": make_runner(model, x, batch_size)}
        if args.masked:
            masked = timm.create_model(args.model, zero_init_last=False).to(device).eval()
            masked.load_state_dict(model.state_dict())
            pact_zoo.set_execution(masked, "masked")
            runners["masked"] = make_runner(masked, x, batch_size)
        timing = measure(runners, args.repeats, args.warmup, device, args.samples)
        base = timing["timm"]["median_ms"]
        for name, t in timing.items():
            t["ratio_vs_timm"] = t["median_ms"] / base
        result["wall"][f"batch{batch_size}"] = timing
        line = ", ".join(f"{n} {t['median_ms']:.1f} ms/sample (x{t['ratio_vs_timm']:.3f}; "
                         f"{t['min_ms']:.1f}-{t['max_ms']:.1f})" for n, t in timing.items())
        print(f"batch {batch_size}: {line}", flush=True)

    if args.json:
        atomic_write_json(args.json, result, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
