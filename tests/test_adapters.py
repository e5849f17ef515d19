"""Halting adapters (the new weights of a frozen-backbone conversion, the backbone's id and the hash of its weights)
on tiny backbones built offline: save / load round trips equal to the full checkpoint (Hugging Face and timm), the
hash check, a trained backbone refused, remote code without pact_zoo, and the export / push path against a stand-in
of the hub API."""
import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification

import pact_zoo
from pact_zoo.adapters import load_timm_adapter, save_timm_adapter, shipped_adapters, shipped_adapter
from pact_zoo.hf import PactEncoderForSequenceClassification
from pact_zoo.hf.backbones import TOKENIZER_FILES
from pact_zoo.hf.halting_adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, tensors_sha256
from pact_zoo.training.io import save_model_folder

from test_hf_pact_encoder import LABELS, heterogeneous, padded_batch, tiny_backbone, tiny_tokenizer

REPO = Path(__file__).resolve().parent.parent
#: a halting adapter folder holds only the new weights: far below the 1 MB the shipped ones must stay under
ADAPTER_MAX_BYTES = 1_000_000
TIMM_BACKBONE = "tf_efficientnet_lite0"
TIMM_CLASSES = 4


def backbone_folder(folder: Path, seed: int = 0, perturb: bool = False) -> Path:
    """A tiny BERT backbone folder with its tokenizer; ``perturb`` changes one weight (another backbone)."""
    model = tiny_backbone("bert")
    if perturb:
        with torch.no_grad():
            model.encoder.layer[0].output.dense.weight.add_(1e-3)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def converted(backbone: Path):
    """A frozen-backbone conversion of the tiny backbone: per-layer exits and PACT heads with weights of their own,
    so that the samples stop at different layers."""
    model = PactEncoderForSequenceClassification.from_backbone(
        str(backbone), num_labels=LABELS, exit_classifiers="per_layer", halting_features="state_and_exit")
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in model.new_weights and "heads" not in name:
                param.normal_(0.0, 0.5)
    return heterogeneous(model)


def outputs(model):
    ids, mask = padded_batch()
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask)
    return output.logits, output.units_executed


# ---------------------------------------------------------------------------------------------------------------------
def test_hf_adapter_equals_the_full_checkpoint(tmp_path):
    backbone = backbone_folder(tmp_path / "backbone")
    model = converted(backbone)
    model.save_pretrained(tmp_path / "full")
    model.save_pretrained(tmp_path / "adapter", adapter_only=True, backbone_id="org/tiny-bert")
    files = set(os.listdir(tmp_path / "adapter"))
    assert {ADAPTER_CONFIG, ADAPTER_WEIGHTS, "config.json", "modeling_pact_encoder.py"} <= files
    assert "model.safetensors" not in files and not any(name.startswith(".") for name in files)
    assert sum((tmp_path / "adapter" / name).stat().st_size for name in files) < ADAPTER_MAX_BYTES
    record = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert record["backbone"]["id"] == "org/tiny-bert" and record["backbone"]["path"] == str(backbone)
    assert record["weights"] == sorted(model.new_weights) and not any("backbone" in k for k in record["weights"])
    full = AutoModelForSequenceClassification.from_pretrained(tmp_path / "full").eval()
    adapter = AutoModelForSequenceClassification.from_pretrained(tmp_path / "adapter")
    assert type(adapter) is PactEncoderForSequenceClassification and not adapter.training
    for expected, got in zip(outputs(full), outputs(adapter)):
        assert torch.equal(expected, got)
    assert adapter.tokenizer is not None  # the backbone folder's
    loaded = pact_zoo.load_adapter(tmp_path / "adapter")
    assert loaded.state_dict().keys() == full.state_dict().keys()
    assert loaded.tokenizer is not None  # the backbone folder's: an adapter folder holds none
    for name in TOKENIZER_FILES + ("special_tokens_map.json",):  # an adapter saved without a tokenizer (as shipped)
        (tmp_path / "adapter" / name).unlink(missing_ok=True)
    assert pact_zoo.load_adapter(tmp_path / "adapter", backbone=backbone).tokenizer is not None  # the backbone's


def test_hf_adapter_wrong_backbone_raises_one_line_naming_it(tmp_path):
    model = converted(backbone_folder(tmp_path / "backbone"))
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    other = backbone_folder(tmp_path / "other", perturb=True)
    with pytest.raises(ValueError) as error:
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "adapter", backbone=other)
    message = str(error.value)
    assert "\n" not in message and f"backbone {other} does not match" in message
    expected = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())["backbone"]["sha256"]
    assert expected in message and message.count("sha256:") == 2


def test_hf_adapter_refuses_a_trained_backbone_and_a_model_without_one(tmp_path):
    backbone = backbone_folder(tmp_path / "backbone")
    model = converted(backbone)
    with torch.no_grad():
        model.pact_encoder.backbone.encoder.layer[1].output.dense.bias.add_(0.1)  # an end-to-end fine-tune
    with pytest.raises(ValueError, match="not a frozen-backbone conversion"):
        model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    plain = PactEncoderForSequenceClassification.from_backbone(tiny_backbone("bert"), num_labels=LABELS)
    with pytest.raises(ValueError, match="records no backbone"):  # built from a model object: no id or path
        plain.save_pretrained(tmp_path / "adapter", adapter_only=True)
    with pytest.raises(ValueError, match="only read for a halting adapter folder"):
        model.save_pretrained(tmp_path / "full")
        PactEncoderForSequenceClassification.from_pretrained(tmp_path / "full", backbone=backbone)


def test_tensor_hash_reads_names_dtypes_shapes_and_bytes_not_the_file():
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.bfloat16)}
    digest = tensors_sha256(tensors)
    assert digest == tensors_sha256({"b": tensors["b"].clone(), "a": tensors["a"].t().contiguous().t()})
    for changed in ({**tensors, "a": tensors["a"].reshape(3, 2)}, {**tensors, "b": tensors["b"].float()},
                    {"c": tensors["a"], "b": tensors["b"]}, {**tensors, "a": tensors["a"] + 1}):
        assert tensors_sha256(changed) != digest


REMOTE_ADAPTER_LOAD = textwrap.dedent("""
    import sys
    sys.modules["pact_zoo"] = None  # the package is installed (editable) in this venv: block it
    import torch
    from transformers import AutoModelForSequenceClassification
    folder, expected_file, other = sys.argv[1], sys.argv[2], sys.argv[3]
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert model.__class__.__module__.startswith("transformers_modules."), model.__class__.__module__
    expected = torch.load(expected_file)
    with torch.no_grad():
        output = model(input_ids=expected["ids"], attention_mask=expected["mask"])
    assert torch.equal(output.logits, expected["logits"]) and torch.equal(output.units_executed, expected["layers"])
    try:
        AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, backbone=other)
    except ValueError as error:
        assert "does not match the halting adapter" in str(error), error
    else:
        raise AssertionError("a wrong backbone loaded")
    print("REMOTE_ADAPTER_OK")
""")


def test_hf_adapter_loads_as_remote_code_without_pact_zoo(tmp_path):
    model = converted(backbone_folder(tmp_path / "backbone"))
    logits, layers = outputs(model)
    model.save_pretrained(tmp_path / "adapter", adapter_only=True)
    ids, mask = padded_batch()
    torch.save({"ids": ids, "mask": mask, "logits": logits, "layers": layers}, tmp_path / "expected.pt")
    backbone_folder(tmp_path / "other", perturb=True)
    (tmp_path / "load.py").write_text(REMOTE_ADAPTER_LOAD)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load.py"), str(tmp_path / "adapter"), str(tmp_path / "expected.pt"),
         str(tmp_path / "other")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "REMOTE_ADAPTER_OK" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------------
def timm_backbone(folder: Path, perturb: bool = False) -> Path:
    """A randomly initialised ``tf_efficientnet_lite0`` checkpoint (timm's key layout, 1000 classes)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(TIMM_BACKBONE)
    state = model.state_dict()
    if perturb:
        state["conv_stem.weight"] = state["conv_stem.weight"] + 1e-3
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    return folder


def timm_converted(backbone: Path):
    import timm

    model = timm.create_model("pact_efficientnet_lite0", pretrained=True, num_classes=TIMM_CLASSES,
                              pretrained_cfg_overlay=dict(file=str(backbone / "model.safetensors")),
                              method="confidence", threshold=0.4)
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".exits." in name or name.startswith("classifier."):
                param.normal_(0.0, 0.3)
    return model.eval()


def test_timm_adapter_equals_the_model_and_checks_the_backbone(tmp_path):
    backbone = timm_backbone(tmp_path / "backbone")
    model = timm_converted(backbone)
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(images)
    save_timm_adapter(model, tmp_path / "adapter", backbone, backbone_id="tf_efficientnet_lite0.in1k")
    files = set(os.listdir(tmp_path / "adapter"))
    assert files == {"config.json", ADAPTER_CONFIG, ADAPTER_WEIGHTS}
    assert sum((tmp_path / "adapter" / name).stat().st_size for name in files) < ADAPTER_MAX_BYTES
    record = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert record["backbone"]["id"] == "tf_efficientnet_lite0.in1k" and all(
        ".exits." in key or key.startswith("classifier.") for key in record["weights"])
    loaded = pact_zoo.load_adapter(tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(loaded(images), expected)
    assert loaded.num_classes == TIMM_CLASSES and not loaded.training
    other = timm_backbone(tmp_path / "other", perturb=True)
    with pytest.raises(ValueError) as error:
        load_timm_adapter(tmp_path / "adapter", backbone=other)
    assert "\n" not in str(error.value) and f"backbone {other} does not match" in str(error.value)
    assert record["backbone"]["sha256"] in str(error.value)


def test_timm_adapter_refuses_a_trained_backbone(tmp_path):
    backbone = timm_backbone(tmp_path / "backbone")
    model = timm_converted(backbone)
    with torch.no_grad():
        model.blocks[2][0].bn1.running_mean.add_(0.1)  # BatchNorm statistics updated: the backbone changed
    with pytest.raises(ValueError, match=r"backbone weight blocks\.2\.0\.bn1\.running_mean .*not a frozen-backbone"):
        save_timm_adapter(model, tmp_path / "adapter", backbone)
    assert not (tmp_path / "adapter").exists()


# ---------------------------------------------------------------------------------------------------------------------
class FakeHfApi:
    """A stand-in of ``huggingface_hub.HfApi`` that keeps what would be uploaded (no network)."""

    uploads: list = []

    def __init__(self, *args, **kwargs) -> None:
        self.repos = []

    def create_repo(self, repo_id, exist_ok=False, private=False, **kwargs):
        self.repos.append(repo_id)

    def upload_folder(self, folder_path, repo_id, commit_message="", **kwargs):
        root = Path(folder_path)
        files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        FakeHfApi.uploads.append((repo_id, files))

        class Commit:
            commit_url = f"https://huggingface.co/{repo_id}/commit/0"
        return Commit()


TRADEOFF = {"methods": ["pact"], "threshold": 0.5, "dataset": "org/reviews",
            "points": [{"rule": "pact", "threshold": 0.5, "accuracy": 0.75, "mean_flops": 2.0e6, "flops_ratio": 0.5,
                        "mean_units": [1.5]}],
            "full_depth": {"rule": "full_depth", "threshold": None, "accuracy": 0.8, "mean_flops": 4.0e6,
                           "flops_ratio": 1.0, "mean_units": [3.0]}}


@pytest.mark.parametrize("entry", ["pact-zoo export", "scripts/publish.py"])
def test_export_adapter_push_uploads_exactly_the_folder_with_the_card_metadata(tmp_path, monkeypatch, entry):
    import huggingface_hub
    from huggingface_hub import ModelCard
    from huggingface_hub import constants

    from pact_zoo.cli import run_command
    from pact_zoo.hub import main

    backbone = backbone_folder(tmp_path / "backbone")
    save_model_folder(converted(backbone), tmp_path / "run" / "model")
    (tmp_path / "run" / "eval").mkdir()
    (tmp_path / "run" / "eval" / "tradeoff.json").write_text(json.dumps(dict(TRADEOFF, default=TRADEOFF["points"][0])))
    card = tmp_path / "card.yaml"
    card.write_text("model_name: tiny-adapter\ndataset: org/reviews\ntags: [bert]\n")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    FakeHfApi.uploads = []
    argv = ["--model-dir", str(tmp_path / "run" / "model"), "--card", str(card), "--output-dir",
            str(tmp_path / "export"), "--adapter-only", "--backbone-id", "org/tiny-bert", "--push-to-hub",
            "me/tiny-adapter"]
    if entry == "pact-zoo export":
        assert run_command(main, argv) == 0
    else:
        monkeypatch.setattr(sys, "argv", [entry, *argv])
        with pytest.raises(SystemExit) as exit_status:
            runpy.run_path(str(REPO / entry), run_name="__main__")
        assert exit_status.value.code == 0
    [(repo_id, files)] = FakeHfApi.uploads
    exported = {str(p.relative_to(tmp_path / "export")): p.read_bytes()
                for p in (tmp_path / "export").rglob("*") if p.is_file()}
    assert repo_id == "me/tiny-adapter" and files == exported
    assert {ADAPTER_CONFIG, ADAPTER_WEIGHTS, "config.json", "README.md", "tradeoff.json"} <= set(files)
    assert "model.safetensors" not in files
    data = ModelCard.load(tmp_path / "export" / "README.md").data
    assert data.library_name == "transformers" and {"pact", "adaptive-computation", "bert"} <= set(data.tags)
    assert data.datasets == ["org/reviews"] and data.base_model == "org/tiny-bert"
    assert data.pipeline_tag == "text-classification"
    assert 'pact_zoo.load_adapter(snapshot_download("me/tiny-adapter"))' in (tmp_path / "export" / "README.md").read_text()
    shipped = [name for name in shipped_adapters() if (shipped_adapter(name) / "modeling_pact_encoder.py").is_file()]
    for name in shipped:  # the shipped Hugging Face adapters are this export's layout
        layout = {p.name for p in shipped_adapter(name).iterdir() if not p.name.endswith(".png")}
        assert layout == {name for name in files if not name.endswith(".png")}, name


# ---------------------------------------------------------------------------------------------------------------------
#: the folder under $PACT_ZOO_DATA that holds each shipped adapter's backbone (``pact-zoo data fetch ... --dest``)
DATA_ENV = "PACT_ZOO_DATA"
SHIPPED = {"minilm_rotten_tomatoes": "all-MiniLM-L6-v2", "efficientnet_lite0_fashion_mnist": "tf_efficientnet_lite0"}


def _sample_check(folder: Path) -> dict:
    from huggingface_hub import ModelCard

    check = ModelCard.load(folder / "README.md").data.to_dict().get("pact_zoo_sample_check")
    assert isinstance(check, dict) and {"sample", "rows", "correct", "flops_ratio", "data"} <= set(check), folder
    return check


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_adapter_is_small_and_states_its_check(name):
    folder = shipped_adapter(name)
    assert sum(p.stat().st_size for p in folder.iterdir()) < ADAPTER_MAX_BYTES
    check = _sample_check(folder)
    assert (REPO / check["sample"]).is_file() and check["sample"].startswith("tests/data/")
    assert f"({check['correct']} / {check['rows']})" in (folder / "README.md").read_text()
    record = json.loads((folder / ADAPTER_CONFIG).read_text())
    # fetched by its id; a recorded path is relative (the recipes' data/ folder), never this machine's
    assert record["backbone"]["id"] and not Path(record["backbone"]["path"] or "").is_absolute()


def test_shipped_remote_code_is_the_packages():
    """The MiniLM adapter's remote code (for ``trust_remote_code=True`` without pact_zoo) is a copy of the package's
    files: when one of them changes, refresh the copies (no retraining): ``write_remote_code(shipped_adapter(
    "minilm_rotten_tomatoes"), PactEncoderForSequenceClassification.remote_code_files())`` from
    ``pact_zoo.hf.remote_code``."""
    folder = shipped_adapter("minilm_rotten_tomatoes")
    files = PactEncoderForSequenceClassification.remote_code_files()
    assert sorted(f.name for f in files) == sorted(p.name for p in folder.glob("*.py"))
    stale = [f.name for f in files if (folder / f.name).read_bytes() != f.read_bytes()]
    assert not stale, f"stale remote-code copies in {folder}: {stale} (see this test's docstring)"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_adapter_reproduces_its_card_on_the_committed_sample(name, monkeypatch):
    """The documented load (``pact_zoo.load_adapter``; the backbone from $PACT_ZOO_DATA instead of the hub, which
    tests cannot reach), then the card's accuracy on the committed sample exactly and its FLOPs ratio."""
    from pact_zoo.training.evaluate import evaluate_sample

    root = os.environ.get(DATA_ENV)
    if not root or not (Path(root) / SHIPPED[name]).exists():
        pytest.skip(f"the backbone of {name} is not in the repository and tests have no network: set {DATA_ENV} to a "
                    f"folder holding {SHIPPED[name]}/")
    folder = shipped_adapter(name)
    check = _sample_check(folder)
    model = pact_zoo.load_adapter(folder, backbone=Path(root) / SHIPPED[name])
    monkeypatch.chdir(REPO)  # the sample's paths are relative to the repository
    result = evaluate_sample(model, check["data"])
    assert (result["num_samples"], result["correct"]) == (check["rows"], check["correct"])
    assert result["flops_ratio"] == pytest.approx(check["flops_ratio"], abs=1e-6)


def test_timm_adapter_over_another_architecture_says_so(tmp_path):
    import timm

    backbone = timm_backbone(tmp_path / "backbone")
    save_timm_adapter(timm_converted(backbone), tmp_path / "adapter", backbone)
    (tmp_path / "mobilenet").mkdir()
    save_file(timm.create_model("mobilenetv2_100").state_dict(), str(tmp_path / "mobilenet" / "model.safetensors"))
    with pytest.raises(ValueError, match=r"^backbone .*mobilenet.* does not fit pact_efficientnet_lite0: "):
        load_timm_adapter(tmp_path / "adapter", backbone=tmp_path / "mobilenet")
