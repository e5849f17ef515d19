#!/usr/bin/env python
"""Entry point for `accelerate launch scripts/publish.py ...` (same options as `pact-zoo export`)."""
import sys

from pact_zoo.cli import run_command
from pact_zoo.hub import main

if __name__ == "__main__":
    sys.exit(run_command(main))
