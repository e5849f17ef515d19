"""Worker of the two-process tests, run once under ``accelerate launch`` with two CPU processes by the
``two_process_runs`` fixture (tests/conftest.py): every scenario named on the command line runs in turn in the same
two processes, so that the tests share one launch. Accelerate's process-wide state is reset between scenarios (the
process group stays).

Scenarios (``<out>/<scenario>/`` holds what each writes):

- ``acm``: phase 3 of both gatings on a tiny ACMized ViT, the model wrapped in DistributedDataParallel. The gates
  are biased so that in most steps some learner runs on no token of a process (condnet trains compact: unused
  learners are not in the graph); every parameter must still get a gradient, identical on both processes. Writes
  ``rank<r>.json``.
- ``nan``: the training loop on the scenario's config, with the loss of process 1 alone made NaN; every process must
  stop with the same one-line error. Writes ``rank<r>.txt`` with the error it raised.
- ``train``: the training loop on the scenario's config (its run folder is ``<out>/train``). Runs last: a finished
  run ends with accelerate's ``end_training``, which destroys the process group.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from timm.models.vision_transformer import VisionTransformer

from pact_zoo import acm
from pact_zoo.training import ConfigError, load_config, loop, train


def acm_ddp(out: Path, config: Optional[dict]) -> None:
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


def train_run(out: Path, config: dict) -> None:
    train(load_config(None, dict(config, output_dir=str(out))))


def nan_on_one_process(out: Path, config: dict) -> None:
    rank = int(os.environ["RANK"])
    real = loop._sample_loss
    if rank == 1:
        loop._sample_loss = lambda *args: real(*args) * float("nan")
    try:
        train(load_config(None, dict(config, output_dir=str(out / "run"))))
    except ConfigError as exc:
        (out / f"rank{rank}.txt").write_text(str(exc))
    finally:
        loop._sample_loss = real


SCENARIOS = {"acm": acm_ddp, "nan": nan_on_one_process, "train": train_run}


def main(out: Path, plan: dict[str, Any]) -> None:
    """``plan``: ``{scenario: its config (or None)}``, run in that order."""
    for name, config in plan.items():
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        (out / name).mkdir(parents=True, exist_ok=True)
        SCENARIOS[name](out / name, config)


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
