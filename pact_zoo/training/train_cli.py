"""``pact-zoo train`` / ``scripts/train.py``: fine-tune from a YAML recipe, under ``accelerate launch`` or alone."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..cli import ArgumentParser
from .config import add_config_arguments, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo train", description=__doc__)
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--resume", action="store_true",
                     help="continue the run in output_dir from its latest checkpoint (same recipe; more epochs allowed)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run outputs already in output_dir (without it, a used output_dir is refused)")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    from .loop import train

    train(config, resume=args.resume, overwrite=args.overwrite)
    return 0
