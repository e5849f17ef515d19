"""Adaptive ImageNet ResNets on timm's backbone (pact_zoo/models/pact_resnet.py): timm contract, offline loading of
timm checkpoints, equivalence with timm's ResNet when halting is off, eval compaction and FLOPs.

Fast by construction: randomly initialised weights, 64x64 inputs (the minimum accepted side is 32, the output
stride), meta-device builds for the large variants; ResNet-18/50 carry the numerical checks.
"""
import copy
import inspect
import logging
import pickle
import re

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import save_for_hf
from timm.models._builder import _resolve_pretrained_source
from torch.utils.flop_counter import FlopCounterMode

import pact_zoo
from pact_zoo.models.pact_resnet import MIN_INPUT_SIZE, AdaptiveResNetStage

MODULE = "pact_resnet"
MODELS = timm.list_models(module=MODULE)
BACKBONE = {name: name.split("_", 1)[1] for name in MODELS}  # pact_resnet50 -> resnet50
SIZE = 64
INPUT = (3, SIZE, SIZE)
DATA_CFG_FIELDS = ("input_size", "test_input_size", "pool_size", "crop_pct", "test_crop_pct", "interpolation",
                   "mean", "std", "num_classes", "first_conv", "classifier", "hf_hub_id", "url")


def test_registered():
    assert MODELS == ["act_resnet50", "act_resnet101", "pact_resnet18", "pact_resnet34", "pact_resnet50",
                      "pact_resnet101"]


def _calibrate(model, batch=8, size=SIZE, seed=0):
    """Set every BN's running statistics from one random batch (as after training), so activations stay at unit
    scale through the random-weight backbone and the pooled features a halting head sees vary per sample."""
    was_training = model.training
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(batch, 3, size, size, generator=generator))
    model.train(was_training)
    return model


def _heterogeneous_heads(model):
    """The core's synthetic halting heads: samples halt at different units."""
    pact_zoo.halting.synthesize_halting(_calibrate(model), seed=0, input_shape=INPUT, num_samples=16)
    return model


def _backbone_checkpoint(backbone, tmp_path, fmt="safetensors"):
    """A randomly initialised timm backbone (non-zero residual branches, calibrated BN) saved as a timm file."""
    plain = _calibrate(timm.create_model(backbone, zero_init_last=False))
    path = tmp_path / f"{backbone}.{fmt}"
    if fmt == "safetensors":
        save_file(plain.state_dict(), str(path))
    else:
        torch.save(plain.state_dict(), str(path))
    return plain.eval(), path


# ---------------------------------------------------------------------------------------------------- cfg / registry
@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg_points_at_the_timm_backbone(name):
    backbone = BACKBONE[name]
    tags = timm.list_models(f"{name}.*", pretrained=True, include_tags=True)
    assert tags, "every model has backbone-weight tags"
    for tagged in tags:
        cfg = timm.models.get_pretrained_cfg(tagged).to_dict()
        source = timm.models.get_pretrained_cfg(f"{backbone}.{tagged.split('.', 1)[1]}").to_dict()
        for field in DATA_CFG_FIELDS:
            assert cfg.get(field) == source.get(field), f"{tagged}.{field}"
        assert cfg["min_input_size"] == (3, MIN_INPUT_SIZE, MIN_INPUT_SIZE)
    # The default tag is the one timm's backbone uses, fetched from the hub (online path; nothing downloaded here).
    default = timm.models.get_pretrained_cfg(name).to_dict()
    assert default["hf_hub_id"] == timm.models.get_pretrained_cfg(backbone).hf_hub_id
    assert _resolve_pretrained_source(default) == ("hf-hub", default["hf_hub_id"])


@pytest.mark.parametrize("name", MODELS)
def test_default_cfg_on_meta_device(name):
    with torch.device("meta"):
        model = timm.create_model(name, device="meta", dtype=torch.float32)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(b.device.type == "meta" for b in model.buffers())
    cfg = model.pretrained_cfg
    assert cfg["num_classes"] == model.num_classes == 1000 and model.in_chans == cfg["input_size"][0]
    x = torch.empty(2, *cfg["input_size"], device="meta")
    model.eval()
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features and tuple(feats.shape[2:]) == cfg["pool_size"]
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model(x).shape == (2, 1000)
    state_dict = model.state_dict()
    assert cfg["classifier"] + ".weight" in state_dict and cfg["first_conv"] + ".weight" in state_dict
    assert inspect.signature(model.reset_classifier).parameters["global_pool"].default is None
    groups = timm.models.group_parameters(model, model.group_matcher())
    assert len(groups) > 1
    head_groups = [g for g, names in groups.items() if any(".heads." in n for n in names)]
    assert all(any(".heads." not in n for n in groups[g]) for g in head_groups), "a head joins its unit's group"
    assert len(timm.models.group_parameters(model, model.group_matcher(coarse=True))) == 6  # stem, 4 stages, fc
    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert tuple(model(x).shape[2:]) == cfg["pool_size"]


@pytest.mark.parametrize("name", MODELS)
def test_backbone_keys_are_timm_keys(name):
    with torch.device("meta"):
        model = timm.create_model(name, device="meta")
        plain = timm.create_model(BACKBONE[name], device="meta")
        disabled = timm.create_model(name, device="meta", method="none")
    keys, plain_keys = list(model.state_dict()), list(plain.state_dict())
    backbone_keys = [k for k in keys if ".heads." not in k]
    assert backbone_keys == plain_keys
    head_key = re.compile(r"^layer[1-4]\.heads\.\d+\.(norm\.(weight|bias|running_mean|running_var|num_batches_tracked)"
                          r"|fc\.(weight|bias))$")
    assert all(head_key.match(k) for k in keys if ".heads." in k)
    assert list(disabled.state_dict()) == plain_keys
    # One head after every unit but the last; the stage reads like timm's Sequential.
    for stage_name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(model, stage_name)
        assert isinstance(stage, AdaptiveResNetStage)
        assert len(stage.heads) == len(stage) - 1 == len(getattr(plain, stage_name)) - 1
        assert stage[-1] is stage.units[-1] and list(stage) == list(stage.units)


def test_unit_view_survives_deepcopy_and_pickle():
    """The stage's unit tuple follows its registered children through deepcopy (model EMA) and pickling."""
    model = timm.create_model("pact_resnet50", device="meta")
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        for stage in clone._stages():
            units = [m for name, m in stage.named_children() if name != "heads"]
            assert len(units) == len(stage.units) and all(a is b for a, b in zip(stage.units, units))


@pytest.mark.parametrize("name", MODELS)
def test_unknown_kwarg_raises_type_error(name):
    with pytest.raises(TypeError):
        timm.create_model(name, not_a_kwarg=1, device="meta")


@pytest.mark.parametrize("kwargs, field", [
    (dict(tau=-1.0), "tau"), (dict(threshold=0.0), "threshold"), (dict(method="reinforce"), "method"),
    (dict(act_eps=1.0), "act_eps"),
])
def test_bad_halting_knobs(kwargs, field):
    with pytest.raises(ValueError, match=field):
        timm.create_model("pact_resnet18", device="meta", **kwargs)


# ---------------------------------------------------------------------------------------------------- timm contract
@pytest.mark.parametrize("name", ["pact_resnet18", "act_resnet50"])
def test_forward_shapes_dtype_and_classifier_reset(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, *INPUT)
    assert timm.create_model(name, num_classes=0).eval()(x).shape == (2, model.num_features)
    assert timm.create_model(name, num_classes=0, global_pool="")(x).shape == (2, model.num_features, 2, 2)
    model.train()
    assert torch.isfinite(model(x)).all()
    model.eval()
    model = model.to(torch.bfloat16)
    x = torch.randn(2, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE, dtype=torch.bfloat16)  # bf16 convs are slow on CPU
    assert model(x).dtype == torch.bfloat16
    model.reset_classifier(5)
    assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"
    assert model.fc.weight.dtype == torch.bfloat16 and not model.fc.training
    assert model(x).shape == (2, 5)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.head_hidden_size)


@pytest.mark.parametrize("name", ["pact_resnet18", "pact_resnet50", "act_resnet50"])
def test_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=42).train()
    out = model(torch.randn(2, *INPUT))
    (out.mean() + pact_zoo.halting_loss(model)).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {pname}"
    assert out.shape[-1] == 42


def test_features_only():
    model = timm.create_model("pact_resnet18", features_only=True).eval()
    feats = model(torch.randn(2, *INPUT))
    assert len(feats) == 5
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [SIZE // f.shape[-1] for f in feats] == model.feature_info.reduction()


def test_forward_intermediates():
    model = _heterogeneous_heads(timm.create_model("pact_resnet18")).eval()
    x = torch.randn(4, *INPUT)
    with torch.no_grad():
        final, taps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
    assert [t.shape[1] for t in taps] == [info["num_chs"] for info in model.feature_info]
    assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2
    assert len(model.forward_intermediates(x, indices=[1], stop_early=True, intermediates_only=True)) == 1
    getter = timm.create_model("pact_resnet18", features_only=True, feature_cls="getter").eval()
    assert [f.shape[1] for f in getter(x)] == getter.feature_info.channels()
    kept = model.prune_intermediate_layers(indices=[2])
    assert kept == [2] and model.num_features == model.feature_info[2]["num_chs"]
    assert model(x).shape[1] == model.num_features  # pruned stages are skipped


@pytest.mark.parametrize("name", ["pact_resnet18", "act_resnet50"])
def test_grad_checkpointing_matches(name):
    model = timm.create_model(name).train()
    x = torch.randn(2, *INPUT)
    torch.manual_seed(1)
    reference = model(x)
    reference.sum().backward()
    reference_grad = model.conv1.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for _, stage in pact_zoo.adaptive_stages(model))
    torch.manual_seed(1)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(model.conv1.weight.grad, reference_grad)


@pytest.mark.parametrize("shape, message", [
    ((2, 1, SIZE, SIZE), "3, H, W"), ((3, SIZE, SIZE), "rank 4"), ((2, 3, 31, 64), f">= {MIN_INPUT_SIZE}"),
])
def test_bad_input_shapes(shape, message):
    model = timm.create_model("pact_resnet18").eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))
    model(torch.randn(1, 3, MIN_INPUT_SIZE, MIN_INPUT_SIZE))  # the minimum itself is accepted


# ---------------------------------------------------------------------------------------------------- pretrained
@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_checkpoint_loads_offline_and_matches_timm_when_halting_is_off(fmt, tmp_path, caplog):
    plain, path = _backbone_checkpoint("resnet50", tmp_path, fmt)
    overlay = dict(file=str(path))
    reference = timm.create_model("resnet50", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    with caplog.at_level(logging.INFO, logger="pact_zoo"):
        model = timm.create_model("pact_resnet50", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    assert "newly initialised" in caplog.text
    heads = {k for k in model.state_dict() if ".heads." in k}
    assert set(model.newly_initialized_keys) == heads
    for key, value in plain.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.randn(3, *INPUT)
    with torch.no_grad():
        expected = reference(x)
        pact_zoo.set_threshold(model, 1.0)  # no head reaches 1: every unit runs
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
        assert pact_zoo.halting_report(model).units_executed.tolist() == [[3, 4, 6, 3]] * 3
        disabled = timm.create_model("pact_resnet50", pretrained=True, pretrained_cfg_overlay=overlay,
                                     method="none").eval()
        assert disabled.newly_initialized_keys == []
        torch.testing.assert_close(disabled(x), expected, atol=1e-5, rtol=0)


def test_act_model_loads_and_new_head_count(tmp_path):
    _, path = _backbone_checkpoint("resnet18", tmp_path)
    with torch.device("meta"):
        reference = timm.create_model("act_resnet50", device="meta")
    model = timm.create_model("pact_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                              num_classes=7)  # classifier dropped and re-initialised, heads new
    assert model.fc.out_features == 7
    assert len([k for k in model.newly_initialized_keys if k.endswith("fc.weight")]) == 4  # 1 head per stage
    assert sum(len(stage.heads) for _, stage in pact_zoo.adaptive_stages(reference)) == 2 + 3 + 5 + 2


@pytest.mark.parametrize("corrupt, message", [("extra", "layer9.bogus"), ("missing", "layer2.1.conv1.weight")])
def test_checkpoint_key_errors_name_the_key(tmp_path, corrupt, message):
    state_dict = timm.create_model("resnet18").state_dict()
    if corrupt == "extra":
        state_dict["layer9.bogus"] = torch.zeros(1)
    else:
        del state_dict["layer2.1.conv1.weight"]
    path = tmp_path / "bad.safetensors"
    save_file(state_dict, str(path))
    with pytest.raises(KeyError, match=message.replace(".", r"\.")):
        timm.create_model("pact_resnet18", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_save_for_hf_round_trip(tmp_path):
    model = _heterogeneous_heads(timm.create_model("pact_resnet18", num_classes=7)).eval()
    pact_zoo.set_threshold(model, 0.3)  # kept in the exported model args
    save_for_hf(model, tmp_path, safe_serialization=True)
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert loaded.halting_cfg.threshold == 0.3 and loaded.num_classes == 7
    x = torch.randn(4, *INPUT)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# ---------------------------------------------------------------------------------------------------- halting
@pytest.mark.parametrize("name", ["pact_resnet50", "act_resnet50"])
def test_eval_batch_equals_each_sample_alone(name):
    model = _heterogeneous_heads(timm.create_model(name)).eval()
    x = torch.randn(8, *INPUT)
    with torch.no_grad():
        batch_out = model(x)
        batch_units = pact_zoo.halting_report(model).units_executed
        assert batch_units.unique(dim=0).shape[0] > 1, "samples should halt differently"
        for i in range(8):
            torch.testing.assert_close(model(x[i:i + 1]), batch_out[i:i + 1], atol=1e-5, rtol=0)
            assert torch.equal(pact_zoo.halting_report(model).units_executed[0], batch_units[i])
        pact_zoo.set_execution(model, "masked")
        torch.testing.assert_close(model(x), batch_out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["pact_resnet18", "pact_resnet50", "act_resnet50"])
def test_full_flops_agree_with_flop_counter(name):
    model = timm.create_model(name).train()  # training runs every unit and every head
    x = torch.randn(2, *INPUT)
    with FlopCounterMode(display=False) as counter:
        model(x)
    report = pact_zoo.halting_report(model)
    assert abs(report.flops.sum().item() - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()
    with pact_zoo.full_depth(model), FlopCounterMode(display=False) as plain_counter:
        model(x)  # full depth: every unit, no head
    assert abs(report.full_flops - plain_counter.get_total_flops() / 2) <= 0.01 * report.full_flops
    assert pact_zoo.halting_report(model).flops.tolist() == [report.full_flops] * 2
    assert report.flops[0] > report.full_flops  # the heads ran too


@pytest.mark.parametrize("name", ["pact_resnet50", "act_resnet50"])
def test_per_sample_eval_flops_agree_with_flop_counter(name):
    model = _heterogeneous_heads(timm.create_model(name)).eval()
    x = torch.randn(8, *INPUT)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    report = pact_zoo.halting_report(model)
    assert report.units_executed.unique(dim=0).shape[0] > 1
    assert abs(report.flops.sum().item() - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()
    assert report.flops.max() <= report.full_flops and report.flops_ratio < 1.0


def test_plain_resnet50_flops_at_224():
    """Full-depth FLOPs of the backbone (method "none") at 224x224: 2 x 4.09 GMACs, timm's published figure."""
    with torch.device("meta"):
        model = timm.create_model("pact_resnet50", method="none", device="meta")
    with FlopCounterMode(display=False) as counter:
        model(torch.empty(1, 3, 224, 224, device="meta"))
    assert abs(counter.get_total_flops() / 2e9 - 4.11) < 0.05


def test_set_threshold_and_halting_loss():
    model = _heterogeneous_heads(timm.create_model("pact_resnet18", tau=0.005, entropy_weight=0.0)).eval()
    x = torch.randn(8, *INPUT)
    ratios = []
    for threshold in (0.05, 0.5, 1.0):
        pact_zoo.set_threshold(model, threshold)
        with torch.no_grad():
            model(x)
        ratios.append(pact_zoo.halting_report(model).flops_ratio)
    assert ratios[0] < ratios[1] < 1.0 < ratios[2] < 1.01  # threshold 1.0: every unit, plus the heads
    assert model.halting_cfg.threshold == 1.0
    model.train()
    model(x)
    loss = pact_zoo.halting_loss(model)
    assert loss.requires_grad and 0.005 * 4 <= loss.item() <= 0.005 * 8  # 4 stages of 1..2 units
