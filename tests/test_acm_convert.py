"""ACM's three conversion phases as phases of ``pact-zoo convert`` (the shared training loop): a tiny timm ViT trained
on the digits set that ships with scikit-learn, offline."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from accelerate.utils import set_seed

import pact_zoo
from pact_zoo import acm
from pact_zoo.training.config import ConfigError, load_config
from pact_zoo.training.io import load_model_folder, save_model_folder

#: a ViT small enough for a test: digits are 8x8 grey images; patch 2 gives 16 tokens
VIT = dict(img_size=8, patch_size=2, embed_dim=16, depth=2, num_heads=2, mlp_ratio=4.0)
COMMON_SEED = 0
COMMON = dict(seed=COMMON_SEED, dataset="digits", max_train_samples=96, max_eval_samples=48, epochs=1, batch_size=16,
              eval_batch_size=48, optimizer="adamw", schedule="constant", augment="none", image_size=8)


def _source(tmp_path) -> str:
    from pact_zoo.training.loop import train

    train(load_config(None, dict(COMMON, model="pact_vit_tiny_patch16_224", model_kwargs=dict(VIT, method="none"),
                                 lr=3e-3,
                                 output_dir=str(tmp_path / "source"))))
    return str(tmp_path / "source" / "model")


def _acm_weights(model: torch.nn.Module) -> tuple[dict, dict]:
    learners = {id(p) for p in acm.learner_parameters(model)}
    gates = {id(p) for p in acm.gate_parameters(model)}
    state = dict(model.named_parameters())
    return ({n: p.detach().clone() for n, p in state.items() if id(p) in learners},
            {n: p.detach().clone() for n, p in state.items() if id(p) in gates})


#: the three ACM phases of a test conversion
ACM_PHASES = [dict(name="learners", objective="module_distillation", lr=1e-3),
              dict(name="gates", objective="gate_labels", lr=1e-2),
              dict(name="end_to_end", acm_budget=0.5, distill_weight=1.0, lr=1e-4, head_lr_mult=10.0)]


def run_acm_conversion(tmp_path, **recipe) -> tuple[Path, dict]:
    """``pact-zoo convert`` of ``recipe`` (the source model as teacher, :data:`ACM_PHASES`) into
    ``tmp_path/converted``; returns that folder and its ``conversion.json``."""
    from pact_zoo.cli import main

    recipe = dict(recipe, teacher="source", output_dir=str(tmp_path / "converted"), phases=ACM_PHASES)
    (tmp_path / "convert.yaml").write_text(json.dumps(recipe))
    assert main(["convert", "--config", str(tmp_path / "convert.yaml")]) == 0
    out = tmp_path / "converted"
    summary = json.loads((out / "conversion.json").read_text())
    assert summary["phases"] == ["learners", "gates", "end_to_end"]
    return out, summary


def test_convert_runs_the_three_acm_phases(tmp_path, reset_accelerate):
    source = _source(tmp_path)
    acm_kwargs = dict(VIT, num_learners=4, method="acm")
    out, summary = run_acm_conversion(tmp_path, **COMMON, model="acm_vit_tiny_patch16_224", model_kwargs=acm_kwargs,
                                      source=source)

    original = load_model_folder(source).eval()
    set_seed(COMMON_SEED)  # the phase's own model before training: same seed, same fresh gates
    start = timm.create_model("acm_vit_tiny_patch16_224", pretrained=True, num_classes=10,
                                  pretrained_cfg_overlay=dict(file=f"{source}/model.safetensors"), **acm_kwargs)
    learners = load_model_folder(out / "learners" / "model")
    gates = load_model_folder(out / "gates" / "model")
    final = load_model_folder(summary["model_dir"]).eval()
    l0, g0 = _acm_weights(start)
    l1, g1 = _acm_weights(learners)
    l2, g2 = _acm_weights(gates)
    l3, g3 = _acm_weights(final)
    # phase 1 trains the learners only, phase 2 the gates only, phase 3 everything
    assert any(not torch.equal(l0[n], l1[n]) for n in l0) and all(torch.equal(g0[n], g1[n]) for n in g0)
    assert all(torch.equal(l1[n], l2[n]) for n in l1) and any(not torch.equal(g1[n], g2[n]) for n in g1)
    assert any(not torch.equal(l2[n], l3[n]) for n in l2) and any(not torch.equal(g2[n], g3[n]) for n in g2)
    frozen = {n: p for n, p in original.named_parameters() if n in dict(learners.named_parameters())}
    assert frozen and all(torch.equal(p, dict(learners.named_parameters())[n]) for n, p in frozen.items())

    # phase 1 lowered the prefixes' error against the original modules, measured on the evaluation images
    images = torch.stack([torch.as_tensor(x) for x in _digits(48)])
    before = acm.prefix_errors(start, original, [images])
    after = acm.prefix_errors(learners, original, [images])
    assert sum(after[1:-1]) < sum(before[1:-1])
    metrics = [json.loads(line) for line in (out / "end_to_end" / "metrics.jsonl").read_text().splitlines()]
    assert 0.0 < metrics[-1]["flops_ratio"] < 1.0


def _digits(count: int) -> list:
    """The first ``count`` digits test images as the loop feeds them: ``[1, 8, 8]`` float tensors."""
    from pact_zoo.training.tasks import build_task

    task = build_task(load_config(None, dict(COMMON, model="pact_vit_tiny_patch16_224",
                                             model_kwargs=dict(VIT, method="none"))))
    data = task.load_data(task.build_model(task.num_classes()))
    return [data.eval[i]["pixel_values"] for i in range(count)]


def test_acm_folder_keeps_its_learners_and_gates(tmp_path):
    """A saved ACM ViT reloads as it was (its own learners and gates, not a fresh split of the checkpoint)."""
    torch.manual_seed(0)
    model = timm.create_model("acm_vit_tiny_patch16_224", num_classes=3, in_chans=1, **VIT).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    save_model_folder(model, tmp_path / "acm")
    loaded = load_model_folder(tmp_path / "acm").eval()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize("fields, message", [
    (dict(objective="width"), "objective must be one of"),
    (dict(objective="gate_labels"), "needs teacher"),
    (dict(objective="module_distillation", teacher="t", freeze_backbone=True), "remove freeze_backbone"),
    (dict(objective="gate_labels", teacher="t", acm_budget=0.5, anytime=True), "remove anytime, acm_budget"),
    (dict(acm_budget=0.0), "acm_budget must be in"),
    (dict(gate_error_factor=0.5), "gate_error_factor must be >= 1"),
])
def test_acm_objective_fields_are_validated(fields, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, fields)


def test_acm_objectives_refuse_models_without_acm_modules(tmp_path, reset_accelerate):
    from pact_zoo.training.loop import train

    with pytest.raises(ConfigError, match="acm_budget needs a model with ACM modules"):
        train(load_config(None, dict(COMMON, model="pact_vit_tiny_patch16_224", model_kwargs=dict(VIT, method="none"),
                                     acm_budget=0.5,
                                     output_dir=str(tmp_path / "run"))))


def test_acm_vit_recipes_load():
    from pathlib import Path

    from pact_zoo.training.compare import load_comparison
    from pact_zoo.training.convert import load_conversion

    folder = Path(__file__).resolve().parents[1] / "hub_configs" / "acm_vit.fashion_mnist"
    assert load_config(str(folder / "source.yaml")).model == "pact_vit_tiny_patch16_224"
    phases = load_conversion(str(folder / "convert.yaml")).phases
    assert [config.objective for _, config in phases] == ["module_distillation", "gate_labels", "task"]
    assert all(config.teacher == "out/acm_vit.fashion_mnist/source/model" for _, config in phases)
    assert [e.kind for e in load_comparison(str(folder / "compare.yaml")).entries] == ["model_dir", "convert", "model_dir"]
    budgets = load_comparison(str(folder / "compare_budgets.yaml"))  # both gatings x 3 budgets, the sweep, timing
    assert len([e for e in budgets.entries if e.kind == "convert"]) == 6
    assert [e.budgets for e in budgets.entries if e.budgets] == [[0.834, 0.668, 0.502]]
    assert budgets.timing["batch_sizes"] == [1, 8, 64]


def test_a_timm_conversion_resumes_from_model_folders(tmp_path, reset_accelerate):
    """Phases read model folders as pretrained_file; a resumed conversion's recipe matches the saved one (the task
    used to write the folder's weights file into the saved recipe, so --resume refused its own run)."""
    from pact_zoo.training.convert import convert, load_conversion

    source = _source(tmp_path)
    recipe = dict(COMMON, model="acm_vit_tiny_patch16_224", model_kwargs=dict(VIT, num_learners=2),
                  source=source, teacher="source", output_dir=str(tmp_path / "converted"),
                  phases=[dict(name="learners", objective="module_distillation", lr=1e-3)])
    (tmp_path / "convert.yaml").write_text(json.dumps(recipe))
    convert(load_conversion(str(tmp_path / "convert.yaml")))
    saved = json.loads((tmp_path / "converted" / "learners" / "train_config.json").read_text())
    assert saved["pretrained_file"] == source
    convert(load_conversion(str(tmp_path / "convert.yaml")), resume=True)  # finished: a no-op, not a refusal
