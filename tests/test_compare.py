"""``pact-zoo compare``: entries trained, converted or loaded, evaluated on one split; table, JSON and plot."""
from __future__ import annotations

import json

import pytest
import yaml

from pact_zoo.training.config import ConfigError

TINY = dict(dataset="digits", max_train_samples=48, max_eval_samples=40, epochs=1, batch_size=16,
            eval_batch_size=40, lr=0.05, augment="none", eval_thresholds=[0.5])
SMALL = {"layers": [2, 2, 2], "channels": [4, 8, 8]}


def _recipes(tmp_path):
    (tmp_path / "plain.yaml").write_text(yaml.safe_dump(dict(TINY, model="resnet32_cifar", model_kwargs=SMALL)))
    (tmp_path / "pact.yaml").write_text(yaml.safe_dump(dict(TINY, model="pact_resnet32",
                                                            model_kwargs=dict(SMALL, tau=0.05))))
    recipe = dict(output_dir=str(tmp_path / "compare"),
                  evaluation=dict(dataset="digits", max_eval_samples=40, eval_batch_size=40),
                  thresholds=[0.3, 0.7], baseline="plain",
                  entries=[dict(name="plain", train=str(tmp_path / "plain.yaml")),
                           dict(name="pact", train=str(tmp_path / "pact.yaml"), overrides={"seed": 1}),
                           dict(name="again", model_dir=str(tmp_path / "compare" / "pact" / "model"),
                                thresholds=[0.5])])
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(recipe))
    return tmp_path / "compare.yaml"


def test_compare_trains_evaluates_and_tabulates(tmp_path, reset_accelerate, capsys):
    from pact_zoo.cli import main

    recipe = _recipes(tmp_path)
    assert main(["compare", "--config", str(recipe)]) == 0
    out = tmp_path / "compare"
    summary = json.loads((out / "comparison.json").read_text())
    rows = summary["rows"]
    assert {row["entry"] for row in rows} == {"plain", "pact", "again"}
    plain_full = next(r for r in rows if r["entry"] == "plain" and r["rule"] == "full_depth")
    assert plain_full["flops_vs_baseline"] == pytest.approx(1.0)
    pact = [r for r in rows if r["entry"] == "pact" and r["rule"] == "pact"]
    assert sorted(r["threshold"] for r in pact) == [0.3, 0.5, 0.7]  # the recipe's thresholds and the own rule
    assert all(r["num_samples"] == 40 and 0 <= r["stderr"] <= 0.5 for r in rows)
    own = next(r for r in pact if r["threshold"] == 0.5)
    assert own["depth_away_from_mode"] is not None and len(own["depth_away_from_mode"]) == 3
    again = [r for r in rows if r["entry"] == "again" and r["rule"] == "pact"]
    assert [r["accuracy"] for r in again] == [own["accuracy"]]  # the same folder gives the same numbers
    assert json.loads((out / "pact" / "train_config.json").read_text())["seed"] == 1
    table = (out / "comparison.md").read_text()
    assert table.startswith("| entry | rule | threshold | accuracy (%) |") and "FLOPs vs plain" in table
    assert (out / "comparison.png").stat().st_size > 0
    mtime = (out / "pact" / "model" / "model.safetensors").stat().st_mtime_ns
    assert main(["compare", "--config", str(recipe)]) == 0  # finished runs are kept, only evaluated again
    assert (out / "pact" / "model" / "model.safetensors").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("change, message", [
    (dict(entries=[]), "entries must be a non-empty list"),
    (dict(entries=[dict(name="a", train="missing.yaml")]), "train must name an existing recipe file"),
    (dict(entries=[dict(name="a", model_dir="m", train="x")]), "needs exactly one of train, convert, model_dir"),
    (dict(evaluation={"max_eval_samples": 3}), "evaluation must be a mapping with a dataset"),
    (dict(baseline="nobody"), "baseline must name an entry"),
    (dict(thresholds=[0.0]), "thresholds must be a list of numbers in"),
    (dict(seeds=3), "unknown key"),
])
def test_comparison_recipe_errors_name_the_problem(tmp_path, change, message):
    from pact_zoo.training.compare import load_comparison

    recipe = yaml.safe_load(_recipes(tmp_path).read_text())
    recipe.update(change)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=message):
        load_comparison(str(tmp_path / "bad.yaml"))
