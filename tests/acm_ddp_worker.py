"""Worker of tests/test_acm.py::test_two_process_ddp (run under ``accelerate launch``, two CPU processes).

Phase 3 of both gatings on a tiny ACMized ViT, the model wrapped in DistributedDataParallel. The gates are biased so
that in most steps some learner runs on no token of a process (condnet trains compact: unused learners are not in the
graph); every parameter must still get a gradient, identical on both processes. Writes ``<out>/rank<r>.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from timm.models.vision_transformer import VisionTransformer

from pact_zoo import acm


def main(out: Path) -> None:
    accelerator = Accelerator(cpu=True)
    result = {}
    for gating in acm.GATINGS:
        torch.manual_seed(0)
        vit = VisionTransformer(img_size=16, patch_size=4, num_classes=3, embed_dim=16, depth=2, num_heads=2)
        model = acm.acmize(vit, num_learners=4, method=gating)
        for _, module in acm.acm_modules(model):  # most tokens: few learners
            torch.nn.init.constant_(module.gate[-1].bias, 0.0)
            with torch.no_grad():
                module.gate[-1].bias[-1] = -4.0
                module.gate[-1].bias[0] = 3.0
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        wrapped, optimizer = accelerator.prepare(model, optimizer)
        generator = torch.Generator().manual_seed(1 + accelerator.process_index)
        batches = [{"pixel_values": torch.randn(2, 3, 16, 16, generator=generator),
                    "labels": torch.randint(0, 3, (2,), generator=generator)} for _ in range(3)]
        unused = 0

        def loss_fn(logits, batch):
            return F.cross_entropy(logits, batch["labels"], reduction="none")

        for batch in batches:
            acm.finetune(model, [batch], loss_fn, beta=0.5, forward_model=wrapped, optimizer=optimizer,
                         backward=accelerator.backward, max_grad_norm=None)
            unused += sum(int(m.num_learners - int(m.record.units_executed.max())) > 0
                          for _, m in acm.acm_modules(model))
        grads = [p.grad for p in model.parameters()]
        result[gating] = {
            "all_grads": all(g is not None for g in grads),
            "grad_sum": float(sum(g.double().sum() for g in grads if g is not None)),
            "param_sum": float(sum(p.double().sum() for p in model.parameters())),
            "unused_module_steps": unused,
        }
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
