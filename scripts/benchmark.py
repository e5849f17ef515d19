"""Wall time, FLOPs and memory of adaptive vs full-depth vs masked evaluation, and the training step of the plain,
PACT and policy-gradient networks (``pact-zoo benchmark``; ``--help`` lists the options).

    python scripts/benchmark.py --model pact_resnet110 --synthetic-halting 0 --target-flops-ratio 0.5
    python scripts/benchmark.py --model pact_resnet50 --plain-model resnet50 --input-size 3,224,224 \\
        --synthetic-halting 0 --target-flops-ratio 0.5 --modes adaptive,full,masked,plain --no-training
"""
import sys

from pact_zoo.cli import run_command
from pact_zoo.bench import main

if __name__ == "__main__":
    sys.exit(run_command(main))
