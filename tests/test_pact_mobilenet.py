"""MobileNetV2 / EfficientNet-Lite0 with halting, and make_adaptive (the one conversion path of every family)."""
import copy

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.efficientnet import EfficientNet

import pact_zoo
from pact_zoo.halting import synthesize_halting
from pact_zoo.models import AdaptiveEfficientNet, AdaptiveResNet, AdaptiveVisionTransformer

INPUT = (3, 32, 32)
PAIRS = [("pact_mobilenetv2_100", "mobilenetv2_100"), ("pact_efficientnet_lite0", "tf_efficientnet_lite0")]


@pytest.mark.parametrize("name,backbone", PAIRS)
def test_keys_are_timm_keys_and_stages_follow_the_blocks(name, backbone):
    with torch.device("meta"):
        model = timm.create_model(name)
        plain = timm.create_model(backbone)
    keys, plain_keys = set(model.state_dict()), set(plain.state_dict())
    heads = {k for k in keys if ".heads." in k}
    assert keys - heads == plain_keys
    stages = pact_zoo.adaptive_stages(model)
    # one adaptive stage per stage of more than one block; its first block (stride / width change) always runs
    assert [s.num_units for _, s in stages] == [len(b) for b in plain.blocks if len(b) > 1]
    assert all(len(s.heads) == s.num_units - 1 for _, s in stages)
    assert isinstance(model, AdaptiveEfficientNet) and model.pretrained_cfg["architecture"] == name
    assert model.pretrained_cfg["mean"] == plain.pretrained_cfg["mean"]


def test_pretrained_file_loads_with_fresh_heads_and_full_depth_equals_timm(tmp_path):
    plain = timm.create_model("mobilenetv2_100", num_classes=5).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for module in plain.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "model.safetensors"
    save_file(plain.state_dict(), str(path))
    model = timm.create_model("pact_mobilenetv2_100", pretrained=True, num_classes=5,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=5)).eval()
    assert model.newly_initialized_keys and all(".heads." in k for k in model.newly_initialized_keys)
    x = torch.randn(3, *INPUT)
    with torch.no_grad():
        expected = plain(x)
        with pact_zoo.full_depth(model):
            torch.testing.assert_close(model(x), expected)
    assert pact_zoo.halting_report(model).units_executed.tolist() == [[2, 3, 4, 3, 3]] * 3


@pytest.mark.parametrize("method", ["act", "policy_gradient"])
def test_method_twins_and_compact_eval_per_sample(method):
    model = timm.create_model("pact_efficientnet_lite0", method=method, num_classes=3)
    assert {s.method.name for _, s in pact_zoo.adaptive_stages(model)} == {method}
    synthesize_halting(model, seed=0, input_shape=INPUT, num_samples=16)
    x = torch.randn(4, *INPUT)
    with torch.no_grad():
        batch = model(x)
        units = pact_zoo.halting_report(model).units_executed
        single = torch.cat([model(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)
    assert units.min() >= 1 and (units < torch.tensor(pact_zoo.halting_report(model).num_units)).any()


def test_make_adaptive_converts_each_family_with_the_same_weights():
    for backbone, kwargs, cls in [("mobilenetv2_100", {}, AdaptiveEfficientNet),
                                  ("resnet18", {}, AdaptiveResNet),
                                  ("vit_tiny_patch16_224", dict(img_size=32, depth=2), AdaptiveVisionTransformer)]:
        plain = timm.create_model(backbone, num_classes=4, **kwargs).eval()
        reference = copy.deepcopy(plain)
        model = pact_zoo.make_adaptive(plain, method="pact", tau=0.02, threshold=0.3)
        assert model is plain and type(model) is cls
        assert {s.method.tau for _, s in pact_zoo.adaptive_stages(model)} == {0.02}
        for key, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), key
        x = torch.randn(2, *INPUT)
        with torch.no_grad(), pact_zoo.full_depth(model):
            torch.testing.assert_close(model(x), reference(x))
        assert set(model.newly_initialized_keys) == set(model.state_dict()) - set(reference.state_dict())


def test_make_adaptive_errors():
    with pytest.raises(TypeError, match="supports timm models of the classes.*EfficientNet.*VisionTransformer"):
        pact_zoo.make_adaptive(torch.nn.Linear(2, 2))
    model = timm.create_model("pact_resnet32", layers=(2, 2, 2), channels=(4, 8, 8))
    with pytest.raises(ValueError, match="already has adaptive stages"):
        pact_zoo.make_adaptive(model)
    with torch.device("meta"):
        plain = timm.create_model("mobilenetv2_100")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['depth'\\]"):
        pact_zoo.make_adaptive(plain, depth=3)
    with pytest.raises(ValueError, match="threshold"):
        pact_zoo.make_adaptive(plain, method="act", threshold=0.5)
    assert type(plain) is EfficientNet  # a refused conversion leaves the model alone


def test_bad_input_names_the_argument():
    model = timm.create_model("pact_mobilenetv2_100", num_classes=3).eval()
    with pytest.raises(ValueError, match="H, W >= 32"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 1, 32, 32))


def _calibrated_plain(num_classes: int = 4) -> EfficientNet:
    plain = timm.create_model("mobilenetv2_100", num_classes=num_classes).eval()
    with torch.no_grad():  # non-trivial BN statistics
        for module in plain.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return plain


def test_network_scope_exits_after_every_stage_and_the_source_at_full_depth(tmp_path):
    """halting_scope='network': one stage over the 7 block stages, an exit after each (the last is the model's own
    head); a plain checkpoint loads with new exits, and the full depth is the plain model bit for bit."""
    plain = _calibrated_plain()
    path = tmp_path / "model.safetensors"
    save_file(plain.state_dict(), str(path))
    model = timm.create_model("pact_mobilenetv2_100", method="confidence", num_classes=4, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=4)).eval()
    assert model.halting_scope == "network"  # the default of the exit rules
    (_, stage), = pact_zoo.adaptive_stages(model)
    assert stage.num_units == len(plain.blocks) == 7 and stage.heads is None and stage.exits_are_heads
    assert set(model.state_dict()) - set(plain.state_dict()) == set(model.newly_initialized_keys)
    assert all(k.startswith("blocks.exits.") for k in model.newly_initialized_keys)
    x = torch.randn(5, *INPUT)
    with torch.no_grad():
        expected = plain(x)
        with pact_zoo.full_depth(model):
            assert torch.equal(model(x), expected)
        assert torch.equal(model.forward_head(model.forward_features(x)), expected)
        pact_zoo.set_threshold(model, 1e-6)  # every row leaves at the first exit: its logits are exit 0's
        out = model(x)
        assert pact_zoo.halting_report(model).units_executed.tolist() == [[1]] * 5
        first = model.blocks.exits[0](model.blocks[0](model.bn1(model.conv_stem(x))))
        torch.testing.assert_close(out, first)


def test_network_scope_flops_follow_the_truncation():
    model = timm.create_model("pact_efficientnet_lite0", method="entropy", num_classes=3).eval()
    x = torch.randn(2, 3, 64, 64)
    ratios = []
    with torch.no_grad():
        for depth in range(1, 8):
            with pact_zoo.halting.truncated_depth(model, [depth]):
                model(x)
            ratios.append(pact_zoo.halting_report(model).flops_ratio)
    assert ratios == sorted(ratios) and ratios[-1] == 1.0 and ratios[0] < 0.1


def test_network_scope_pact_has_heads_and_exits_and_resets_its_classifier():
    model = timm.create_model("pact_mobilenetv2_100", method="pact", num_classes=3, halting_scope="network")
    (_, stage), = pact_zoo.adaptive_stages(model)
    assert len(stage.heads) == 6 and len(stage.exits) == 7 and not stage.exits_are_heads
    model.reset_classifier(6)
    assert model(torch.randn(2, *INPUT)).shape == (2, 6) and stage.exits[0].fc.out_features == 6
    reader = timm.create_model("pact_mobilenetv2_100", method="pact", num_classes=3, halting_scope="network",
                               halting_features="state_and_exit").eval()
    assert reader.blocks.heads[2].__dict__["exit_module"] is reader.blocks.exits[2]
    assert reader.blocks.heads[2].fc.in_features == reader.blocks.exits[2].fc.in_features + 2
    reader.reset_classifier(5)
    assert reader.blocks.heads[2].__dict__["exit_module"] is reader.blocks.exits[2]
    with torch.no_grad():
        assert reader(torch.randn(2, *INPUT)).shape == (2, 5)
    with pytest.raises(ValueError, match="needs halting_scope='network'"):
        timm.create_model("pact_mobilenetv2_100", halting_features="state_and_exit")
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        model.reset_classifier(0)
    with pytest.raises(ValueError, match="halting_scope must be one of"):
        timm.create_model("pact_mobilenetv2_100", halting_scope="layer")
    with pytest.raises(ValueError, match="needs a classifier"):
        timm.create_model("pact_mobilenetv2_100", num_classes=0, halting_scope="network")


def test_frozen_conversion_of_a_timm_source_trains_only_the_exits(tmp_path):
    """A plain fine-tune's folder in, exits out: the classifier is the source's (same classes) and stays frozen."""
    from pact_zoo.training.distill import freeze_norm_statistics, freeze_source_weights

    plain = _calibrated_plain()
    save_file(plain.state_dict(), str(tmp_path / "model.safetensors"))
    model = timm.create_model("pact_mobilenetv2_100", method="confidence", num_classes=4, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors"), num_classes=4))
    trainable = freeze_source_weights(model)
    assert set(trainable) == set(model.newly_initialized_keys)
    model.train()
    frozen = freeze_norm_statistics(model)  # the source's BatchNorm statistics stay as they were
    assert frozen and not any(m.training for m in frozen) and model.blocks.exits[0].training
    before = model.bn1.running_mean.clone()
    model(torch.randn(4, *INPUT))
    assert torch.equal(model.bn1.running_mean, before)
    fresh_classes = timm.create_model("pact_mobilenetv2_100", method="confidence", num_classes=3, pretrained=True,
                                      pretrained_cfg_overlay=dict(file=str(tmp_path / "model.safetensors")))
    assert "classifier.weight" in freeze_source_weights(fresh_classes)  # timm dropped the 1000-class head
