#!/usr/bin/env python
"""Entry point for `accelerate launch scripts/evaluate.py ...` (same options as `pact-zoo evaluate`)."""
import sys

from pact_zoo.cli import run_command
from pact_zoo.training.evaluate import main

if __name__ == "__main__":
    sys.exit(run_command(main))
