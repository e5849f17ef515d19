"""The timm tool-chain on every registered pact_zoo model: FX feature extraction (torchvision and timm
``features_only`` fx), channels_last, ``resolve_data_config`` + ``create_transform``, ``torch.export`` of the masked
path (and a clear error for the compact one) and ``torch.compile`` in eval and train.

Cheap checks run on every registered model (tiny configurations); export runs on the smallest model of each family
and compile on one tiny ViT (``backend="eager"``: dynamo capture with its graph breaks, no C++ compilation; the
inductor run and its timing are the benchmark's compiled modes, ``pact-zoo benchmark --modes compiled,...``, and
``docs/vit.md``).
"""
from typing import Any, Dict, Tuple

import pytest
import timm
import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from timm.models import create_feature_extractor as timm_create_feature_extractor
from torchvision.models.feature_extraction import create_feature_extractor

import pact_zoo
from pact_zoo.halting import synthesize_halting

ALL_MODELS = pact_zoo.list_models()
FAMILY = {name: module for module in pact_zoo.models.FAMILY_MODULES for name in timm.list_models(module=module)}
BATCH = 4
#: Smallest registered model of each family (the expensive checks).
SMALLEST = ["pact_resnet32", "pact_resnet18", "pact_mobilenetv2_100", "pact_vit_tiny_patch16_224"]
#: Backbones that torchvision's plain tracer cannot trace even as timm models (TF "same" padding computes its pads
#: from the input shape): traced with timm's create_feature_extractor, which adds timm's leaf modules.
NEEDS_TIMM_LEAVES = {"pact_efficientnet_lite0"}


def tiny(name: str) -> Tuple[Dict[str, Any], Tuple[int, int, int]]:
    """Model kwargs and per-sample input shape of a tiny configuration of a registered model."""
    module = FAMILY[name]
    if module == "pact_resnet_cifar":
        return dict(layers=(2, 2, 2), channels=(4, 8, 8)), (3, 16, 16)
    if module == "pact_resnet":
        return dict(layers=(2, 2, 1, 1)), (3, 32, 32)
    if module in ("pact_vit", "acm_vit"):
        return dict(img_size=32, embed_dim=32, num_heads=2, depth=3), (3, 32, 32)
    return {}, (3, 32, 32)  # mobile CNNs: timm's full widths at 32 px


def build(name: str, heterogeneous: bool = True) -> Tuple[torch.nn.Module, torch.Tensor]:
    """A tiny eval-mode model whose samples halt at different units (the core's synthetic heads), and an input."""
    kwargs, shape = tiny(name)
    model = timm.create_model(name, num_classes=3, **kwargs).eval()
    if heterogeneous and any(isinstance(stage, pact_zoo.AdaptiveStage) and stage.halting
                             for _, stage in pact_zoo.adaptive_stages(model)):  # ACM's per-token gates: as built
        synthesize_halting(model, seed=0, input_shape=shape, num_samples=16)
    return model, torch.randn(BATCH, *shape)


def test_every_family_is_covered():
    assert set(SMALLEST) <= set(ALL_MODELS)
    assert {"pact_vit_small_patch16_224", "pact_vit_base_patch16_224", "pact_deit_small_patch16_224",
            "pact_efficientnet_lite0"} <= set(ALL_MODELS)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fx_feature_extraction(name):
    """torchvision's create_feature_extractor (plain tracer: each adaptive stage becomes one leaf node that still
    halts at run time) and timm's features_only fx give the model's own features."""
    model, x = build(name)
    with torch.no_grad():
        model(x)  # halting_report profiles the input shape of the model's own last call
    # the adaptive ViT's feature points are its blocks (run at full depth by forward_intermediates); traced, its
    # blocks are one leaf node, ``blocks``: the halted tokens, which the final norm turns into forward_features
    adaptive_vit = FAMILY[name] == "pact_vit"
    last = "blocks" if adaptive_vit else model.feature_info[-1]["module"]
    vit = FAMILY[name] in ("pact_vit", "acm_vit")
    extract = timm_create_feature_extractor if name in NEEDS_TIMM_LEAVES else create_feature_extractor
    extractor = extract(model, return_nodes={last: "feat"}).eval()
    halting = any(stage.halting for _, stage in pact_zoo.adaptive_stages(model))
    with torch.no_grad():
        feat = extractor(x)["feat"]
        units = pact_zoo.halting_report(model).units_executed if halting else None
        if adaptive_vit:
            feat, reference = model.norm(feat), model.forward_features(x)
        else:
            reference = model.forward_intermediates(x, indices=[len(model.feature_info) - 1], intermediates_only=True,
                                                    **({"output_fmt": "NLC"} if vit else {}))[0]
    if vit and not adaptive_vit:  # the node gives every token, forward_intermediates the patch tokens
        feat = feat[:, model.num_prefix_tokens:]
    torch.testing.assert_close(feat, reference)
    if units is not None:  # the traced stage halted as the model does
        assert torch.equal(units, pact_zoo.halting_report(model).units_executed)

    kwargs, shape = tiny(name)
    if adaptive_vit:  # features_only runs through forward_intermediates (full depth): timm's getter only
        with pytest.raises(ValueError, match="feature_cls must be 'getter'"):
            timm.create_model(name, features_only=True, feature_cls="fx", **kwargs)
        return
    features = timm.create_model(name, features_only=True, feature_cls="fx", **kwargs).eval()
    with torch.no_grad():
        outs = features(torch.randn(2, *shape))
    assert [o.shape[1] if o.dim() == 4 else o.shape[-1] for o in outs] == features.feature_info.channels()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_channels_last(name):
    model, x = build(name)
    with torch.no_grad():
        expected = model(x)
        units = pact_zoo.halting_report(model).units_executed
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    assert torch.equal(pact_zoo.halting_report(model).units_executed, units)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_resolve_data_config_and_transform(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    config = resolve_data_config(model=model)
    assert config["input_size"] == model.pretrained_cfg["input_size"]
    assert tuple(config["mean"]) == tuple(model.pretrained_cfg["mean"])
    transform = create_transform(**config, is_training=False)
    image = Image.new("RGB", (config["input_size"][2] + 9, config["input_size"][1] + 5), (120, 30, 200))
    pixels = transform(image)
    assert tuple(pixels.shape) == config["input_size"]
    train_transform = create_transform(**config, is_training=True)
    assert tuple(train_transform(image).shape) == config["input_size"]


@pytest.mark.parametrize("name", SMALLEST)
def test_export_masked_path_and_clear_error_for_compact(name):
    model, x = build(name)
    with pytest.raises(RuntimeError, match="set_execution"):
        torch.export.export(model, (x,))
    pact_zoo.set_execution(model, "masked")
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        expected = model(x)
        pact_zoo.set_execution(model, "compact")
        compact = model(x)
    out = exported.module()(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out, compact, atol=1e-5, rtol=0)  # masked and compact give the same outputs


@pytest.mark.parametrize("name", ["pact_resnet32", "pact_vit_tiny_patch16_224"])
def test_torch_compile_eval_runs_compiled_units_and_halts_per_row(name):
    """Under torch.compile each stage leaves the graph, runs its compact loop eagerly and calls every unit compiled on
    its own: outputs, depths and reported FLOPs are eager compact evaluation's, and rows that stop skip units."""
    from torch._dynamo.testing import CompileCounter

    model, _ = build(name)
    x = torch.randn(16, *tiny(name)[1])
    with torch.no_grad():
        expected = model(x)
        eager_report = pact_zoo.halting_report(model)
    counter = CompileCounter()
    pact_zoo.set_unit_compile(model, {"backend": counter, "dynamic": True})
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        out = compiled(x)
        report = pact_zoo.halting_report(model)
        again = compiled(x[:5])  # another batch size: no recompilation of the units (dynamic batch dimension)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, expected[:5], atol=1e-5, rtol=0)
    assert counter.frame_count >= 1  # the units ran compiled
    frames = counter.frame_count
    with torch.no_grad():
        compiled(x)
    assert counter.frame_count == frames
    with torch.no_grad():
        compiled(x)
    report = pact_zoo.halting_report(model)
    assert torch.equal(report.units_executed, eager_report.units_executed)
    assert 1 < len(report.units_executed.sum(1).unique())  # depth varies per row: the compact loop ran
    torch.testing.assert_close(report.flops, eager_report.flops)
    assert float(report.flops.sum()) < float(report.sample_full_flops.sum())

    pact_zoo.set_unit_compile(model, None)  # the dense path under compile: every unit runs, same outputs
    torch._dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager")(x), expected, atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="options must be a dict"):
        pact_zoo.set_unit_compile(model, "eager")


def test_compiled_units_stay_compiled_past_dynamos_recompile_limit():
    """The units of a class share one code object, and dynamo keeps an entry per structure (stride, shortcut,
    channels) and batch-size range: more than its default limit of 8 for a three-stage ResNet. Every unit call of
    the compact loop still runs a compiled graph (none falls back to eager at the limit)."""
    model = timm.create_model("pact_resnet32", num_classes=3, channels=(4, 8, 8)).eval()
    synthesize_halting(model, seed=0, input_shape=(3, 8, 8), num_samples=16)
    graph_calls = []

    def counting_backend(graph_module, example_inputs):
        def run(*args):
            graph_calls.append(1)
            return graph_module.forward(*args)
        return run

    pact_zoo.set_unit_compile(model, {"backend": counting_backend, "dynamic": True})
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        for rows in (16, 1):
            graph_calls.clear()
            compiled(torch.randn(rows, 3, 8, 8))
            units = pact_zoo.halting_report(model).units_executed
            assert len(graph_calls) == int(units.max(0).values.sum())  # one compiled call per loop step


def test_compiled_units_are_not_pickled():
    import copy

    model, x = build("pact_resnet32")
    pact_zoo.set_unit_compile(model, {"backend": "eager", "dynamic": True})
    with torch.no_grad():
        torch.compile(model, backend="eager")(x)
    stages = [stage for _, stage in pact_zoo.adaptive_stages(model)]
    assert all("_compiled_units" in stage.__dict__ for stage in stages)
    clone = copy.deepcopy(model)
    assert not any("_compiled_units" in stage.__dict__ for _, stage in pact_zoo.adaptive_stages(clone))
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


def test_torch_compile_eval_and_train():
    model, x = build("pact_vit_tiny_patch16_224")
    pact_zoo.set_unit_compile(model, {"backend": "eager", "dynamic": True})
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-5, rtol=1e-5)
    model.train()
    labels = torch.arange(BATCH) % 3
    step = pact_zoo.training_loss(model, lambda: compiled(x),
                                  lambda out: torch.nn.functional.cross_entropy(out, labels, reduction="none"))
    step.loss.backward()
    assert torch.isfinite(step.loss)
    heads = [p for _, s in pact_zoo.adaptive_stages(model) for p in s.heads.parameters()]
    assert all(p.grad is not None for p in model.parameters())
    assert any(p.grad.abs().sum() > 0 for p in heads)
    for rows in (3, 2):  # a smaller last batch: dynamo recompiles with a symbolic batch size (Concrete noise too)
        assert torch.isfinite(compiled(x[:rows])).all()
