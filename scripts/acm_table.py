"""Markdown table of an ACM experiment (scripts/acm_experiment.py's ``<task>_results.json``).

    python scripts/acm_table.py out/acm/vit_results.json
"""
from __future__ import annotations

import json
import sys


def table(results: dict) -> str:
    original = results["original"]
    times = results["wall_time_s"]
    batch_sizes = sorted(times["original"], key=int)
    head = ("| model | β | accuracy | FLOPs / sample | FLOPs ratio | learners run | "
            + " | ".join(f"time b{b} (ms, ×orig)" for b in batch_sizes) + " |")
    rows = [head, "|" + "---|" * (6 + len(batch_sizes))]

    def timing(name: str) -> str:
        return " | ".join(f"{1e3 * times[name][b]:.1f} ({times[name][b] / times['original'][b]:.2f})"
                          for b in batch_sizes)

    rows.append(f"| original | - | {original['accuracy']:.4f} | {original['flops'] / 1e6:.1f} M | 1.000 | 1.000 | "
                f"{timing('original')} |")
    for r in results["results"]:
        name = f"{r['gating']}_b{r['beta']}"
        rows.append(f"| {r['gating']} | {r['beta']} | {r['accuracy']:.4f} | {r['flops'] / 1e6:.1f} M | "
                    f"{r['flops_ratio']:.3f} | {r['learner_fraction']:.3f} | {timing(name)} |")
    return "\n".join(rows)


def sweep_table(sweep: dict) -> str:
    """Table of scripts/acm_budget_sweep.py: one model (phases 1-2), threshold calibrated per budget."""
    rows = ["| β target | threshold | accuracy | FLOPs / sample | FLOPs ratio (target) | learners run |",
            "|---|---|---|---|---|---|"]
    full = sweep["original_flops"]
    for r in sweep["rows"]:
        beta = r.get("beta")
        target = f" ({r['target_flops_ratio']:.3f})" if beta is not None else ""
        rows.append(f"| {beta if beta is not None else '- (default 0.5)'} | {r['threshold']:.3g} | "
                    f"{r['accuracy']:.4f} | {r['flops'] / 1e6:.1f} M | {r['flops'] / full:.3f}{target} | "
                    f"{r['learner_fraction']:.3f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        data = json.load(open(path))
        if "rows" in data:
            print(f"### {data['task']} budget sweep ({path})\n\n{sweep_table(data)}\n")
            continue
        print(f"### {data['task']} ({path})\n")
        print(table(data))
        print(f"\nsizes {data['sizes']}, threads {data['threads']}, load average {data['load_average']}, "
              f"total {data['total_time_s']:.0f}s; phase-1 prefix MSE {data['errors_before_distill']} -> "
              f"{data['errors_after_distill']}\n")
