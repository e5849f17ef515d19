"""Markdown table of an ACM experiment (scripts/acm_experiment.py's ``<task>_results.json``).

    python scripts/acm_table.py out/acm/vit_results.json
"""
from __future__ import annotations

import json
import sys


def table(results: dict) -> str:
    original = results["original"]
    times = results["wall_time_s"]
    batch_sizes = list(times["original"])
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


if __name__ == "__main__":
    for path in sys.argv[1:]:
        data = json.load(open(path))
        print(f"### {data['task']} ({path})\n")
        print(table(data))
        print(f"\nsizes {data['sizes']}, threads {data['threads']}, load average {data['load_average']}, "
              f"total {data['total_time_s']:.0f}s; phase-1 prefix MSE {data['errors_before_distill']} -> "
              f"{data['errors_after_distill']}\n")
