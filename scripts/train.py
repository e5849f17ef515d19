#!/usr/bin/env python
"""Entry point for `accelerate launch scripts/train.py ...` (same options as `pact-zoo train`)."""
import sys

from pact_zoo.cli import run_command
from pact_zoo.training.train_cli import main

if __name__ == "__main__":
    sys.exit(run_command(main))
