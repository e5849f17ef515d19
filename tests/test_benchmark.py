"""The benchmark harness runs end to end on a tiny model and writes valid JSON (no timing is asserted)."""
import json
import os

import pytest
import timm
import torch

from pact_zoo import benchmark
from pact_zoo.halting import halting_report

TINY_ARGS = ["--model", "pact_resnet32", "--model-kwargs", '{"layers": [3, 3, 3], "channels": [4, 8, 8]}',
             "--input-size", "3,8,8", "--repeats", "1", "--warmup", "0", "--min-samples", "4", "--threads", "1"]


def test_cli_end_to_end_writes_valid_json(tmp_path, capsys):
    out = tmp_path / "results" / "bench.json"
    rc = benchmark.main(TINY_ARGS + [
        "--synthetic-halting", "0", "--target-flops-ratio", "0.6", "--calibration-samples", "32",
        "--batch-sizes", "1,3", "--memory-batch-size", "4", "--memory-networks", "pact", "--train-batch-size", "4", "--train-repeats", "1",
        "--output", str(out)])
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
        assert 0 < record["flops_ratio"] <= 1.2
        assert record["max_abs_diff_adaptive_vs_masked"] <= 1e-5
        assert record["max_rel_diff_adaptive_vs_masked"] <= 1e-5
        assert record["same_units_adaptive_vs_masked"] is True
        assert record["efficiency"] == pytest.approx(record["time_ratio_adaptive"] / record["flops_ratio"])
        assert record["efficiency_target"] == benchmark.EFFICIENCY_TARGETS.get(record["batch_size"])
    assert set(result["memory"]) == {"pact"}  # one fresh process (each costs an import of torch + timm)
    assert result["memory"]["pact"]["allocator_peak_bytes"] > 0
    assert 0 < result["memory"]["pact"]["flops_ratio"] <= 1.2
    training = result["training"]
    assert training["ratio"] == pytest.approx(training["median_s"]["adaptive"] / training["median_s"]["plain"])
    printed = capsys.readouterr().out
    assert "efficiency" in printed and "peak memory" in printed and "training step" in printed


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


@pytest.mark.parametrize("network", ["act", "plain"])
def test_memory_probe_in_process(network):
    """The probe the subprocesses run (here in-process, to keep the test fast)."""
    kwargs = {"layers": [3, 3, 3], "channels": [4, 8, 8], "method": "act" if network == "act" else "none"}
    spec = {"model": "pact_resnet32", "kwargs": kwargs, "seed": 0, "input_shape": [3, 8, 8], "threads": 1,
            "batch_size": 4, "channels_last": False, "synthetic_halting": 0, "threshold": 0.5}
    threads = torch.get_num_threads()
    try:
        result = benchmark._memory_probe(spec)
    finally:
        torch.set_num_threads(threads)
    assert result["allocator_peak_bytes"] > 0
    assert (result["flops_ratio"] is None) == (network == "plain")


@pytest.mark.parametrize("extra", [
    ["--modes", "adaptive,fast"],
    ["--memory-networks", "pact,gpu"],
    ["--model-kwargs", "[1, 2]"],
])
def test_cli_rejects_bad_arguments(tmp_path, extra, capsys):
    out = tmp_path / "bench.json"
    assert benchmark.main(TINY_ARGS + extra + ["--output", str(out)]) == 2
    assert not out.exists()
    assert "pact-zoo benchmark:" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--batch-sizes", "0"], ["--threshold", "1.5"],
                                   ["--threshold", "0.5", "--target-flops-ratio", "0.5"]])
def test_parser_rejects_bad_values(extra):
    with pytest.raises(SystemExit):
        benchmark.build_parser().parse_args(extra)


def test_full_depth_runs_every_unit_without_heads():
    model = timm.create_model("pact_resnet32", layers=(3, 3, 3), channels=(4, 8, 8)).eval()
    benchmark.synthesize_halting(model, 0, (3, 8, 8), num_samples=32)
    x = torch.randn(5, 3, 8, 8)
    with torch.inference_mode():
        model(x)
        adaptive = halting_report(model)
        with benchmark.full_depth(model):
            model(x)
            full = halting_report(model)
        assert all(s.heads is not None for s in model.stages)
    assert torch.all(full.units_executed == 3)
    assert full.flops[0] < adaptive.full_flops  # no head FLOPs at full depth
    assert adaptive.units_executed.double().mean() < 3


def test_write_json_atomic_replaces(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    benchmark.write_json_atomic(str(path), {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["out.json"]
