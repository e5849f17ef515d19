"""First-hour traps: the project's data command, and CLI cases that used to be silent or unclear."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pact_zoo.cli import main as cli_main
from pact_zoo.data import fetch as fetch_module

from test_reliability import _cli, _one_error_line


# ------------------------------------------------------------------------------------------------ data fetch
def _tiny_image_dict():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
    from PIL import Image as PILImage

    features = Features({"image": Image(), "label": ClassLabel(names=["t-shirt", "trouser"]), "extra": Value("int64")})

    def split(n: int):
        images = [PILImage.new("L", (28, 28), color=10 * i) for i in range(n)]
        return Dataset.from_dict({"image": images, "label": [i % 2 for i in range(n)], "extra": list(range(n))},
                                 features=features)

    return DatasetDict(train=split(4), test=split(2))


def _tiny_text_dict():
    from datasets import Dataset, DatasetDict

    def split(n: int):
        return Dataset.from_dict({"text": [f"review {i}" for i in range(n)], "label": [i % 2 for i in range(n)]})

    return DatasetDict(train=split(4), validation=split(2), test=split(2))


@pytest.fixture
def fake_sources(monkeypatch, tmp_path_factory):
    """Offline stand-ins for the hub and timm downloads; records what was asked for."""
    calls = []

    def load_hub_dataset(repo_id):
        calls.append(repo_id)
        return {"zalando-datasets/fashion_mnist": _tiny_image_dict,
                "cornell-movie-review-data/rotten_tomatoes": _tiny_text_dict}[repo_id]()

    def download_hub_folder(repo_id, local_dir, allow_patterns):
        calls.append(repo_id)
        local_dir = Path(local_dir)
        for name in ("config.json", "modules.json", "tokenizer_config.json", "1_Pooling/config.json"):
            (local_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (local_dir / name).write_text("{}")
        (local_dir / "model.safetensors").write_bytes(b"weights")
        (local_dir / ".cache").mkdir()

    def timm_state_dict(model_name):
        calls.append(model_name)
        return {"conv_stem.weight": torch.ones(2, 3, 3, 3), "classifier.weight": torch.zeros(1000, 2).t()}

    monkeypatch.setattr(fetch_module, "load_hub_dataset", load_hub_dataset)
    monkeypatch.setattr(fetch_module, "download_hub_folder", download_hub_folder)
    monkeypatch.setattr(fetch_module, "timm_state_dict", timm_state_dict)

    def uea_source_folder(name):
        calls.append(name)
        folder = Path(tmp_path_factory.mktemp("uea"))
        header = "@problemName Toy\n@classLabel true a b\n@data\n"
        for split, rows in (("TRAIN", ["1,2,3:4,5,6:a", "2,3:1,1:b"]), ("TEST", ["0,1:1,0:b"])):
            (folder / f"{name}_{split}.ts").write_text(header + "\n".join(rows) + "\n")
        return folder

    monkeypatch.setattr(fetch_module, "uea_source_folder", uea_source_folder)
    return calls


def test_data_fetch_writes_the_layout_the_recipes_read(fake_sources, tmp_path, capsys):
    from safetensors.torch import load_file

    from pact_zoo.data import load_image_dataset
    from pact_zoo.data.text import load_text_dataset

    dest = tmp_path / "data"
    status, out, err = _cli(capsys, "data", "fetch", "all", "--dest", str(dest))
    assert status == 0, err
    assert fake_sources == ["zalando-datasets/fashion_mnist", "cornell-movie-review-data/rotten_tomatoes",
                            "sentence-transformers/all-MiniLM-L6-v2", "tf_efficientnet_lite0", "mobilenetv2_100",
                            "JapaneseVowels"]
    assert [line.split(": ")[1].split(" ")[0] for line in out.splitlines()] == ["fetching", "wrote"] * 6, out
    assert sorted(p.name for p in (dest / "fashion_mnist").iterdir()) == ["test.parquet", "train.parquet"]
    assert sorted(p.name for p in (dest / "rotten_tomatoes").iterdir()) == [
        "test.parquet", "train.parquet", "validation.parquet"]
    minilm = dest / "all-MiniLM-L6-v2"
    assert (minilm / "modules.json").is_file() and (minilm / "1_Pooling" / "config.json").is_file()
    assert not (minilm / ".cache").exists()
    for folder in ("tf_efficientnet_lite0", "mobilenetv2_100"):
        state = load_file(str(dest / folder / "model.safetensors"))
        assert sorted(state) == ["classifier.weight", "conv_stem.weight"]
    assert not list(dest.rglob(".*.tmp"))  # atomic writes leave no temporary files

    import pyarrow.parquet as pq

    table = pq.read_table(dest / "fashion_mnist" / "train.parquet")
    assert table.column_names == ["image", "label"]
    assert table.column("image")[0].as_py()["bytes"][:4] == b"\x89PNG"
    images = load_image_dataset(f"parquet:{dest / 'fashion_mnist'}")
    assert (len(images.train), len(images.eval)) == (4, 2)
    assert images.train[0][images.image_column].size == (28, 28)
    text = load_text_dataset(f"parquet:{dest / 'rotten_tomatoes'}")
    assert len(text.train) == 4 and "text" in text.train.column_names
    from pact_zoo.data.uea import load_uea_splits

    train, test, names = load_uea_splits("JapaneseVowels", folder=dest / "japanese_vowels")  # no sktime needed
    assert (len(train), len(test), names) == (2, 1, ["a", "b"]) and np.asarray(train[0]["inputs_embeds"]).shape == (3, 2)

    # a complete entry is skipped; --force fetches it again
    fake_sources.clear()
    status, out, _ = _cli(capsys, "data", "fetch", "fashion_mnist", "minilm", "--dest", str(dest))
    assert status == 0 and fake_sources == [] and out.count("skipped") == 2
    status, out, _ = _cli(capsys, "data", "fetch", "fashion_mnist", "--dest", str(dest), "--force")
    assert status == 0 and fake_sources == ["zalando-datasets/fashion_mnist"]


def test_data_command_help(capsys):
    for argv in (["data", "--help"], ["data", "fetch", "--help"], ["data", "list", "--help"]):
        assert cli_main(argv) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    parser = fetch_module.build_parser()
    subparsers = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)][0].choices
    for sub in (parser, *subparsers.values()):
        assert all(action.help for action in sub._actions), sub.prog


def test_data_fetch_default_dest_and_offline_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("PACT_ZOO_DATA", str(tmp_path / "cache"))
    assert fetch_module.default_dest() == tmp_path / "cache"
    monkeypatch.delenv("PACT_ZOO_DATA")
    assert fetch_module.default_dest() == Path("~/.cache/pact_zoo/data").expanduser()

    def offline(*args, **kwargs):
        raise ConnectionError("Max retries exceeded\nwith url")

    monkeypatch.setattr(fetch_module, "load_hub_dataset", offline)
    monkeypatch.setattr(fetch_module, "download_hub_folder", offline)
    for name, source in (("rotten_tomatoes", "cornell-movie-review-data/rotten_tomatoes"),
                         ("minilm", "sentence-transformers/all-MiniLM-L6-v2")):
        status, _, err = _cli(capsys, "data", "fetch", name, "--dest", str(tmp_path / "d"))
        line = _one_error_line(err)
        assert status == 2 and f"data entry {name!r}" in line and source in line and "Max retries" in line
    assert not (tmp_path / "d" / "all-MiniLM-L6-v2").exists() and not list((tmp_path / "d").rglob("*.parquet"))
    status, _, err = _cli(capsys, "data", "fetch", "cifar10")
    assert status == 2 and "unknown data entry 'cifar10'" in _one_error_line(err)


# ------------------------------------------------------------------------------------------------ report repr
def test_halting_report_repr_is_a_short_summary():
    from pact_zoo.halting.report import HaltingReport

    report = HaltingReport(units_executed=torch.tensor([[1, 3], [3, 5]]), flops=torch.tensor([40_000_000, 60_000_000]),
                           full_flops=100_000_000, sample_full_flops=torch.tensor([100_000_000, 100_000_000]),
                           num_units=(3, 5), stage_names=("layer1", "layer2"))
    text = repr(report)
    assert text == ("HaltingReport(batch=2, flops ratio 0.500 (mean 50 of 100 MFLOPs at full depth), "
                    "mean units per stage 2.00 of 3 / 4.00 of 5)")
    assert "tensor" not in text and "\n" not in text
    empty = HaltingReport(units_executed=torch.zeros(0, 2, dtype=torch.long), flops=torch.zeros(0, dtype=torch.long),
                          full_flops=100_000_000, sample_full_flops=torch.zeros(0, dtype=torch.long),
                          num_units=(3, 5), stage_names=("layer1", "layer2"))
    assert repr(empty).startswith("HaltingReport(batch=0,")


def test_halting_report_repr_of_a_real_model():
    import timm

    import pact_zoo

    model = timm.create_model("pact_resnet32", layers=[2, 2, 2], channels=[4, 8, 8]).eval()
    with torch.no_grad():
        model(torch.randn(3, 3, 32, 32))
    text = repr(pact_zoo.halting_report(model))
    import re

    assert re.fullmatch(r"HaltingReport\(batch=3, flops ratio \d\.\d{3} \(mean [\d.]+ of [\d.]+ MFLOPs at full depth\), "
                        r"mean units per stage (\d\.\d\d of 2)( / \d\.\d\d of 2){2}\)", text), text


# ------------------------------------------------------------------------------------------------ test hygiene
def test_pytest_keeps_only_failed_tests_folders_and_launches_use_their_own_tmpdir(launch_env, tmp_path):
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    assert pyproject["tool"]["pytest"]["ini_options"]["tmp_path_retention_policy"] in ("failed", "none")
    assert Path(launch_env["TMPDIR"]).parent == tmp_path and Path(launch_env["TMPDIR"]).is_dir()


# ------------------------------------------------------------------------------------------------ CLI cases
TINY = dict(model="pact_resnet32", model_kwargs={"layers": [2, 2, 2], "channels": [4, 8, 8], "tau": 0.05},
            dataset="digits", max_train_samples=32, max_eval_samples=16, epochs=1, batch_size=16, eval_batch_size=16,
            lr=0.05, augment="crop", eval_thresholds=[0.5])


def test_scientific_notation_is_a_float_in_yaml_and_on_the_command_line(tmp_path):
    from pact_zoo.training import load_config
    from pact_zoo.training.config import config_from_args
    from pact_zoo.training.train_cli import build_parser

    recipe = tmp_path / "r.yaml"
    recipe.write_text("lr: 2e-3\nweight_decay: 5E-4\nmodel_kwargs: {tau: 1e-2}\neval_thresholds: [1e-1, 0.5]\n")
    config = load_config(str(recipe))
    assert (config.lr, config.weight_decay, config.model_kwargs, config.eval_thresholds) == (
        0.002, 0.0005, {"tau": 0.01}, [0.1, 0.5])
    args = build_parser().parse_args(["--config", str(recipe), "--lr", "3e-4", "--model-kwargs", "{tau: 2e-2}"])
    config = config_from_args(args)
    assert config.lr == 3e-4 and config.model_kwargs == {"tau": 0.02}
    assert load_config(None, {"lr": "2e-3"}).lr == 0.002  # text through the Python API
    with pytest.raises(ValueError, match=r"lr must be float, got 'fast'"):
        load_config(None, {"lr": "fast"})


@pytest.mark.parametrize("recipe", [None, ""])
def test_train_without_a_recipe_says_which_defaults_and_folder(recipe, tmp_path, monkeypatch, capsys):
    from pact_zoo.training import loop, train_cli

    seen = []
    monkeypatch.setattr(loop, "train", lambda config, **kwargs: seen.append(config))
    argv = ["--output-dir", str(tmp_path / "o")]
    if recipe is not None:
        (tmp_path / "empty.yaml").write_text(recipe)
        argv += ["--config", str(tmp_path / "empty.yaml")]
    assert train_cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "built-in default recipe (model pact_resnet32, dataset digits" in lines[0], lines
    assert lines[0].endswith(f"into {tmp_path / 'o'}") and seen[0].output_dir == str(tmp_path / "o")
    assert ("no --config given" if recipe is None else "empty.yaml is empty") in lines[0]


def test_train_logs_progress_and_next_steps_then_evaluate_and_export(tmp_path, capsys, reset_accelerate):
    from pact_zoo.training import load_config, train

    out = tmp_path / "run"
    train(load_config(None, dict(TINY, output_dir=str(out), log_every_steps=1)))
    printed = capsys.readouterr().out
    assert "epoch 1/1 step 1/2: loss " in printed and "epoch 1/1 step 2/2: loss " in printed, printed
    model_dir = out / "model"
    assert f"model saved to {model_dir}; next: pact-zoo evaluate --model-dir {model_dir}" in printed

    status, printed, err = _cli(capsys, "evaluate", "--model-dir", str(model_dir), "--eval-thresholds", "[0.5]")
    assert status == 0, err
    assert f"wrote {out / 'eval' / 'tradeoff.json'} and the plots tradeoff.png" in printed
    assert f"next: pact-zoo export --model-dir {model_dir} --output-dir {out / 'hub'}" in printed

    # export: a folder holding other files is refused and left as it was; a previous export is replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    status, _, err = _cli(capsys, "export", "--model-dir", str(model_dir), "--output-dir", str(mine))
    assert status == 2 and "is not empty and holds no previous export" in _one_error_line(err)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    hub = tmp_path / "hub"
    for _ in range(2):
        status, _, err = _cli(capsys, "export", "--model-dir", str(model_dir), "--output-dir", str(hub))
        assert status == 0, err
    card = tmp_path / "card.yaml"
    card.write_text("model_name: tiny\ndescripton: typo\nresults: notes\n")
    status, _, err = _cli(capsys, "export", "--model-dir", str(model_dir), "--output-dir", str(hub), "--card",
                          str(card))
    assert status == 2 and "unknown key(s) ['descripton']" in _one_error_line(err)


def test_a_diverging_loss_names_the_step(tmp_path, monkeypatch, reset_accelerate):
    from pact_zoo.training import ConfigError, load_config, loop, train

    real = loop._sample_loss
    monkeypatch.setattr(loop, "_sample_loss", lambda *args: real(*args) * float("nan"))
    with pytest.raises(ConfigError, match=r"^the training loss is nan at step 1 \(epoch 1, batch 1\): the run diverged"):
        train(load_config(None, dict(TINY, output_dir=str(tmp_path / "run"))))


def test_a_loss_that_diverges_on_one_process_stops_every_process(two_process_runs):
    out, done = two_process_runs  # the "nan" scenario of tests/two_process_worker.py
    errors = [(out / "nan" / f"rank{rank}.txt").read_text() if (out / "nan" / f"rank{rank}.txt").is_file() else None
              for rank in range(2)]
    assert errors[0] is not None and errors[0] == errors[1], done.stderr[-3000:]
    assert errors[0].startswith("the training loss is not finite on process 1 of 2 at step 1 (epoch 1, batch 1)")


def test_fp16_on_a_cpu_is_refused(tmp_path, reset_accelerate):
    from pact_zoo.training import ConfigError, load_config, train

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match=r"mixed_precision: fp16 needs a GPU.*bf16 or no"):
        train(load_config(None, dict(TINY, output_dir=str(tmp_path / "run"), mixed_precision="fp16")))
    assert not (tmp_path / "run" / "model").exists()


# ------------------------------------------------------------------------------------------------ image folders
def _png_folder(root: Path, layout: dict) -> None:
    """``layout``: {relative folder: number of 12x12 PNGs}."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(root / folder / f"{i}.png")


def test_imagefolder_class_names_reach_the_exported_config(tmp_path, reset_accelerate):
    from pact_zoo.training import load_config, load_model_folder, train

    _png_folder(tmp_path / "imgs", {"train/cat": 3, "train/dog": 3, "test/cat": 1, "test/dog": 1})
    out = tmp_path / "run"
    train(load_config(None, dict(TINY, dataset=f"imagefolder:{tmp_path / 'imgs'}", batch_size=2, eval_batch_size=2,
                                 max_train_samples=None, max_eval_samples=None, output_dir=str(out))))
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["label_names"] == ["cat", "dog"] and saved["num_classes"] == 2
    model = load_model_folder(out / "model")
    assert model.pretrained_cfg["label_names"] == ["cat", "dog"]
    from pact_zoo.training.io import save_model_folder

    save_model_folder(model, tmp_path / "again")  # a re-saved (exported) folder keeps them
    assert json.loads((tmp_path / "again" / "config.json").read_text())["label_names"] == ["cat", "dog"]
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out / "model").id2label == {0: "cat", 1: "dog"}


def test_a_class_only_in_the_eval_split_is_named(tmp_path):
    import pandas as pd

    from pact_zoo.data import load_image_dataset
    from pact_zoo.data.text import load_text_dataset

    _png_folder(tmp_path / "imgs", {"train/cat": 2, "train/dog": 2, "test/cat": 1, "test/dgo": 1})
    with pytest.raises(ValueError, match=r"label\(s\) \['dgo'\] occur in the eval split but never in the train"):
        load_image_dataset(f"imagefolder:{tmp_path / 'imgs'}")
    text = tmp_path / "text"
    text.mkdir()
    pd.DataFrame({"text": ["a", "b"], "label": [0, 0]}).to_parquet(text / "train.parquet")
    pd.DataFrame({"text": ["c", "d"], "label": [0, 3]}).to_parquet(text / "test.parquet")
    with pytest.raises(ValueError, match=r"label\(s\) \['3'\] occur in the eval split but never in the train"):
        load_text_dataset(f"parquet:{text}")


def test_torchvision_imagefolder_layout_explains_the_expected_one(tmp_path, capsys):
    _png_folder(tmp_path / "imgs", {"cat": 2, "dog": 2})
    status, _, err = _cli(capsys, "train", "--dataset", f"imagefolder:{tmp_path / 'imgs'}", "--output-dir",
                          str(tmp_path / "run"))
    line = _one_error_line(err)
    assert status == 2 and "holds class folders (cat, dog) but no train/ and test/ split folders" in line
    assert "<dir>/train/<class>/*.png and <dir>/test/<class>/*.png" in line


@pytest.mark.parametrize("stages", [1, 3])
def test_units_histogram_title_fits_its_figure(stages):
    """The encoder's one-stage histogram kept its title inside the figure (it was cut off at 3 inches)."""
    from pact_zoo.training.evaluate import units_histogram_figure

    units = torch.randint(1, 7, (50, stages))
    figure = units_histogram_figure(units, [6] * stages, "pact threshold 0.5 (the model's own rule)")
    figure.canvas.draw()
    title = figure._suptitle.get_window_extent()
    assert 0 <= title.x0 and title.x1 <= figure.bbox.x1


@pytest.mark.parametrize("command", ["train", "convert", "evaluate", "export", "compare", "benchmark", "data"])
def test_a_bad_flag_is_one_line_for_every_command(capsys, command):
    status, _, err = _cli(capsys, command, "--no-such-flag", "1")  # argparse's error: one line, no usage block
    assert status == 2 and _one_error_line(err).endswith(f"(see 'pact-zoo {command} --help')")
