"""``pact-zoo compare``: entries trained, converted or loaded, evaluated on one split; table, JSON and plot."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import yaml

import pact_zoo

from pact_zoo.training.config import ConfigError

TINY = dict(dataset="digits", max_train_samples=48, max_eval_samples=40, epochs=1, batch_size=16,
            eval_batch_size=40, lr=0.05, augment="none", eval_thresholds=[0.5])
SMALL = {"layers": [2, 2, 2], "channels": [4, 8, 8]}
REPO = Path(__file__).resolve().parents[1]
#: the shipped comparison recipes (a recipe with entries and an evaluation split), relative to the repository
SHIPPED = sorted(str(p.relative_to(REPO)) for p in (REPO / "hub_configs").glob("*/*.yaml")
                 if {"entries", "evaluation"} <= set(yaml.safe_load(p.read_text()) or {}))


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
    (dict(entries=[dict(name="a/b", model_dir="m")]), "letters, digits"),
    (dict(entries=[dict(name="a", model_dir="m", grid={"seed": [0, 1]})]), "not for model_dir entries"),
    (dict(entries=[dict(name="a", model_dir="m", budgets=[1.5])]), "budgets must be a list of numbers in"),
    (dict(calibration_samples=0), "calibration_samples must be a positive integer"),
    (dict(overrides=[1]), "overrides must be a mapping"),
    (dict(entries=[dict(name="a", model_dir="m", truncations=[[0, 1]])]), "truncations must be every_depth or"),
    (dict(timing={"batch_sizes": []}), "timing.batch_sizes must be a non-empty list"),
    (dict(timing={"clock": "cycles"}), "timing.clock must be one of"),
    (dict(timing={"batches": [1]}), "timing must be a mapping of any of"),
    (dict(entries=[dict(name="a", model_dir="m", methods={"nonsense": [0.5]})]),
     "methods names nonsense; the registered halting methods are .*confidence.*entropy.*patience"),
    (dict(entries=[dict(name="a", model_dir="m", methods=["entropy"])]), "methods must map halting methods to lists"),
    (dict(entries=[dict(name="a", model_dir="m", methods={})]), "methods must map halting methods to lists"),
    (dict(entries=[dict(name="a", model_dir="m", methods={"entropy": [1.5]})]),
     r"methods.entropy must be a list of numbers in \(0, 1\]"),
    (dict(entries=[dict(name="a", model_dir="m", methods={"entropy": 0.5})]), "methods.entropy must be a list"),
])
def test_comparison_recipe_errors_name_the_problem(tmp_path, change, message):
    from pact_zoo.training.compare import load_comparison

    recipe = yaml.safe_load(_recipes(tmp_path).read_text())
    recipe.update(change)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=message):
        load_comparison(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize("entry, message", [
    (dict(grid={"seed": []}), "grid must map recipe fields to non-empty lists"),
    (dict(grid={"model_kwargs.tau": [0.1, 0.1]}), "entry names must be distinct"),
    (dict(overrides={"epoch": 3}), "epoch"),
    (dict(grid={"dataset": ["parquet:data/x"]}), "folder name"),  # the training config is checked at load time
])
def test_grid_and_override_errors_name_the_problem(tmp_path, entry, message):
    from pact_zoo.training.compare import load_comparison

    _recipes(tmp_path)
    recipe = dict(evaluation=dict(dataset="digits"),
                  entries=[dict(name="pact", train=str(tmp_path / "pact.yaml"), **entry)])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=message):
        load_comparison(str(tmp_path / "bad.yaml"))


def test_grid_expands_to_named_entries_with_seed_groups(tmp_path):
    from pact_zoo.training.compare import load_comparison

    _recipes(tmp_path)
    recipe = dict(evaluation=dict(dataset="digits"), overrides={"epochs": 2, "model_kwargs.tau": 0.2},
                  entries=[dict(name="pact", train=str(tmp_path / "pact.yaml"),
                                grid={"model_kwargs.tau": [0.05, 0.1], "seed": [0, 1]}),
                           dict(name="static", train=str(tmp_path / "plain.yaml"),
                                grid={"model": ["resnet8_cifar", "resnet14_cifar"]}),
                           dict(name="plain", train=str(tmp_path / "plain.yaml"), overrides={"lr": 0.1})])
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(recipe))
    comparison = load_comparison(str(tmp_path / "grid.yaml"), str(tmp_path / "out"))
    by_name = {e.name: e for e in comparison.entries}
    assert list(by_name) == ["pact-tau0.05-seed0", "pact-tau0.05-seed1", "pact-tau0.1-seed0", "pact-tau0.1-seed1",
                             "static-resnet8_cifar", "static-resnet14_cifar", "plain"]
    assert by_name["static-resnet14_cifar"].overrides["model"] == "resnet14_cifar"
    assert by_name["static-resnet14_cifar"].group == "static-resnet14_cifar"  # no seed grid: a group of one
    entry = by_name["pact-tau0.1-seed1"]
    assert entry.group == "pact-tau0.1" and entry.seed == 1 and entry.run_dir == tmp_path / "out" / entry.name
    # the dotted key set tau and kept the recipe file's other model_kwargs; the recipe-wide epochs reached every entry
    assert entry.overrides["model_kwargs"] == dict(SMALL, tau=0.1) and entry.overrides["epochs"] == 2
    plain = by_name["plain"]
    assert plain.group == "plain" and plain.overrides["lr"] == 0.1
    assert plain.overrides["model_kwargs"] == dict(SMALL, tau=0.2)  # what the recipe-wide dotted key asked for


def test_overrides_replace_fields_and_dotted_keys_set_one_key():
    from pact_zoo.training.compare import apply_overrides

    recipe = {"model_kwargs": {"tau": 0.1, "temperature": 0.5}, "lr": 0.1}
    assert apply_overrides(recipe, {"model_kwargs": {"act_eps": 0.01}}, "r") == {"model_kwargs": {"act_eps": 0.01},
                                                                                 "lr": 0.1}
    assert apply_overrides(recipe, {"model_kwargs.tau": 0.3, "lr": 0.2}, "r") == {
        "model_kwargs": {"tau": 0.3, "temperature": 0.5}, "lr": 0.2}
    assert recipe["model_kwargs"]["tau"] == 0.1  # the recipe itself is left alone
    with pytest.raises(ConfigError, match="one key of a mapping field"):
        apply_overrides(recipe, {"lr.x": 1}, "r")
    conversion = {"lr": 0.1, "phases": [{"name": "gates", "lr": 0.01}, {"name": "end_to_end", "acm_budget": 0.5}]}
    changed = apply_overrides(conversion, {"phases.end_to_end.acm_budget": 0.25}, "r")
    assert changed["phases"] == [{"name": "gates", "lr": 0.01}, {"name": "end_to_end", "acm_budget": 0.25}]
    assert conversion["phases"][1]["acm_budget"] == 0.5
    with pytest.raises(ConfigError, match="must name a phase of the conversion recipe .gates, end_to_end."):
        apply_overrides(conversion, {"phases.halting.lr": 0.1}, "r")


def test_seed_groups_average_the_same_point_over_seeds():
    from pact_zoo.training.compare_report import format_seed_groups, seed_groups

    def row(entry, group, point, accuracy, mflops):
        return dict(entry=entry, group=group, point=point, accuracy=accuracy, mflops=mflops,
                    flops_vs_baseline=mflops / 10)

    rows = [row("a-seed0", "a", "pact @ 0.5", 0.8, 4.0), row("a-seed0", "a", "full_depth", 0.9, 10.0),
            row("a-seed1", "a", "pact @ 0.5", 0.7, 6.0), row("a-seed1", "a", "full_depth", 0.9, 10.0),
            row("a-seed1", "a", "pact @ 0.3", 0.6, 3.0),  # one seed only: no mean
            row("b", "b", "full_depth", 0.5, 10.0)]       # alone in its group: no mean
    groups = seed_groups(rows, {"a-seed0": 0, "a-seed1": 1, "b": 0})
    assert [(g["group"], g["point"]) for g in groups] == [("a", "pact @ 0.5"), ("a", "full_depth")]
    first = groups[0]
    assert first["seeds"] == [0, 1] and first["accuracy_mean"] == pytest.approx(0.75)
    assert first["accuracy_std"] == pytest.approx(0.0707107, rel=1e-5)  # sample standard deviation
    assert first["mflops_mean"] == pytest.approx(5.0) and first["flops_vs_baseline_std"] == pytest.approx(0.1414214)
    assert groups[1]["accuracy_std"] == 0.0
    assert "| a | pact @ 0.5 | 2 | 75.00 ± 7.07 | 5.00 ± 1.41 | 0.500 ± 0.141 |" in format_seed_groups(groups, "b")


def test_compare_grid_with_seeds_and_budgets(tmp_path, reset_accelerate, monkeypatch):
    """A seed grid over one recipe plus thresholds calibrated to a FLOPs budget: rows per seed, a mean over the
    seeds of every point (the budget's included), the training time of every trained entry, and the measured time
    per sample of every entry (adaptive ones also at full depth). Every entry's model is loaded once for all its
    steps, and calibrating a budget leaves the model's own threshold as it was."""
    from pact_zoo.halting import adaptive_stages
    from pact_zoo.training import compare_steps
    from pact_zoo.training.compare import compare, load_comparison

    loads, load = [], compare_steps.load_model_folder
    monkeypatch.setattr(compare_steps, "load_model_folder", lambda path: loads.append(str(path)) or load(path))

    _recipes(tmp_path)
    recipe = dict(evaluation=dict(dataset="digits", max_eval_samples=40, eval_batch_size=40), thresholds=[0.5],
                  baseline="plain", calibration_samples=32,
                  entries=[dict(name="plain", train=str(tmp_path / "plain.yaml")),
                           dict(name="pact", train=str(tmp_path / "pact.yaml"), grid={"seed": [0, 1]},
                                budgets=[0.6], truncations="every_depth")],
                  timing=dict(batch_sizes=[1, 8], samples=8, repeats=1, warmup=0))
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(recipe))
    summary = compare(load_comparison(str(tmp_path / "grid.yaml"), str(tmp_path / "out")))
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["seed_groups"] == json.loads(json.dumps(summary["seed_groups"]))
    rows = saved["rows"]
    for seed in (0, 1):
        name = f"pact-seed{seed}"
        assert json.loads((tmp_path / "out" / name / "train_config.json").read_text())["seed"] == seed
        (calibration,) = saved["entries"][name]["budgets"]
        budget_rows = [r for r in rows if r["entry"] == name and r["budget"] == 0.6]
        assert [r["threshold"] for r in budget_rows] == [calibration["threshold"]]
        assert saved["entries"][name]["training_time"]["epochs"] == 1
        by_rule = {r["rule"]: r for r in rows if r["entry"] == name and r["budget"] is None}
        assert by_rule["truncated 1/1/1"]["mean_units"] == [1.0, 1.0, 1.0]
        assert by_rule["truncated 1/1/1"]["mflops"] < by_rule["truncated 2/2/2"]["mflops"]
        for key in ("accuracy", "mflops", "mean_units"):  # every unit and no head: the full-depth network
            assert by_rule["truncated 2/2/2"][key] == pytest.approx(by_rule["full_depth"][key])
        own = next(s.method.threshold for _, s in adaptive_stages(load(tmp_path / "out" / name / "model"))
                   if s.adaptive)
        assert json.loads((tmp_path / "out" / name / "eval" / "tradeoff.json").read_text())["threshold"] == own
        assert calibration["threshold"] != own
    assert loads == [str(tmp_path / "out" / n / "model") for n in ("plain", "pact-seed0", "pact-seed1")]
    means = {g["point"]: g for g in saved["seed_groups"] if g["group"] == "pact"}
    assert {"pact @ budget 0.6", "pact @ 0.5", "full_depth", "truncated 1/1/1"} <= set(means)
    both = [r["accuracy"] for r in rows if r["group"] == "pact" and r["point"] == "full_depth"]
    assert len(both) == 2 and means["full_depth"]["accuracy_mean"] == pytest.approx(sum(both) / 2)
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "(budget 0.6)" in table and "Mean ± standard deviation over seeds" in table
    assert "| plain | 1 |" in table  # the training-time table
    timing = saved["timing"]
    assert list(timing["batch_sizes"]) == ["1", "8"] and timing["samples"] == 8
    for record in timing["batch_sizes"].values():
        assert set(record["ms_per_sample"]) == {"plain", "pact-seed0", "pact-seed0 (full depth)", "pact-seed1",
                                                "pact-seed1 (full depth)"}
        assert all(ms > 0 for ms in record["ms_per_sample"].values())
    assert "Measured time per sample" in table and "vs plain b=8" in table


def _exits_folder(tmp_path: Path, family: str) -> tuple[Path, dict]:
    """A saved untrained model with an exit after every unit, its own rule ``confidence`` at 0.8, and the evaluation
    split it fits: a 3-block ViT on digits (timm) or a 2-layer PACT-Encoder on generated reviews (text)."""
    import torch

    from pact_zoo.training.io import save_model_folder

    torch.manual_seed(0)
    if family == "timm":
        model = timm.create_model("pact_vit_tiny_patch16_224", method="confidence", exit_classifiers="per_layer",
                                  threshold=0.8, num_classes=10, img_size=32, depth=3)
        evaluation = dict(dataset="digits", max_eval_samples=40, eval_batch_size=40)
    else:
        from pact_zoo.hf import PactEncoderForSequenceClassification

        from test_hf_pact_encoder import _text_folder

        backbone, data = _text_folder(tmp_path)
        model = PactEncoderForSequenceClassification.from_backbone(
            backbone, num_labels=2, method="confidence", exit_classifiers="per_layer", pooling="mean", threshold=0.8)
        evaluation = dict(dataset=f"parquet:{data}", eval_split="test", eval_batch_size=12,
                          dataset_kwargs={"max_length": 8})
    with torch.no_grad():  # exits of different certainty per sample, so that the rules stop at different depths
        for name, parameter in model.named_parameters():
            if "exit" in name and name.endswith("weight"):
                parameter.normal_(0.0, 2.0)
    save_model_folder(model.eval(), tmp_path / "exits")
    return tmp_path / "exits", evaluation


@pytest.mark.parametrize("family", ["timm", "text"])
def test_methods_evaluate_one_model_under_other_exit_rules(tmp_path, family, capsys):
    """``methods:`` evaluates the entry's own model under other exit rules: rows labelled ``<entry>:<method>`` whose
    rule is the method the switched model runs, at the method's thresholds and its default; the weights are the
    entry's (full depth is the same point); the JSON lists each method's thresholds and trade-off file."""
    from pact_zoo.cli import main

    folder, evaluation = _exits_folder(tmp_path, family)
    recipe = dict(output_dir=str(tmp_path / "compare"), evaluation=evaluation, thresholds=[0.6, 0.9],
                  entries=[dict(name="exits", model_dir=str(folder), truncations="every_depth",
                                methods={"entropy": [0.3, 0.7], "patience": [0.5, 1.0]})])
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["compare", "--config", str(tmp_path / "compare.yaml"), "--dry-run"]) == 0
    assert "methods {'entropy': [0.3, 0.7], 'patience': [0.5, 1.0]}" in capsys.readouterr().out
    assert main(["compare", "--config", str(tmp_path / "compare.yaml")]) == 0
    out = tmp_path / "compare"
    saved = json.loads((out / "comparison.json").read_text())
    rows = saved["rows"]
    by_label = {label: [r for r in rows if r["entry"] == label] for label in ("exits", "exits:entropy",
                                                                             "exits:patience")}
    assert {r["entry"] for r in rows} == set(by_label)
    thresholds = {label: sorted(r["threshold"] for r in mine if r["rule"] not in ("full_depth",)
                                and not r["rule"].startswith("truncated")) for label, mine in by_label.items()}
    assert thresholds == {"exits": [0.6, 0.8, 0.9], "exits:entropy": [0.3, 0.5, 0.7],  # + each method's default
                          "exits:patience": [0.5, 1.0]}
    for label, rule in (("exits", "confidence"), ("exits:entropy", "entropy"), ("exits:patience", "patience")):
        assert {r["rule"] for r in by_label[label] if r["threshold"] is not None} == {rule}
        assert {r["group"] for r in by_label[label]} == {label}
    full = [next(r for r in mine if r["rule"] == "full_depth") for mine in by_label.values()]
    assert len({(r["accuracy"], r["mflops"]) for r in full}) == 1  # the same weights under every rule
    truncated = [r for r in rows if r["rule"].startswith("truncated")]
    assert {r["entry"] for r in truncated} == {"exits"} and len(truncated) == full[0]["mean_units"][0]
    entropy = {r["threshold"]: r for r in by_label["exits:entropy"]}
    assert entropy[0.3]["mean_units"][0] < full[0]["mean_units"][0]  # the rule stops early
    patience_all = next(r for r in by_label["exits:patience"] if r["threshold"] == 1.0)
    assert patience_all["mean_units"] == full[0]["mean_units"]  # patience 1.0 runs every unit
    methods = saved["entries"]["exits"]["methods"]
    assert {m: v["thresholds"] for m, v in methods.items()} == {"entropy": [0.3, 0.7], "patience": [0.5, 1.0]}
    tradeoff = json.loads(Path(methods["entropy"]["tradeoff"]).read_text())
    assert tradeoff["methods"] == ["entropy"] and Path(methods["entropy"]["tradeoff"]).parent.name == "eval_entropy"
    table = (out / "comparison.md").read_text()
    assert "| exits:entropy | entropy | 0.3 |" in table and "| exits:patience | patience | 1 |" in table
    assert (out / "comparison.png").stat().st_size > 0


def test_methods_a_family_refuses_raise_its_own_error(tmp_path):
    """An exit rule on a network without exits: the model's own one-line error, before anything is written."""
    from pact_zoo.training.compare import compare, load_comparison
    from pact_zoo.training.io import save_model_folder

    save_model_folder(timm.create_model("pact_resnet32", num_classes=10, **SMALL).eval(), tmp_path / "pact")
    recipe = dict(evaluation=dict(dataset="digits", max_eval_samples=40, eval_batch_size=40),
                  entries=[dict(name="pact", model_dir=str(tmp_path / "pact"), methods={"confidence": [0.5]})])
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(ValueError, match="decides from exit classifiers") as error:
        compare(load_comparison(str(tmp_path / "compare.yaml"), str(tmp_path / "out")))
    assert "\n" not in str(error.value) and not (tmp_path / "out" / "comparison.json").exists()


def test_shipped_recipes_write_to_folders_of_their_own():
    """Two shipped recipes run on their own never share an output folder (a second run would resume or overwrite
    the first's)."""
    owners: dict = {}
    for path in sorted((REPO / "hub_configs").glob("*/*.yaml")):
        folder = (yaml.safe_load(path.read_text()) or {}).get("output_dir")
        if folder is not None:
            owners.setdefault(folder, []).append(str(path.relative_to(REPO)))
    assert {folder: paths for folder, paths in owners.items() if len(paths) > 1} == {}


def test_the_shipped_comparison_recipes_are_found():
    assert {"hub_configs/methods.compare/compare.yaml", "hub_configs/methods.compare/learning_quality.yaml",
            "hub_configs/acm_vit.fashion_mnist/compare.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("recipe", SHIPPED)
def test_shipped_comparison_recipes_load(recipe, monkeypatch, capsys):
    """Every entry of a shipped comparison resolves to a valid training config of a registered model whose halting
    knobs the method takes (nothing trains)."""
    from pact_zoo.training.compare import load_comparison
    from pact_zoo.training.config import load_config

    monkeypatch.chdir(REPO)  # recipes name their files relative to the repository
    comparison = load_comparison(recipe)
    for entry in comparison.entries:
        if entry.kind != "train":
            continue
        config = load_config(entry.path, entry.overrides)
        if config.model in pact_zoo.list_models():
            timm.create_model(config.model, **config.model_kwargs)
        elif config.model == "pact_lstm":  # its config takes the architecture and the method's knobs only
            from pact_zoo.hf import PactLSTMConfig

            PactLSTMConfig(input_size=1, **config.model_kwargs)
        else:  # a model a registered training task builds (text: a PACT-Encoder over a backbone folder)
            from pact_zoo.halting import get_halting_method
            from pact_zoo.hf import PactEncoderConfig
            from pact_zoo.training.tasks import TASKS

            assert any(task.handles(config) for task in TASKS), (entry.name, config.model)
            method = config.model_kwargs.get("method", "pact")
            fields = PactEncoderConfig().to_dict()  # method, pooling, exit_classifiers, halting_bias_init, ...
            knobs = {key for key in config.model_kwargs if key not in fields}
            assert knobs <= set(get_halting_method(method).knobs), (entry.name, knobs)
    from pact_zoo.cli import main

    assert main(["compare", "--config", recipe, "--dry-run"]) == 0  # lists the entries, runs nothing
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in listed] == [entry.name for entry in comparison.entries]


def test_entries_flag_selects_entries_and_keeps_the_baseline(monkeypatch, capsys):
    from pact_zoo.cli import main

    monkeypatch.chdir(REPO)
    recipe = "hub_configs/methods.compare/compare.yaml"
    assert main(["compare", "--config", recipe, "--entries", "act,pact-tau0.1", "--dry-run"]) == 0
    listed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == ["pact-tau0.1", "act-tau0.01", "act-tau0.1", "plain"]  # recipe order, the baseline included
    assert main(["compare", "--config", recipe, "--entries", "pact-tau0.2", "--dry-run"]) == 2
    assert "--entries: no entry named pact-tau0.2" in capsys.readouterr().err


def test_selected_entries_keep_the_recipe_settings(monkeypatch):
    from pact_zoo.training.compare import load_comparison, select_entries

    monkeypatch.chdir(REPO)
    comparison = load_comparison("hub_configs/pact_minilm.rotten_tomatoes/compare.yaml")
    assert comparison.timing is not None
    selected = select_entries(comparison, [comparison.entries[-1].name])
    assert len(selected.entries) < len(comparison.entries)
    for field in ("evaluation", "baseline", "output_dir", "calibration_samples", "timing"):
        assert getattr(selected, field) == getattr(comparison, field), field
