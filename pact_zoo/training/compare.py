"""``pact-zoo compare``: several models on the same evaluation split, as one table, one JSON and one plot.

A comparison recipe names its ``entries``; each is trained (``train:`` a training recipe), converted (``convert:`` a
conversion recipe) or taken as it is (``model_dir:`` a model folder), then evaluated on the ``evaluation`` split with
what ``pact-zoo evaluate`` does: every threshold in the entry's ``thresholds`` (or the recipe's), the model's own
rule (and its sampled stops, for a stochastic method) and full depth. Every run lives in
``<output_dir>/<entry name>``; an entry whose run is finished is not run again, so an interrupted comparison
continues where it stopped (``--overwrite`` reruns everything).

    output_dir: out/compare/acm_vit.fashion_mnist
    evaluation: {dataset: parquet:data/fashion_mnist, eval_split: test, eval_batch_size: 500}
    thresholds: [0.3, 0.5, 0.7]
    baseline: source                         # FLOPs in the table are also given relative to its full depth
    overrides: {epochs: 2}                   # every train / convert entry's recipe (an entry's own overrides win)
    entries:
      - {name: source, train: hub_configs/acm_vit.fashion_mnist/source.yaml}
      - {name: acm, convert: hub_configs/acm_vit.fashion_mnist/convert.yaml, overrides: {source: ...}}
      - name: pact                           # expands to pact-tau0.03-seed0, pact-tau0.03-seed1, ...
        train: hub_configs/pact_resnet32.fashion_mnist/train.yaml
        grid: {model_kwargs.tau: [0.03, 0.1], seed: [0, 1, 2]}
        budgets: [0.4, 0.6, 0.8]             # also thresholds calibrated to these FLOPs ratios
        truncations: every_depth             # and the same weights as static networks of 1, 2, ... units per stage
      - name: exits                          # a model with exit classifiers: its own rule at its thresholds, and
        convert: hub_configs/pact_minilm.rotten_tomatoes/convert_exits.yaml
        methods: {entropy: [0.1, 0.3], patience: [0.4, 0.6]}   # the same model under these methods

Overrides: a key replaces the recipe's field (a mapping too: ``model_kwargs: {act_eps: 0.01}`` is the whole of
``model_kwargs``); a dotted key ``model_kwargs.tau`` sets one key of a mapping field and keeps the others, and
``phases.end_to_end.acm_budget`` one field of one phase of a conversion recipe.

``grid``: every combination of the listed values (dotted keys as in overrides) becomes an entry named
``<name>-<key><value>...`` (the key's last part and a number: ``pact-tau0.1-seed2``; a text value alone:
``static-resnet8_cifar`` for ``grid: {model: [resnet8_cifar, ...]}``). Entries that differ only by ``seed`` form
a group, and the table adds the mean and standard deviation over the group's seeds of every point.

``truncations``: the model is also evaluated as static networks made of each stage's first units, with the same
weights: ``[[1, 1, 1], [2, 2, 2]]`` (units per stage), or ``every_depth`` (1, 2, ... units in every stage).

``budgets``: before the evaluation, :func:`~pact_zoo.calibrate_threshold` finds the threshold of each target FLOPs
ratio on the first ``calibration_samples`` (recipe key; default 500, ``DEFAULT_CALIBRATION_SAMPLES``) training samples,
without augmentation (never the evaluation split); those thresholds are evaluated as well and named by their budget.

``methods``: the same model evaluated under other registered halting methods, each at its own thresholds (and
its default one), switched as a conversion phase switches it (:mod:`~pact_zoo.training.compare_methods`): the
early-exit rules ``confidence``, ``entropy`` and ``patience`` all read one model's exits. Its points are labelled
``<entry>:<method>`` (rows, seed groups, one curve each in the plot); they are not timed.

``timing``: measured time per sample of every entry (at its own rule, an adaptive one also at full depth) on the
first evaluation samples at each batch size, timed round robin (:mod:`~pact_zoo.training.compare_timing`):
``timing: {batch_sizes: [1, 8, 64], samples: 64, repeats: 3, warmup: 1, clock: wall}``.

``init_from: <entry>`` (a train entry's key): a warm start from the model of the entry named, which must come
earlier (its folder becomes ``pretrained_file``; halting heads keep their fresh init); ``--entries`` keeps it. Named
a seed grid, each of the entry's seeds starts from the source with the same seed.

``evaluation_name: <name>``: recipes that share ``output_dir`` (so their trained runs: a finished run is not run
again) but evaluate on different splits keep apart: this recipe's evaluations go to ``<entry>/eval.<name>`` and its
results to ``comparison.<name>.{json,md,png}`` (a choice made on a validation split, then read on the test split).
``--eval-split test`` does this for a recipe as it is: the evaluation's ``eval_split`` and the name become ``test``.

``depth_by: <property>``: every entry's mean units executed and accuracy per value of a per-sample property that
the evaluation task provides (parity: ``num_nonzero``), at its own rule and with sampled stops, and the correlation
of units with the value (Graves 2016 Fig. 3; :mod:`~pact_zoo.training.compare_breakdown`): a table, JSON, depth_by.png.

Writes ``comparison.json`` (every point), ``comparison.md`` (accuracy with its binomial standard error, measured
MFLOPs per sample, FLOPs relative to the baseline, the spread of depth per input; the seed groups; the training time
per epoch of each trained entry; the measured time per sample) and ``comparison.png`` (accuracy against measured
FLOPs, one curve per entry and method) into ``output_dir``, atomically.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..cli import ArgumentParser
from ..fileio import atomic_path, atomic_write_json, atomic_write_text
from .compare_breakdown import (BREAKDOWN_PLOT, DEPTH_BY_KEY, breakdown_section, breakdown_summary, check_depth_by,
                                check_property, depth_breakdown)
from .compare_init import INIT_KEY, resolve_init_from, with_init_sources
from .compare_report import (comparison_figure, comparison_rows, format_rows, format_seed_groups,
                             format_training_time, seed_groups, training_time)
from .compare_methods import build_with_method, load_methods, method_fields, method_label
from .compare_steps import (EVERY_DEPTH, LoadedEntry, calibrate_budgets, evaluate_truncations, evaluation_config,
                            load_entry, time_entry_models)
from .compare_timing import format_timing, load_timing
from .config import ConfigError, check_fractions, load_config, read_yaml_mapping
from .evaluate import EVALUATE_FIELDS, TRADEOFF_JSON, run_evaluation
from .io import check_model_folder
from .run_dir import MODEL_DIR

__all__ = ["ComparisonEntry", "Comparison", "load_comparison", "expand_grid", "apply_overrides", "select_entries",
           "describe", "compare", "main"]

RESULT_JSON, RESULT_TABLE, RESULT_PLOT = "comparison.json", "comparison.md", "comparison.png"
#: how an entry gets its model
SOURCES = ("train", "convert", "model_dir")
RECIPE_KEYS = {"output_dir", "evaluation", "thresholds", "baseline", "overrides", "calibration_samples", "entries",
               "timing", DEPTH_BY_KEY, "evaluation_name"}
ENTRY_KEYS = set(SOURCES) | {"name", "overrides", "thresholds", "grid", "budgets", "truncations", "methods", INIT_KEY}
#: training samples that calibrate an entry's thresholds to its budgets, unless the recipe says
DEFAULT_CALIBRATION_SAMPLES = 500
#: the grid key whose values make a seed group
SEED_KEY = "seed"
#: a conversion recipe's list of phases (``phases.<phase>.<field>`` sets one field of one phase)
PHASES_KEY = "phases"
#: entry names: also folder names
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


class ComparisonEntry:
    """One model of a comparison: how it is made (``kind`` in :data:`SOURCES`, ``path``), its recipe overrides
    (resolved: no dotted keys), the thresholds it is evaluated at, the FLOPs budgets its threshold is calibrated
    to, its run folder, its seed group (the entry itself unless a grid over ``seed`` made it), its static
    truncations (lists of units per stage, or :data:`EVERY_DEPTH`), ``recipe_name``, the name in the recipe
    (that a grid expanded), and ``methods``, the other halting methods it is evaluated under (name -> thresholds)."""

    def __init__(self, name: str, kind: str, path: str, overrides: Dict[str, Any], thresholds: List[float],
                 run_dir: Path, budgets: Optional[List[float]] = None, group: Optional[str] = None,
                 seed: Any = None, truncations: Any = None, recipe_name: Optional[str] = None,
                 methods: Optional[Dict[str, List[float]]] = None) -> None:
        self.name, self.kind, self.path, self.recipe_name = name, kind, path, recipe_name or name
        self.overrides, self.thresholds, self.run_dir = overrides, thresholds, run_dir
        self.budgets, self.group, self.seed = budgets or [], group or name, seed
        self.truncations, self.methods = truncations or [], methods or {}
        self.init_from: Optional[str] = None  # the earlier entry whose model starts this one (compare_init)
        self.evaluation_name: Optional[str] = None  # the recipe's evaluation_name: eval.<name> folders

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / _named("eval", self.evaluation_name)

    def method_eval_dir(self, method: str) -> Path:
        """Where the evaluation under another halting method (``methods:``) is written."""
        return self.run_dir / _named(f"eval_{method}", self.evaluation_name)

    def model_dir(self) -> Path:
        """The entry's model folder (after :meth:`make`)."""
        if self.kind == "model_dir":
            return Path(self.path)
        if self.kind == "train":
            return self.run_dir / MODEL_DIR
        from .convert import load_conversion

        return load_conversion(self.path, self._run_overrides()).model_dir

    def _run_overrides(self) -> Dict[str, Any]:
        return {**self.overrides, "output_dir": str(self.run_dir)}

    def make(self, overwrite: bool = False) -> None:
        """Train or convert (a finished run is kept unless ``overwrite``); a ``model_dir`` entry is only checked."""
        if self.kind == "model_dir":
            check_model_folder(self.path, f"entry {self.name!r} model_dir")
        elif self.kind == "train":
            from .loop import train

            train(load_config(self.path, self._run_overrides()), resume=not overwrite and self.run_dir.is_dir(),
                  overwrite=overwrite)
        else:
            from .convert import convert, load_conversion

            convert(load_conversion(self.path, self._run_overrides()),
                    resume=not overwrite and self.run_dir.is_dir(), overwrite=overwrite)


def _named(stem: str, name: Optional[str], suffix: str = "") -> str:
    """``stem.name`` + ``suffix`` (``comparison.test.json``), or ``stem`` + ``suffix`` without an evaluation name."""
    return f"{stem}.{name}{suffix}" if name else stem + suffix


class Comparison:
    """A loaded comparison recipe: its entries (grids expanded), the evaluation split, the baseline entry, the
    results folder, the number of training samples that calibrate budgets, the timing settings (or None) and the
    per-sample property the depth is broken down by (or None), and the name of its evaluation (or None)."""

    def __init__(self, entries: List[ComparisonEntry], evaluation: Dict[str, Any], baseline: Optional[str],
                 output_dir: Path, calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                 timing: Optional[Dict[str, Any]] = None, depth_by: Optional[str] = None,
                 evaluation_name: Optional[str] = None) -> None:
        self.entries, self.evaluation, self.baseline, self.output_dir = entries, evaluation, baseline, output_dir
        self.calibration_samples, self.timing, self.depth_by = calibration_samples, timing, depth_by
        self.evaluation_name = evaluation_name
        for entry in entries:
            entry.evaluation_name = evaluation_name

    def result_path(self, filename: str) -> Path:
        """``output_dir / filename``, named by the evaluation (``comparison.json`` -> ``comparison.test.json``)."""
        stem, dot, suffix = filename.rpartition(".")
        return self.output_dir / _named(stem, self.evaluation_name, dot + suffix)


def apply_overrides(recipe: Dict[str, Any], overrides: Dict[str, Any], where: str) -> Dict[str, Any]:
    """``recipe``'s fields after ``overrides`` (the recipe file's mapping; returns a new one): a key replaces the
    field, a dotted key ``field.key`` sets one key of a mapping field (of the overrides so far, else of ``recipe``)."""
    result = dict(recipe)
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: override keys must be field names, got {key!r}")
        if "." not in key:
            result[key] = value
            continue
        field, sub = key.split(".", 1)
        if field == PHASES_KEY:
            result[field] = _set_phase_field(result.get(field), sub, value, f"{where}: override {key!r}")
            continue
        mapping = result.get(field) or {}
        if not isinstance(mapping, dict) or not sub or "." in sub:
            raise ConfigError(f"{where}: a dotted override names one key of a mapping field (model_kwargs.tau) or "
                              f"a field of a conversion phase (phases.end_to_end.acm_budget), got {key!r}")
        result[field] = {**mapping, sub: value}
    return result


def _set_phase_field(phases: Any, sub: str, value: Any, where: str) -> List[Dict[str, Any]]:
    """A conversion recipe's ``phases`` with field ``sub = "<phase name>.<field>"`` of the named phase set."""
    name, _, field = sub.partition(".")
    names = [phase.get("name") for phase in phases] if isinstance(phases, list) else []
    if not field or "." in field or name not in names:
        raise ConfigError(f"{where}: phases.<phase>.<field> must name a phase of the conversion recipe "
                          f"({', '.join(map(str, names)) or 'none'}) and one field")
    return [{**phase, field: value} if phase.get("name") == name else phase for phase in phases]


def _value_tag(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _tags(grid_values: Dict[str, Any]) -> List[str]:
    """A text value names itself (``resnet8_cifar``), a number its key too (``tau0.1``, ``seed2``)."""
    return [v if isinstance(v, str) else f"{key.rsplit('.', 1)[-1]}{_value_tag(v)}" for key, v in grid_values.items()]


def expand_grid(name: str, grid: Any, where: str) -> List[tuple[str, Dict[str, Any], Optional[str]]]:
    """``(entry name, overrides, seed group)`` for every combination of ``grid``'s values, in the grid's order
    (the last key varies fastest): ``pact`` with ``{model_kwargs.tau: [0.03, 0.1], seed: [0, 1]}`` gives
    ``pact-tau0.03-seed0`` and ``pact-tau0.03-seed1`` (group ``pact-tau0.03``), then ``pact-tau0.1-seed0`` and
    ``pact-tau0.1-seed1`` (group ``pact-tau0.1``). The group is None unless the grid has two seeds or more."""
    if not isinstance(grid, dict) or not grid or not all(
            isinstance(k, str) and isinstance(v, list) and v and all(isinstance(x, (str, int, float)) for x in v)
            for k, v in grid.items()):
        raise ConfigError(f"{where}: grid must map recipe fields to non-empty lists of values, e.g. "
                          f"{{model_kwargs.tau: [0.03, 0.1], seed: [0, 1, 2]}}; got {grid!r}")
    seeded = len(grid.get(SEED_KEY, [])) > 1
    combinations = []
    for values in itertools.product(*grid.values()):
        chosen = dict(zip(grid, values))
        group = "-".join([name] + _tags({k: v for k, v in chosen.items() if k != SEED_KEY})) if seeded else None
        entry_name = "-".join([name] + _tags(chosen))
        if not NAME_PATTERN.fullmatch(entry_name):
            raise ConfigError(f"{where}: grid values become the entry's folder name; {entry_name!r} has characters "
                              f"other than letters, digits and _ . = + -")
        combinations.append((entry_name, chosen, group))
    return combinations


def _entries(path: str, raw: Dict[str, Any], common: Dict[str, Any], default_thresholds: List[float],
             out: Path) -> List[ComparisonEntry]:
    """The entries one item of the recipe's ``entries`` stands for (several with a ``grid``), checked."""
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(f"{path}: every entry needs a name of letters, digits and _ . = + - (a folder name), "
                          f"got {name!r}")
    where = f"{path}: entry {name!r}"
    unknown = sorted(set(raw) - ENTRY_KEYS)
    kinds = [kind for kind in SOURCES if kind in raw]
    if unknown or len(kinds) != 1:
        raise ConfigError(f"{where} needs exactly one of {', '.join(SOURCES)} (plus name, overrides, grid, "
                          f"thresholds, budgets, truncations, methods, {INIT_KEY}); got keys {sorted(raw)}")
    kind, source = kinds[0], raw[kinds[0]]
    if not isinstance(source, str) or (kind != "model_dir" and not Path(source).is_file()):
        raise ConfigError(f"{where}: {kind} must name an existing "
                          f"{'folder' if kind == 'model_dir' else 'recipe file'}, got {source!r}")
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict) or (kind == "model_dir" and (overrides or "grid" in raw)):
        raise ConfigError(f"{where}: overrides and grid are mappings of recipe fields (not for model_dir entries), "
                          f"got overrides {overrides!r}, grid {raw.get('grid')!r}")
    thresholds = check_fractions(where, "thresholds", raw.get("thresholds", default_thresholds))
    budgets = check_fractions(where, "budgets", raw.get("budgets", []))
    truncations = raw.get("truncations", [])
    if truncations != EVERY_DEPTH and not (isinstance(truncations, list) and all(
            isinstance(t, list) and t and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in t)
            for t in truncations)):
        raise ConfigError(f"{where}: truncations must be {EVERY_DEPTH} or a list of units per stage such as "
                          f"[[1, 1, 1], [2, 2, 2]], got {truncations!r}")
    methods = load_methods(raw.get("methods"), where)
    variants = expand_grid(name, raw["grid"], where) if "grid" in raw else [(name, {}, None)]
    file_fields = read_yaml_mapping(source) if kind != "model_dir" else {}
    entries = []
    for entry_name, grid_values, group in variants:
        resolved = file_fields
        for layer in (common if kind != "model_dir" else {}, overrides, grid_values):
            resolved = apply_overrides(resolved, layer, f"{path}: entry {entry_name!r}")
        changed = {key: value for key, value in resolved.items() if key not in file_fields
                   or file_fields[key] != value}
        if kind == "train":  # a bad field fails now, not after the entries before it ran
            load_config(source, {**changed, "output_dir": str(out / entry_name)})
        elif kind == "convert":
            from .convert import load_conversion

            load_conversion(source, {**changed, "output_dir": str(out / entry_name)})
        entries.append(ComparisonEntry(entry_name, kind, source, changed, thresholds, out / entry_name, budgets,
                                       group, resolved.get(SEED_KEY), truncations, name, methods))
    return entries


def load_comparison(path: str, output_dir: Optional[str] = None, eval_split: Optional[str] = None) -> Comparison:
    """Read and check a comparison recipe: grids expanded, every train entry's config resolved, every recipe file
    present (nothing runs). ``eval_split`` replaces the evaluation's split and names the evaluation
    (``evaluation_name``)."""
    recipe = read_yaml_mapping(path)
    unknown = sorted(set(recipe) - RECIPE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(RECIPE_KEYS))}")
    out = Path(output_dir or recipe.get("output_dir") or "out/compare")
    evaluation = recipe.get("evaluation") or {}
    if eval_split is not None:
        recipe["evaluation_name"] = eval_split
        evaluation = {**evaluation, "eval_split": eval_split} if isinstance(evaluation, dict) else evaluation
    if not isinstance(evaluation, dict) or set(evaluation) - set(EVALUATE_FIELDS) or "dataset" not in evaluation:
        raise ConfigError(f"{path}: evaluation must be a mapping with a dataset and any of "
                          f"{', '.join(EVALUATE_FIELDS)}: the one split every entry is evaluated on; "
                          f"got {evaluation!r}")
    default_thresholds = check_fractions(path, "thresholds", recipe.get("thresholds", [0.5]))
    common = recipe.get("overrides") or {}
    if not isinstance(common, dict):
        raise ConfigError(f"{path}: overrides must be a mapping of recipe fields for every train / convert entry, "
                          f"got {common!r}")
    samples = recipe.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES)
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ConfigError(f"{path}: calibration_samples must be a positive integer, got {samples!r}")
    raw_entries = recipe.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries or not all(isinstance(e, dict) for e in raw_entries):
        raise ConfigError(f"{path}: entries must be a non-empty list of mappings, each with a name and one of "
                          f"{', '.join(SOURCES)}")
    entries = [entry for raw in raw_entries for entry in _entries(path, raw, common, default_thresholds, out)]
    names = [entry.name for entry in entries]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{path}: entry names must be distinct (grids included), got {', '.join(repeated)} twice")
    baseline = recipe.get("baseline")
    if baseline is not None and baseline not in names:
        raise ConfigError(f"{path}: baseline must name an entry ({', '.join(names)}), got {baseline!r}")
    resolve_init_from(path, raw_entries, entries)
    name = recipe.get("evaluation_name")
    if name is not None and not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        raise ConfigError(f"{path}: evaluation_name (or --eval-split) must be a name of letters, digits and "
                          f"_ . = + - (it names the eval.<name> folders and comparison.<name>.json), got {name!r}")
    return Comparison(entries, evaluation, baseline, out, samples, load_timing(recipe.get("timing"), path),
                      check_depth_by(recipe.get(DEPTH_BY_KEY), path), name)


def compare(comparison: Comparison, overwrite: bool = False) -> Dict[str, Any]:
    """Make and evaluate every entry, then write the JSON, the tables and the plot; returns the JSON's content."""
    results, model_dirs, budgets, breakdowns = {}, {}, {}, []
    if comparison.depth_by:  # a property the evaluation task lacks fails before anything trains
        check_property(comparison.evaluation, comparison.entries[0], comparison.depth_by)
    timed: Dict[str, LoadedEntry] = {}  # every entry's loaded model, when the recipe times them
    for entry in comparison.entries:
        print(f"== {entry.name}: {entry.kind} {entry.path}", flush=True)
        entry.make(overwrite)
        model_dir = model_dirs[entry.name] = entry.model_dir()
        current = load_entry(model_dir, comparison.evaluation, comparison.calibration_samples)
        budgets[entry.name] = calibrate_budgets(current, entry.budgets) if entry.budgets else []
        thresholds = entry.thresholds + [c["threshold"] for c in budgets[entry.name]]
        results[entry.name] = run_evaluation(current.model, current.config, entry.eval_dir, thresholds,
                                             current.task, current.data)
        if entry.truncations:
            results[entry.name]["points"] += evaluate_truncations(current, entry.truncations,
                                                                  f"entry {entry.name!r} ({model_dir})")
        for method, method_thresholds in entry.methods.items():
            print(f"   under {method}", flush=True)
            config = evaluation_config(comparison.evaluation, model_dir, method_fields(model_dir, method))
            results[method_label(entry.name, method)] = run_evaluation(
                build_with_method(config), config, entry.method_eval_dir(method), method_thresholds)
        if comparison.depth_by:
            breakdowns.append(depth_breakdown(current.model, current.task, current.eval_loader(), comparison.depth_by,
                                              entry.name, results[entry.name]["default"]["rule"]))
        if comparison.timing is not None:
            timed[entry.name] = current
    labels = [(e.name, e.group, e) for e in comparison.entries] + [
        (method_label(e.name, m), method_label(e.group, m), e) for e in comparison.entries for m in e.methods]
    rows = comparison_rows(results, comparison.baseline, {label: group for label, group, _ in labels}, budgets)
    groups = seed_groups(rows, {label: e.seed for label, _, e in labels})
    times = {e.name: training_time(e.run_dir) if e.kind == "train" else None for e in comparison.entries}
    summary = {"evaluation": comparison.evaluation, "baseline": comparison.baseline,
               "entries": {e.name: {"kind": e.kind, "path": e.path, "overrides": e.overrides, "group": e.group,
                                    "seed": e.seed, "model_dir": str(model_dirs[e.name]),
                                    "tradeoff": str(e.eval_dir / TRADEOFF_JSON), "budgets": budgets[e.name],
                                    "training_time": times[e.name],
                                    "methods": {m: {"thresholds": t,
                                                    "tradeoff": str(e.method_eval_dir(m) / TRADEOFF_JSON)}
                                                for m, t in e.methods.items()}}
                           for e in comparison.entries},
               "rows": rows, "seed_groups": groups}
    if comparison.timing is not None:
        summary["timing"] = time_entry_models(timed, comparison.timing)
    if comparison.depth_by:
        summary[DEPTH_BY_KEY] = breakdown_summary(comparison.depth_by, breakdowns)
    out = comparison.output_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: comparison.result_path(name) for name in (RESULT_JSON, RESULT_TABLE, RESULT_PLOT, BREAKDOWN_PLOT)}
    atomic_write_json(paths[RESULT_JSON], summary)
    sections = [format_rows(rows, comparison.baseline)]
    if groups:
        sections.append("Mean ± standard deviation over seeds:\n\n" + format_seed_groups(groups, comparison.baseline))
    if any(times.values()):
        sections.append("Training time (the training loop only, no evaluation):\n\n" + format_training_time(times))
    if "timing" in summary:
        sections.append("Measured time per sample:\n\n" + format_timing(summary["timing"], comparison.baseline))
    if DEPTH_BY_KEY in summary:
        sections.append(breakdown_section(summary[DEPTH_BY_KEY], paths[BREAKDOWN_PLOT]))
    table = "\n".join(sections)
    atomic_write_text(paths[RESULT_TABLE], table)
    figure = comparison_figure(rows, f"{out.name}: {len(comparison.entries)} entries on "
                                     f"{comparison.evaluation['dataset']}")
    with atomic_path(paths[RESULT_PLOT]) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    import matplotlib.pyplot as plt

    plt.close(figure)
    print(table)
    print(f"wrote {paths[RESULT_JSON]}, {paths[RESULT_TABLE]} and {paths[RESULT_PLOT]}")
    return summary


def select_entries(comparison: Comparison, names: Sequence[str]) -> Comparison:
    """The comparison restricted to the entries named (an entry's name, or the recipe name a grid expanded), the
    baseline and the entries their ``init_from`` needs; an unknown name raises."""
    known = {e.name for e in comparison.entries} | {e.recipe_name for e in comparison.entries}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ConfigError(f"--entries: no entry named {', '.join(unknown)}; the recipe's entries are "
                          f"{', '.join(e.name for e in comparison.entries)}")
    kept = [e for e in comparison.entries if {e.name, e.recipe_name} & set(names) or e.name == comparison.baseline]
    selected = copy.copy(comparison)  # every setting kept (timing, depth_by), only the entries change
    selected.entries = with_init_sources(comparison.entries, kept)
    return selected


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo compare", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="comparison recipe: entries, evaluation split, thresholds")
    parser.add_argument("--output-dir", help="folder of the entries' runs and the results (overrides the recipe's)")
    parser.add_argument("--overwrite", action="store_true", help="rerun every entry (default: finished runs are kept)")
    parser.add_argument("--entries", help="comma-separated entries to run (names, or a grid's recipe name: all it "
                                          "expands to); the baseline always runs. The results cover these only")
    parser.add_argument("--eval-split", help="evaluate on this split instead of the evaluation's eval_split, into "
                                             "<entry>/eval.<split> and comparison.<split>.*: the runs of output_dir "
                                             "are reused (e.g. test, after the choices made on validation)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list every entry (grids expanded) with its recipe and overrides, and run nothing")
    return parser


def describe(comparison: Comparison) -> str:
    """One line per entry: name, how it is made, its overrides, thresholds, budgets and other methods."""
    import yaml

    lines = []
    for e in comparison.entries:
        flow = yaml.safe_dump(e.overrides, default_flow_style=True, width=10 ** 6).strip() if e.overrides else "{}"
        lines.append(f"{e.name}: {e.kind} {e.path} overrides {flow} thresholds {e.thresholds}"
                     + (f" budgets {e.budgets}" if e.budgets else "")
                     + (f" methods {e.methods}" if e.methods else "") + f" -> {e.run_dir}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    comparison = load_comparison(args.config, args.output_dir, args.eval_split)
    if args.entries:
        comparison = select_entries(comparison, [name for name in args.entries.split(",") if name])
    if args.dry_run:
        print(describe(comparison))
        return 0
    compare(comparison, overwrite=args.overwrite)
    return 0
