"""``pact-zoo compare`` on PACT-LSTMs: step budgets (``max_steps``), warm starts from an earlier entry (``init_from``)
and the depth per value of a per-sample property (``depth_by``), on tiny generated parity data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from pact_zoo.training.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
PARITY = dict(dataset="parity", dataset_kwargs={"vector_size": 4, "train_samples": 64, "test_samples": 48})
TINY = dict(PARITY, model="pact_lstm", batch_size=16, eval_batch_size=48, optimizer="adamw", lr=0.01,
            weight_decay=0.0, schedule="constant", eval_thresholds=[0.5], max_steps=3)
PLAIN = {"hidden_size": 8, "max_ponder_steps": 1, "method": "none"}
PACT = {"hidden_size": 8, "max_ponder_steps": 3, "method": "pact", "tau": 0.01, "halting_bias_init": 2.0}


def _recipe(tmp_path: Path, **changes) -> Path:
    """A comparison of a plain LSTM and a PACT-LSTM warm-started from it, broken down by parity's k."""
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(dict(TINY, model_kwargs=PLAIN)))
    recipe = dict(output_dir=str(tmp_path / "compare"), evaluation=dict(PARITY, eval_batch_size=48), baseline="plain",
                  depth_by="num_nonzero",
                  entries=[dict(name="plain", train=str(tmp_path / "train.yaml")),
                           dict(name="warm", train=str(tmp_path / "train.yaml"), init_from="plain",
                                overrides={"model_kwargs": PACT})])
    recipe.update(changes)
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path / "compare.yaml"


def test_max_steps_cuts_the_last_epoch_and_a_finished_run_resumes_as_a_no_op(tmp_path, reset_accelerate, capsys):
    from pact_zoo.training.loop import train

    config = load_config(None, dict(TINY, model_kwargs=PACT, max_steps=6, output_dir=str(tmp_path / "run")))
    metrics = train(config)  # 64 rows / batch 16: 4 steps an epoch, so 2 epochs, the second one of 2 steps
    assert (metrics["epoch"], metrics["step"]) == (2, 6)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [4, 6]
    assert train(config, resume=True) == metrics
    assert "has finished all 6 steps" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="max_steps must be >= 1 optimiser step"):
        load_config(None, dict(TINY, max_steps=0))


def test_weights_load_with_fresh_halting_heads(tmp_path):
    from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification
    from pact_zoo.training.tasks import load_weights_fresh_heads

    def build(**kwargs):
        return PactLSTMForSequenceClassification(PactLSTMConfig(input_size=4, num_labels=2, **kwargs))

    source = build(**dict(PACT, halting_bias_init=-1.0))
    source.save_pretrained(tmp_path / "source")
    target = build(**PACT)
    fresh = target.pact_lstm.layers[0].halting_head.fc.weight.clone()
    left = load_weights_fresh_heads(target, str(tmp_path / "source"))
    assert left == ["pact_lstm.layers.0.halting_head.fc.bias", "pact_lstm.layers.0.halting_head.fc.weight"]
    assert torch.equal(target.classifier.weight, source.classifier.weight)
    assert torch.equal(target.pact_lstm.layers[0].cell.weight_hh, source.pact_lstm.layers[0].cell.weight_hh)
    head = target.pact_lstm.layers[0].halting_head.fc
    assert torch.equal(head.weight, fresh) and torch.all(head.bias == 2.0)  # the source's head (bias -1) is not read
    with pytest.raises(ConfigError, match="does not fit"):
        load_weights_fresh_heads(build(**dict(PACT, hidden_size=6)), str(tmp_path / "source"))
    with pytest.raises(FileNotFoundError, match="pretrained_file not found"):
        load_weights_fresh_heads(target, str(tmp_path / "missing"))


def test_warm_start_and_depth_breakdown(tmp_path, reset_accelerate):
    """The warm entry starts from the plain entry's trained weights (its halting head at its own init); the
    breakdown by k covers every test vector once per rule and agrees with the comparison's rows."""
    from pact_zoo.training.compare import compare, load_comparison
    from pact_zoo.training.io import load_model_folder
    from pact_zoo.training.tasks import build_task

    comparison = load_comparison(str(_recipe(tmp_path)))
    plain, warm = comparison.entries
    assert warm.init_from == "plain" and warm.overrides["pretrained_file"] == str(plain.run_dir / "model")
    plain.make()
    trained = load_model_folder(plain.run_dir / "model")
    start = build_task(load_config(warm.path, warm.overrides)).build_model(2)  # before any training step
    for name in ("pact_lstm.layers.0.cell.weight_ih", "classifier.weight"):
        assert torch.equal(start.state_dict()[name], trained.state_dict()[name]), name
    assert torch.all(start.pact_lstm.layers[0].halting_head.fc.bias == 2.0)

    summary = compare(comparison)
    out = tmp_path / "compare"
    assert json.loads((out / "warm" / "train_config.json").read_text())["pretrained_file"] == str(plain.run_dir /
                                                                                                   "model")
    breakdown = json.loads((out / "comparison.json").read_text())["depth_by"]
    assert breakdown == json.loads(json.dumps(summary["depth_by"])) and breakdown["property"] == "num_nonzero"
    assert {(c["entry"], c["rule"]) for c in breakdown["correlations"]} == {
        ("plain", "full_depth"), ("warm", "pact"), ("warm", "pact:sampled")}
    assert next(c for c in breakdown["correlations"] if c["entry"] == "plain")["pearson"] is None  # always 1 step
    for entry, rule in (("plain", "full_depth"), ("warm", "pact")):
        rows = [r for r in breakdown["rows"] if (r["entry"], r["rule"]) == (entry, rule)]
        assert [r["value"] for r in rows] == [1, 2, 3, 4] and sum(r["n"] for r in rows) == 48
        point = next(r for r in summary["rows"] if r["entry"] == entry and r["rule"] == rule)
        mean_units = sum(r["mean_units"][0] * r["n"] for r in rows) / 48
        accuracy = sum(r["accuracy"] * r["n"] for r in rows) / 48
        assert mean_units == pytest.approx(point["mean_units"][0]) and accuracy == pytest.approx(point["accuracy"])
    assert all(r["mean_units"] == [1.0] for r in breakdown["rows"] if r["entry"] == "plain")
    table = (out / "comparison.md").read_text()
    assert "Mean units executed per num_nonzero" in table
    assert "| **r(units, num_nonzero)** | | n/a (constant) |" in table
    assert "with sampled stops" in table and (out / "depth_by.png").stat().st_size > 0


@pytest.mark.parametrize("changes, message", [
    (dict(depth_by=3), "depth_by must name a per-sample property of the evaluation split"),
    (dict(entries=[dict(name="warm", train="{tmp}/train.yaml", init_from="plain"),
                   dict(name="plain", train="{tmp}/train.yaml")]), "init_from must name one earlier entry"),
    (dict(entries=[dict(name="plain", train="{tmp}/train.yaml"),
                   dict(name="warm", model_dir="{tmp}", init_from="plain")]), "init_from needs a train entry"),
    (dict(entries=[dict(name="plain", train="{tmp}/train.yaml"),
                   dict(name="warm", train="{tmp}/train.yaml", init_from="plain",
                        overrides={"pretrained_file": "{tmp}"})]), "init_from and pretrained_file both"),
    (dict(baseline=None, entries=[dict(name="plain", train="{tmp}/train.yaml", grid={"seed": [0, 1]}),
                                  dict(name="warm", train="{tmp}/train.yaml", init_from="plain")]),
     r"init_from must name one earlier entry.*\(plain-seed0, plain-seed1\), got 'plain'"),
])
def test_recipe_errors_name_the_key(tmp_path, changes, message):
    from pact_zoo.training.compare import load_comparison

    changes = json.loads(json.dumps(changes).replace("{tmp}", str(tmp_path)))
    with pytest.raises(ConfigError, match=message):
        load_comparison(str(_recipe(tmp_path, **changes)))


def test_a_seed_grid_warm_starts_each_seed_from_the_source_of_its_own_seed(tmp_path):
    from pact_zoo.training.compare import load_comparison, select_entries

    entries = [dict(name="plain", train=str(tmp_path / "train.yaml"), grid={"seed": [0, 1]}),
               dict(name="warm", train=str(tmp_path / "train.yaml"), init_from="plain", grid={"seed": [0, 1]},
                    overrides={"model_kwargs": PACT})]
    comparison = load_comparison(str(_recipe(tmp_path, baseline=None, entries=entries)))
    runs = {e.name: e for e in comparison.entries}
    for seed in (0, 1):
        warm = runs[f"warm-seed{seed}"]
        assert warm.init_from == f"plain-seed{seed}"
        assert warm.overrides["pretrained_file"] == str(runs[f"plain-seed{seed}"].model_dir())
    assert [e.name for e in select_entries(comparison, ["warm-seed1"]).entries] == ["plain-seed1", "warm-seed1"]


def test_a_property_the_task_lacks_fails_before_training(tmp_path):
    from pact_zoo.training.compare import compare, load_comparison

    with pytest.raises(ConfigError, match=r"per-sample property of the evaluation split \(num_nonzero\), got 'k'"):
        compare(load_comparison(str(_recipe(tmp_path, depth_by="k"))))
    assert not (tmp_path / "compare").exists()


def test_entries_flag_keeps_the_warm_start_source(tmp_path):
    from pact_zoo.training.compare import load_comparison, select_entries

    comparison = load_comparison(str(_recipe(tmp_path, baseline=None)))
    selected = select_entries(comparison, ["warm"])
    assert [e.name for e in selected.entries] == ["plain", "warm"] and selected.depth_by == "num_nonzero"


def test_the_lstm_recipes_replace_the_script(monkeypatch):
    """The parity recipe sweeps tau for PACT (two entropy weights) and ACT beside a one-step LSTM, broken down by
    k; the MNIST-1D recipe, five seeds per entry, warm-starts each PACT seed from the plain LSTM of its seed."""
    from pact_zoo.training.compare import load_comparison

    monkeypatch.chdir(REPO)
    parity = load_comparison("hub_configs/pact_lstm.parity/compare_parity.yaml")
    assert parity.depth_by == "num_nonzero" and len(parity.entries) == 10
    assert {e.overrides["max_steps"] for e in parity.entries} == {5000}
    mnist = {e.name: e for e in load_comparison("hub_configs/pact_lstm.parity/compare_mnist1d.yaml").entries}
    assert len(mnist) == 20  # four entries, five seeds each
    for seed in range(5):
        assert mnist[f"pact_warm-seed{seed}"].init_from == f"lstm-seed{seed}"
        assert load_config(mnist[f"lstm_2000-seed{seed}"].path, mnist[f"lstm_2000-seed{seed}"].overrides).max_steps \
            == 2000


def test_a_data_seed_in_dataset_kwargs_is_the_datas_own():
    """MNIST-1D's recipes fix the data set with ``dataset_kwargs: {seed: 42}`` whatever the run's seed."""
    from pact_zoo.training.tasks import build_task

    def first_input(run_seed, data_seed):
        config = load_config(None, dict(model="pact_lstm", dataset="mnist1d", seed=run_seed, output_dir="unused",
                                        dataset_kwargs={"num_samples": 100, "seed": data_seed}))
        return build_task(config)._load_splits()[0][0]["inputs_embeds"]

    assert first_input(0, 42) == first_input(1, 42) != first_input(0, 43)
