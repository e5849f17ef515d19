"""``pact-zoo quickstart``: train ``pact_resnet32`` on the bundled digits, evaluate the trade-off, export.

Runs offline on a CPU in a few minutes and prints accuracy, mean FLOPs against full depth and units per stage.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional, Sequence

from .cli import ArgumentParser
from .hub import export_folder
from .training import TrainConfig, load_config, load_model_folder, train
from .training.run_dir import CONFIG_FILE
from .training.evaluate import format_table, run_evaluation

HUB_CONFIGS = Path(__file__).resolve().parent.parent / "hub_configs"
QUICKSTART_VARIANT = "pact_resnet32.digits"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo quickstart", description=__doc__)
    parser.add_argument("--recipe-dir", default=str(HUB_CONFIGS / QUICKSTART_VARIANT),
                        help="folder with train.yaml and card.yaml")
    parser.add_argument("--output-dir", default=None, help="run folder (default: the recipe's output_dir)")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace whatever run the output folder holds (a previous quickstart run with the same "
                             "settings is replaced without it)")
    return parser


def _is_same_run(config: TrainConfig) -> bool:
    """Whether ``output_dir`` holds an earlier run of exactly this recipe (the quickstart may replace it)."""
    saved = Path(config.output_dir) / CONFIG_FILE
    try:
        return load_config(None, json.loads(saved.read_text())).to_dict() == config.to_dict()
    except (OSError, ValueError):
        return False


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    recipe_dir = Path(args.recipe_dir)
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if not (recipe_dir / "train.yaml").is_file():
        raise FileNotFoundError(f"quickstart recipe not found: {recipe_dir / 'train.yaml'} "
                                f"(run from a source checkout, or pass --recipe-dir)")
    overrides = {k: v for k, v in (("output_dir", args.output_dir), ("epochs", args.epochs)) if v is not None}
    config = load_config(str(recipe_dir / "train.yaml"), overrides)
    run_dir = Path(config.output_dir)
    start = time.perf_counter()
    train(config, overwrite=args.overwrite or _is_same_run(config))
    train_time = time.perf_counter() - start
    model = load_model_folder(run_dir / "model")
    result = run_evaluation(model, config, run_dir / "eval")
    hub_dir = export_folder(str(run_dir / "model"), str(run_dir / "hub"), str(run_dir / "eval"),
                            str(recipe_dir / "card.yaml"))
    total_time = time.perf_counter() - start
    default, full = result["default"], result["full_depth"]
    print()
    print(f"pact_zoo quickstart: {config.model} on {config.dataset} ({config.epochs} epochs)")
    print(format_table(result))
    print(f"\nat threshold {result['threshold']:g}: accuracy {100 * default['accuracy']:.2f}% "
          f"(full depth {100 * full['accuracy']:.2f}%), mean FLOPs {default['mean_flops'] / 1e6:.1f}M = "
          f"{default['mean_flops'] / full['mean_flops']:.3f} x full depth ({full['mean_flops'] / 1e6:.1f}M), "
          f"units per stage {' / '.join(f'{u:.2f}' for u in default['mean_units'])}")
    print(f"hub-ready folder: {hub_dir}  plots: {run_dir / 'eval'}")
    print(f"wall time: train {train_time:.0f}s, total {total_time:.0f}s")
    return 0
