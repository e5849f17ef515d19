"""Pick a budget after training: calibrate one trained model to several FLOPs targets and measure each.

For every target FLOPs ratio, :func:`pact_zoo.calibrate_threshold` finds the threshold on calibration images taken
from the *training* split, then accuracy and FLOPs are measured on the eval split at that threshold. Shows whether
one trained model serves every budget (``anytime: true``): the achieved ratio should be within 0.02 of the target
and accuracy should not fall as the budget grows.

    OMP_NUM_THREADS=1 python scripts/budget_curve.py --run-dir out/learning_quality/fashion_mnist/pact_anytime-tau0.03 \
        --targets 0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0 --output docs/budget_curve.json
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader

import pact_zoo
from pact_zoo.fileio import atomic_write_json
from pact_zoo.training.config import load_config
from pact_zoo.training.io import load_model_folder
from pact_zoo.training.loop import evaluate_model
from pact_zoo.training.tasks import build_task

#: Training images used to calibrate the threshold (never the eval split).
DEFAULT_CALIBRATION_SAMPLES = 500


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="a training run folder (train_config.json, model/)")
    parser.add_argument("--targets", required=True, help="comma-separated FLOPs ratios in (0, 1]")
    parser.add_argument("--calibration-samples", type=int, default=DEFAULT_CALIBRATION_SAMPLES)
    parser.add_argument("--output", help="JSON file to write (atomically)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        targets = [float(t) for t in args.targets.split(",")]
    except ValueError:
        print(f"--targets must be comma-separated numbers, got {args.targets!r}", file=sys.stderr)
        return 2
    if not targets or any(not 0.0 < t <= 1.0 for t in targets):
        print(f"--targets must lie in (0, 1], got {targets}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir)
    config = load_config(str(run_dir / "train_config.json"))
    model = load_model_folder(run_dir / "model").eval()
    task = build_task(config)
    data = task.load_data(model)
    # calibration images: the first training images, without augmentation
    unaugmented = build_task(dataclasses.replace(config, augment="none")).load_data(model)
    eval_loader = DataLoader(data.eval, batch_size=config.eval_batch_size, collate_fn=data.collate_fn)
    calibration_data = torch.utils.data.Subset(unaugmented.train,
                                               range(min(args.calibration_samples, len(unaugmented.train))))
    calibration_loader = DataLoader(calibration_data, batch_size=config.eval_batch_size, collate_fn=data.collate_fn)
    rows = []
    for target in targets:
        threshold, calibrated = pact_zoo.calibrate_threshold(model, calibration_loader, target)
        metrics = evaluate_model(model, eval_loader, task)
        rows.append(dict(target=target, threshold=threshold, calibration_flops_ratio=calibrated,
                         eval_flops_ratio=metrics["flops_ratio"], accuracy=metrics["accuracy"],
                         mean_units=metrics["mean_units"]))
        print(f"target {target:.2f}: threshold {threshold:.4g}, calibration ratio {calibrated:.3f}, "
              f"eval ratio {metrics['flops_ratio']:.3f}, accuracy {100 * metrics['accuracy']:.2f}%", flush=True)
    if args.output:
        atomic_write_json(args.output, dict(run_dir=str(run_dir), calibration_samples=len(calibration_data),
                                            rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
