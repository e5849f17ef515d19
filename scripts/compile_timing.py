"""torch.compile (inductor) against eager for an adaptive model: compile time, then eval and train-step time.

Under compilation each adaptive stage runs its compact loop eagerly over units compiled one by one (compiled units,
eager halting: halted samples leave the batch); the compiled model is compared with the plain network compiled whole
(same weights), with the stages' dense path under compilation (``set_unit_compile(model, None)``: every unit runs),
and with eager compact evaluation and the plain network in eager mode. Efficiency = time ratio / FLOPs ratio against
the plain network (1.0: every saved FLOP is saved time). Heads are the core's synthetic heads (about half the FLOPs
run, depth varying per sample); inputs are generated. Medians of interleaved repeats.

    PYTHONPATH=$PWD python scripts/compile_timing.py --model pact_vit_tiny_patch16_224 --backbone vit_tiny_patch16_224
    PYTHONPATH=$PWD python scripts/compile_timing.py --model pact_resnet32 --backbone resnet32_cifar --size 32 \
        --batch-size 64 --repeats 7 --skip-train
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import timm
import torch
import torch.nn.functional as F

import pact_zoo
from pact_zoo.halting import synthesize_halting


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pact_vit_tiny_patch16_224")
    parser.add_argument("--backbone", default="vit_tiny_patch16_224")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-train", action="store_true", help="eval only (no compiled train step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformer = any(k in args.backbone for k in ("vit", "deit"))  # a ViT's position embedding fixes its input size
    plain = timm.create_model(args.backbone, **({"img_size": args.size} if transformer else {})).eval()
    if pact_zoo.adaptive_stages(plain):  # pact_zoo's own plain networks (resnet*_cifar): the adaptive twin is registered
        model = timm.create_model(args.model).eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    else:
        model = pact_zoo.make_adaptive(copy.deepcopy(plain))
    shape = (3, args.size, args.size)
    synthesize_halting(model, seed=0, input_shape=shape, num_samples=32)
    x = torch.randn(args.batch_size, *shape)
    y = torch.arange(args.batch_size) % 1000
    with torch.no_grad():
        model(x)
    report = pact_zoo.halting_report(model)
    flops_ratio = float(report.flops.sum() / report.sample_full_flops.sum())
    dense = copy.deepcopy(model)
    pact_zoo.set_unit_compile(dense, None)
    compiled_model, compiled_plain, compiled_dense = torch.compile(model), torch.compile(plain), torch.compile(dense)

    def masked() -> torch.Tensor:
        pact_zoo.set_execution(model, "masked")
        try:
            return model(x)
        finally:
            pact_zoo.set_execution(model, "compact")

    with torch.no_grad():
        first = {"pact compiled": timed(lambda: compiled_model(x)), "plain compiled": timed(lambda: compiled_plain(x)),
                 "pact compiled dense": timed(lambda: compiled_dense(x))}
        variants = {"pact eager compact": lambda: model(x), "pact eager masked": masked,
                    "pact compiled (compiled units, eager halting)": lambda: compiled_model(x),
                    "pact compiled dense (every unit)": lambda: compiled_dense(x), "plain eager": lambda: plain(x),
                    "plain compiled": lambda: compiled_plain(x)}
        for fn in variants.values():
            fn()
        samples = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                samples[name].append(timed(fn))
    eval_ms = {name: 1e3 * statistics.median(v) for name, v in samples.items()}
    with torch.no_grad():
        compiled_model(x)
    compiled_report = pact_zoo.halting_report(model)
    compiled_ratio = float(compiled_report.flops.sum() / compiled_report.sample_full_flops.sum())
    print(f"{args.model} at {args.size} px, batch {args.batch_size}, threads {args.threads}, "
          f"load average {os.getloadavg()}; FLOPs ratio (halting_report): eager {flops_ratio:.3f}, compiled "
          f"{compiled_ratio:.3f}")
    print("first call (compilation included), s: " + ", ".join(f"{k} {v:.1f}" for k, v in first.items()))
    print("| eval variant | ms | vs plain eager | vs plain compiled | efficiency |\n|---|---|---|---|---|")
    for name, ms in eval_ms.items():
        base = eval_ms["plain compiled" if "compiled" in name else "plain eager"]
        efficiency = f"{ms / base / flops_ratio:.3f}" if name.startswith("pact") and "masked" not in name \
            and "dense" not in name else "-"
        print(f"| {name} | {ms:.1f} | {ms / eval_ms['plain eager']:.3f} | {ms / eval_ms['plain compiled']:.3f} | "
              f"{efficiency} |")
    if args.skip_train:
        return

    def train_step(net) -> None:
        out = net(x)
        loss = F.cross_entropy(out, y) + pact_zoo.halting_loss(model)
        loss.backward()

    model.train()
    compiled_train = torch.compile(model)
    first["pact compiled train step"] = timed(lambda: train_step(compiled_train))
    train = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        train["eager"].append(timed(lambda: train_step(model)))
        train["compiled"].append(timed(lambda: train_step(compiled_train)))
    print(f"first call of the compiled train step, s: {first['pact compiled train step']:.1f}")
    print("train step (PACT mixture, every block), ms: " + ", ".join(
        f"{k} {1e3 * statistics.median(v):.1f}" for k, v in train.items()))


if __name__ == "__main__":
    main()
