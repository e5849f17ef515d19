"""Wall time, FLOPs and memory of adaptive vs full-depth vs masked evaluation (``pact-zoo benchmark``).

    python scripts/benchmark.py --model pact_resnet110 --synthetic-halting 0 --target-flops-ratio 0.5
"""
import sys

from pact_zoo.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
