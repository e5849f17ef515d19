"""``python -m pact_zoo.bench``: the same as ``pact-zoo benchmark``."""
import sys

from .cli import main

sys.exit(main())
