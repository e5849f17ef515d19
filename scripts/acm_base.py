"""Train the base models of the ACM experiments (before ACMization), briefly, on CPU.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/acm_base.py text --out out/acm
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/acm_base.py vit --out out/acm

``text``: all-MiniLM-L6-v2 + a 2-way head fine-tuned on a Rotten Tomatoes train subset (sequence length 64, AdamW).
``vit``: a timm ViT (28 px, patch 4, dim 96, depth 4) trained from scratch on a Fashion-MNIST train subset.
Writes ``<out>/<task>_base.safetensors`` and ``<out>/<task>_base.json`` (sizes, time, test accuracy).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import acm_data  # noqa: E402

from pact_zoo.fileio import atomic_write_json  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("text", "vit"))
    parser.add_argument("--out", default="out/acm")
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.task == "text":
        train_n, epochs, lr, bs = args.train_samples or 4000, args.epochs or 1, 5e-5, 32
        train = acm_data.text_split("train", args.seq_len, train_n, args.seed)
        test = acm_data.text_split("test", args.seq_len, args.test_samples, args.seed)
        model = acm_data.build_text_model()
    else:
        train_n, epochs, lr, bs = args.train_samples or 20000, args.epochs or 4, 2e-3, 64
        train = acm_data.image_split("train", train_n, args.seed)
        test = acm_data.image_split("test", args.test_samples, args.seed)
        model = acm_data.build_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    steps = epochs * ((train_n + bs - 1) // bs)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        for i, batch in enumerate(acm_data.batches(train, bs, shuffle=True, seed=args.seed + epoch)):
            loss = F.cross_entropy(acm_data.logits_of(model, batch), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            if i % 20 == 0:
                print(f"epoch {epoch} step {i} loss {loss.item():.4f} [{time.perf_counter() - start:.0f}s]", flush=True)
    train_time = time.perf_counter() - start
    acc = acm_data.accuracy(model, test)
    print(f"{args.task}: test accuracy {acc:.4f} ({train_time:.0f}s training)")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / f"{args.task}_base.safetensors"))
    atomic_write_json(out / f"{args.task}_base.json", dict(
        task=args.task, train_samples=train_n, test_samples=args.test_samples, epochs=epochs, lr=lr, batch_size=bs,
        seq_len=args.seq_len if args.task == "text" else None, train_time_s=train_time, test_accuracy=acc,
        threads=torch.get_num_threads()))


if __name__ == "__main__":
    main()
