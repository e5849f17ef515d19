"""FLOPs and wall time of an adaptive timm family against the plain timm model (CPU, eval, no grad).

For one registered pact model and its timm backbone (same weights): the plain timm model, the adaptive model at full
depth, and the adaptive model at a threshold calibrated to a FLOPs budget (``pact_zoo.calibrate_threshold``) with
compact execution. The halting heads are the core's synthetic heads (``synthesize_halting``: per-sample depth spread
over the units) unless ``--weights`` carries trained heads. Inputs are generated N(0, 1) images. Times are medians of
interleaved repeats; FLOPs are the report's (2 per multiply-add of convolutions and linear layers) and
``torch.utils.flop_counter`` totals (which also count attention matmuls). Prints a markdown table and writes JSON.

    PYTHONPATH=$PWD python scripts/family_timing.py --model pact_vit_tiny_patch16_224 --backbone vit_tiny_patch16_224
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import pact_zoo
from pact_zoo.fileio import atomic_write_text
from pact_zoo.halting import synthesize_halting


def counted_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """torch FlopCounterMode total per sample of one forward."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / x.shape[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pact_vit_tiny_patch16_224")
    parser.add_argument("--backbone", default="vit_tiny_patch16_224")
    parser.add_argument("--weights", default=None, help="timm-layout safetensors of the backbone")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor) at full depth")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kwargs = dict(pretrained=args.weights is not None)
    if args.weights:
        kwargs["pretrained_cfg_overlay"] = dict(file=os.path.abspath(args.weights))
    plain = timm.create_model(args.backbone, **kwargs).eval()
    model = pact_zoo.make_adaptive(copy.deepcopy(plain))  # the same weights, fresh heads
    shape = (3, args.size, args.size)
    synthesize_halting(model, seed=0, input_shape=shape, num_samples=64)
    calibration = [torch.randn(32, *shape, generator=torch.Generator().manual_seed(1)) for _ in range(2)]
    threshold, train_ratio = pact_zoo.calibrate_threshold(model, calibration, args.budget, tolerance=0.02)

    x_flops = torch.randn(8, *shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model(x_flops)
    report = pact_zoo.halting_report(model)
    with pact_zoo.full_depth(model):
        full_counted = counted_flops(model, x_flops)
    results = dict(model=args.model, backbone=args.backbone, size=args.size, threads=args.threads,
                   threshold=threshold, calibration_flops_ratio=train_ratio, report_flops_ratio=report.flops_ratio,
                   report_mflops=report.mean_flops / 1e6, report_full_mflops=report.full_flops / 1e6,
                   mean_units=report.mean_units.tolist(), num_units=list(report.num_units),
                   counted_plain_mflops=counted_flops(plain, x_flops) / 1e6, counted_full_mflops=full_counted / 1e6,
                   counted_adaptive_mflops=counted_flops(model, x_flops) / 1e6, times={})
    variants = {"plain timm": lambda x: plain(x), "pact full depth": None, "pact at budget (compact)": lambda x: model(x)}
    compiled = torch.compile(plain) if args.compile else None
    if compiled is not None:
        variants["plain timm, torch.compile"] = lambda x: compiled(x)

    def full(x: torch.Tensor) -> torch.Tensor:
        with pact_zoo.full_depth(model):
            return model(x)

    variants["pact full depth"] = full
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        x = torch.randn(batch_size, *shape, generator=torch.Generator().manual_seed(3))
        samples: dict[str, list[float]] = {name: [] for name in variants}
        with torch.no_grad():
            for fn in variants.values():  # warm-up (and compilation)
                fn(x)
            for _ in range(args.repeats):
                for name, fn in variants.items():
                    start = time.perf_counter()
                    fn(x)
                    samples[name].append(time.perf_counter() - start)
        medians = {name: statistics.median(v) for name, v in samples.items()}
        results["times"][batch_size] = {name: dict(ms=1e3 * t, vs_plain=t / medians["plain timm"])
                                        for name, t in medians.items()}
    results["load_average"] = os.getloadavg()
    print(f"threshold {threshold:.4f}: report FLOPs ratio {report.flops_ratio:.3f} (calibration {train_ratio:.3f}), "
          f"units per stage {[round(u, 2) for u in report.mean_units.tolist()]} of {list(report.num_units)}")
    print(f"MFLOPs per image (torch counter): plain {results['counted_plain_mflops']:.1f}, full depth "
          f"{results['counted_full_mflops']:.1f}, at budget {results['counted_adaptive_mflops']:.1f}")
    print("| batch | variant | ms | vs plain |\n|---|---|---|---|")
    for batch_size, rows in results["times"].items():
        for name, row in rows.items():
            print(f"| {batch_size} | {name} | {row['ms']:.1f} | {row['vs_plain']:.2f} |")
    print(f"load average {results['load_average']}, threads {args.threads}")
    if args.output:
        atomic_write_text(args.output, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
