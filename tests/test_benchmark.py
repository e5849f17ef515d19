"""The benchmark harness runs end to end on tiny models and writes valid JSON (no timing is asserted)."""
import json
import os

import pytest
import timm
import torch

from pact_zoo import benchmark
from pact_zoo.halting import adaptive_stages, full_depth, halting_report, synthesize_halting

TINY_KWARGS = '{"layers": [3, 3, 3], "channels": [4, 8, 8]}'
TINY_ARGS = ["--model", "pact_resnet32", "--model-kwargs", TINY_KWARGS, "--input-size", "3,8,8", "--repeats", "1",
             "--warmup", "0", "--min-samples", "4", "--threads", "1", "--synthetic-samples", "32"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_cli_end_to_end_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "results" / "bench.json"
    rc = benchmark.main(TINY_ARGS + [
        "--synthetic-halting", "0", "--target-flops-ratio", "0.6", "--calibration-samples", "32",
        "--batch-sizes", "1,3", "--memory-batch-size", "4", "--memory-networks", "pact", "--train-batch-size", "4",
        "--train-repeats", "1", "--train-warmup", "0", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert [name for name in os.listdir(out.parent)] == ["bench.json"]  # no temporary file left behind
    assert result["model"] == "pact_resnet32" and result["method"] == "pact"
    assert result["calibration"]["flops_ratio"] <= 0.6
    assert result["threshold"] == pytest.approx(result["calibration"]["threshold"])
    assert [r["batch_size"] for r in result["eval"]] == [1, 3]
    for record in result["eval"]:
        assert set(record["median_s"]) == {"adaptive", "full", "masked"}
        assert all(t > 0 for t in record["median_s"].values())
        assert 0 < record["flops_ratio"] <= 1.0
        flops = record["flops_per_sample"]
        assert flops["adaptive_min"] <= flops["adaptive"] <= flops["adaptive_max"] <= flops["masked_executed"]
        assert flops["full"] < flops["masked_executed"]  # full depth = the plain computation, no head
        assert 0 < record["units_fraction"] <= 1 and record["distinct_depth_patterns"] >= 1
        assert record["max_abs_diff_adaptive_vs_masked"] <= 1e-5
        assert record["max_rel_diff_adaptive_vs_masked"] <= 1e-5
        assert record["same_units_adaptive_vs_masked"] is True
        assert record["efficiency"] == pytest.approx(record["time_ratio_adaptive"] / record["flops_ratio"])
        assert record["efficiency_target"] == benchmark.EFFICIENCY_TARGETS.get(record["batch_size"])
    assert set(result["memory"]) == {"pact"}  # one fresh process (each costs an import of torch + timm)
    assert result["memory"]["pact"]["allocator_peak_bytes"] > 0
    assert 0 < result["memory"]["pact"]["flops_ratio"] <= 1.0
    training = result["training"]
    assert list(training["median_s"]) == list(benchmark.DEFAULT_TRAIN_NETWORKS)
    medians, ratios = training["median_s"], training["ratios"]
    assert training["ratio"] == pytest.approx(medians["pact"] / medians["plain"])
    for name in ("pact", "pg", "pg_batch_mean"):
        assert ratios[f"{name}_vs_plain"] == pytest.approx(medians[name] / medians["plain"])
    for name in ("pg", "pg_batch_mean"):
        assert ratios[f"{name}_vs_pact"] == pytest.approx(medians[name] / medians["pact"])
        assert training["networks"][name].startswith("policy_gradient")
    assert training["units_fraction"]["plain"] == 1.0 and training["units_fraction"]["pact"] == 1.0  # dense
    assert training["units_fraction"]["pg"] < 1.0  # the sampled path runs fewer units
    printed = capsys.readouterr().out
    assert "efficiency" in printed and "peak memory" in printed and "training step" in printed
    assert "pg_batch_mean" in printed


def test_cli_threshold_and_mode_subset(tmp_path):
    out = tmp_path / "bench.json"
    rc = benchmark.main(TINY_ARGS + ["--threshold", "0.5", "--synthetic-halting", "1", "--batch-sizes", "2",
                                     "--modes", "adaptive,full", "--no-memory", "--no-training",
                                     "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["threshold"] == 0.5 and result["calibration"] is None
    assert set(result["eval"][0]["median_s"]) == {"adaptive", "full"}
    assert "memory" not in result and "training" not in result


def test_cli_imagenet_resnet_against_timm_backbone(tmp_path, capsys):
    """What the former scripts/measure_imagenet_resnet.py measured: an ImageNet ResNet with synthetic heads at a
    FLOPs budget, against timm's own backbone with the same weights (FLOPs and wall time); small input, fast."""
    out = tmp_path / "bench.json"
    rc = benchmark.main(["--model", "pact_resnet18", "--plain-model", "resnet18", "--input-size", "3,32,32",
                         "--model-kwargs", '{"zero_init_last": false}', "--synthetic-halting", "0",
                         "--synthetic-samples", "16", "--target-flops-ratio", "0.7", "--calibration-samples", "16",
                         "--batch-sizes", "2", "--min-samples", "2", "--repeats", "1", "--warmup", "0",
                         "--modes", "adaptive,full,plain", "--no-memory", "--no-training", "--threads", "1",
                         "--output", str(out)])
    assert rc == 0
    record = json.loads(out.read_text())["eval"][0]
    flops = record["flops_per_sample"]
    assert flops["plain"] == flops["full"]  # full depth of the adaptive model = timm's resnet18
    assert record["flops_vs_plain"]["adaptive"] == pytest.approx(record["flops_ratio"])
    assert set(record["time_vs_plain"]) == {"adaptive", "full", "plain"}
    assert record["efficiency_vs_plain"] == pytest.approx(record["time_vs_plain"]["adaptive"]
                                                          / record["flops_vs_plain"]["adaptive"])
    assert "plain network" in capsys.readouterr().out


def test_training_networks_share_weights_and_pg_samples_about_half():
    model = benchmark.create_model("pact_resnet32", {"layers": [3, 3, 3], "channels": [4, 8, 8], "tau": 0.02})
    benchmark.set_synthetic_heads(model, 0, (3, 8, 8), num_samples=32)
    networks = benchmark.build_training_networks(model, ["model", "plain", "pact", "pg", "pg_batch_mean"],
                                                 "pact_resnet32", {"layers": [3, 3, 3], "channels": [4, 8, 8],
                                                                   "temperature": 0.3},
                                                 None, 0, (3, 8, 8), synthetic_halting=0, synthetic_samples=32)
    assert networks["model"] is model
    assert not benchmark._stages(networks["plain"])
    torch.testing.assert_close(networks["plain"].stem.weight, model.stem.weight)
    torch.testing.assert_close(networks["pact"].stages[0].heads[0].fc.weight, model.stages[0].heads[0].fc.weight)
    assert networks["pact"].stages[0].method.temperature == 0.3
    for name, baseline in (("pg", "greedy"), ("pg_batch_mean", "batch_mean")):
        method = networks[name].stages[0].method
        assert not method.dense_training and method.baseline == baseline
        assert not hasattr(method, "temperature")  # PACT's knob is not handed to the twin
    result = benchmark.benchmark_training({k: networks[k] for k in ("plain", "pg", "pg_batch_mean")}, (3, 8, 8),
                                          batch_size=32, warmup=0, repeats=2, seed=0, channels_last=False)
    assert 0.3 < result["units_fraction"]["pg"] < 0.8, result["units_fraction"]
    assert 0.3 < result["units_fraction"]["pg_batch_mean"] < 0.8, result["units_fraction"]
    assert result["ratio"] is None and set(result["ratios"]) == {"pg_vs_plain", "pg_batch_mean_vs_plain"}


def test_time_round_robin_rotates_and_uses_contexts():
    calls, entered = [], []

    class Context:
        def __init__(self, name):
            self.name = name

        def __enter__(self):
            entered.append(self.name)

        def __exit__(self, *exc):
            return False

    runs = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = benchmark.time_round_robin(runs, warmup=1, repeats=2, contexts={"b": lambda: Context("b")})
    assert calls == list("abc" "bca" "cab")  # every round starts one entry later
    assert entered == ["b"] * 3
    assert {name: len(values) for name, values in times.items()} == {"a": 2, "b": 2, "c": 2}


def test_act_model_has_no_threshold_to_calibrate(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--model", "act_resnet32", "--model-kwargs", TINY_KWARGS, "--input-size", "3,8,8",
            "--target-flops-ratio", "0.5", "--output", str(out)]
    assert benchmark.main(args) == 2
    assert "threshold" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("network", ["act", "plain"])
def test_memory_probe_in_process(network):
    """The probe the subprocesses run (here in-process, to keep the test fast)."""
    kwargs = {"layers": [3, 3, 3], "channels": [4, 8, 8], "method": "act" if network == "act" else "none"}
    spec = {"model": "pact_resnet32", "kwargs": kwargs, "seed": 0, "input_shape": [3, 8, 8], "threads": 1,
            "batch_size": 4, "channels_last": False, "synthetic_halting": 0, "synthetic_samples": 32,
            "threshold": 0.5}
    result = benchmark._memory_probe(spec)
    assert result["allocator_peak_bytes"] > 0
    assert (result["flops_ratio"] is None) == (network == "plain")


@pytest.mark.parametrize("extra", [
    ["--modes", "adaptive,fast"],
    ["--memory-networks", "pact,gpu"],
    ["--train-networks", "plain,sgd"],
    ["--model-kwargs", "[1, 2]"],
])
def test_cli_rejects_bad_arguments(tmp_path, extra, capsys):
    out = tmp_path / "bench.json"
    try:
        status = benchmark.main(TINY_ARGS + extra + ["--output", str(out)])
    except SystemExit as exc:  # rejected by the parser (--model-kwargs is parsed as a YAML mapping there)
        status = exc.code
    assert status == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err


@pytest.mark.parametrize("extra", [["--batch-sizes", "0"], ["--threshold", "1.5"],
                                   ["--threshold", "0.5", "--target-flops-ratio", "0.5"]])
def test_parser_rejects_bad_values(extra):
    with pytest.raises(SystemExit):
        benchmark.build_parser().parse_args(extra)


def test_full_mode_is_the_cores_full_depth():
    model = timm.create_model("pact_resnet32", layers=(3, 3, 3), channels=(4, 8, 8)).eval()
    synthesize_halting(model, 0, (3, 8, 8), num_samples=32)
    x = torch.randn(5, 3, 8, 8)
    with torch.inference_mode():
        model(x)
        adaptive = halting_report(model)
        with benchmark.execution(model, "full"):
            assert all(not stage.halting for _, stage in adaptive_stages(model))
            model(x)
            full = halting_report(model)
        with full_depth(model):
            reference = model(x)
        with benchmark.execution(model, "full"):
            torch.testing.assert_close(model(x), reference, rtol=0, atol=0)
        assert all(stage.halting for _, stage in adaptive_stages(model))
    assert torch.all(full.units_executed == 3)
    assert torch.all(full.flops == adaptive.full_flops)  # no head FLOPs at full depth: the plain computation
    assert adaptive.units_executed.double().mean() < 3
    assert benchmark.executed_flops(model, (3, 8, 8)) > adaptive.full_flops  # masked: every head as well


def test_write_json_atomic_replaces(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    benchmark.write_json_atomic(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]


def test_cli_bucketed_process_clock_profile_default_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output goes under out/benchmarks/, not into the working directory
    rc = benchmark.main(TINY_ARGS + ["--threshold", "0.5", "--synthetic-halting", "0", "--batch-sizes", "5",
                                     "--modes", "adaptive,full,masked", "--buckets", "default", "--clock", "process",
                                     "--compaction-cost", "4", "--profile-batch-size", "3", "--no-memory",
                                     "--no-training"])
    assert rc == 0
    assert os.listdir(tmp_path) == ["out"]
    (written,) = (tmp_path / "out" / "benchmarks").iterdir()
    assert written.name.startswith("pact_resnet32-") and written.suffix == ".json"
    result = json.loads(written.read_text())
    assert result["buckets"][:4] == [1, 2, 4, 8] and result["clock"] == "process" and result["inputs"] == "image"
    assert [len(cost["row_seconds"]) for cost in result["compaction_costs"]] == [3, 3, 3]  # layers (3, 3, 3)
    record = result["eval"][0]
    assert record["max_abs_diff_adaptive_vs_masked"] <= 1e-5 and record["same_units_adaptive_vs_masked"] is True
    platform = result["platform"]
    assert platform["torch"] == torch.__version__ and platform["timm"] == timm.__version__
    assert platform["threads"] == 1 and len(platform["load_average"]) == 3 and platform["cpu_count"] >= 1
    assert "load_average_end" in platform and platform["machine"]
    profile = result["profile"]
    assert profile["batch_size"] == 3 and set(profile["modes"]) == {"adaptive", "full"}
    ops = {op["name"] for op in profile["modes"]["adaptive"]["ops"]}
    assert any("conv" in name for name in ops)


def test_cli_token_inputs_of_a_hugging_face_family(tmp_path):
    out = tmp_path / "bench.json"
    config = '{"vocab_size": 30, "hidden_size": 8, "input_size": 8, "max_ponder_steps": 3, "num_labels": 2}'
    rc = benchmark.main(["--model", "hf:PactLSTMForSequenceClassification", "--model-kwargs", config,
                         "--seq-len", "4", "--threshold", "0.04", "--batch-sizes", "3", "--repeats", "1",
                         "--warmup", "0", "--min-samples", "3", "--threads", "1", "--modes", "adaptive,full,masked",
                         "--no-memory", "--no-training", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["inputs"] == "tokens" and result["input_shape"] == [4]
    record = result["eval"][0]
    assert record["same_units_adaptive_vs_masked"] is True and record["max_abs_diff_adaptive_vs_masked"] <= 1e-5
    assert 0 < record["flops_ratio"] <= 1.0
    assert benchmark._twin_kwargs({"halting_knobs": {"tau": 0.1, "temperature": 0.5}}, "act", {}, hf=True) == {
        "method": "act", "halting_knobs": {"tau": 0.1}}


def test_clock_and_bucket_options():
    times = benchmark.time_round_robin({"a": lambda: sum(range(1000))}, warmup=0, repeats=2, clock="process")
    assert len(times["a"]) == 2 and all(t >= 0 for t in times["a"])
    with pytest.raises(ValueError, match="clock must be one of"):
        benchmark.time_round_robin({"a": lambda: None}, 0, 1, clock="cycles")
    with pytest.raises(ValueError, match="CUDA events"):
        benchmark._Stopwatch(torch.device("cuda"), "process")
    assert benchmark.parse_buckets(None) is None and benchmark.parse_buckets("1,4,8") == (1, 4, 8)
    with pytest.raises(ValueError, match="--buckets"):
        benchmark.parse_buckets("8,4")
    assert benchmark.default_output_path("hf:X/y").startswith(os.path.join("out", "benchmarks", "hf_X_y-"))


@pytest.mark.parametrize("extra", [["--cuda-graphs"], ["--buckets", "0,2"], ["--inputs", "tokens"]])
def test_cli_rejects_bad_speed_options(tmp_path, extra, capsys):
    rc = benchmark.main(TINY_ARGS + ["--no-memory", "--no-training", "--output", str(tmp_path / "b.json")] + extra)
    assert rc == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "b.json").exists()


def test_one_batch_adapter_and_one_flops_tally():
    """run_model takes every batch kind the callers feed; measure_flops' ratio is the report's over the same samples."""
    from pact_zoo.acm import default_forward
    from pact_zoo.bench import run_model
    from pact_zoo.halting import FlopsTally, measure_flops

    model = timm.create_model("pact_resnet32", layers=(3, 3, 3), channels=(4, 8, 8)).eval()
    synthesize_halting(model, 0, (3, 8, 8), num_samples=32)
    x = torch.randn(6, 3, 8, 8)
    with torch.inference_mode():
        reference = model(x)
        for batch in (x, (x, torch.zeros(6)), [x], {"pixel_values": x, "labels": torch.zeros(6)}):
            torch.testing.assert_close(run_model(model, batch), reference, rtol=0, atol=0)
            torch.testing.assert_close(default_forward(model, batch), reference, rtol=0, atol=0)
        with pytest.raises(TypeError, match="dataloader"):
            run_model(model, "not a batch")
        model(x)
        report = halting_report(model)
    tally = measure_flops(model, [x[:4], x[4:]], keep_samples=True)
    assert tally.ratio == pytest.approx(report.flops_ratio, rel=1e-12) and tally.num_samples == 6
    flops, units = tally.samples()
    assert torch.equal(flops, report.flops.double()) and torch.equal(units, report.units_executed)
    assert FlopsTally().ratio is None


def test_compared_networks_come_from_the_method_registry():
    from pact_zoo import bench
    from pact_zoo.halting import HALTING_METHODS

    heads = [name for name, cls in HALTING_METHODS.items() if cls.uses_heads and not cls.reads_exits]
    assert list(bench.head_methods()) == heads and {"pact", "act", "policy_gradient"} <= set(heads)
    assert bench.plain_method() == "none"
    assert set(heads) | {"model", "plain", "pg", "pg_batch_mean"} == set(bench.train_networks())
    assert set(heads) | {"plain"} == set(bench.memory_networks())
    assert set(benchmark.DEFAULT_TRAIN_NETWORKS) <= set(benchmark.TRAIN_NETWORKS)


def test_cli_both_clocks_with_their_threads_and_load(tmp_path, capsys):
    """--clock both (the default): wall time at the given threads, then process CPU time at one thread, each with its
    medians, ratios against full depth and the 1-minute load before and after, in the JSON and the printed table."""
    out = tmp_path / "bench.json"
    rc = benchmark.main(TINY_ARGS + ["--threads", "2", "--repeats", "2", "--threshold", "0.5",
                                     "--synthetic-halting", "0", "--batch-sizes", "1,2", "--modes", "adaptive,full",
                                     "--no-memory", "--no-training", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["clock"] == "both"
    assert result["clocks"] == [{"clock": "wall", "threads": 2}, {"clock": "process", "threads": 1}]
    for record in result["eval"]:
        assert list(record["clocks"]) == ["wall", "process"]
        wall, process = record["clocks"]["wall"], record["clocks"]["process"]
        assert (wall["threads"], process["threads"]) == (2, 1) and record["threads"] == 2
        assert record["median_s"] == wall["median_s"] and record["efficiency"] == wall["efficiency"]
        for timing in (wall, process):
            assert set(timing["median_s"]) == {"adaptive", "full"} and len(timing["times_s"]["full"]) == 2
            assert timing["efficiency"] == pytest.approx(timing["median_s"]["adaptive"] / timing["median_s"]["full"]
                                                         / record["flops_ratio"])
            assert len(timing["load_average_before"]) == 3 and len(timing["load_average_after"]) == 3
    assert torch.get_num_threads() == 2  # the run's thread count is restored after the one-thread timing
    printed = capsys.readouterr().out
    assert "process CPU time, 1 thread" in printed and "wall time, 2 threads" in printed and "load" in printed


def test_cli_compiled_modes_time_compiled_units_against_the_compiled_plain_network(tmp_path, capsys):
    """``--modes compiled,...``: the model under torch.compile (units compiled one by one, eager halting) runs the
    depths of eager compact evaluation; the dense copy and the plain network are compiled whole; each compiled
    mode's first call is timed on its own (eager backend: fast)."""
    out = tmp_path / "bench.json"
    rc = benchmark.main(TINY_ARGS + [
        "--synthetic-halting", "0", "--threshold", "0.5", "--batch-sizes", "3", "--no-memory", "--no-training",
        "--modes", "adaptive,plain,compiled,compiled_dense,compiled_plain", "--compile-options", "{backend: eager}",
        "--clock", "wall", "--output", str(out)])
    assert rc == 0
    record = json.loads(out.read_text())["eval"][0]
    assert set(record["median_s"]) == {"adaptive", "plain", "compiled", "compiled_dense", "compiled_plain"}
    assert set(record["first_call_s"]) == {"compiled", "compiled_dense", "compiled_plain"}
    assert all(seconds > 0 for seconds in record["first_call_s"].values())
    assert record["compiled_same_units"] is True and record["max_abs_diff_compiled_vs_adaptive"] <= 1e-5
    assert record["efficiency_compiled_vs_compiled_plain"] == pytest.approx(
        record["time_compiled_vs_compiled_plain"] / record["flops_vs_plain"]["adaptive"])
    assert "compiled vs compiled plain" in capsys.readouterr().out


def test_compiled_plain_mode_needs_the_plain_network():
    model = timm.create_model("pact_resnet32", layers=[3, 3, 3], channels=[4, 8, 8]).eval()
    with pytest.raises(ValueError, match="compiled_plain"):
        benchmark.benchmark_eval(model, (3, 8, 8), [2], 0, 1, 2, 0, False, modes=("adaptive", "compiled_plain"))
