"""The fine-tuning pipeline: train -> evaluate -> export -> reload, multi-process, resume, data, configs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import pact_zoo
from pact_zoo.data import load_image_dataset
from pact_zoo.hub import export_folder
from pact_zoo.training import ConfigError, load_config, load_model_folder, train
from pact_zoo.training.evaluate import run_evaluation
from pact_zoo.training.tasks import TASKS

REPO = Path(__file__).resolve().parent.parent
TINY = dict(
    model="pact_resnet32", model_kwargs={"layers": [2, 2, 2], "channels": [4, 8, 8], "tau": 0.05},
    # 49 = 3 batches of 16 + a 1-row remainder, which the loop drops (BatchNorm needs 2 rows in training)
    dataset="digits", max_train_samples=49, max_eval_samples=24, epochs=1, batch_size=16, eval_batch_size=24,
    lr=0.05, augment="crop", eval_thresholds=[0.3, 0.7],
)


def _overrides_argv(overrides):
    argv = []
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", json.dumps(value) if not isinstance(value, str) else value]
    return argv


def _run_train(overrides, *extra, launcher=(), env=None, check=True):
    cmd = [*launcher] if launcher else [sys.executable]
    cmd += [str(REPO / "scripts" / "train.py"), *_overrides_argv(overrides), *extra]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def test_train_evaluate_export_reload(tmp_path, reset_accelerate):
    config = load_config(None, dict(TINY, output_dir=str(tmp_path / "run")))
    metrics = train(config)
    assert metrics["epoch"] == 1 and 0.0 <= metrics["accuracy"] <= 1.0 and metrics["num_samples"] == 24
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["mean_flops"] > 0

    model = load_model_folder(tmp_path / "run" / "model").eval()
    result = run_evaluation(model, config, tmp_path / "run" / "eval")
    assert [(p["threshold"], p["rule"]) for p in result["points"]] == [
        (0.3, "pact"), (0.5, "pact"), (0.7, "pact"), (0.5, "pact:sampled")]  # + sampled depth at the own rule
    assert len(result["depth_spread"]["away_from_mode"]) == 3 and result["default"]["rule"] == "pact"
    assert result["full_depth"]["rule"] == "full_depth"
    for plot in ("tradeoff.png", "units_hist.png", "fewest_most_units.png"):
        assert (tmp_path / "run" / "eval" / plot).stat().st_size > 1000

    hub = export_folder(str(tmp_path / "run" / "model"), str(tmp_path / "hub"),
                        card_path=str(REPO / "hub_configs" / "pact_resnet32.digits" / "card.yaml"))
    assert {"model.safetensors", "config.json", "README.md", "tradeoff.png"} <= {p.name for p in hub.iterdir()}
    from huggingface_hub import ModelCard

    card = ModelCard.load(hub / "README.md")
    assert {"adaptive-computation", "pact"} <= set(card.data.tags) and card.data.library_name == "timm"
    assert card.data.datasets is None and card.data.threshold == 0.5  # 'digits' is not a hub dataset id
    metric_types = {m["type"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert {"accuracy", "mean_flops", "flops_ratio"} <= metric_types

    from transformers import AutoModelForImageClassification

    x = torch.randn(5, 3, 32, 32)
    via_timm = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    via_transformers = AutoModelForImageClassification.from_pretrained(hub).eval()
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(via_timm(x), expected)
        assert torch.equal(via_transformers(pixel_values=x).logits, expected)


def test_two_process_cpu_run(tmp_path, launch_env):
    """``accelerate launch`` of scripts/train.py on two CPU processes (DDP)."""
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                "29517"]
    _run_train(dict(TINY, output_dir=str(out)), launcher=launcher, env=launch_env)
    _check_two_process_run(out, train_samples=49)


def test_two_process_sampled_path_run(two_process_runs):
    """Policy gradient trains only the sampled units: DDP must still get a gradient for every parameter (the
    "train" scenario of tests/two_process_worker.py, through the training loop's API)."""
    out, done = two_process_runs
    assert (out / "train" / "metrics.jsonl").is_file(), done.stderr[-3000:]
    _check_two_process_run(out / "train", train_samples=97)


def _check_two_process_run(out: Path, train_samples: int) -> None:
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["num_processes"] == 2 and metrics[-1]["step"] == train_samples // 32
    assert metrics[-1]["num_samples"] == 24  # gather_for_metrics drops the samples padded onto the last batch
    assert sorted(p.name for p in (out / "checkpoints" / "epoch_0001").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]


def test_resume_after_kill_matches_uninterrupted(tmp_path, reset_accelerate):
    run = dict(TINY, epochs=2)  # 49 samples / batch 16 = 3 steps per epoch (last row dropped)
    train(load_config(None, dict(run, output_dir=str(tmp_path / "straight"))))
    # only the killed run needs its own process (SIGKILL at step 5, in epoch 2); the resumed runs are in-process
    killed = _run_train(dict(run, output_dir=str(tmp_path / "killed")), check=False,
                        env={"PACT_ZOO_TEST_KILL_AT_STEP": "5"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "killed" / "model").exists()
    assert (tmp_path / "killed" / "checkpoints" / "epoch_0001").is_dir()
    reset_accelerate()
    train(load_config(None, dict(run, output_dir=str(tmp_path / "killed"))), resume=True)
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    reset_accelerate()
    train(load_config(None, dict(run, output_dir=str(tmp_path / "killed"))), resume=True)  # nothing left to do
    assert json.loads((tmp_path / "killed" / "final_metrics.json").read_text())["epoch"] == 2
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_run_saved_under_a_renamed_argument_resumes_under_its_new_name(tmp_path, reset_accelerate):
    lstm = {"hidden_size": 8, "max_ponder_steps": 3}
    run = dict(model="pact_lstm", dataset="parity", dataset_kwargs={"vector_size": 6, "train_samples": 32,
                                                                     "test_samples": 16},
               epochs=1, batch_size=16, eval_batch_size=16, output_dir=str(tmp_path / "run"))
    with pytest.warns(DeprecationWarning, match="halting_method"):
        train(load_config(None, dict(run, model_kwargs=dict(lstm, halting_method="act"))))
    reset_accelerate()
    metrics = train(load_config(None, dict(run, model_kwargs=dict(lstm, method="act"))), resume=True)
    assert metrics["epoch"] == 1  # the same run: nothing left to do
    reset_accelerate()
    with pytest.raises(ConfigError, match="other settings"):  # a real difference still stops the resume
        train(load_config(None, dict(run, model_kwargs=dict(lstm, method="pact"))), resume=True)


def test_halting_heads_get_their_learning_rate():
    from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification
    from pact_zoo.training.loop import build_optimizer

    config = load_config(None, dict(TINY, optimizer="adamw", lr=0.01, head_lr_mult=10.0))
    for model in (timm.create_model("pact_resnet32"),
                  PactLSTMForSequenceClassification(PactLSTMConfig(input_size=4, hidden_size=8, max_ponder_steps=3))):
        optimizer = build_optimizer(model, config)
        head_lrs = {g["lr"] for g in optimizer.param_groups
                    if any(".heads." in n or "halting_head" in n for n, p in model.named_parameters()
                           if any(p is q for q in g["params"]))}
        assert head_lrs == {0.1}, type(model).__name__


def _write_png_folder(root: Path, counts: dict) -> None:
    rng = np.random.default_rng(0)
    for split, per_class in counts.items():
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_run_seeds_shuffle_the_training_data_in_orders_of_their_own():
    """accelerate's seedable sampler shuffles epoch e with data_seed + e: passed the run seed itself, seed 1 replays
    seed 0's epochs one epoch later. The loop's data-order seeds give every run seed orders of its own, and seed 0
    the orders it always had."""
    from accelerate.data_loader import SeedableRandomSampler

    from pact_zoo.training.config import TrainConfig
    from pact_zoo.training.loop import data_order_seed, dataloader_configuration

    def orders(data_seed: int, epochs: int = 4) -> list:
        sampler = SeedableRandomSampler(data_source=range(50), data_seed=data_seed)
        result = []
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            result.append(tuple(sampler))
        return result

    assert orders(1)[0] == orders(0)[1]  # the replay the run seed alone gives
    seen = {seed: set(orders(data_order_seed(seed))) for seed in range(3)}
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert orders(data_order_seed(0)) == orders(0)
    assert dataloader_configuration(TrainConfig(seed=2)).data_seed == data_order_seed(2) != 2


def test_imagefolder_loader(tmp_path):
    _write_png_folder(tmp_path / "imgs", {"train": 3, "test": 2})
    splits = load_image_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    assert len(splits.train) == 6 and len(splits.eval) == 4 and splits.class_names == ["cat", "dog"]
    assert splits.train[0]["image"].size == (12, 12)


def test_parquet_loader(tmp_path, reset_accelerate):
    digits = load_image_dataset("digits")
    digits.train.select(range(40)).to_parquet(str(tmp_path / "train.parquet"))
    digits.eval.select(range(16)).to_parquet(str(tmp_path / "test.parquet"))
    splits = load_image_dataset(f"parquet:{tmp_path}")
    assert len(splits.train) == 40 and len(splits.eval) == 16 and splits.num_classes == 10
    metrics = train(load_config(None, dict(TINY, dataset=f"parquet:{tmp_path}", output_dir=str(tmp_path / "run"))))
    assert metrics["num_samples"] == 16


def test_bundled_digits_split_is_fixed():
    splits = load_image_dataset("digits")
    assert (len(splits.train), len(splits.eval)) == (1437, 360)
    assert splits.train[0]["image"].size == (32, 32) and splits.class_names == [str(d) for d in range(10)]


@pytest.mark.parametrize("overrides, error, message", [
    (dict(model="pact_resnet9000"), ConfigError, "pact_resnet32"),
    (dict(dataset="cifar11"), ValueError, "valid choices: 'digits'"),
    (dict(dataset="imagefolder:/no/such/dir"), FileNotFoundError, "/no/such/dir"),
    (dict(pretrained_file="/no/such/weights.safetensors"), FileNotFoundError, "weights.safetensors"),
    (dict(epochs="three"), ConfigError, "epochs must be int"),
    (dict(lr_milestones=0.5), ConfigError, "lr_milestones"),
    (dict(optimizer="lamb"), ConfigError, "sgd"),
])
def test_bad_configs_name_the_problem(overrides, error, message, reset_accelerate):
    with pytest.raises(error, match=message):
        train(load_config(None, dict(TINY, output_dir="/tmp/unused", **overrides)))


def test_unknown_yaml_key_lists_valid_keys(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model: pact_resnet32\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['learning_rate'\].*valid keys: model"):
        load_config(str(path))
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(str(tmp_path / "missing.yaml"))


def _recipes(folder: Path) -> list:
    """A hub config's training recipes: ``train.yaml`` (plus ``pretrained.yaml``, the recipe of a shipped pretrained
    tag), or every recipe of a multi-run folder (``pact.yaml``, ...); comparison recipes (``entries``) are
    tests/test_compare.py's."""
    if (folder / "train.yaml").is_file():
        return [folder / "train.yaml"] + [p for p in [folder / "pretrained.yaml"] if p.is_file()]
    return sorted(p for p in folder.glob("*.yaml")
                  if p.name != "card.yaml" and "entries" not in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("variant", sorted(p.name for p in (REPO / "hub_configs").iterdir()
                                            if (p / "card.yaml").is_file() or (p / "train.yaml").is_file()))
def test_hub_config_recipes_load(variant):
    folder = REPO / "hub_configs" / variant
    recipes = _recipes(folder)
    assert recipes and (folder / "card.yaml").is_file()
    from pact_zoo.training.convert import load_conversion
    from pact_zoo.training.config import read_yaml_mapping

    for recipe in recipes:
        if "phases" in read_yaml_mapping(str(recipe)):  # a conversion recipe: every phase is a training config
            configs = [config for _, config in load_conversion(str(recipe)).phases]
        else:
            configs = [load_config(str(recipe))]
        for config in configs:
            assert config.model in pact_zoo.list_models() or any(task.handles(config) for task in TASKS), recipe


def test_sequence_task_train_evaluate_export_reload(tmp_path, reset_accelerate):
    overrides = dict(
        model="pact_lstm", model_kwargs={"hidden_size": 8, "max_ponder_steps": 3, "halting_bias_init": 0.0},
        dataset="parity", dataset_kwargs={"vector_size": 6, "train_samples": 64, "test_samples": 32},
        epochs=1, batch_size=16, eval_batch_size=32, optimizer="adamw", lr=0.01, eval_thresholds=[0.3, 0.7],
        output_dir=str(tmp_path / "run"))
    config = load_config(None, overrides)
    metrics = train(config)
    assert metrics["num_samples"] == 32 and 1.0 <= metrics["mean_units"][0] <= 3.0
    assert 0 < metrics["flops_ratio"] < 1.1  # untrained heads: every step runs, and the heads count on top
    model = load_model_folder(tmp_path / "run" / "model").eval()
    result = run_evaluation(model, config, tmp_path / "run" / "eval")
    assert result["full_depth"]["mean_units"] == [3.0] and result["full_depth"]["flops_ratio"] == pytest.approx(1.0)
    hub = export_folder(str(tmp_path / "run" / "model"), str(tmp_path / "hub"),
                        card_path=str(REPO / "hub_configs" / "pact_lstm.parity" / "card.yaml"))
    from huggingface_hub import ModelCard
    from transformers import AutoModelForSequenceClassification

    assert ModelCard.load(hub / "README.md").data.library_name == "transformers"
    reloaded = AutoModelForSequenceClassification.from_pretrained(hub).eval()
    x = torch.randn(4, 1, 6)
    with torch.no_grad():
        assert torch.equal(reloaded(inputs_embeds=x).logits, model(inputs_embeds=x).logits)


def test_sequence_task_rejects_image_dataset(reset_accelerate):
    with pytest.raises(ValueError, match="valid choices: parity, mnist1d"):
        train(load_config(None, dict(model="pact_lstm", dataset="digits", output_dir="/tmp/unused")))


def test_cli_lists_commands_and_rejects_unknown(capsys):
    from pact_zoo.cli import main

    assert main([]) == 0
    usage = capsys.readouterr().out
    assert all(name in usage for name in ("train", "evaluate", "export", "quickstart"))
    assert main(["fly"]) == 2


def test_anytime_run_calibrates_monotonically(tmp_path, reset_accelerate):
    """After a tiny anytime run the budget knob works: the calibrated FLOPs ratio grows with the target."""
    from torch.utils.data import DataLoader

    from pact_zoo.data import collate_images
    from pact_zoo.training.tasks import build_task

    config = load_config(None, dict(TINY, anytime=True, anytime_prob=0.5, epochs=2, output_dir=str(tmp_path / "run")))
    train(config)
    model = load_model_folder(tmp_path / "run" / "model").eval()
    data = build_task(config).load_data(model)
    loader = DataLoader(data.eval, batch_size=24, collate_fn=collate_images)
    ratios = [pact_zoo.calibrate_threshold(model, loader, target, tolerance=0.0).flops_ratio
              for target in (0.55, 0.7, 0.85, 1.0)]
    assert ratios == sorted(ratios), ratios
    assert ratios[-1] == pytest.approx(1.0, abs=0.02) and ratios[0] < ratios[-1]


def test_anytime_prob_is_validated():
    with pytest.raises(ConfigError, match="anytime_prob"):
        load_config(None, dict(TINY, anytime=True, anytime_prob=1.5))


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    from pact_zoo.fileio import atomic_directory, atomic_write_text

    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.txt", "a")
        with atomic_directory(tmp_path / "folder") as folder:
            (folder / "f").write_text("b")
    finally:
        os.umask(previous)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
