"""``pact-zoo benchmark``: the former single-module benchmark, kept as a thin alias of :mod:`pact_zoo.bench`.

New code imports from :mod:`pact_zoo.bench` (one module per concern); this module re-exports its names, including
the private ones older scripts and tests used, so that ``pact_zoo.benchmark.main`` and ``python -m
pact_zoo.benchmark`` keep working.
"""
from __future__ import annotations

import sys

from .bench import *  # noqa: F401,F403
from .bench import __all__ as _bench_all
from .bench.cli import DEFAULT_MEMORY_NETWORKS, main
from .bench.evaluation import PROFILE_TOP_OPS
from .bench.inputs import as_spec as _spec, main_output as _main_output, make_batches as _batches
from .bench.inputs import run_all as _run_all, run_model as _call
from .bench.memory import (
    allocator_peak_bytes as _allocator_peak_bytes, memory_probe as _memory_probe,
    memory_probe_main as _memory_probe_main,
)
from .bench.networks import (
    copy_weights as _copy_weights, describe as _describe, halting_stages as _stages, hf_class as _hf_class,
    is_hf as _is_hf, twin_kwargs as _twin_kwargs,
)
from .bench.report import clock_name as _clock_name, format_eval_row as _format_eval_row
from .bench.report import format_training as _format_training
from .bench.timing import Stopwatch as _Stopwatch, medians as _medians, synchronize as _synchronize
from .bench.train_step import train_networks as _train_networks

#: The networks whose training step can be timed (derived from the halting-method registry at import time).
TRAIN_NETWORKS = _train_networks()
#: The networks whose eval memory can be probed (derived from the halting-method registry at import time).
MEMORY_NETWORKS = memory_networks()  # noqa: F405

__all__ = list(_bench_all) + ["TRAIN_NETWORKS", "MEMORY_NETWORKS", "DEFAULT_MEMORY_NETWORKS", "PROFILE_TOP_OPS"]

if __name__ == "__main__":
    sys.exit(main())
