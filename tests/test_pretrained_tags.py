"""Shipped pretrained tags: each loads offline with the one documented call and reproduces its model card on the
committed test sample (tests/data/README.md); ``pact-zoo export`` writes the card's sample result and usage line."""
import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from timm.data import create_transform, resolve_data_config

import pact_zoo
from pact_zoo.halting import adaptive_stages
from pact_zoo.hub import SAMPLE_EVAL_JSON, export_folder
from pact_zoo.pretrained import SHIPPED_TAGS, shipped_folder
from pact_zoo.training import load_model_folder
from pact_zoo.training.evaluate import evaluate_image_sample, evaluate_tradeoff, load_image_sample
from pact_zoo.training.tasks import ImageClassificationTask
from pact_zoo.training.io import save_model_folder

REPO = Path(__file__).resolve().parent.parent
SAMPLE = "tests/data/fashion_mnist_test_first300.npz"
SAMPLE_SIZE = 300
#: package-data budget: each shipped folder, and all of them together
MAX_FOLDER_BYTES, MAX_TOTAL_BYTES = 10 * 2 ** 20, 30 * 2 ** 20
#: the FLOPs ratio is a ratio of sums of whole per-sample FLOPs counts (doubles); the same halting decisions give
#: the same ratio up to the summation order's rounding, far below this
FLOPS_RATIO_TOL = 1e-9


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("tag", SHIPPED_TAGS)
def test_shipped_tag_loads_offline_and_reproduces_its_card_on_the_sample(tag):
    model = timm.create_model(tag, pretrained=True)  # the one documented call; HF_HUB_OFFLINE=1 (conftest)
    model.eval()
    folder = shipped_folder(tag)
    config = json.loads((folder / "config.json").read_text())
    card_result = json.loads((folder / SAMPLE_EVAL_JSON).read_text())
    assert card_result["sample"] == SAMPLE and card_result["num_samples"] == SAMPLE_SIZE

    # trained weights, not a fresh init: the halting heads hold the shipped tensors
    from safetensors.torch import load_file

    shipped = load_file(folder / "model.safetensors")
    state = model.state_dict()
    assert any(".heads." in key for key in shipped) and all(torch.equal(state[k], v) for k, v in shipped.items())
    # the knobs and the data config it was trained with
    knobs = {k: v for k, v in config["model_args"].items() if k not in ("in_chans", "global_pool")}
    assert knobs and {k: model.halting_cfg.knobs[k] for k in knobs} == knobs
    assert list(model.pretrained_cfg["label_names"]) == config["label_names"]
    for key in ("input_size", "mean", "std", "interpolation", "crop_pct"):
        assert np.allclose(model.pretrained_cfg[key], config["pretrained_cfg"][key]) if key != "interpolation" \
            else model.pretrained_cfg[key] == config["pretrained_cfg"][key]

    # what a user does: timm's eval transform on each image (grey -> RGB), one forward, the halting report
    images, labels = load_image_sample(str(REPO / SAMPLE))
    transform = create_transform(**resolve_data_config(model=model))
    x = torch.stack([transform(Image.fromarray(image).convert("RGB")) for image in images])
    with torch.no_grad():
        logits = model(x)
    report = pact_zoo.halting_report(model)
    correct = int((logits.argmax(-1) == torch.as_tensor(labels)).sum())
    ratio = float(report.flops.double().sum() / report.sample_full_flops.double().sum())
    assert correct == card_result["correct"]
    assert abs(ratio - card_result["flops_ratio"]) < FLOPS_RATIO_TOL
    card = (folder / "README.md").read_text()
    assert f"{correct} / {SAMPLE_SIZE} correct = {100 * correct / SAMPLE_SIZE:.2f} %" in card
    assert f'timm.create_model("{tag}", pretrained=True)' in card
    assert _folder_bytes(folder) <= MAX_FOLDER_BYTES


def test_shipped_tags_are_listed_within_budget_and_plain_names_stay_plain():
    assert set(timm.list_pretrained("*.fashion_mnist")) >= set(SHIPPED_TAGS)
    assert "pact_resnet32.fashion_mnist" in timm.list_pretrained("pact_*")
    assert "pact_resnet32" not in timm.list_pretrained("pact_*")  # the plain name has no weights, as before
    assert sum(_folder_bytes(shipped_folder(tag)) for tag in SHIPPED_TAGS) <= MAX_TOTAL_BYTES

    plain = timm.create_model("pact_resnet32")
    assert plain.pretrained_cfg.get("tag") is None and plain.pretrained_cfg.get("file") is None
    with pytest.raises(RuntimeError, match="No pretrained weights exist for pact_resnet32"):
        timm.create_model("pact_resnet32", pretrained=True)
    # a keyword argument still overrides the shipped knob
    tuned = timm.create_model("pact_resnet32.fashion_mnist", pretrained=True, threshold=0.3)
    assert all(stage.method.threshold == 0.3 for _, stage in adaptive_stages(tuned))
    with pytest.raises(ValueError, match="name must be a shipped pretrained tag"):
        shipped_folder("pact_resnet32.cifar10")


def test_export_writes_the_sample_result_and_the_tag_usage(tmp_path):
    model = timm.create_model("pact_resnet32", layers=(2, 2, 2), channels=(4, 8, 8), tau=0.05).eval()
    save_model_folder(model, tmp_path / "run" / "model")
    batch = {"pixel_values": torch.randn(8, 3, 32, 32), "labels": torch.randint(0, 10, (8,))}
    (tmp_path / "run" / "eval").mkdir()
    (tmp_path / "run" / "eval" / "tradeoff.json").write_text(json.dumps(
        evaluate_tradeoff(model, ImageClassificationTask, [batch], [0.5])))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "sample.npz", images=rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
             labels=rng.integers(0, 10, 12))
    card = dict(model_name="tiny", pretrained_tag="pact_resnet32.tiny",
                sample=dict(path=str(tmp_path / "sample.npz"), description="twelve random images"))
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(card))

    hub = export_folder(str(tmp_path / "run" / "model"), str(tmp_path / "hub"), card_path=str(tmp_path / "card.yaml"))
    written = json.loads((hub / SAMPLE_EVAL_JSON).read_text())
    again = evaluate_image_sample(load_model_folder(hub), *load_image_sample(str(tmp_path / "sample.npz")))
    assert written["num_samples"] == 12 and written["correct"] == again["correct"]
    assert written["flops_ratio"] == again["flops_ratio"] and written["threshold"] == 0.5
    text = (hub / "README.md").read_text()
    assert f"{again['correct']} / 12 correct" in text and "twelve random images" in text
    assert 'timm.create_model("pact_resnet32.tiny", pretrained=True)  # shipped with pact_zoo: offline' in text

    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="must hold arrays 'images' and 'labels'"):
        load_image_sample(str(tmp_path / "bad.npz"))
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(dict(card, sample=str(tmp_path / "sample.npz"))))
    with pytest.raises(ValueError, match="'sample' must be a mapping with 'path'"):
        export_folder(str(tmp_path / "run" / "model"), str(tmp_path / "hub2"), card_path=str(tmp_path / "card.yaml"))


def test_readme_table_states_each_tags_card_numbers():
    readme = (REPO / "README.md").read_text()
    assert "## Pretrained adaptive models" in readme
    rows = {line.split("|")[1].strip(" `"): line for line in readme.splitlines() if line.startswith("| `")}
    for tag in SHIPPED_TAGS:
        default = json.loads((shipped_folder(tag) / "tradeoff.json").read_text())["default"]
        row = rows[tag]
        assert f"{100 * default['accuracy']:.2f} %" in row and f"{default['flops_ratio']:.3f}" in row, row
        assert f'timm.create_model("{tag}", pretrained=True)' in row
