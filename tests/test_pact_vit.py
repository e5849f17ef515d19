"""ViT / DeiT with per-sample depth over the blocks: timm keys, heads on the class token or pooled tokens,
compacted eval, pretrained files, features."""
import pytest
import timm
import torch
from safetensors.torch import save_file

import pact_zoo
from pact_zoo.halting import synthesize_halting
from pact_zoo.models import AdaptiveVisionTransformer, TokenHaltingHead

TINY = dict(img_size=32, embed_dim=32, num_heads=2, depth=4)
INPUT = (3, 32, 32)


@pytest.mark.parametrize("name,backbone", [("pact_vit_base_patch16_224", "vit_base_patch16_224"),
                                           ("pact_deit_small_patch16_224", "deit_small_patch16_224")])
def test_keys_are_timm_keys_and_cfg_is_the_backbones(name, backbone):
    with torch.device("meta"):
        model = timm.create_model(name)
        plain = timm.create_model(backbone)
    heads = {k for k in model.state_dict() if k.startswith("blocks.heads.")}
    assert set(model.state_dict()) - heads == set(plain.state_dict())
    assert len(model.blocks.heads) == len(plain.blocks) - 1 and model.blocks[3] is not None
    assert isinstance(model, AdaptiveVisionTransformer)
    for key in ("input_size", "mean", "std", "crop_pct", "interpolation"):
        assert model.pretrained_cfg[key] == plain.pretrained_cfg[key], key


@pytest.mark.parametrize("class_token", [True, False])
def test_compact_eval_equals_each_sample_alone_and_masked(class_token):
    kwargs = dict(TINY) if class_token else dict(TINY, class_token=False, global_pool="avg")
    model = timm.create_model("pact_vit_tiny_patch16_224", num_classes=3, **kwargs)
    assert all(h.use_class_token == class_token for h in model.blocks.heads)
    synthesize_halting(model, seed=0, input_shape=INPUT, num_samples=32)
    x = torch.randn(6, *INPUT)
    with torch.no_grad():
        compact = model(x)
        units = pact_zoo.halting_report(model).units_executed
        single = torch.cat([model(x[i:i + 1]) for i in range(6)])
        pact_zoo.set_execution(model, "masked")
        masked = model(x)
    torch.testing.assert_close(compact, single, atol=1e-5, rtol=0)
    torch.testing.assert_close(compact, masked, atol=1e-5, rtol=0)
    assert len(set(units[:, 0].tolist())) > 1  # depth differs per sample
    report = pact_zoo.halting_report(model)
    assert report.flops_ratio < 1.0


def test_token_head_pools_the_class_token_or_the_patch_tokens():
    tokens = torch.randn(3, 5, 8)
    by_token = TokenHaltingHead(8, num_prefix_tokens=1, use_class_token=True).eval()
    pooled = TokenHaltingHead(8, num_prefix_tokens=1, use_class_token=False).eval()
    pooled.load_state_dict(by_token.state_dict())
    changed = tokens.clone()
    changed[:, 1:] += 1.0
    assert torch.equal(by_token(tokens), by_token(changed)) and not torch.equal(pooled(tokens), pooled(changed))
    assert by_token(tokens).shape == (3,)


def test_pretrained_file_loads_with_fresh_heads(tmp_path):
    plain = timm.create_model("vit_tiny_patch16_224", num_classes=3, **TINY).eval()
    path = tmp_path / "model.safetensors"
    save_file(plain.state_dict(), str(path))
    model = timm.create_model("pact_vit_tiny_patch16_224", pretrained=True, num_classes=3,
                              pretrained_cfg_overlay=dict(file=str(path), num_classes=3), **TINY).eval()
    assert sorted(model.newly_initialized_keys) == sorted(k for k in model.state_dict() if ".heads." in k)
    x = torch.randn(2, *INPUT)
    with torch.no_grad(), pact_zoo.full_depth(model):
        torch.testing.assert_close(model(x), plain(x))


def test_training_step_reaches_heads_and_features():
    model = timm.create_model("pact_vit_tiny_patch16_224", num_classes=3, method="act", **TINY).train()
    x, y = torch.randn(4, *INPUT), torch.tensor([0, 1, 2, 0])
    step = pact_zoo.training_loss(model, lambda: model(x),
                                  lambda out: torch.nn.functional.cross_entropy(out, y, reduction="none"))
    step.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.blocks.heads.parameters())
    model.eval()
    feats = model.forward_intermediates(x, intermediates_only=True)  # every block, at full depth
    assert len(feats) == TINY["depth"] and all(f.shape == (4, 32, 2, 2) for f in feats)
    features = timm.create_model("pact_vit_tiny_patch16_224", features_only=True, **TINY).eval()
    assert [f.shape for f in features(x)] == [(4, 32, 2, 2)] * 3  # timm's default: the last 3 blocks
    with pytest.raises(ValueError, match="attn_mask"):
        model(x, attn_mask=torch.ones(5, 5, dtype=torch.bool))


def test_heads_pool_as_the_classifier_does():
    """A ViT with a class token but average pooling (timm's global_pool="avg"): the heads read the mean patch token."""
    by_token = timm.create_model("pact_vit_tiny_patch16_224", num_classes=3, **TINY)
    by_mean = timm.create_model("pact_vit_tiny_patch16_224", num_classes=3, **dict(TINY, global_pool="avg"))
    assert by_token.has_class_token and by_mean.has_class_token
    assert all(h.use_class_token for h in by_token.blocks.heads)
    assert not any(h.use_class_token for h in by_mean.blocks.heads)
