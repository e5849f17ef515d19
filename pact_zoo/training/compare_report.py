"""The results of ``pact-zoo compare``: rows of every evaluated point, the markdown tables (every point; the mean and
standard deviation over seeds; the training time) and the accuracy-against-FLOPs figure.

Inputs are the ``tradeoff.json`` contents of :func:`~pact_zoo.training.evaluate.run_evaluation`, one per entry,
plus what the comparison knows of each entry (its seed group, the budgets its thresholds were calibrated to).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .evaluate import standard_error
from .run_dir import METRICS_FILE

__all__ = ["TRUNCATED_RULE", "comparison_rows", "format_rows", "seed_groups", "format_seed_groups", "training_time",
           "format_training_time", "comparison_figure"]

SAMPLED_SUFFIX = ":sampled"
#: rule of a point evaluated as a static truncation (followed by its units per stage)
TRUNCATED_RULE = "truncated"


def _point_label(rule: str, threshold: Optional[float], budget: Optional[float]) -> str:
    """What identifies a point across the seeds of one group: the rule and its threshold, or the FLOPs budget the
    threshold was calibrated to (each seed's calibrated threshold differs)."""
    if budget is not None:
        return f"{rule} @ budget {budget:g}"
    return rule if threshold is None else f"{rule} @ {threshold:g}"


def comparison_rows(results: Dict[str, Dict[str, Any]], baseline: Optional[str],
                    groups: Optional[Dict[str, str]] = None,
                    budgets: Optional[Dict[str, List[Dict[str, float]]]] = None) -> List[Dict[str, Any]]:
    """One row per entry and evaluated point (thresholds, own rule, its sampled-stop variant, full depth) with
    accuracy, its standard error, MFLOPs per sample, FLOPs relative to the baseline's full depth (or the entry's
    own) and the depth spread. ``groups`` maps an entry to its seed group (default: itself); ``budgets`` maps an
    entry to its calibrations ``{target, threshold, calibration_flops_ratio}``: a threshold calibrated to a budget
    gets one row per target instead of one plain row."""
    reference = results[baseline]["full_depth"]["mean_flops"] if baseline else None
    rows = []
    for name, result in results.items():
        own = result.get("default")
        calibrated: Dict[float, List[float]] = {}
        for calibration in (budgets or {}).get(name, []):
            calibrated.setdefault(calibration["threshold"], []).append(calibration["target"])
        for point in result["points"] + [result["full_depth"]]:
            base = reference or result["full_depth"]["mean_flops"]
            is_own = own is not None and point["rule"] == own["rule"] and point["threshold"] == own["threshold"]
            sampled = point["rule"].endswith(SAMPLED_SUFFIX)
            targets = (None if sampled else calibrated.get(point["threshold"])) or [None]
            for budget in targets:
                rows.append({
                    "entry": name, "group": (groups or {}).get(name, name), "rule": point["rule"],
                    "threshold": point["threshold"], "budget": budget,
                    "point": _point_label(point["rule"], point["threshold"], budget),
                    "accuracy": point["accuracy"], "stderr": standard_error(point["accuracy"], point["num_samples"]),
                    "num_samples": point["num_samples"], "mflops": point["mean_flops"] / 1e6,
                    "flops_vs_baseline": point["mean_flops"] / base if base else None,
                    "mean_units": point["mean_units"],
                    "depth_away_from_mode": result.get("depth_spread", {}).get("away_from_mode")
                    if is_own and budget is None else None,
                })
    return rows


def _relative_header(baseline: Optional[str]) -> str:
    return f"FLOPs vs {baseline}" if baseline else "FLOPs vs own full depth"


def format_rows(rows: List[Dict[str, Any]], baseline: Optional[str]) -> str:
    """Every evaluated point as a markdown table (a calibrated point shows its budget beside its threshold)."""
    lines = [f"| entry | rule | threshold | accuracy (%) | MFLOPs / sample | {_relative_header(baseline)} | "
             f"units per stage | inputs off the modal depth |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:.3g}"
        if row["budget"] is not None:
            threshold += f" (budget {row['budget']:g})"
        away = "-" if row["depth_away_from_mode"] is None else \
            " / ".join(f"{a:.2f}" for a in row["depth_away_from_mode"])
        units = " / ".join(f"{u:.2f}" for u in row["mean_units"]) or "-"
        lines.append(f"| {row['entry']} | {row['rule']} | {threshold} | {100 * row['accuracy']:.2f} ± "
                     f"{100 * row['stderr']:.2f} | {row['mflops']:.2f} | {row['flops_vs_baseline']:.3f} | {units} | "
                     f"{away} |")
    return "\n".join(lines) + "\n"


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def seed_groups(rows: List[Dict[str, Any]], seeds: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Mean and sample standard deviation over seeds, per group of entries that differ only by seed (two entries
    or more) and per point: accuracy, MFLOPs per sample and FLOPs relative to the baseline. ``seeds`` maps an
    entry to its seed."""
    members: Dict[str, List[str]] = {}
    for row in rows:
        members.setdefault(row["group"], [])
        if row["entry"] not in members[row["group"]]:
            members[row["group"]].append(row["entry"])
    summary = []
    for group, entries in members.items():
        if len(entries) < 2:
            continue
        for point in dict.fromkeys(r["point"] for r in rows if r["group"] == group):
            mine = [r for r in rows if r["group"] == group and r["point"] == point]
            if len(mine) != len(entries):  # e.g. a threshold only one seed's own rule has
                continue
            accuracy, accuracy_std = _mean_std([r["accuracy"] for r in mine])
            mflops, mflops_std = _mean_std([r["mflops"] for r in mine])
            relative, relative_std = _mean_std([r["flops_vs_baseline"] for r in mine])
            summary.append({"group": group, "point": point, "seeds": [seeds.get(r["entry"]) for r in mine],
                            "accuracy_mean": accuracy, "accuracy_std": accuracy_std, "mflops_mean": mflops,
                            "mflops_std": mflops_std, "flops_vs_baseline_mean": relative,
                            "flops_vs_baseline_std": relative_std})
    return summary


def format_seed_groups(summary: List[Dict[str, Any]], baseline: Optional[str]) -> str:
    """The seed groups as a markdown table (empty string when no entries differ only by seed)."""
    if not summary:
        return ""
    lines = [f"| group | point | seeds | accuracy (%), mean ± std | MFLOPs / sample, mean ± std | "
             f"{_relative_header(baseline)}, mean ± std |", "|---|---|---|---|---|---|"]
    for g in summary:
        lines.append(f"| {g['group']} | {g['point']} | {len(g['seeds'])} | {100 * g['accuracy_mean']:.2f} ± "
                     f"{100 * g['accuracy_std']:.2f} | {g['mflops_mean']:.2f} ± {g['mflops_std']:.2f} | "
                     f"{g['flops_vs_baseline_mean']:.3f} ± {g['flops_vs_baseline_std']:.3f} |")
    return "\n".join(lines) + "\n"


def training_time(run_dir: Path) -> Optional[Dict[str, Any]]:
    """Epochs trained and the median training time per epoch (the loop only, no evaluation) of a training run,
    from its ``metrics.jsonl``; None when the folder holds no training run."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    times = [json.loads(line)["epoch_time_s"] for line in path.read_text().splitlines() if line.strip()]
    if not times:
        return None
    return {"epochs": len(times), "epoch_time_median_s": statistics.median(times), "train_time_s": sum(times)}


def format_training_time(times: Dict[str, Optional[Dict[str, Any]]]) -> str:
    """Training time per trained entry as a markdown table (empty string when no entry was trained here)."""
    known = {name: t for name, t in times.items() if t is not None}
    if not known:
        return ""
    lines = ["| entry | epochs | median epoch time (s) | training time (s) |", "|---|---|---|---|"]
    lines += [f"| {name} | {t['epochs']} | {t['epoch_time_median_s']:.1f} | {t['train_time_s']:.1f} |"
              for name, t in known.items()]
    return "\n".join(lines) + "\n"


def comparison_figure(rows: List[Dict[str, Any]], title: str):
    """Accuracy against measured MFLOPs per sample: one curve per entry (its thresholds; an entry under another
    method of its ``methods:``, ``<entry>:<method>``, is a curve of its own), its static truncations as a dashed
    curve, its full depth as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name in dict.fromkeys(row["entry"] for row in rows):
        mine = [r for r in rows if r["entry"] == name]
        thresholds = {r["threshold"]: r for r in mine  # a threshold calibrated to two budgets is one point
                      if r["rule"] != "full_depth" and not r["rule"].endswith(SAMPLED_SUFFIX)
                      and not r["rule"].startswith(TRUNCATED_RULE)}
        curve = sorted(thresholds.values(), key=lambda r: r["mflops"])
        line = None
        if curve:
            (line,) = ax.plot([r["mflops"] for r in curve], [100 * r["accuracy"] for r in curve], "o-",
                              label=f"{name} ({curve[0]['rule']})")
        static = sorted((r for r in mine if r["rule"].startswith(TRUNCATED_RULE)), key=lambda r: r["mflops"])
        if static:
            ax.plot([r["mflops"] for r in static], [100 * r["accuracy"] for r in static], "s--", alpha=0.7,
                    color=line.get_color() if line is not None else None, label=f"{name} truncated (static)")
        full = next(r for r in mine if r["rule"] == "full_depth")
        ax.plot([full["mflops"]], [100 * full["accuracy"]], "*", markersize=11,
                color=line.get_color() if line is not None else None,
                label=f"{name} full depth" if line is not None else name)
    ax.set_xlabel("measured MFLOPs per sample")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
