"""``pact-zoo benchmark``: do saved FLOPs show up as saved wall-clock time?

For one model (a CIFAR ResNet at 32x32, an ImageNet ResNet at 224x224, ...) and a list of batch sizes it times
eval forwards of

* ``adaptive``: the deterministic halting rule with compaction (halted rows leave the batch),
* ``full``: the same modules at full depth (:func:`~pact_zoo.halting.full_depth`: every unit, no halting head,
  the plain network's computation),
* ``masked``: every unit and head runs for every sample and the outputs are masked with the deterministic
  weights, the way SACT, SkipNet, ConvNet-AIG and A-ViT evaluate,
* ``plain`` (optional): a separate plain network with the same weights (``--plain-model``, e.g. timm's own
  ``resnet50`` for ``pact_resnet50``; default ``--model`` with ``method="none"``),

and reports ``efficiency = (time_adaptive / time_full) / (flops_adaptive / flops_full)`` (1.0: the saved FLOPs
are fully realised; FLOPs from :func:`~pact_zoo.halting_report`, so head FLOPs count against the adaptive
model). It also measures the peak memory of one eval forward of the PACT deterministic, ACT and plain
networks, each in a fresh process, and the time of one training step of the plain network, the PACT network and
the policy-gradient network (sampled depth, with the self-critical baseline forward, and with the batch-mean
baseline that needs none). These are the defaults: any method of the halting-method registry that stops on heads
can be named (``--memory-networks``, ``--train-networks``; :mod:`~pact_zoo.bench.networks`).

Every timing goes through one round-robin timer (:func:`time_round_robin`): the configurations run in rotating
order inside every repeat, so load on a shared machine hits them alike, and the median of the repeats is reported.

Untrained halting heads (bias -3) never stop, so the benchmark can set reproducible synthetic heads
(``--synthetic-halting SEED``, :func:`~pact_zoo.halting.synthesize_halting`) under which per-sample depth is
spread evenly over the units of every stage (about half of the units on average), and/or calibrate the threshold
to a FLOPs budget (``--target-flops-ratio``, :func:`~pact_zoo.calibrate_threshold`) on generated data.

Inputs: images (``--input-size``, default the model's ``pretrained_cfg``) or token sequences (``--inputs tokens
--seq-len 64``: random ``input_ids`` below the config's ``vocab_size`` and an all-ones ``attention_mask``; the
default ``--inputs auto`` picks tokens for models whose ``halting_profile_inputs()`` takes ``input_ids``).
``--model hf:<ClassName>`` builds a pact_zoo Hugging Face class from its config class (``--model-kwargs`` are the
config's kwargs; the plain / PACT / ACT twins set ``method``).

GPU (``--device cuda``): every timing is taken with CUDA events around the run (after a synchronisation);
``--buckets`` pads the compacted sub-batches to a few sizes and ``--cuda-graphs`` replays one CUDA graph per
(unit, bucket) (:func:`~pact_zoo.halting.set_bucketing`).

Output: a table on stdout and a JSON file (written to a temporary file, then renamed; by default under
``out/benchmarks/``, which git ignores) that records the torch / timm versions, the threads, the load average
before and after, and the machine. See ``docs/benchmarks.md`` for the method and the measured numbers.

Modules, one concern each: :mod:`~pact_zoo.bench.networks` (model factory, twins under other halting methods from
the method registry, synthetic heads), :mod:`~pact_zoo.bench.inputs` (input specs, batches, the batch adapter),
:mod:`~pact_zoo.bench.timing` (stopwatch, round robin, median), :mod:`~pact_zoo.bench.evaluation` (eval timing,
profile), :mod:`~pact_zoo.bench.memory` (memory probes), :mod:`~pact_zoo.bench.train_step` (training-step timing),
:mod:`~pact_zoo.bench.report` (formatting, JSON), :mod:`~pact_zoo.bench.machine` (versions, threads, load average)
and :mod:`~pact_zoo.bench.cli` (the options and the run).
"""
from __future__ import annotations

from .cli import DEFAULT_OUTPUT_DIR, build_parser, default_output_path, main, memory_networks, parse_buckets
from .evaluation import (
    COMPILED_MODES, DEFAULT_EVAL_MODES, EFFICIENCY_TARGETS, EVAL_MODES, benchmark_eval, compiled_networks,
    executed_flops, execution, profile_eval, set_compaction_costs,
)
from .inputs import (
    DEFAULT_SEQ_LEN, INPUT_KINDS, InputSpec, input_shape_of, main_output, make_batches, resolve_inputs, run_model,
)
from .machine import load_average, machine_info
from .memory import MEMORY_PROBE_ENV, allocator_peak_bytes, measure_memory, memory_probe
from .networks import (
    HF_PREFIX, SAMPLED_HEAD_WEIGHT_SCALE, TWIN_VARIANTS, copy_weights, create_model, describe, halting_stages,
    head_methods, plain_method, set_synthetic_heads, twin_kwargs, twins,
)
from .report import (
    EVAL_HEADER, format_clock_row, format_eval_row, format_profile, format_report, format_training, write_json_atomic,
)
from .timing import (
    BOTH_CLOCKS, CLOCK_CHOICES, CLOCKS, Stopwatch, clock_settings, medians, threads, time_round_robin,
)
from .train_step import (
    DEFAULT_TRAIN_NETWORKS, TRAIN_STEP_TARGET, benchmark_training, build_training_networks, train_networks,
)

__all__ = [
    "allocator_peak_bytes", "benchmark_eval", "benchmark_training", "BOTH_CLOCKS", "build_parser",
    "build_training_networks", "clock_settings", "CLOCK_CHOICES", "CLOCKS", "COMPILED_MODES", "compiled_networks", "copy_weights", "create_model",
    "DEFAULT_EVAL_MODES", "DEFAULT_OUTPUT_DIR", "DEFAULT_SEQ_LEN", "DEFAULT_TRAIN_NETWORKS", "default_output_path",
    "describe", "EFFICIENCY_TARGETS", "EVAL_HEADER", "EVAL_MODES", "executed_flops", "execution", "format_clock_row",
    "format_eval_row", "format_profile", "format_report", "format_training", "halting_stages", "head_methods",
    "HF_PREFIX", "INPUT_KINDS", "input_shape_of", "InputSpec", "load_average", "machine_info", "main", "main_output",
    "make_batches", "measure_memory", "medians", "MEMORY_PROBE_ENV", "memory_networks", "memory_probe",
    "parse_buckets", "plain_method", "profile_eval", "resolve_inputs", "run_model", "SAMPLED_HEAD_WEIGHT_SCALE",
    "set_compaction_costs", "set_synthetic_heads", "Stopwatch", "threads", "time_round_robin", "train_networks",
    "TRAIN_STEP_TARGET", "twin_kwargs", "TWIN_VARIANTS", "twins", "write_json_atomic",
]
