"""``pact-zoo train`` / ``scripts/train.py``: fine-tune from a YAML recipe, under ``accelerate launch`` or alone."""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from ..cli import ArgumentParser
from .config import TrainConfig, add_config_arguments, config_from_args, read_yaml_mapping


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo train", description=__doc__)
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue the run in output_dir from its latest checkpoint (same recipe; more epochs allowed)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run outputs already in output_dir (without it, a used output_dir is refused)")
    add_config_arguments(parser)
    return parser


def default_recipe_line(config: TrainConfig, path: Optional[str]) -> str:
    """The one line ``train`` prints when no recipe file (or an empty one) chose the run."""
    source = "no --config given" if path is None else f"{path} is empty"
    return (f"{source}: training the built-in default recipe (model {config.model}, dataset {config.dataset}, "
            f"{config.epochs} epochs; see 'pact-zoo train --help') into {config.output_dir}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    if args.config is None or not read_yaml_mapping(args.config):
        if os.environ.get("RANK", "0") == "0":  # once under accelerate launch
            print(default_recipe_line(config, args.config))
    from .loop import train

    train(config, resume=args.resume, overwrite=args.overwrite)
    return 0
