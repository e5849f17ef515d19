"""Reliability: run folders that cannot go stale, one error style, clear errors for bad input, plots, card, modes."""
import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import timm
import torch

import pact_zoo
from pact_zoo.cli import main as cli_main
from pact_zoo.training import ConfigError, load_config, load_model_folder, save_model_folder, train
from pact_zoo.training.run_dir import plan_run

REPO = Path(__file__).resolve().parent.parent
TINY_KWARGS = {"layers": [2, 2, 2], "channels": [4, 8, 8], "tau": 0.05}
TINY = dict(model="pact_resnet32", model_kwargs=TINY_KWARGS, dataset="digits", max_train_samples=32,
            max_eval_samples=16, epochs=1, batch_size=16, eval_batch_size=16, lr=0.05, augment="crop",
            eval_thresholds=[0.3, 0.7])


def _reset():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One tiny finished run (stderr captured: not a terminal); returns (run folder, stderr text)."""
    out = tmp_path_factory.mktemp("run") / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        train(load_config(None, dict(TINY, output_dir=str(out))))
    _reset()
    return out, err.getvalue()


def _cli(capsys, *argv):
    status = cli_main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------------------------ run folder
def test_progress_bar_is_quiet_when_not_a_terminal(run):
    _, err = run
    assert "\r" not in err and len(err) < 5000, err[:500]


def test_new_run_refuses_a_used_folder_and_overwrite_replaces_it(run, tmp_path, reset_accelerate):
    folder = tmp_path / "used"
    shutil.copytree(run[0], folder)
    config = load_config(None, dict(TINY, output_dir=str(folder)))
    with pytest.raises(FileExistsError, match=r"already holds a run \(checkpoints, model.*--resume.*--overwrite"):
        train(config)
    assert plan_run(config, overwrite=True).clear  # everything a run wrote is removed first
    (folder / "notes.txt").write_text("mine")
    train(config, overwrite=True)
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == ["epoch_0001"]
    assert (folder / "notes.txt").read_text() == "mine"  # only run outputs are removed


def test_resume_checks_the_run_it_continues(run, tmp_path, capsys, reset_accelerate):
    folder = run[0]
    other = load_config(None, dict(TINY, output_dir=str(folder), model="pact_resnet110",
                                   model_kwargs=dict(TINY_KWARGS, tau=0.2)))
    with pytest.raises(ConfigError, match=r"other settings \(model: 'pact_resnet32' -> 'pact_resnet110'; "
                                          r"model_kwargs: .*'tau': 0.05.* -> .*'tau': 0.2"):
        plan_run(other, resume=True)
    assert plan_run(load_config(None, dict(TINY, output_dir=str(folder), epochs=3)), resume=True).checkpoint.name \
        == "epoch_0001"  # more epochs may be added to a run
    # a no-op resume writes nothing
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    metrics = train(load_config(None, dict(TINY, output_dir=str(folder))), resume=True)
    assert metrics["epoch"] == 1 and "nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before
    # --resume in an empty folder says it starts fresh
    plan = plan_run(load_config(None, dict(TINY, output_dir=str(tmp_path / "empty"))), resume=True)
    assert plan.checkpoint is None and "starting a fresh run" in plan.message


def test_cli_resume_with_another_model_is_one_line(run, capsys):
    status, _, err = _cli(capsys, "train", "--resume", "--output-dir", str(run[0]), "--model", "pact_resnet110",
                          "--dataset", "digits")
    assert status == 2 and "model: 'pact_resnet32' -> 'pact_resnet110'" in _one_error_line(err)


# ------------------------------------------------------------------------------------------------ error style
def test_user_errors_are_one_line_and_debug_shows_the_traceback(capsys):
    status, _, err = _cli(capsys, "train", "--epochs", "three")
    assert status == 2 and "epochs must be int" in _one_error_line(err)
    status, _, err = _cli(capsys, "train", "--model-kwargs", "{tau: [")
    assert status == 2 and "--model-kwargs" in _one_error_line(err) and "YAML" in err
    with pytest.raises(ConfigError):
        cli_main(["train", "--epochs", "0", "--debug"])
    status, _, err = _cli(capsys, "fly")
    assert status == 2 and "unknown command" in _one_error_line(err)


def test_model_kwargs_override_merges_into_the_recipe():
    recipe = str(REPO / "hub_configs" / "pact_resnet32.digits" / "train.yaml")
    from pact_zoo.training.train_cli import build_parser
    from pact_zoo.training.config import config_from_args

    config = config_from_args(build_parser().parse_args(["--config", recipe, "--model-kwargs", "{tau: 0.02}"]))
    assert config.model_kwargs == {"tau": 0.02, "temperature": 0.5, "threshold": 0.5}
    config = config_from_args(build_parser().parse_args(["--config", recipe, "--model-kwargs", "{threshold: null}"]))
    assert config.model_kwargs == {"tau": 0.1, "temperature": 0.5}
    assert load_config(recipe, {"model_kwargs": {"tau": 0.02}}).model_kwargs == {"tau": 0.02}  # API: replaces


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "quickstart", "benchmark"])
def test_every_option_has_help_and_only_its_own(command, capsys):
    assert cli_main([command, "--help"]) == 0
    import importlib

    from pact_zoo.cli import COMMANDS

    parser = importlib.import_module(COMMANDS[command][0]).build_parser()
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings} has no help"
    text = capsys.readouterr().out
    assert "(default: None)" not in text and "debug-kill" not in text and "debug_kill" not in text
    if command == "evaluate":
        assert "--lr" not in text and "--model-kwargs" not in text and "--dataset" in text


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_needs_the_data_of_a_moved_model_and_checks_its_classes(tmp_path, capsys):
    folder = tmp_path / "moved"
    save_model_folder(timm.create_model("pact_resnet32", num_classes=3, **{k: v for k, v in TINY_KWARGS.items()}),
                      folder)
    status, _, err = _cli(capsys, "evaluate", "--model-dir", str(folder))
    assert status == 2 and "--dataset is required" in _one_error_line(err)
    status, _, err = _cli(capsys, "evaluate", "--model-dir", str(folder), "--dataset", "digits")
    assert status == 2 and "3 classes but dataset 'digits' has 10" in _one_error_line(err)


def test_broken_model_folders_are_named(tmp_path, capsys):
    folder = tmp_path / "m"
    save_model_folder(timm.create_model("pact_resnet32", num_classes=3, **TINY_KWARGS), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{weights}.*truncated or corrupt"):
        load_model_folder(folder)
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_model_folder(folder)
    status, _, err = _cli(capsys, "export", "--model-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "h"))
    assert status == 2 and "--model-dir not found" in _one_error_line(err) and "evaluate first" not in err


# ------------------------------------------------------------------------------------------------ export
def test_card_usage_key_replaces_the_generated_usage(tmp_path):
    """Models whose inputs are neither a tokenizer's nor timm's (the PACT-LSTM on feature frames) state their own
    usage in the card YAML; the generated tokenizer usage would be wrong for them."""
    from pact_zoo.hub import _load_card, build_model_card

    point = dict(rule="pact", threshold=0.5, accuracy=0.9, num_samples=10, mean_flops=1e6, flops_ratio=0.5,
                 mean_units=[2.0])
    evaluation = dict(methods=["pact"], threshold=0.5, points=[point], default=point,
                      full_depth=dict(point, rule="full_depth", threshold=None, mean_flops=2e6, flops_ratio=1.0))
    (tmp_path / "card.yaml").write_text("model_name: frames\nusage: |\n  model(inputs_embeds=frames)\n")
    card = build_model_card(_load_card(str(tmp_path / "card.yaml")), evaluation, False, "frames")
    usage = str(card).split("## Usage")[1]
    assert "model(inputs_embeds=frames)" in usage and "AutoTokenizer" not in usage
    assert "10 examples" in str(card)
    generated = build_model_card({}, evaluation, False, "frames")
    assert "AutoTokenizer" in str(generated).split("## Usage")[1]


def test_export_card_modes_and_offline_push(run, tmp_path, capsys, monkeypatch):
    from huggingface_hub import ModelCard

    from pact_zoo.hub import export_folder, push_to_hub
    from pact_zoo.training.evaluate import run_evaluation

    folder = tmp_path / "run"
    shutil.copytree(run[0], folder)
    config = load_config(None, dict(TINY, output_dir=str(folder)))
    figures = []
    import pact_zoo.training.evaluate as evaluate

    save = evaluate._save_figure

    def keep_texts(fig, path):
        figures.append((path.name, [t.get_text() for ax in fig.axes for t in [ax.title, *ax.texts]]
                        + [fig._suptitle.get_text() if fig._suptitle else ""]))
        save(fig, path)

    monkeypatch.setattr(evaluate, "_save_figure", keep_texts)
    result = run_evaluation(load_model_folder(folder / "model").eval(), config, folder / "eval")
    texts = dict(figures)
    assert any("threshold 0.5" in t for t in texts["units_hist.png"]), texts["units_hist.png"]
    grid = [t for t in texts["fewest_most_units.png"] if t.startswith("units: ")]
    assert grid and all("\ntrue: " in t for t in grid)
    previous = os.umask(0o022)
    try:
        hub = export_folder(str(folder / "model"), str(tmp_path / "hub"),
                            card_path=str(REPO / "hub_configs" / "pact_resnet32.digits" / "card.yaml"))
    finally:
        os.umask(previous)
    assert {p.stat().st_mode & 0o777 for p in [hub, *hub.rglob("*")] if p.is_dir()} == {0o755}
    assert {p.stat().st_mode & 0o777 for p in hub.rglob("*") if p.is_file()} == {0o644}
    card = (hub / "README.md").read_text()
    assert 'local-dir:hub"' in card and "<repo>" not in card and "debug_kill" not in card
    assert "Full depth is the same trained weights" in card and ModelCard.load(hub / "README.md").data.datasets is None
    final = json.loads((folder / "final_metrics.json").read_text())
    assert ModelCard.load(hub / "README.md").data.to_dict()["full_depth_flops"] == final["full_flops"] \
        == result["full_depth"]["mean_flops"]
    # the card's usage runs as written, from the folder that holds the export: load, preprocess, class name
    from PIL import Image

    usage = card.split("## Usage")[1].split("```python\n")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    Image.new("L", (8, 8), 128).save(tmp_path / "image.png")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(usage, "card usage", "exec"), {})
    assert printed.getvalue().strip() in {str(i) for i in range(10)} | set(
        json.loads((hub / "config.json").read_text()).get("label_names", []))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ConnectionError, match="--push-to-hub me/x: HF_HUB_OFFLINE.*hub.*folder"):
        push_to_hub(hub, "me/x")
    status, _, err = _cli(capsys, "export", "--model-dir", str(folder / "model"), "--output-dir",
                          str(tmp_path / "h2"), "--push-to-hub", "[user/repo]")
    assert status == 2 and "--push-to-hub must be a hub repo id" in _one_error_line(err)
    assert not (tmp_path / "h2").exists()


def test_tradeoff_plot_keeps_the_curve_in_view_and_labels_apart():
    from pact_zoo.training.evaluate import tradeoff_figure

    def point(t, flops, acc, rule="pact"):
        return dict(threshold=t, mean_flops=flops * 1e6, accuracy=acc, rule=rule)

    points = [point(t, 50 + 2 * i, 0.90 + 0.0001 * i) for i, t in enumerate([0.1, 0.2, 0.3, 0.4, 0.5])]
    result = dict(points=points, full_depth=point(None, 137, 0.40, "full_depth"))
    fig = tradeoff_figure(result, "t")
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert low > 80 and high < 95  # the y-range follows the adaptive points, not the far-away full depth
    labels = [t for t in ax.texts]
    assert 1 <= len(labels) < len(points)  # crowded threshold labels are thinned out
    fig.canvas.draw()
    boxes = [t.get_window_extent() for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    import matplotlib.pyplot as plt

    plt.close(fig)


# ------------------------------------------------------------------------------------------------ data
def test_pandas_parquet_and_offline_hub_dataset(tmp_path):
    import pandas as pd
    from PIL import Image

    from pact_zoo.data import load_image_dataset

    def png(value):
        buffer = io.BytesIO()
        Image.new("L", (8, 8), value).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    for split in ("train", "test"):
        pd.DataFrame({"image": [png(10), png(200)], "label": [0, 1]}).to_parquet(tmp_path / f"{split}.parquet")
    splits = load_image_dataset(f"parquet:{tmp_path}")
    assert splits.train[0]["image"].size == (8, 8) and splits.num_classes == 2
    with pytest.raises(ValueError, match="imagefolder:<dir>"):
        load_image_dataset("nobody-here/no-such-dataset")


# ------------------------------------------------------------------------------------------------ bad tensors
def test_bad_tensors_and_knobs_raise_clear_errors():
    model = timm.create_model("pact_resnet32", num_classes=3, **TINY_KWARGS).eval()
    with pytest.raises(ValueError, match="floating-point.*uint8"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="float64 but the model's weights are torch.float32"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.float64))
    with pytest.raises(ValueError, match="threshold must be a finite number in \\(0, 1\\], got None"):
        pact_zoo.set_threshold(model, None)
    for name in ("act_resnet32", "resnet32_cifar"):
        with pytest.raises(ValueError, match="no halting stage with a threshold"):
            pact_zoo.set_threshold(timm.create_model(name, layers=[1, 1, 1], channels=[4, 8, 8]), 0.5)
        with pytest.raises(ValueError, match="has no knob 'threshold'"):
            timm.create_model(name, layers=[1, 1, 1], channels=[4, 8, 8], threshold=0.5)
    with pytest.warns(UserWarning, match="target_flops_ratio=0.01 is out of reach"):
        pact_zoo.calibrate_threshold(model, [torch.randn(4, 3, 32, 32)], 0.01)
    with torch.no_grad():
        model.stages[0].heads[0].fc.weight.fill_(float("nan"))
        with pytest.raises(ValueError, match="NaN or inf halting logits"):
            model(torch.randn(2, 3, 32, 32))
    from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification

    lstm = PactLSTMForSequenceClassification(PactLSTMConfig(input_size=4)).eval()
    with pytest.raises(ValueError, match="inputs_embeds contains NaN"):
        lstm(inputs_embeds=torch.full((2, 3, 4), float("nan")))


def test_batch_size_one_trains(tmp_path, reset_accelerate):
    metrics = train(load_config(None, dict(TINY, batch_size=1, max_train_samples=3, output_dir=str(tmp_path / "r"))))
    assert metrics["step"] == 3
    with pytest.raises(ConfigError, match="batch_size=64 is larger than the training split"):
        _reset()
        train(load_config(None, dict(TINY, batch_size=64, output_dir=str(tmp_path / "r2"))))


@pytest.mark.parametrize("overrides, message", [
    (dict(max_train_samples=0), "max_train_samples must be >= 1"),
    (dict(augment="flip"), "augment must be one of"),
    (dict(momentum=1.5), "momentum must be in"),
    (dict(lr_milestones=[1.5]), "lr_milestones must be fractions"),
    (dict(debug_kill_at_step=3), "unknown config key"),
])
def test_config_values_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, dict(TINY, **overrides))


# ------------------------------------------------------------------------------------------------ install, README
def _readme_python_blocks():
    text = (REPO / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    return [b for b in blocks if b.startswith("import ")]  # self-contained snippets


@pytest.mark.parametrize("index", range(3))
def test_readme_snippets_run_as_pasted(index, tmp_path, monkeypatch):
    blocks = _readme_python_blocks()
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[index], f"README.md python block {index}", "exec"), {})


def test_readme_commands_have_no_literal_placeholders():
    text = (REPO / "README.md").read_text()
    commands = [line for block in text.split("```bash\n")[1:] for line in block.split("```", 1)[0].splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands and not any("[--" in line or "<" in line.split("#")[0] for line in commands), commands


def test_ci_script_removes_its_environment(tmp_path):
    """.ci/run in a copy whose README test command fails fast: the temporary venv is removed on exit. ``python3`` is
    a stand-in that makes an empty venv (the real one takes half a minute and gigabytes with torch)."""
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text('#!/usr/bin/env bash\nmkdir -p "$3/bin" && touch "$3/bin/activate"\n')
    (bin_dir / "pip").write_text("#!/usr/bin/env bash\nexit 0\n")
    for tool in ("python3", "pip"):
        (bin_dir / tool).chmod(0o755)
    copy = tmp_path / "repo"
    (copy / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", copy / ".ci" / "run")
    (copy / "README.md").write_text('pip install --version > /dev/null && pytest --definitely-not-an-option\n')
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.run(["bash", str(copy / ".ci" / "run")], env={**os.environ, "TMPDIR": str(temp), "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "test command failed" in proc.stderr, proc.stderr[-2000:]
    assert list(temp.iterdir()) == []
