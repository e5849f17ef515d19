"""``pact-zoo compare``: several models on the same evaluation split, as one table, one JSON and one plot.

A comparison recipe names its ``entries``; each is trained (``train:`` a training recipe), converted (``convert:`` a
conversion recipe) or taken as it is (``model_dir:`` a model folder), then evaluated on the ``evaluation`` split with
what ``pact-zoo evaluate`` does: every threshold in the entry's ``thresholds`` (or the recipe's), the model's own
rule and full depth. Every run lives in ``<output_dir>/<entry name>``; an entry whose run is finished is not run
again, so an interrupted comparison continues where it stopped (``--overwrite`` reruns everything).

    output_dir: out/compare/acm_vit.fashion_mnist
    evaluation: {dataset: parquet:data/fashion_mnist, eval_split: test, eval_batch_size: 500}
    thresholds: [0.3, 0.5, 0.7]
    baseline: source                         # FLOPs in the table are also given relative to its full depth
    entries:
      - {name: source, train: hub_configs/acm_vit.fashion_mnist/source.yaml}
      - {name: acm, convert: hub_configs/acm_vit.fashion_mnist/convert.yaml, overrides: {source: ...}}

Writes ``comparison.json`` (every point), ``comparison.md`` (accuracy with its binomial standard error, measured
MFLOPs per sample, FLOPs relative to the baseline, the spread of depth per input) and ``comparison.png``
(accuracy against measured FLOPs, one curve per entry) into ``output_dir``, atomically.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..cli import ArgumentParser
from ..fileio import atomic_path, atomic_write_json, atomic_write_text
from .config import ConfigError, load_config, read_yaml_mapping
from .evaluate import EVALUATE_FIELDS, TRADEOFF_JSON, run_evaluation, standard_error
from .io import check_model_folder, folder_model_name, load_model_folder
from .run_dir import MODEL_DIR

__all__ = ["ComparisonEntry", "load_comparison", "compare", "main"]

RESULT_JSON, RESULT_TABLE, RESULT_PLOT = "comparison.json", "comparison.md", "comparison.png"
#: how an entry gets its model
SOURCES = ("train", "convert", "model_dir")
RECIPE_KEYS = {"output_dir", "evaluation", "thresholds", "baseline", "entries"}
ENTRY_KEYS = set(SOURCES) | {"name", "overrides", "thresholds"}


class ComparisonEntry:
    """One model of a comparison: how it is made (``kind`` in :data:`SOURCES`, ``path``), its recipe overrides,
    the thresholds it is evaluated at, and its run folder."""

    def __init__(self, name: str, kind: str, path: str, overrides: Dict[str, Any], thresholds: List[float],
                 run_dir: Path) -> None:
        self.name, self.kind, self.path = name, kind, path
        self.overrides, self.thresholds, self.run_dir = overrides, thresholds, run_dir

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    def model_dir(self) -> Path:
        """The entry's model folder (after :meth:`make`)."""
        if self.kind == "model_dir":
            return Path(self.path)
        if self.kind == "train":
            return self.run_dir / MODEL_DIR
        from .convert import load_conversion

        return load_conversion(self.path, self._conversion_overrides()).model_dir

    def _conversion_overrides(self) -> Dict[str, Any]:
        return {**self.overrides, "output_dir": str(self.run_dir)}

    def make(self, overwrite: bool = False) -> None:
        """Train or convert (a finished run is kept unless ``overwrite``); a ``model_dir`` entry is only checked."""
        if self.kind == "model_dir":
            check_model_folder(self.path, f"entry {self.name!r} model_dir")
        elif self.kind == "train":
            from .loop import train

            config = load_config(self.path, {**self.overrides, "output_dir": str(self.run_dir)}, merge=True)
            train(config, resume=not overwrite and self.run_dir.is_dir(), overwrite=overwrite)
        else:
            from .convert import convert, load_conversion

            convert(load_conversion(self.path, self._conversion_overrides()),
                    resume=not overwrite and self.run_dir.is_dir(), overwrite=overwrite)


class Comparison:
    def __init__(self, entries: List[ComparisonEntry], evaluation: Dict[str, Any], baseline: Optional[str],
                 output_dir: Path) -> None:
        self.entries, self.evaluation, self.baseline, self.output_dir = entries, evaluation, baseline, output_dir


def _check_thresholds(where: str, values: Any) -> List[float]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and 0 < v <= 1 for v in values):
        raise ConfigError(f"{where}: thresholds must be a list of numbers in (0, 1], got {values!r}")
    return [float(v) for v in values]


def load_comparison(path: str, output_dir: Optional[str] = None) -> Comparison:
    """Read and check a comparison recipe (every entry's recipe file must exist; nothing runs)."""
    recipe = read_yaml_mapping(path)
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(RECIPE_KEYS))}")
    out = Path(output_dir or recipe.get("output_dir") or "out/compare")
    evaluation = recipe.get("evaluation") or {}
    if not isinstance(evaluation, dict) or set(evaluation) - set(EVALUATE_FIELDS) or "dataset" not in evaluation:
        raise ConfigError(f"{path}: evaluation must be a mapping with a dataset and any of "
                          f"{', '.join(EVALUATE_FIELDS)}: the one split every entry is evaluated on; got {evaluation!r}")
    default_thresholds = _check_thresholds(path, recipe.get("thresholds", [0.5]))
    raw_entries = recipe.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries or not all(isinstance(e, dict) for e in raw_entries):
        raise ConfigError(f"{path}: entries must be a non-empty list of mappings, each with a name and one of "
                          f"{', '.join(SOURCES)}")
    entries, names = [], set()
    for raw in raw_entries:
        name = raw.get("name")
        if not isinstance(name, str) or not name.isidentifier() or name in names:
            raise ConfigError(f"{path}: every entry needs a distinct identifier-like name, got {name!r}")
        names.add(name)
        unknown = sorted(set(raw) - ENTRY_KEYS)
        kinds = [kind for kind in SOURCES if kind in raw]
        if unknown or len(kinds) != 1:
            raise ConfigError(f"{path}: entry {name!r} needs exactly one of {', '.join(SOURCES)} (plus name, "
                              f"overrides, thresholds); got keys {sorted(raw)}")
        source = raw[kinds[0]]
        if not isinstance(source, str) or (kinds[0] != "model_dir" and not Path(source).is_file()):
            raise ConfigError(f"{path}: entry {name!r}: {kinds[0]} must name an existing "
                              f"{'folder' if kinds[0] == 'model_dir' else 'recipe file'}, got {source!r}")
        overrides = raw.get("overrides") or {}
        if not isinstance(overrides, dict) or (overrides and kinds[0] == "model_dir"):
            raise ConfigError(f"{path}: entry {name!r}: overrides must be a mapping of recipe fields (not for "
                              f"model_dir entries), got {overrides!r}")
        thresholds = _check_thresholds(f"{path}: entry {name!r}", raw.get("thresholds", default_thresholds))
        entries.append(ComparisonEntry(name, kinds[0], source, overrides, thresholds, out / name))
    baseline = recipe.get("baseline")
    if baseline is not None and baseline not in names:
        raise ConfigError(f"{path}: baseline must name an entry ({', '.join(sorted(names))}), got {baseline!r}")
    return Comparison(entries, evaluation, baseline, out)


def _evaluate(entry: ComparisonEntry, model_dir: Path, evaluation: Dict[str, Any]) -> Dict[str, Any]:
    model = load_model_folder(model_dir)
    config = load_config(None, {**evaluation, "model": folder_model_name(model_dir)})
    return run_evaluation(model, config, entry.eval_dir, entry.thresholds)


def comparison_rows(results: Dict[str, Dict[str, Any]], baseline: Optional[str]) -> List[Dict[str, Any]]:
    """One row per entry and evaluated point (thresholds, own rule, full depth) with accuracy, its standard error,
    MFLOPs per sample, FLOPs relative to the baseline's full depth (or the entry's own) and the depth spread."""
    reference = results[baseline]["full_depth"]["mean_flops"] if baseline else None
    rows = []
    for name, result in results.items():
        points = [p for p in result["points"] if not p["rule"].endswith(":sampled")] + [result["full_depth"]]
        own = result.get("default")
        for point in points:
            base = reference or result["full_depth"]["mean_flops"]
            is_own = own is not None and point["rule"] == own["rule"] and point["threshold"] == own["threshold"]
            rows.append({
                "entry": name, "rule": point["rule"], "threshold": point["threshold"],
                "accuracy": point["accuracy"], "stderr": standard_error(point["accuracy"], point["num_samples"]),
                "num_samples": point["num_samples"], "mflops": point["mean_flops"] / 1e6,
                "flops_vs_baseline": point["mean_flops"] / base if base else None,
                "mean_units": point["mean_units"],
                "depth_away_from_mode": result.get("depth_spread", {}).get("away_from_mode") if is_own else None,
            })
    return rows


def format_rows(rows: List[Dict[str, Any]], baseline: Optional[str]) -> str:
    """The comparison as a markdown table."""
    relative = f"FLOPs vs {baseline}" if baseline else "FLOPs vs own full depth"
    lines = [f"| entry | rule | threshold | accuracy (%) | MFLOPs / sample | {relative} | units per stage | "
             f"inputs off the modal depth |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        threshold = "-" if row["threshold"] is None else f"{row['threshold']:g}"
        away = "-" if row["depth_away_from_mode"] is None else \
            " / ".join(f"{a:.2f}" for a in row["depth_away_from_mode"])
        units = " / ".join(f"{u:.2f}" for u in row["mean_units"]) or "-"
        lines.append(f"| {row['entry']} | {row['rule']} | {threshold} | {100 * row['accuracy']:.2f} ± "
                     f"{100 * row['stderr']:.2f} | {row['mflops']:.2f} | {row['flops_vs_baseline']:.3f} | {units} | "
                     f"{away} |")
    return "\n".join(lines) + "\n"


def comparison_figure(rows: List[Dict[str, Any]], title: str):
    """Accuracy against measured MFLOPs per sample: one curve per entry (its thresholds), its full depth as a
    star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name in dict.fromkeys(row["entry"] for row in rows):
        mine = [r for r in rows if r["entry"] == name]
        curve = sorted((r for r in mine if r["rule"] != "full_depth"), key=lambda r: r["mflops"])
        line = None
        if curve:
            (line,) = ax.plot([r["mflops"] for r in curve], [100 * r["accuracy"] for r in curve], "o-",
                              label=f"{name} ({curve[0]['rule']})")
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


def compare(comparison: Comparison, overwrite: bool = False) -> Dict[str, Any]:
    """Make and evaluate every entry, then write the JSON, the table and the plot; returns the JSON's content."""
    results, model_dirs = {}, {}
    for entry in comparison.entries:
        print(f"== {entry.name}: {entry.kind} {entry.path}", flush=True)
        entry.make(overwrite)
        model_dirs[entry.name] = entry.model_dir()
        results[entry.name] = _evaluate(entry, model_dirs[entry.name], comparison.evaluation)
    rows = comparison_rows(results, comparison.baseline)
    summary = {"evaluation": comparison.evaluation, "baseline": comparison.baseline,
               "entries": {e.name: {"kind": e.kind, "path": e.path, "overrides": e.overrides,
                                    "model_dir": str(model_dirs[e.name]), "tradeoff": str(e.eval_dir / TRADEOFF_JSON)}
                           for e in comparison.entries},
               "rows": rows}
    out = comparison.output_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / RESULT_JSON, summary)
    table = format_rows(rows, comparison.baseline)
    atomic_write_text(out / RESULT_TABLE, table)
    figure = comparison_figure(rows, f"{', '.join(results)} on {comparison.evaluation.get('dataset', 'the eval split')}")
    with atomic_path(out / RESULT_PLOT) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(table)
    print(f"wrote {out / RESULT_JSON}, {out / RESULT_TABLE} and {out / RESULT_PLOT}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo compare", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="comparison recipe: entries, evaluation split, thresholds")
    parser.add_argument("--output-dir", help="folder of the entries' runs and the results (overrides the recipe's)")
    parser.add_argument("--overwrite", action="store_true", help="rerun every entry (default: finished runs are kept)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    compare(load_comparison(args.config, args.output_dir), overwrite=args.overwrite)
    return 0
