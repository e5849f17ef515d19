"""One ACM model, many budgets: phases 1-2 on a trained base model (scripts/acm_base.py), then the gate threshold
moved by ``pact_zoo.calibrate_threshold`` to the FLOPs of beta = 0.75 / 0.5 / 0.25 of the ACM modules, without
phase 3. Writes ``<out>/<task>_budget_sweep.json``.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/acm_budget_sweep.py vit --out out/acm
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acm_data  # noqa: E402
from acm_experiment import SIZES, evaluate, load_task, split  # noqa: E402

import pact_zoo  # noqa: E402
from pact_zoo import acm  # noqa: E402
from pact_zoo.fileio import atomic_write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=tuple(SIZES))
    parser.add_argument("--out", default="out/acm")
    parser.add_argument("--betas", nargs="+", type=float, default=[0.75, 0.5, 0.25])
    parser.add_argument("--calibration-batches", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    sizes = SIZES[args.task]
    started = time.perf_counter()
    original, train, test = load_task(args.task, out, sizes, args.seed)
    for p in original.parameters():
        p.requires_grad_(False)
    batches = list(acm_data.batches(split(train, 0, sizes["phase12"]), sizes["batch"], shuffle=True,
                                    seed=args.seed))
    fwd = lambda model, batch: acm_data.logits_of(model, batch)  # noqa: E731
    model = acm.acmize(copy.deepcopy(original), method="acm")
    acm.distill_modules(model, original, batches, lr=sizes["lr"], forward=fwd, detach=False)
    acm.pretrain_gates(model, original, batches, lr=sizes["gate_lr"], forward=fwd)
    model.eval()
    calibration = [{k: v for k, v in b.items() if k != "labels"} for b in batches[:args.calibration_batches]]
    with torch.no_grad():
        acm_data.logits_of(model, calibration[0])
        report = pact_zoo.halting_report(model)
    acm_full = sum(m.num_learners * m.learner_flops * m.record.units_executed.shape[1]
                   for _, m in acm.acm_modules(model))
    rows = [dict(threshold=0.5, **evaluate(model, test))]
    for beta in args.betas:  # the whole-model FLOPs ratio at which the ACM modules run beta of their learners
        target = (report.full_flops - acm_full + beta * acm_full) / report.full_flops
        threshold, ratio = pact_zoo.calibrate_threshold(model, calibration, target, tolerance=0.01)
        rows.append(dict(beta=beta, target_flops_ratio=target, threshold=threshold, calibration_ratio=ratio,
                         **evaluate(model, test)))
        print(f"[{time.perf_counter() - started:.0f}s] {rows[-1]}", flush=True)
    atomic_write_json(out / f"{args.task}_budget_sweep.json", dict(
        task=args.task, sizes=sizes, original_flops=report.full_flops, rows=rows,
        total_time_s=time.perf_counter() - started))


if __name__ == "__main__":
    main()
