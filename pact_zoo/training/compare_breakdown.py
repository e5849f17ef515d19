"""``depth_by:`` of ``pact-zoo compare``: the depth of every entry per value of a per-sample property of the
evaluation split, as in Graves 2016 (arXiv:1603.08983) Fig. 3, the ponder time of parity vectors against their
number of non-zeros.

For each entry, at its own rule (and with sampled stops, for a stochastic method) and each value v of the property:
the number of samples with v, their mean units executed per stage (summed over time steps for sequence models: on
one-step parity, the ponder steps) and their accuracy; per entry and rule, the Pearson correlation of a sample's
units (summed over stages) with v. The property comes from the evaluation task (``sample_properties()`` of its
training task, :class:`~pact_zoo.training.tasks.SequenceClassificationTask`: parity's ``num_nonzero``), never from
its name here.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..fileio import atomic_path
from .config import ConfigError, load_config
from .evaluate import has_sampled_stops, sampled_stops
from .io import folder_model_name
from .loop import evaluate_model
from .tasks import build_task

if TYPE_CHECKING:
    from .compare import ComparisonEntry

__all__ = ["DEPTH_BY_KEY", "BREAKDOWN_PLOT", "check_depth_by", "check_property", "property_values",
           "depth_breakdown", "breakdown_summary", "format_breakdown", "breakdown_figure", "breakdown_section"]

#: the comparison recipe's key naming the property
DEPTH_BY_KEY = "depth_by"
#: the plot of mean units and accuracy per value, one line per entry
BREAKDOWN_PLOT = "depth_by.png"
#: suffix of an entry's rule with sampled stops (as in the comparison's rows)
SAMPLED = ":sampled"


def check_depth_by(value: Any, where: str) -> Optional[str]:
    """The recipe's ``depth_by`` value: None, or the name of a per-sample property; anything else raises."""
    if value is not None and not (isinstance(value, str) and value.isidentifier()):
        raise ConfigError(f"{where}: {DEPTH_BY_KEY} must name a per-sample property of the evaluation split (a column "
                          f"such as parity's num_nonzero), got {value!r}")
    return value


def property_values(task, name: str) -> torch.Tensor:
    """``[N]`` values of the property ``name`` of ``task``'s evaluation split, in loader order; a task without
    per-sample properties, or without this one, raises :class:`ConfigError` naming those it has."""
    getter: Optional[Callable[[], Dict[str, torch.Tensor]]] = getattr(task, "sample_properties", None)
    properties = getter() if getter is not None else {}
    if name not in properties:
        raise ConfigError(f"{DEPTH_BY_KEY} must name a per-sample property of the evaluation split "
                          f"({', '.join(properties) or f'the {type(task).__name__} has none'}), got {name!r}")
    return properties[name]


def _rows(entry: str, rule: str, values: torch.Tensor, units: torch.Tensor, correct: torch.Tensor
          ) -> tuple[List[Dict[str, Any]], Optional[float]]:
    """Per value of ``values`` ``[N]``: count, mean of ``units`` ``[N, S]`` per stage and accuracy of ``correct``
    ``[N]``; and the Pearson correlation of the units summed over stages with the values (None when either side is
    constant)."""
    rows = []
    for value in torch.unique(values).tolist():
        rows_of = values == value
        rows.append({"entry": entry, "rule": rule, "value": value, "n": int(rows_of.sum()),
                     "mean_units": units[rows_of].double().mean(0).tolist(),
                     "accuracy": float(correct[rows_of].double().mean())})
    pair = torch.stack([units.double().sum(1), values.double()])
    constant = bool((pair.std(1) == 0).any()) or pair.shape[1] < 2
    return rows, None if constant else float(torch.corrcoef(pair)[0, 1])


def depth_breakdown(model: nn.Module, task: Any, loader: DataLoader, name: str, entry: str, rule: str
                    ) -> Dict[str, Any]:
    """The breakdown of ``model`` on ``loader``, the evaluation split of ``task``, by property ``name``:
    ``{"rows": [...], "correlations": [...]}``, rows ``{entry, rule, value, n, mean_units, accuracy}`` and
    correlations ``{entry, rule, pearson}``, at the model's own rule (named ``rule``) and, for a stochastic method,
    with sampled stops (``rule:sampled``, seeded as in the comparison's rows)."""
    values = property_values(task, name)
    model.eval()
    passes = [(rule, evaluate_model(model, loader, task, keep_units=True))]
    if has_sampled_stops(model):
        with sampled_stops(model):
            passes.append((rule + SAMPLED, evaluate_model(model, loader, task, keep_units=True)))
    result: Dict[str, Any] = {"rows": [], "correlations": []}
    for rule_name, point in passes:
        if len(point["units"]) != len(values):
            raise ConfigError(f"{DEPTH_BY_KEY}: {len(values)} values of {name} for {len(point['units'])} evaluated "
                              f"samples (the task's properties must follow the evaluation split)")
        rows, pearson = _rows(entry, rule_name, values, point["units"], point["is_correct"])
        result["rows"] += rows
        result["correlations"].append({"entry": entry, "rule": rule_name, "pearson": pearson})
    return result


def breakdown_summary(name: str, parts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """``comparison.json``'s ``depth_by``: the property and every entry's rows and correlations."""
    return {"property": name, "rows": [row for part in parts for row in part["rows"]],
            "correlations": [c for part in parts for c in part["correlations"]]}


def _columns(summary: Dict[str, Any], sampled: bool) -> List[tuple[str, str]]:
    return [(c["entry"], c["rule"]) for c in summary["correlations"] if c["rule"].endswith(SAMPLED) == sampled]


def _table(summary: Dict[str, Any], columns: List[tuple[str, str]], cell: Callable[[Dict[str, Any]], str],
           total: Optional[Callable[[List[Dict[str, Any]]], str]]) -> List[str]:
    """One row per value, one column per (entry, rule); a last row of correlations and, with ``total``, one over
    every sample."""
    name = summary["property"]
    by_key = {(r["entry"], r["rule"], r["value"]): r for r in summary["rows"]}
    values = sorted({r["value"] for r in summary["rows"]})
    lines = [f"| {name} | n | " + " | ".join(entry for entry, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for value in values:
        cells = [by_key.get((entry, rule, value)) for entry, rule in columns]
        count = next((c["n"] for c in cells if c is not None), 0)
        lines.append(f"| {value} | {count} | " + " | ".join("-" if c is None else cell(c) for c in cells) + " |")
    pearson = {(c["entry"], c["rule"]): c["pearson"] for c in summary["correlations"]}
    lines.append(f"| **r(units, {name})** | | " + " | ".join(
        "n/a (constant)" if pearson[key] is None else f"{pearson[key]:+.2f}" for key in columns) + " |")
    if total is not None:
        rows_of = {key: [r for r in summary["rows"] if (r["entry"], r["rule"]) == key] for key in columns}
        count = sum(r["n"] for r in next(iter(rows_of.values()), []))
        lines.append(f"| all | {count} | " + " | ".join(total(rows_of[key]) for key in columns) + " |")
    return lines


def _mean_units(rows: List[Dict[str, Any]]) -> float:
    """Mean units (summed over stages) over the samples of ``rows``, weighted by their counts."""
    return sum(sum(r["mean_units"]) * r["n"] for r in rows) / max(1, sum(r["n"] for r in rows))


def format_breakdown(summary: Dict[str, Any]) -> str:
    """The markdown section: mean units per value at each entry's own rule, accuracy per value, and mean units with
    sampled stops where an entry has them."""
    name = summary["property"]
    units = lambda row: f"{sum(row['mean_units']):.2f}"  # noqa: E731
    own = _columns(summary, sampled=False)
    sections = [f"Mean units executed per {name} (own rule; units summed over stages and time steps):", "",
                *_table(summary, own, units, lambda rows: f"{_mean_units(rows):.2f}"), "",
                f"Accuracy per {name} (own rule):", "",
                *_table(summary, own, lambda row: f"{row['accuracy']:.3f}", None)]
    sampled = _columns(summary, sampled=True)
    if sampled:
        sections += ["", f"Mean units executed per {name} with sampled stops:", "",
                     *_table(summary, sampled, units, lambda rows: f"{_mean_units(rows):.2f}")]
    return "\n".join(sections) + "\n"


def breakdown_figure(summary: Dict[str, Any], title: str):
    """Graves 2016 Fig. 3 style: mean units per value of the property, one line per entry at its own rule; accuracy
    per value beside. Returns the matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = summary["property"]
    fig, (ax_units, ax_acc) = plt.subplots(1, 2, figsize=(13, 6.4), gridspec_kw={"width_ratios": [1.6, 1]})
    styles = ["-", "-.", "--", ":"]
    pearson = {(c["entry"], c["rule"]): c["pearson"] for c in summary["correlations"]}
    for index, (entry, rule) in enumerate(_columns(summary, sampled=False)):
        rows = [r for r in summary["rows"] if (r["entry"], r["rule"]) == (entry, rule)]
        values = [r["value"] for r in rows]
        r_text = "n/a" if pearson[(entry, rule)] is None else f"{pearson[(entry, rule)]:+.2f}"
        style = dict(linestyle=styles[index // 10 % len(styles)], marker="o", markersize=3, color=f"C{index % 10}")
        ax_units.plot(values, [sum(r["mean_units"]) for r in rows], label=f"{entry} (r={r_text})", **style)
        ax_acc.plot(values, [r["accuracy"] for r in rows], label=entry, **style)
    ax_units.set(xlabel=name, ylabel="units executed (evaluation mean)", title=title)
    ax_units.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    ax_acc.set(xlabel=name, ylabel="accuracy", title=f"accuracy per {name}")
    for ax in (ax_units, ax_acc):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def check_property(evaluation: Dict[str, Any], entry: ComparisonEntry, name: str) -> None:
    """Raise :class:`ConfigError` unless the evaluation task of ``entry``'s model on the ``evaluation`` split has
    the per-sample property ``name`` (checked before anything trains; a conversion is checked when evaluated)."""
    if entry.kind == "convert":
        return
    model = folder_model_name(Path(entry.path)) if entry.kind == "model_dir" else \
        load_config(entry.path, entry.overrides).model
    property_values(build_task(load_config(None, {**evaluation, "model": model})), name)


def breakdown_section(summary: Dict[str, Any], plot_path: Path) -> str:
    """Write :func:`breakdown_figure` to ``plot_path`` (atomically) and return :func:`format_breakdown`'s section."""
    import matplotlib.pyplot as plt

    figure = breakdown_figure(summary, f"units executed per {summary['property']} (Graves 2016 Fig. 3 style)")
    with atomic_path(plot_path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
    return format_breakdown(summary)
