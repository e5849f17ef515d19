"""``pact-zoo convert``: a trained source model in, an adaptive model out, as phases of the shared training loop.

A conversion recipe is a training recipe (every :class:`~pact_zoo.training.config.TrainConfig` field, shared by the
phases) plus ``source`` (the model folder to convert) and ``phases``: a list of mappings, each with a ``name`` and
the fields that phase changes. Phase 1 starts from ``source``, every later phase from the model the previous phase
wrote; each phase is one run of the loop in ``<output_dir>/<name>`` (``--resume`` continues, a finished phase is
skipped), and the last phase's ``model/`` folder is the converted model. The usual phases (DeeBERT's two stages,
Xin et al. 2020, with PACT's halting as the second):

1. ``exits``: ``freeze_backbone: true``, per-layer exits, ``anytime: true`` with ``anytime_prob: 1`` and
   ``distill_weight > 0``: every prefix learns to reproduce the full model;
2. ``halting``: the halting method's heads on the frozen backbone and exits (``freeze_exits: true``);
3. optionally ``end_to_end``: everything, at a small learning rate.

Example: ``hub_configs/pact_minilm.rotten_tomatoes/convert_pact.yaml``.

Width instead of depth, ACM (Wójcik et al. 2023, §3.3; :mod:`pact_zoo.training.acm_phases`): phase 1 builds an
``acm_*`` model over the source's weights (its MLPs split into learners) and trains ``objective:
module_distillation``, phase 2 ``objective: gate_labels``, phase 3 ``objective: task`` with ``acm_budget``;
``teacher: source`` (in the recipe or a phase) names the source model, whatever ``--source`` says. Example:
``hub_configs/acm_vit.fashion_mnist/convert.yaml``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..cli import ArgumentParser
from ..fileio import atomic_write_json
from .config import ConfigError, TrainConfig, load_config, read_yaml_mapping
from .run_dir import MODEL_DIR

__all__ = ["ConversionPlan", "load_conversion", "convert", "main"]

#: summary of a conversion, written into its output_dir
SUMMARY_FILE = "conversion.json"
#: ``teacher:`` value that stands for the conversion's source model
SOURCE_TEACHER = "source"


class ConversionPlan:
    """The phases of a conversion: ``(name, TrainConfig)`` in order, and the folder of the converted model."""

    def __init__(self, phases: List[tuple[str, TrainConfig]], output_dir: Path) -> None:
        self.phases = phases
        self.output_dir = output_dir

    @property
    def model_dir(self) -> Path:
        return Path(self.phases[-1][1].output_dir) / MODEL_DIR


def load_conversion(path: str, overrides: Optional[Dict[str, Any]] = None) -> ConversionPlan:
    """Read a conversion recipe; every phase's config is validated before anything runs."""
    recipe = read_yaml_mapping(path)
    recipe.update(overrides or {})
    source, phases = recipe.pop("source", None), recipe.pop("phases", None)
    if not isinstance(source, str) or not source:
        raise ConfigError(f"{path}: source must name the model folder to convert, got {source!r}")
    if not isinstance(phases, list) or not phases or not all(isinstance(p, dict) for p in phases):
        raise ConfigError(f"{path}: phases must be a non-empty list of mappings, each with a name")
    output_dir = Path(recipe.get("output_dir") or "out/convert")
    names = [phase.get("name") for phase in phases]
    if not all(isinstance(n, str) and n.isidentifier() for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"{path}: every phase needs a distinct identifier-like name, got {names}")
    plan, previous = [], source
    for phase in phases:
        fields = {**recipe, **{k: v for k, v in phase.items() if k != "name"}}
        if fields.get("teacher") == SOURCE_TEACHER:
            fields["teacher"] = source
        config = load_config(None, {**fields, "pretrained_file": previous,
                                    "output_dir": str(output_dir / phase["name"])})
        plan.append((phase["name"], config))
        previous = str(Path(config.output_dir) / MODEL_DIR)
    return ConversionPlan(plan, output_dir)


def convert(plan: ConversionPlan, resume: bool = False, overwrite: bool = False) -> Dict[str, Any]:
    """Run the phases in order; returns ``{phase: final metrics}`` (also written to ``conversion.json``)."""
    from .loop import train

    results = {}
    for name, config in plan.phases:
        print(f"== phase {name}: from {config.pretrained_file} into {config.output_dir}", flush=True)
        results[name] = train(config, resume=resume, overwrite=overwrite)
    summary = {"phases": [name for name, _ in plan.phases], "model_dir": str(plan.model_dir), "metrics": results}
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.output_dir / SUMMARY_FILE, summary)
    print(f"converted model: {plan.model_dir}")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo convert", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="conversion recipe: training fields, source and phases")
    parser.add_argument("--source", help="model folder to convert (overrides the recipe's source)")
    parser.add_argument("--output-dir", help="folder of the phases' runs (overrides the recipe's output_dir)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true", help="continue every phase's run; finished phases are skipped")
    run.add_argument("--overwrite", action="store_true", help="replace the phases' runs already in output_dir")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {key: value for key, value in (("source", args.source), ("output_dir", args.output_dir))
                 if value is not None}
    convert(load_conversion(args.config, overrides), resume=args.resume, overwrite=args.overwrite)
    return 0
