"""ACMize a trained model (scripts/acm_base.py) with ACM and condnet gating at several budgets and measure accuracy,
FLOPs and wall time against the original model.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/acm_experiment.py vit --out out/acm
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/acm_experiment.py text --out out/acm

Phase 1 (module-wise distillation) runs once; its learners start both gatings. Phase 2 (gate pre-training) runs once
per gating; phase 3 (end-to-end fine-tuning) once per gating and budget beta. Evaluation uses the deterministic gate
(threshold 0.5) and compact execution. FLOPs: pact_zoo.halting_report (2 per multiply-add of every linear layer that
ran; attention score/value matmuls are not linear layers and are not counted, for the original model either). Wall
time: median of interleaved repeats of one eval forward at batch 1, 8 and 64, on ``--threads`` threads.
Writes ``<out>/<task>_results.json``.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acm_data  # noqa: E402

import pact_zoo  # noqa: E402
from pact_zoo import acm  # noqa: E402
from pact_zoo.fileio import atomic_write_json  # noqa: E402

#: Phase 1 trains every prefix jointly (``detach=False``): the learners start from the split pretrained MLP, whose
#: full prefix is exact, and the joint loss keeps it so while the shorter prefixes improve.
#: Per task: training rows for phases 1-2 and for phase 3, test rows, batch size, phase epochs and learning rates.
SIZES = {
    "vit": dict(phase12=4096, phase3=4096, test=2000, batch=128, epochs=(1, 1, 1), lr=3e-4, gate_lr=1e-2,
                ft_lr=2e-4),
    "text": dict(phase12=320, phase3=256, test=200, batch=32, epochs=(1, 1, 1), lr=3e-4, gate_lr=1e-2,
                 ft_lr=2e-5, eval_phase2=False),
}


def load_task(task: str, out: Path, sizes: dict, seed: int):
    if task == "vit":
        model = acm_data.build_vit()
        train = acm_data.image_split("train", sizes["phase12"] + sizes["phase3"], seed + 1)
        test = acm_data.image_split("test", sizes["test"], seed)
    else:
        model = acm_data.build_text_model()
        train = acm_data.text_split("train", 64, sizes["phase12"] + sizes["phase3"], seed + 1)
        test = acm_data.text_split("test", 64, sizes["test"], seed)
    model.load_state_dict(load_file(str(out / f"{task}_base.safetensors")))
    return model.eval(), train, test


def split(data: dict, start: int, stop: int) -> dict:
    return {k: v[start:stop] for k, v in data.items()}


def loss_fn(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    return F.cross_entropy(logits.float(), batch["labels"], reduction="none")


@torch.no_grad()
def evaluate(model, test: dict, batch_size: int = 64) -> dict:
    """Accuracy, mean FLOPs per sample (halting_report), learner fraction of the ACM modules."""
    model.eval()
    correct, flops, learners, count = 0, 0.0, 0.0, 0
    modules = acm.acm_modules(model)
    for batch in acm_data.batches(test, batch_size, shuffle=False):
        logits = acm_data.logits_of(model, batch)
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        count += batch["labels"].shape[0]
        if modules:
            report = pact_zoo.halting_report(model)
            flops += float(report.flops.double().sum())
            learners += sum(float(m.record.units_executed.double().mean()) / m.num_learners
                            for _, m in modules) / len(modules) * batch["labels"].shape[0]
    result = {"accuracy": correct / count}
    if modules:
        result.update(flops=flops / count, learner_fraction=learners / count)
    return result


@torch.inference_mode()
def wall_times(models: dict, test: dict, batch_sizes=(1, 8, 64), repeats=(15, 7, 3)) -> dict:
    """Median seconds of one eval forward per model and batch size (interleaved repeats, one warm-up each)."""
    times = {name: {} for name in models}
    for batch_size, reps in zip(batch_sizes, repeats):
        batch = next(acm_data.batches(test, batch_size, shuffle=False))
        samples = {name: [] for name in models}
        for name, model in models.items():
            model.eval()
            acm_data.logits_of(model, batch)  # warm-up
        for _ in range(reps):
            for name, model in models.items():
                start = time.perf_counter()
                acm_data.logits_of(model, batch)
                samples[name].append(time.perf_counter() - start)
        for name in models:
            times[name][str(batch_size)] = statistics.median(samples[name])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=tuple(SIZES))
    parser.add_argument("--out", default="out/acm")
    parser.add_argument("--gatings", nargs="+", default=["acm", "condnet"])
    parser.add_argument("--betas", nargs="+", type=float, default=[0.75, 0.5, 0.25])
    parser.add_argument("--num-learners", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the data sizes (smoke runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    sizes = dict(SIZES[args.task])
    for key in ("phase12", "phase3", "test"):
        sizes[key] = max(8, int(sizes[key] * args.scale))
    started = time.perf_counter()
    original, train, test = load_task(args.task, out, sizes, args.seed)
    for p in original.parameters():
        p.requires_grad_(False)
    bs = sizes["batch"]
    phase12 = list(acm_data.batches(split(train, 0, sizes["phase12"]), bs, shuffle=True, seed=args.seed))
    phase3 = list(acm_data.batches(split(train, sizes["phase12"], sizes["phase12"] + sizes["phase3"]), bs,
                                   shuffle=True, seed=args.seed))
    fwd = lambda model, batch: acm_data.logits_of(model, batch)  # noqa: E731
    log: dict = {"task": args.task, "sizes": sizes, "threads": args.threads, "num_learners": args.num_learners}

    # phase 1, once: the learners of every variant
    base = acm.acmize(copy.deepcopy(original), num_learners=args.num_learners, method="acm")
    with pact_zoo.full_depth(base):
        log["original"] = evaluate(base, test)
        log["original"]["flops"] = pact_zoo.halting_report(base).full_flops
    log["errors_before_distill"] = acm.prefix_errors(base, original, phase12[:2], fwd)
    t = time.perf_counter()
    log["distill"] = acm.distill_modules(base, original, phase12, epochs=sizes["epochs"][0], lr=sizes["lr"],
                                         forward=fwd, detach=False)
    log["errors_after_distill"] = acm.prefix_errors(base, original, phase12[:2], fwd)
    log["distill_time_s"] = time.perf_counter() - t
    print(f"[{time.perf_counter() - started:.0f}s] phase 1: prefix MSE {log['errors_before_distill']} -> "
          f"{log['errors_after_distill']}", flush=True)
    learners = {k: v for k, v in base.state_dict().items() if k.rsplit(".", 1)[-1] in ("w1", "b1", "w2", "b2")}

    variants, results = {}, []
    for gating in args.gatings:
        model = acm.acmize(copy.deepcopy(original), num_learners=args.num_learners, method=gating)
        model.load_state_dict(learners, strict=False)
        t = time.perf_counter()
        gate_log = acm.pretrain_gates(model, original, phase12, epochs=sizes["epochs"][1], lr=sizes["gate_lr"],
                                      forward=fwd)
        after_gates = evaluate(model, test) if sizes.get("eval_phase2", True) else None
        print(f"[{time.perf_counter() - started:.0f}s] phase 2 {gating}: loss {gate_log} -> {after_gates}",
              flush=True)
        for beta in args.betas:
            tuned = copy.deepcopy(model)
            for p in tuned.parameters():
                p.requires_grad_(True)
            t3 = time.perf_counter()
            ft_log = acm.finetune(tuned, phase3, loss_fn, beta, teacher=original, epochs=sizes["epochs"][2],
                                  lr=sizes["ft_lr"], gate_lr=sizes["gate_lr"], forward=fwd)
            result = dict(gating=gating, beta=beta, finetune=ft_log, finetune_time_s=time.perf_counter() - t3,
                          gate_pretrain_loss=gate_log, after_phase2=after_gates, **evaluate(tuned, test))
            result["flops_ratio"] = result["flops"] / log["original"]["flops"]
            results.append(result)
            variants[f"{gating}_b{beta}"] = tuned
            atomic_write_json(out / f"{args.task}_results.partial.json", dict(log, results=results))
            print(f"[{time.perf_counter() - started:.0f}s] {gating} beta={beta}: acc {result['accuracy']:.4f} "
                  f"flops ratio {result['flops_ratio']:.3f} learners {result['learner_fraction']:.3f}", flush=True)
    log["results"] = results
    load = os.getloadavg()
    log["wall_time_s"] = wall_times({"original": original, **variants}, test)
    log["load_average"] = [load, os.getloadavg()]
    log["total_time_s"] = time.perf_counter() - started
    atomic_write_json(out / f"{args.task}_results.json", log)
    print(f"[{log['total_time_s']:.0f}s] wall times {log['wall_time_s']}")


if __name__ == "__main__":
    main()
