"""torch.compile (inductor) against eager for an adaptive model: compile time, then eval and train-step time.

Under compilation the adaptive stages take their dense path (every unit runs, outputs masked), so the compiled model
is compared with eager compact evaluation (halted samples leave the batch), eager masked evaluation and the plain timm
model, compiled and eager. Heads are the core's synthetic heads; inputs are generated. Medians of interleaved repeats.

    PYTHONPATH=$PWD python scripts/compile_timing.py --model pact_vit_tiny_patch16_224 --backbone vit_tiny_patch16_224
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    transformer = any(k in args.backbone for k in ("vit", "deit"))  # a ViT's position embedding fixes its input size
    plain = timm.create_model(args.backbone, **({"img_size": args.size} if transformer else {})).eval()
    model = pact_zoo.make_adaptive(copy.deepcopy(plain))
    shape = (3, args.size, args.size)
    synthesize_halting(model, seed=0, input_shape=shape, num_samples=32)
    x = torch.randn(args.batch_size, *shape)
    y = torch.arange(args.batch_size) % 1000
    compiled_model, compiled_plain = torch.compile(model), torch.compile(plain)

    def masked() -> torch.Tensor:
        pact_zoo.set_execution(model, "masked")
        try:
            return model(x)
        finally:
            pact_zoo.set_execution(model, "compact")

    with torch.no_grad():
        first = {"pact compiled": timed(lambda: compiled_model(x)), "plain compiled": timed(lambda: compiled_plain(x))}
        variants = {"pact eager compact": lambda: model(x), "pact eager masked": masked,
                    "pact compiled": lambda: compiled_model(x), "plain eager": lambda: plain(x),
                    "plain compiled": lambda: compiled_plain(x)}
        for fn in variants.values():
            fn()
        samples = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():
                samples[name].append(timed(fn))
    eval_ms = {name: 1e3 * statistics.median(v) for name, v in samples.items()}

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
    print(f"{args.model} at {args.size} px, batch {args.batch_size}, threads {args.threads}, "
          f"load average {os.getloadavg()}")
    print("first call (compilation included), s: " + ", ".join(f"{k} {v:.1f}" for k, v in first.items()))
    print("| eval variant | ms | vs plain eager |\n|---|---|---|")
    for name, ms in eval_ms.items():
        print(f"| {name} | {ms:.1f} | {ms / eval_ms['plain eager']:.2f} |")
    print("train step (PACT mixture, every block), ms: " + ", ".join(
        f"{k} {1e3 * statistics.median(v):.1f}" for k, v in train.items()))


if __name__ == "__main__":
    main()
