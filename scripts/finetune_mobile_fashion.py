"""Fine-tune an adaptive mobile CNN (ImageNet backbone) on Fashion-MNIST and measure accuracy against FLOPs.

Heads + backbone + a new 10-class classifier are trained with PACT (``pact_zoo.training_loss``); half of the batches
are anytime batches (random per-sample depth, ``pact_zoo.halting.anytime_depth``), so every threshold is a trained
network. Reports: full-depth accuracy, a threshold sweep (accuracy, measured FLOPs ratio, per-input depth spread),
the threshold calibrated to a 0.5 FLOPs budget on training images (``pact_zoo.calibrate_threshold``), the best static
truncation (same first blocks for every input) of at most the calibrated FLOPs, and wall times. Writes a JSON file.

    PYTHONPATH=$PWD python scripts/finetune_mobile_fashion.py --threads 2 --output docs/mobile_fashion_mnist.json
"""
from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import time

import numpy as np
import pandas as pd
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import pact_zoo
from pact_zoo.fileio import atomic_write_text
from pact_zoo.halting import FlopsTally, anytime_depth, truncated_depth


def load_split(path: str, count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random rows of a Fashion-MNIST parquet split as ``[N, 3, size, size]`` images in [-1, 1] (the
    backbone's mean / std 0.5) and ``[N]`` labels; 28x28 upsampled bilinearly, gray repeated on 3 channels."""
    frame = pd.read_parquet(path)
    rows = np.random.default_rng(seed).choice(len(frame), size=count, replace=False)
    images = np.stack([np.asarray(Image.open(io.BytesIO(frame.iloc[i]["image"]["bytes"]))) for i in rows])
    x = torch.from_numpy(images).float().div(255.0).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.sub(0.5).div(0.5)).expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(frame["label"].values[rows])


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict:
    """Accuracy, FLOPs ratio (vs full depth), mean units per stage, depth spread and wall time of one eval pass."""
    model.eval()
    correct, tally = 0, FlopsTally(keep_samples=True)
    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        logits = model(x[i:i + batch_size])
        correct += int((logits.argmax(-1) == y[i:i + batch_size]).sum())
        tally.add_report(pact_zoo.halting_report(model))
    seconds = time.perf_counter() - start
    units = tally.samples()[1].double()
    total = units.sum(1)
    return dict(accuracy=correct / len(x), flops_ratio=tally.ratio, mean_mflops=tally.flops_sum / len(x) / 1e6,
                full_mflops=tally.full_sum / len(x) / 1e6, units_per_stage=[round(u, 3) for u in units.mean(0).tolist()],
                total_units_std=float(total.std()),
                share_off_modal_total=float((total != total.mode().values).double().mean()), seconds=seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pact_efficientnet_lite0")
    parser.add_argument("--weights", default="data/tf_efficientnet_lite0/model.safetensors",
                        help="timm checkpoint (pact-zoo data fetch efficientnet_lite0 --dest data writes the default)")
    parser.add_argument("--data", default="data/fashion_mnist",
                        help="parquet folder (pact-zoo data fetch fashion_mnist --dest data writes the default)")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head-lr-mult", type=float, default=10.0)
    parser.add_argument("--tau", type=float, default=0.01)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="out/mobile_fashion_mnist.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    x_train, y_train = load_split(os.path.join(args.data, "train.parquet"), args.train_samples, args.size, args.seed)
    x_test, y_test = load_split(os.path.join(args.data, "test.parquet"), args.test_samples, args.size, args.seed)
    model = timm.create_model(args.model, pretrained=True, num_classes=10, tau=args.tau,
                              pretrained_cfg_overlay=dict(file=os.path.abspath(args.weights)))
    heads = {id(p) for _, s in pact_zoo.adaptive_stages(model) if s.heads is not None for p in s.heads.parameters()}
    groups = [dict(params=[p for p in model.parameters() if id(p) not in heads], lr=args.lr),
              dict(params=[p for p in model.parameters() if id(p) in heads], lr=args.lr * args.head_lr_mult)]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = args.epochs * (len(x_train) // args.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                    pct_start=0.1)
    generator = torch.Generator().manual_seed(args.seed)
    start, step = time.perf_counter(), 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order) - args.batch_size + 1, args.batch_size):
            idx = order[i:i + args.batch_size]
            x, y = x_train[idx], y_train[idx]
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            optimizer.zero_grad()
            anytime = step % 2 == 1  # every other batch: random per-sample depth (every threshold gets trained)
            with anytime_depth(model) if anytime else torch.enable_grad():
                result = pact_zoo.training_loss(model, lambda: model(x),
                                                lambda out: F.cross_entropy(out, y, reduction="none"))
            result.loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % 20 == 0 or step == 1:
                print(f"epoch {epoch} step {step}/{steps} task loss {result.task_loss.item():.3f} "
                      f"{time.perf_counter() - start:.0f} s", flush=True)
    train_seconds = time.perf_counter() - start

    results: dict = dict(model=args.model, size=args.size, train_samples=args.train_samples,
                         test_samples=args.test_samples, epochs=args.epochs, tau=args.tau, threads=args.threads,
                         train_seconds=train_seconds, load_average=os.getloadavg())
    with pact_zoo.full_depth(model):
        results["full_depth"] = evaluate(model, x_test, y_test, 100)
    results["thresholds"] = {}
    for threshold in (0.1, 0.3, 0.5, 0.7, 0.9):
        pact_zoo.set_threshold(model, threshold)
        results["thresholds"][threshold] = evaluate(model, x_test, y_test, 100)
    calibration_batches = [x_train[i:i + 100] for i in range(0, min(500, len(x_train)), 100)]
    calibration = pact_zoo.calibrate_threshold(model, calibration_batches, args.budget)
    results["calibrated"] = dict(threshold=calibration.threshold, train_flops_ratio=calibration.flops_ratio,
                                 **evaluate(model, x_test, y_test, 100))
    # static baselines: the same first blocks of each stage for every input, at most the calibrated FLOPs
    depths = [range(1, s.num_units + 1) for _, s in pact_zoo.adaptive_stages(model)]
    candidates = []
    for combo in itertools.product(*depths):
        with truncated_depth(model, list(combo)), torch.no_grad():
            model(x_test[:1])
            ratio = pact_zoo.halting_report(model).flops_ratio
        if ratio <= results["calibrated"]["flops_ratio"]:
            candidates.append((ratio, list(combo)))
    best = None
    for ratio, combo in sorted(candidates, reverse=True)[:3]:
        with truncated_depth(model, combo):
            measured = evaluate(model, x_test, y_test, 100)
        if best is None or measured["accuracy"] > best["accuracy"]:
            best = dict(depths=combo, **measured)
    results["static_equal_flops"] = best
    print(json.dumps(results, indent=1))
    atomic_write_text(args.output, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
