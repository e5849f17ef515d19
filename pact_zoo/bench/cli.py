"""``pact-zoo benchmark``: do saved FLOPs show up as saved wall-clock time?

The command line of :mod:`pact_zoo.bench`: the options, their checks, and the run that puts the set-up, eval
timing, profile, memory probes and training-step timing together into one printed report and one JSON file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional, Sequence

import torch
from torch import nn

from .evaluation import DEFAULT_EVAL_MODES, EVAL_MODES, benchmark_eval, profile_eval, set_compaction_costs
from .inputs import DEFAULT_SEQ_LEN, INPUT_KINDS, resolve_inputs
from .machine import load_average, machine_info
from .memory import measure_memory, memory_specs
from .networks import HF_PREFIX, create_model, halting_stages, head_methods, plain_network, set_synthetic_heads
from .report import EVAL_HEADER, clock_name, format_profile, format_report, write_json_atomic
from .timing import BOTH_CLOCKS, CLOCK_CHOICES, clock_settings
from .train_step import DEFAULT_TRAIN_NETWORKS, benchmark_training, build_training_networks, train_networks

__all__ = ["main", "build_parser", "parse_buckets", "default_output_path", "memory_networks", "DEFAULT_OUTPUT_DIR"]

#: Where the JSON goes without ``--output`` (git ignores ``out/``): ``<dir>/<model>-<UTC time>.json``.
DEFAULT_OUTPUT_DIR = os.path.join("out", "benchmarks")
DEFAULT_MEMORY_NETWORKS = ("pact", "act", "plain")


def memory_networks() -> tuple[str, ...]:
    """The networks whose eval peak memory can be probed: a twin per registered head method, and ``plain``."""
    return head_methods() + ("plain",)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return values


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _names(text: str, allowed: Sequence[str], option: str) -> list[str]:
    names = [m for m in text.split(",") if m]
    if not names or any(m not in allowed for m in names) or len(set(names)) != len(names):
        raise ValueError(f"{option} must be a comma-separated subset of {tuple(allowed)}, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    from ..cli import ArgumentParser
    from ..training.config import parse_yaml_mapping

    parser = ArgumentParser(prog="pact-zoo benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="pact_resnet110",
                        help="registered timm model name (pact_* / act_* / pg_*, CIFAR or ImageNet ResNets; "
                             "default: pact_resnet110)")
    parser.add_argument("--model-kwargs", type=parse_yaml_mapping, default=None,
                        help="timm.create_model kwargs as YAML (or JSON), as in pact-zoo train: '{tau: 0.02}'")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--threshold", type=_unit_interval, default=None,
                        help="halting threshold (default: the model's)")
    budget.add_argument("--target-flops-ratio", type=_unit_interval, default=None,
                        help="calibrate the threshold to this FLOPs budget on generated data")
    parser.add_argument("--calibration-samples", type=_positive_int, default=256,
                        help="generated inputs for --target-flops-ratio (default: 256)")
    parser.add_argument("--synthetic-halting", type=int, default=None, metavar="SEED",
                        help="set reproducible synthetic halting heads (depth uniform over each stage's units, "
                             "about half of the units on average); without it the model's heads are used")
    parser.add_argument("--synthetic-samples", type=_positive_int, default=128,
                        help="generated inputs the synthetic heads are set on (default: 128)")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 64, 256],
                        help="comma-separated eval batch sizes (default: 1,8,64,256)")
    parser.add_argument("--min-samples", type=_positive_int, default=64,
                        help="every timed repeat runs at least this many samples (several batches when small; "
                             "default: 64)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repeats before timing (default: 2)")
    parser.add_argument("--repeats", type=_positive_int, default=5,
                        help="timed repeats per mode, interleaved; the median is reported (default: 5)")
    parser.add_argument("--modes", default=",".join(DEFAULT_EVAL_MODES),
                        help=f"eval modes to time, a subset of {','.join(EVAL_MODES)} (plain: the plain network; "
                             f"default: {','.join(DEFAULT_EVAL_MODES)})")
    parser.add_argument("--input-size", type=_int_list, default=None,
                        help="C,H,W (default: the model's pretrained_cfg, e.g. 3,224,224 for pact_resnet50)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last model and inputs")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu",
                        help="cpu or cuda[:N] (timings synchronise the device; default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the generated inputs (default: 0)")
    parser.add_argument("--memory-batch-size", type=_positive_int, default=64,
                        help="batch size of the peak-memory probes (default: 64)")
    parser.add_argument("--memory-networks", default=",".join(DEFAULT_MEMORY_NETWORKS),
                        help="networks whose eval peak memory is probed, each in a fresh process (default: "
                             f"{','.join(DEFAULT_MEMORY_NETWORKS)})")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--train-batch-size", type=_positive_int, default=32,
                        help="batch size of the training-step timing (default: 32)")
    parser.add_argument("--train-repeats", type=_positive_int, default=5,
                        help="timed training steps per network (default: 5)")
    parser.add_argument("--train-warmup", type=int, default=1, help="untimed training steps first (default: 1)")
    parser.add_argument("--train-networks", default=",".join(DEFAULT_TRAIN_NETWORKS),
                        help=f"networks whose training step is timed, a subset of {','.join(train_networks())}: "
                             "model = --model as configured, plain = no halting, a halting method's name = --model "
                             "under that method, pg / pg_batch_mean = --model under policy gradient with the "
                             "self-critical (greedy) or batch-mean baseline, same weights "
                             f"(default: {','.join(DEFAULT_TRAIN_NETWORKS)})")
    parser.add_argument("--plain-model", default=None,
                        help="plain network for the plain eval mode, training and memory (default: --model with "
                             "method='none', e.g. resnet110_cifar's network for pact_resnet110; timm's resnet50 "
                             "for pact_resnet50)")
    parser.add_argument("--no-training", action="store_true", help="skip the training-step timing")
    parser.add_argument("--no-eval", action="store_true", help="skip the eval timing")
    parser.add_argument("--output", default=None,
                        help=f"JSON result file (default: {DEFAULT_OUTPUT_DIR}/<model>-<UTC time>.json)")
    parser.add_argument("--inputs", default="auto", choices=INPUT_KINDS,
                        help="image (--input-size), tokens (--seq-len random input_ids, all-ones attention mask), "
                             "or auto: tokens for models whose halting_profile_inputs() takes input_ids")
    parser.add_argument("--seq-len", type=_positive_int, default=DEFAULT_SEQ_LEN, help="tokens per sequence")
    parser.add_argument("--buckets", default=None,
                        help="pad compacted sub-batches up to these sizes (comma-separated, ascending; 'default' "
                             "for powers of two to 64, then multiples of 64); none by default")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="with --buckets on a CUDA device: replay one CUDA graph per (unit, bucket)")
    parser.add_argument("--clock", default=BOTH_CLOCKS, choices=CLOCK_CHOICES,
                        help="both (default): the eval modes timed with wall time at --threads (or the default "
                             "threads), then with this process's CPU time at 1 thread (robust to a loaded machine), "
                             "each with the load average before and after; wall or process: that clock only, at "
                             "--threads (the training step uses wall time under both; a CUDA device: wall)")
    parser.add_argument("--compaction-cost", default=None, type=_positive_int, metavar="BATCH",
                        help="measure each stage's compaction cost model at this batch size (units on 1 and BATCH "
                             "rows, gathers) and compact only when it pays; default: compact at every halt")
    parser.add_argument("--compile-options", type=parse_yaml_mapping, default=None, metavar="YAML",
                        help="torch.compile keyword arguments of the compiled modes (--modes compiled, "
                             "compiled_dense, compiled_plain), e.g. '{mode: max-autotune}'; default: inductor")
    parser.add_argument("--profile-batch-size", type=_positive_int, default=None,
                        help="also record a torch.profiler per-operator breakdown of the adaptive and full-depth "
                             "eval at this batch size")
    return parser


def default_output_path(model: str) -> str:
    """``out/benchmarks/<model>-<UTC time>.json`` (``out/`` is git-ignored: no stray file in the repo root)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return os.path.join(DEFAULT_OUTPUT_DIR, f"{safe}-{stamp}.json")


def parse_buckets(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """``--buckets``: None, ``"default"`` (:data:`~pact_zoo.halting.stage.DEFAULT_BUCKETS`) or ascending integers."""
    from ..halting.stage import DEFAULT_BUCKETS

    if text is None:
        return None
    if text == "default":
        return DEFAULT_BUCKETS
    try:
        values = tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        values = ()
    if not values or any(v < 1 for v in values) or list(values) != sorted(set(values)):
        raise ValueError(f"--buckets must be 'default' or ascending comma-separated integers >= 1, got {text!r}")
    return values


def _check_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The checked options that argparse cannot check alone (ValueError / RuntimeError with a one-line reason)."""
    import timm

    if not args.model.startswith(HF_PREFIX) and not timm.is_model(args.model):
        raise ValueError(f"--model {args.model!r} is not a registered timm model (pact_zoo.list_models() lists "
                         f"the adaptive ones)")
    if args.input_size is not None and len(args.input_size) != 3:
        raise ValueError(f"--input-size must be C,H,W (three integers), got {args.input_size}")
    checked = {"modes": _names(args.modes, EVAL_MODES, "--modes"),
               "memory_networks": _names(args.memory_networks, memory_networks(), "--memory-networks"),
               "train_networks": _names(args.train_networks, train_networks(), "--train-networks")}
    if args.warmup < 0 or args.train_warmup < 0:
        raise ValueError(f"--warmup and --train-warmup must be >= 0, got {args.warmup}, {args.train_warmup}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available")
    if device.type == "cuda" and args.clock == "process":
        raise ValueError("--clock process is for CPU runs (a CUDA device is timed with CUDA events)")
    buckets = parse_buckets(args.buckets)
    if args.cuda_graphs and (buckets is None or device.type != "cuda"):
        raise ValueError("--cuda-graphs needs --buckets and --device cuda")
    # the eval clock(s), and the one clock of the training step: both -> wall time (a CUDA device: CUDA events only)
    eval_clock = "wall" if device.type == "cuda" and args.clock == BOTH_CLOCKS else args.clock
    return dict(checked, device=device, buckets=buckets, eval_clock=eval_clock,
                step_clock="wall" if args.clock == BOTH_CLOCKS else args.clock)


def _calibrate(model: nn.Module, inputs, args: argparse.Namespace) -> Optional[dict]:
    """``--target-flops-ratio`` (calibrated on generated batches of 64) or ``--threshold``."""
    from ..halting import calibrate_threshold, set_threshold

    if args.target_flops_ratio is not None:
        generator = torch.Generator().manual_seed(args.seed + 1)
        data = [inputs.batch(min(64, args.calibration_samples - start), generator, args.device)
                for start in range(0, args.calibration_samples, 64)]
        found = calibrate_threshold(model, data, args.target_flops_ratio)
        return {"target_flops_ratio": args.target_flops_ratio, "threshold": found.threshold,
                "flops_ratio": found.flops_ratio, "num_samples": args.calibration_samples}
    if args.threshold is not None:
        set_threshold(model, args.threshold)
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        kwargs = dict(args.model_kwargs or {})
        checked = _check_arguments(args)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    device, buckets = checked["device"], checked["buckets"]
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    load_start = load_average()
    model = create_model(args.model, kwargs, args.seed, args.device)
    stages = halting_stages(model)
    if not stages:
        print(f"error: --model {args.model} has no halting stage (method 'none'?)", file=sys.stderr)
        return 2
    method = stages[0].method
    has_threshold = all(stage.method.has_threshold for stage in stages)
    if (args.target_flops_ratio is not None or args.threshold is not None) and not has_threshold:
        print(f"error: --target-flops-ratio / --threshold need a halting method with a threshold; "
              f"{args.model} uses {method.name!r}", file=sys.stderr)
        return 2
    try:
        inputs = resolve_inputs(model, args.inputs, args.input_size, args.seq_len, args.channels_last)
        if args.synthetic_halting is not None and inputs.kind != "image":
            raise ValueError("--synthetic-halting generates images (synthesize_halting): use a trained model's "
                             "heads or --threshold for token inputs")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    shape = inputs.shape
    if args.synthetic_halting is not None:
        set_synthetic_heads(model, args.synthetic_halting, shape, args.synthetic_samples)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if buckets is not None:
        from ..halting.stage import set_bucketing

        set_bucketing(model, buckets, cuda_graphs=args.cuda_graphs)
    compaction_costs = None
    if args.compaction_cost is not None:
        compaction_costs = set_compaction_costs(model, inputs, args.compaction_cost, args.seed, args.device)
    calibration = _calibrate(model, inputs, args)
    threshold = method.threshold if method.has_threshold else None
    result: dict[str, Any] = {
        "model": args.model, "model_kwargs": kwargs, "method": method.name, "knobs": method.knob_values(),
        "threshold": threshold, "synthetic_halting": args.synthetic_halting, "calibration": calibration,
        "input_shape": list(shape), "inputs": inputs.kind, "channels_last": args.channels_last,
        "device": str(device), "threads": threads, "clock": checked["eval_clock"],
        "clocks": [{"clock": name, "threads": count}
                   for name, count in clock_settings(checked["eval_clock"], threads)],
        "buckets": None if buckets is None else list(buckets), "cuda_graphs": args.cuda_graphs,
        "compaction_costs": compaction_costs,
        "warmup": args.warmup, "repeats": args.repeats, "plain_model": args.plain_model,
        "platform": dict(machine_info(device), load_average=load_start),
    }
    print(format_report(result))

    if not args.no_eval:
        print(f"\neval {clock_name(checked['eval_clock'])} (median of repeats; efficiency = time ratio / FLOPs "
              f"ratio)\n" + EVAL_HEADER)
        plain = None
        if "plain" in checked["modes"] or "compiled_plain" in checked["modes"]:
            plain = plain_network(model, args.model, kwargs, args.plain_model, args.seed, args.device)
            plain = plain.to(memory_format=torch.channels_last) if args.channels_last else plain
        result["eval"] = benchmark_eval(model, inputs, args.batch_sizes, args.warmup, args.repeats,
                                        args.min_samples, args.seed, args.channels_last, checked["modes"],
                                        plain=plain, device=args.device, clock=checked["eval_clock"],
                                        compile_options=args.compile_options)
        del plain
    if args.profile_batch_size is not None:
        result["profile"] = profile_eval(model, inputs, args.profile_batch_size, args.seed, args.device)
        print("\n" + format_profile(result["profile"]))
    if not args.no_memory:
        base = {"model": args.model, "seed": args.seed, "input_shape": list(shape), "threads": threads,
                "input_kind": inputs.kind, "vocab_size": inputs.vocab_size,
                "batch_size": args.memory_batch_size, "channels_last": args.channels_last, "device": args.device,
                "synthetic_halting": args.synthetic_halting, "synthetic_samples": args.synthetic_samples,
                "threshold": threshold}
        specs = memory_specs(base, checked["memory_networks"], kwargs, args.plain_model)
        result["memory_batch_size"] = args.memory_batch_size
        result["memory"] = {name: measure_memory(spec) for name, spec in specs.items()}
        if "pact" in result["memory"] and "act" in result["memory"]:
            result["pact_below_act"] = (result["memory"]["pact"]["allocator_peak_bytes"]
                                        < result["memory"]["act"]["allocator_peak_bytes"])
    if not args.no_training:
        train_names = checked["train_networks"]
        print(f"\ntraining step, batch {args.train_batch_size}: {', '.join(train_names)} ...", flush=True)
        networks = build_training_networks(model, train_names, args.model, kwargs, args.plain_model, args.seed,
                                           shape, args.synthetic_halting, args.synthetic_samples, args.device,
                                           args.channels_last)
        result["training"] = benchmark_training(networks, inputs, args.train_batch_size, args.train_warmup,
                                                args.train_repeats, args.seed, args.channels_last, args.device,
                                                clock=checked["step_clock"])
        del networks
    result["platform"]["load_average_end"] = load_average()
    print("\n" + format_report(result))
    output = args.output or default_output_path(args.model)
    write_json_atomic(output, result)
    print(f"\nwrote {output}")
    return 0

