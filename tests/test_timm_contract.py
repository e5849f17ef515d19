"""timm's own model contract (timm's tests/test_models.py) where pact_zoo's families differed, and first-hour traps:
ViT features at every block (full depth), the pretrained cfgs timm's tests read, meta-device construction of the ACM
ViT, checkpoint errors that name the file, empty batches, ``full_depth`` on a plain model. Tiny models, offline."""
import copy

import pytest
import timm
import torch
from timm.layers import get_channel_dim, get_spatial_dim
from timm.models import save_for_hf
from timm.models._features import FeatureGetterNet
from timm.models.vision_transformer import VisionTransformer

import pact_zoo
from pact_zoo.halting import synthesize_halting

TINY_VIT = dict(img_size=32, embed_dim=32, num_heads=2, depth=4)
INPUT = (3, 32, 32)
#: timm's ``NON_STD_FILTERS`` hold its ViTs (``vit_*``, ``deit*``): their forward_features are ``[B, N, D]`` tokens,
#: pool_size is None, and timm checks them with ``test_model_default_cfgs_non_std``. These are pact_zoo's.
VIT_FAMILIES = ("pact_vit", "acm_vit")
FAMILY = {name: module for module in pact_zoo.models.FAMILY_MODULES for name in timm.list_models(module=module)}


def adaptive_vit(seed: int = 0):
    """A tiny timm ViT and its adaptive twin with the same weights and heads under which images stop at different
    blocks (the core's synthetic heads)."""
    torch.manual_seed(seed)
    plain = timm.create_model("vit_tiny_patch16_224", num_classes=3, **TINY_VIT).eval()
    model = pact_zoo.make_adaptive(copy.deepcopy(plain)).eval()
    synthesize_halting(model, seed=seed, input_shape=INPUT, num_samples=16)
    return plain, model


# -- 1. ViT features: every block, at full depth --------------------------------------------------------------------
def test_vit_forward_intermediates_is_timms_at_full_depth_and_forward_still_halts():
    plain, model = adaptive_vit()
    x = torch.randn(6, *INPUT)
    with torch.no_grad():
        model(x)
        halted = pact_zoo.halting_report(model).units_executed.view(-1)
        assert len(set(halted.tolist())) > 1  # the normal forward halts, images at different depths
        final, intermediates = model.forward_intermediates(x)
        ref_final, ref_intermediates = plain.forward_intermediates(x)
        assert torch.equal(pact_zoo.halting_report(model).units_executed.view(-1), torch.full((6,), 4))
        torch.testing.assert_close(final, ref_final)
        assert len(intermediates) == len(model.feature_info) == TINY_VIT["depth"]
        for ours, timms in zip(intermediates, ref_intermediates):
            torch.testing.assert_close(ours, timms)
        nlc = model.forward_intermediates(x, indices=[1], output_fmt="NLC", norm=True, return_prefix_tokens=True,
                                          stop_early=True, intermediates_only=True)
        ref = plain.forward_intermediates(x, indices=[1], output_fmt="NLC", norm=True, return_prefix_tokens=True,
                                          stop_early=True, intermediates_only=True)
        torch.testing.assert_close(nlc[0][0], ref[0][0])
        torch.testing.assert_close(nlc[0][1], ref[0][1])
        assert set(model.forward_intermediates(x, output_dict=True)) == {"image_intermediates", "image_features"}
        model(x)
        assert torch.equal(pact_zoo.halting_report(model).units_executed.view(-1), halted)  # unchanged halting
    assert [info["module"] for info in model.feature_info] == [f"blocks.{i}" for i in range(4)]


@pytest.mark.parametrize("name", ["pact_vit_tiny_patch16_224", "pact_deit_small_patch16_224"])
def test_vit_features_only_has_timms_levels(name):
    """timm's test_model_forward_features: at least three levels, channels and reductions as the outputs."""
    model = timm.create_model(name, features_only=True, **TINY_VIT).eval()
    assert isinstance(model, FeatureGetterNet)
    assert model.feature_info.channels() == [32, 32, 32] and model.feature_info.reduction() == [16, 16, 16]
    with torch.no_grad():
        outputs = model(torch.randn(2, *INPUT))
    assert [tuple(o.shape) for o in outputs] == [(2, 32, 2, 2)] * 3
    every = timm.create_model(name, features_only=True, out_indices=(0, 1, 2, 3), **TINY_VIT)
    assert len(every.feature_info.channels()) == 4


def test_vit_features_only_equals_the_full_depth_blocks_and_trains_every_parameter():
    _, model = adaptive_vit()
    x = torch.randn(3, *INPUT)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=3, intermediates_only=True)
    features = FeatureGetterNet(copy.deepcopy(model), out_indices=3).eval()  # what features_only builds
    with torch.no_grad():
        for ours, ref in zip(features(x), expected):
            torch.testing.assert_close(ours, ref)
    assert features.model.blocks.heads is None  # pruned with the classifier: a full-depth backbone
    features.train()
    sum(f.sum() for f in features(x)).backward()
    assert not [n for n, p in features.named_parameters() if p.grad is None]  # no unused parameter (DDP)


def test_vit_prune_intermediate_layers_keeps_halting_without_prune_head():
    _, model = adaptive_vit()
    x = torch.randn(5, *INPUT)
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers([1], prune_head=False) == [1]
    assert len(pruned.blocks) == 2 and len(pruned.blocks.heads) == 1
    with torch.no_grad():
        assert pruned(x).shape == (5, 3)
        assert pact_zoo.halting_report(pruned).units_executed.shape == (5, 1)
    pruned = copy.deepcopy(model)
    pruned.prune_intermediate_layers([2])
    assert len(pruned.blocks) == 3 and pruned.blocks.heads is None and pruned.halting_cfg.method == "none"


@pytest.mark.parametrize("feature_cls", ["fx", "hook", "list"])
def test_vit_features_only_refuses_wrappers_that_read_inside_the_stage(feature_cls):
    with pytest.raises(ValueError, match="feature_cls must be 'getter'"):
        timm.create_model("pact_vit_tiny_patch16_224", features_only=True, feature_cls=feature_cls, **TINY_VIT)


# -- 2. pretrained cfgs as timm's test_model_default_cfgs(_non_std) read them ----------------------------------------
@pytest.mark.parametrize("name", pact_zoo.list_models())
def test_default_cfg_as_timms_cfg_tests_read_it(name):
    """CNN families: timm's standard check (pool_size = the unpooled feature map at the cfg input size). ViT
    families: timm classifies ViTs as non-standard (``[B, N, D]`` tokens, pool_size None as timm's own ViT cfgs) and
    checks the token width and the head instead."""
    with torch.device("meta"):
        model = timm.create_model(name, device="meta", dtype=torch.float32).eval()
        cfg = model.pretrained_cfg
        x = torch.empty(1, *cfg["input_size"])
        features = model.forward_features(x)
        pre_logits = model.forward_head(features, pre_logits=True)
    assert model.in_chans == cfg["input_size"][0] and pre_logits.shape[1] == model.head_hidden_size
    if FAMILY[name] in VIT_FAMILIES:
        assert cfg["pool_size"] is None and features.ndim == 3 and features.shape[-1] == model.num_features
        assert cfg["pool_size"] == timm.models.get_pretrained_cfg(
            "vit_tiny_patch16_224.augreg_in21k_ft_in1k").pool_size
        return
    spatial = get_spatial_dim(getattr(model, "output_fmt", "NCHW"))
    assert cfg["pool_size"] is not None, f"{name}: pool_size missing"
    assert tuple(features.shape[i] for i in spatial) == tuple(cfg["pool_size"])
    assert features.shape[get_channel_dim(getattr(model, "output_fmt", "NCHW"))] == model.num_features


# -- 3. meta-device construction and forward of the ACM ViT ---------------------------------------------------------
@pytest.mark.parametrize("gating", pact_zoo.acm.GATINGS)
@pytest.mark.parametrize("training", [False, True])
def test_acm_vit_builds_and_runs_on_the_meta_device(gating, training):
    with torch.device("meta"):
        model = timm.create_model("acm_vit_tiny_patch16_224", method=gating, attention=True)
    # timm's factory argument without the device context (timm's test_model_default_cfgs_non_std) as well
    twin = timm.create_model("acm_vit_tiny_patch16_224", method=gating, num_classes=0, device="meta")
    for net in (model, twin):
        assert all(t.device.type == "meta" for t in [*net.parameters(), *net.buffers()])
        net.train(training)
    out = model(torch.empty(2, 3, 224, 224, device="meta"))
    assert out.shape == (2, 1000) and out.device.type == "meta"
    assert twin(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, twin.num_features)


# -- 4. checkpoint errors name the file -----------------------------------------------------------------------------
def _saved_folder(tmp_path, name: str, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=3, **kwargs)
    save_for_hf(model, tmp_path, safe_serialization=True)
    return tmp_path / "model.safetensors"


@pytest.mark.parametrize("name, kwargs", [
    ("pact_resnet32", dict(layers=(1, 1, 1), channels=(4, 8, 8))),
    ("pact_vit_tiny_patch16_224", dict(img_size=32, embed_dim=32, num_heads=2, depth=2)),
    ("acm_vit_tiny_patch16_224", dict(img_size=32, embed_dim=32, num_heads=2, depth=2)),
])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_local_dir_checkpoint_errors_name_the_file(tmp_path, name, kwargs, damage):
    weights = _saved_folder(tmp_path, name, **kwargs)
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2] if damage == "truncated" else b"not a checkpoint" * 8)
    with pytest.raises(ValueError, match="truncated or corrupt") as caught:
        timm.create_model(f"local-dir:{tmp_path}", pretrained=True)
    assert str(weights) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        timm.create_model(name, pretrained=True, num_classes=3, pretrained_cfg_overlay=dict(file=str(weights)),
                          **kwargs)


@pytest.mark.parametrize("name, kwargs", [
    ("pact_resnet32", dict(layers=(1, 1, 1), channels=(4, 8, 8))),
    ("pact_vit_tiny_patch16_224", dict(img_size=32, embed_dim=32, num_heads=2, depth=2)),
    ("pact_mobilenetv2_100", {}),
])
@pytest.mark.parametrize("num_classes", [0, 5])
def test_pretrained_weights_load_with_other_classes_and_channels(tmp_path, name, kwargs, num_classes):
    """timm's test_model_load_pretrained: ``pretrained=True, in_chans=1, num_classes=5`` and ``num_classes=0`` (no
    classifier, whose checkpoint keys timm drops after the family's filter)."""
    torch.manual_seed(0)
    source = timm.create_model(name, **kwargs)
    weights = tmp_path / "model.pth"
    torch.save(source.state_dict(), weights)
    model = timm.create_model(name, pretrained=True, in_chans=1, num_classes=num_classes,
                              pretrained_cfg_overlay=dict(file=str(weights)), **kwargs).eval()
    state = model.state_dict()
    key = next(k for k in state if k.endswith(".weight") and k in source.state_dict()
               and state[k].shape == source.state_dict()[k].shape and state[k].ndim > 1)
    torch.testing.assert_close(state[key], source.state_dict()[key])  # the weights were read
    with torch.no_grad():
        assert model(torch.randn(2, 1, *INPUT[1:])).shape == ((2, num_classes) if num_classes else (2, model.num_features))


def test_missing_and_corrupt_files_through_pretrained_cfg_overlay(tmp_path):
    kwargs = dict(layers=(1, 1, 1), channels=(4, 8, 8), num_classes=3)
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match=f"not found: {missing}"):
        timm.create_model("pact_resnet32", pretrained=True, pretrained_cfg_overlay=dict(file=str(missing)), **kwargs)
    torch.manual_seed(0)
    torch_file = tmp_path / "model.pth"
    torch.save(timm.create_model("pact_resnet32", **kwargs).state_dict(), torch_file)
    data = torch_file.read_bytes()
    torch_file.write_bytes(data[:len(data) // 2])  # a torch.save archive cut short
    with pytest.raises(ValueError, match=f"{torch_file} is truncated or corrupt"):
        timm.create_model("pact_resnet32", pretrained=True, pretrained_cfg_overlay=dict(file=str(torch_file)),
                          **kwargs)
    torch_file.write_bytes(data)  # whole again: loads
    timm.create_model("pact_resnet32", pretrained=True, pretrained_cfg_overlay=dict(file=str(torch_file)), **kwargs)


# -- 5. empty batches, full_depth on a plain model ------------------------------------------------------------------
EMPTY_BATCH_MODELS = {
    "pact_resnet32": dict(layers=(2, 2, 2), channels=(4, 8, 8)),
    "act_resnet32": dict(layers=(2, 2, 2), channels=(4, 8, 8)),
    "pg_resnet32": dict(layers=(2, 2, 2), channels=(4, 8, 8)),
    "pact_vit_tiny_patch16_224": TINY_VIT,
    "acm_vit_tiny_patch16_224": TINY_VIT,
}
@pytest.mark.parametrize("execution", ["masked", "compact"])
@pytest.mark.parametrize("name", [n for n in EMPTY_BATCH_MODELS if not n.startswith("acm_")])
def test_empty_batch_in_eval_gives_an_empty_output(name, execution):
    model = timm.create_model(name, num_classes=3, **EMPTY_BATCH_MODELS[name]).eval()
    pact_zoo.set_execution(model, execution)
    with torch.no_grad():
        out = model(torch.randn(0, *INPUT))
    assert out.shape == (0, 3)
    report = pact_zoo.halting_report(model)
    assert report.flops.shape == (0,) and report.units_executed.shape[0] == 0


@pytest.mark.parametrize("execution", ["masked", "compact"])
def test_empty_batch_in_eval_acm_vit(execution):
    model = timm.create_model("acm_vit_tiny_patch16_224", num_classes=3, **TINY_VIT).eval()
    pact_zoo.set_execution(model, execution)
    with torch.no_grad():
        assert model(torch.randn(0, *INPUT)).shape == (0, 3)


def test_full_depth_on_a_plain_model_raises_naming_its_class():
    plain = VisionTransformer(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=2)
    with pytest.raises(ValueError, match="no adaptive stage \\(VisionTransformer\\)"):
        with pact_zoo.full_depth(plain):
            pass
    with pact_zoo.full_depth(pact_zoo.make_adaptive(plain)):  # its adaptive twin: fine
        pass


@pytest.mark.parametrize("name", ["pg_resnet32", "pact_resnet32"])
def test_training_output_reaches_every_parameter(name):
    """timm's train.py under DDP without find_unused_parameters: the output alone gives every parameter (halting
    heads of sampled-path methods included) a gradient."""
    model = timm.create_model(name, layers=(2, 2, 2), channels=(4, 8, 8)).train()
    model(torch.randn(4, *INPUT)).mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
