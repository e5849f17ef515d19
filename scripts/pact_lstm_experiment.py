"""The PACT-LSTM reference experiment on CPU: Graves's parity task (PACT, ACT, a fixed one-step LSTM) and MNIST-1D
(PACT vs a plain LSTM). Reads the recipe ``hub_configs/pact_lstm.parity/experiment.yaml``.

    python scripts/pact_lstm_experiment.py --config hub_configs/pact_lstm.parity/experiment.yaml \
        --output-dir out/pact_lstm_experiment [--only parity] [--steps-scale 0.1]

Writes ``results.json`` (every number) and ``results.md`` (the tables of ``docs/lstm_results.md``) to the output
directory, and saves each trained model with ``save_pretrained`` under ``<output-dir>/<task>-<variant>/``.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from pact_zoo.data.mnist1d import mnist1d_splits
from pact_zoo.data.sequences import parity_dataset
from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification


def _arrays(dataset, *columns: str) -> list[torch.Tensor]:
    table = dataset.with_format("numpy", columns=list(columns))[:]  # one slice: fast for fixed-shape columns
    return [torch.from_numpy(np.ascontiguousarray(table[column])) for column in columns]


def train(model: PactLSTMForSequenceClassification, inputs: torch.Tensor, labels: torch.Tensor, recipe: dict,
          seed: int, log_prefix: str) -> dict[str, Any]:
    """Adam on minibatches drawn with replacement; returns wall time and the last logged losses."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    model.train()
    start, running_loss, running_steps = time.perf_counter(), 0.0, 0.0
    log_every = max(1, recipe["steps"] // recipe.get("num_logs", 10))
    history = []
    for step in range(1, recipe["steps"] + 1):
        index = torch.randint(len(labels), (recipe["batch_size"],), generator=generator)
        output = model(inputs_embeds=inputs[index], labels=labels[index])
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        if recipe.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        optimizer.step()
        running_loss += output.loss.item()
        running_steps += output.ponder_cost.detach().mean().item()
        if step % log_every == 0:
            entry = {"step": step, "loss": running_loss / log_every, "train_ponder_cost": running_steps / log_every,
                     "seconds": round(time.perf_counter() - start, 1)}
            history.append(entry)
            print(f"{log_prefix} {entry}", flush=True)
            running_loss = running_steps = 0.0
    return {"train_seconds": time.perf_counter() - start, "history": history}


@torch.no_grad()
def evaluate(model: PactLSTMForSequenceClassification, inputs: torch.Tensor, labels: torch.Tensor,
             batch_size: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Deterministic evaluation (halted rows leave the batch); per-example correctness, ponder steps, seconds."""
    model.eval()
    correct, steps = [], []
    start = time.perf_counter()
    for begin in range(0, len(labels), batch_size):
        output = model(inputs_embeds=inputs[begin:begin + batch_size])
        correct.append(output.logits.argmax(-1) == labels[begin:begin + batch_size])
        steps.append(output.ponder_steps.float().mean(1))  # mean over time steps
    return torch.cat(correct), torch.cat(steps), time.perf_counter() - start


def build(base: dict, variant: dict, num_labels: int, input_size: int) -> PactLSTMForSequenceClassification:
    config = PactLSTMConfig(input_size=input_size, num_labels=num_labels, **{**base, **variant})
    return PactLSTMForSequenceClassification(config)


def run_parity(recipe: dict, seed: int, output_dir: Path) -> dict[str, Any]:
    data = recipe["data"]
    train_set = parity_dataset(data["train_samples"], vector_size=data["vector_size"], seed=seed,
                               placement=data["placement"])
    test_set = parity_dataset(data["test_samples"], vector_size=data["vector_size"], seed=seed + 1,
                              placement=data["placement"])
    x_train, y_train = _arrays(train_set, "inputs_embeds", "labels")
    x_test, y_test, k_test = _arrays(test_set, "inputs_embeds", "labels", "num_nonzero")
    results = {}
    for name, variant in recipe["variants"].items():
        torch.manual_seed(seed)
        model = build(recipe["model"], variant, 2, data["vector_size"])
        log = train(model, x_train, y_train, recipe, seed, f"[parity/{name}]")
        correct, steps, eval_seconds = evaluate(model, x_test, y_test, recipe["eval_batch_size"])
        per_k = {}
        for k in range(1, data["vector_size"] + 1):
            rows = k_test == k
            per_k[k] = {"n": int(rows.sum()), "accuracy": float(correct[rows].float().mean()),
                        "ponder_steps": float(steps[rows].mean())}
        results[name] = {"config": model.config.to_diff_dict(), **log, "eval_seconds": eval_seconds,
                         "accuracy": float(correct.float().mean()), "ponder_steps": float(steps.mean()),
                         "per_k": per_k}
        model.save_pretrained(output_dir / f"parity-{name}")
        print(f"[parity/{name}] accuracy {results[name]['accuracy']:.4f} ponder {results[name]['ponder_steps']:.2f}",
              flush=True)
    return results


def run_mnist1d(recipe: dict, seed: int, output_dir: Path) -> dict[str, Any]:
    splits = mnist1d_splits(**recipe["data"])
    x_train, y_train = _arrays(splits["train"], "inputs_embeds", "labels")
    x_test, y_test = _arrays(splits["test"], "inputs_embeds", "labels")
    results = {}
    for name, variant in recipe["variants"].items():
        torch.manual_seed(seed)
        model = build(recipe["model"], variant, 10, 1)
        log = train(model, x_train, y_train, recipe, seed, f"[mnist1d/{name}]")
        correct, steps, eval_seconds = evaluate(model, x_test, y_test, recipe["eval_batch_size"])
        results[name] = {"config": model.config.to_diff_dict(), **log, "eval_seconds": eval_seconds,
                         "accuracy": float(correct.float().mean()), "ponder_steps": float(steps.mean()),
                         "ponder_steps_std": float(steps.std())}
        model.save_pretrained(output_dir / f"mnist1d-{name}")
        print(f"[mnist1d/{name}] accuracy {results[name]['accuracy']:.4f} ponder {results[name]['ponder_steps']:.2f}",
              flush=True)
    return results


def markdown(results: dict[str, Any], recipe: dict) -> str:
    lines = []
    if "parity" in results:
        parity = results["parity"]
        names = list(parity)
        lines += [f"### Parity, {recipe['parity']['data']['vector_size']}-element vectors "
                  f"(test set: {recipe['parity']['data']['test_samples']} vectors)", "",
                  "| non-zeros k | n | " + " | ".join(f"{n} acc | {n} steps" for n in names) + " |",
                  "|---|---|" + "---|---|" * len(names)]
        for k in parity[names[0]]["per_k"]:
            row = parity[names[0]]["per_k"][k]
            cells = " | ".join(f"{parity[n]['per_k'][k]['accuracy']:.3f} | {parity[n]['per_k'][k]['ponder_steps']:.2f}"
                               for n in names)
            lines.append(f"| {k} | {row['n']} | {cells} |")
        cells = " | ".join(f"**{parity[n]['accuracy']:.3f}** | **{parity[n]['ponder_steps']:.2f}**" for n in names)
        lines += [f"| all | {sum(r['n'] for r in parity[names[0]]['per_k'].values())} | {cells} |", ""]
        lines += ["| variant | train time (s) | eval time (s) |", "|---|---|---|"]
        lines += [f"| {n} | {parity[n]['train_seconds']:.0f} | {parity[n]['eval_seconds']:.2f} |" for n in names]
        lines.append("")
    if "mnist1d" in results:
        mnist = results["mnist1d"]
        lines += ["### MNIST-1D (40 steps of 1 feature; 4000 train / 1000 test)", "",
                  "| variant | test accuracy | mean ponder steps per time step | train time (s) |",
                  "|---|---|---|---|"]
        lines += [f"| {n} | {r['accuracy']:.3f} | {r['ponder_steps']:.2f} | {r['train_seconds']:.0f} |"
                  for n, r in mnist.items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=Path("hub_configs/pact_lstm.parity/experiment.yaml"))
    parser.add_argument("--output-dir", type=Path, default=None)
    parser.add_argument("--only", choices=("parity", "mnist1d"), default=None)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every training budget (pilots)")
    args = parser.parse_args()
    if args.steps_scale <= 0:
        raise ValueError(f"--steps-scale must be > 0, got {args.steps_scale}")
    recipe = yaml.safe_load(args.config.read_text())
    output_dir = args.output_dir or Path(recipe["output_dir"])
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(recipe["threads"])
    runners = {"parity": run_parity, "mnist1d": run_mnist1d}
    results: dict[str, Any] = {}
    start = time.perf_counter()
    for task, runner in runners.items():
        if args.only not in (None, task):
            continue
        task_recipe = copy.deepcopy(recipe[task])
        task_recipe["steps"] = max(1, int(task_recipe["steps"] * args.steps_scale))
        results[task] = runner(task_recipe, recipe["seed"], output_dir)
    results["total_seconds"] = time.perf_counter() - start
    results["torch_threads"] = torch.get_num_threads()
    (output_dir / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results, recipe)
    (output_dir / "results.md").write_text(table)
    print(table)
    print(f"total {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
