"""``pact-zoo train`` / ``scripts/train.py``: fine-tune from a YAML recipe, under ``accelerate launch`` or alone."""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .config import add_config_arguments, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pact-zoo train", description=__doc__)
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in output_dir")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    from .loop import train

    train(config, resume=args.resume)
    return 0
