"""The timm model contract for the CIFAR family (in the spirit of timm's tests/test_models.py).

The ImageNet family has its own contract tests in test_pact_resnet_imagenet.py (other input size and cfg).
"""
import inspect
import logging

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import save_for_hf
from torch.utils.flop_counter import FlopCounterMode

import pact_zoo

ALL_MODELS = timm.list_models(module="pact_resnet_cifar")
# The contract tests run the small variant of each family; depth-specific checks cover the large ones.
SMALL_MODELS = [m for m in ALL_MODELS if "110" not in m]
INPUT = (3, 32, 32)


def test_registered():
    for name in ["resnet32_cifar", "resnet110_cifar", "pact_resnet32", "pact_resnet110", "act_resnet32",
                 "act_resnet110"]:
        assert name in ALL_MODELS
    assert set(ALL_MODELS) | {"pact_resnet50", "act_resnet101"} <= set(pact_zoo.list_models())


def _heterogeneous_heads(model):
    """The core's synthetic halting heads (samples halt at different units); keeps the model's train/eval mode."""
    was_training = model.training
    pact_zoo.halting.synthesize_halting(model, seed=0, input_shape=INPUT, num_samples=32, calibrate_norms=True)
    model.train(was_training)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_forward_train_and_eval(name):
    model = timm.create_model(name)
    x = torch.randn(2, *INPUT)
    for train in (True, False):
        model.train(train)
        out = model(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_backward_reaches_every_parameter(name):
    model = timm.create_model(name, num_classes=42).train()
    step = pact_zoo.training_loss(model, lambda: model(torch.randn(2, *INPUT)), lambda out: out.mean(-1))
    step.loss.backward()
    out = step.output
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {pname}"
    assert out.shape[-1] == 42


@pytest.mark.parametrize("name", ALL_MODELS)
def test_default_cfg_on_meta_device(name):
    with torch.device("meta"):
        model = timm.create_model(name, device="meta", dtype=torch.float32)
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(b.device.type == "meta" for b in model.buffers())
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == INPUT and cfg["num_classes"] == 10 and model.num_classes == 10
    assert model.in_chans == cfg["input_size"][0]
    assert tuple(cfg["mean"]) == (0.4914, 0.4822, 0.4465)
    x = torch.empty(2, *cfg["input_size"], device="meta")
    model.eval()
    feats = model.forward_features(x)
    assert feats.shape[1] == model.num_features and tuple(feats.shape[2:]) == cfg["pool_size"]
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
    assert model(x).shape == (2, 10)
    state_dict = model.state_dict()
    assert cfg["classifier"] + ".weight" in state_dict and cfg["first_conv"] + ".weight" in state_dict
    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(0, "")
    assert tuple(model(x).shape[2:]) == cfg["pool_size"]
    assert inspect.signature(model.reset_classifier).parameters["global_pool"].default is None
    assert len(set(v for v in timm.models.group_parameters(model, model.group_matcher()).keys())) > 1


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_cfg_shapes_and_classifier_reset(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, *INPUT)
    assert timm.create_model(name, num_classes=0).eval()(x).shape == (2, model.num_features)
    assert timm.create_model(name, num_classes=0, global_pool="")(x).shape == (2, model.num_features, 8, 8)
    model = model.to(torch.bfloat16)
    assert model(x.to(torch.bfloat16)).dtype == torch.bfloat16
    model.reset_classifier(5)
    assert model.fc.weight.dtype == torch.bfloat16 and not model.fc.training
    assert model(x.to(torch.bfloat16)).shape == (2, 5)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_unknown_kwarg_raises_type_error(name):
    with pytest.raises(TypeError):
        timm.create_model(name, not_a_kwarg=1)


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_features_only(name):
    model = timm.create_model(name, features_only=True).eval()
    feats = model(torch.randn(2, *INPUT))
    assert len(feats) == 4
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [32 // f.shape[-1] for f in feats] == model.feature_info.reduction()


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_forward_intermediates(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, *INPUT)
    final, taps = model.forward_intermediates(x)
    torch.testing.assert_close(final, model.forward_features(x))
    assert [t.shape[1] for t in taps] == [info["num_chs"] for info in model.feature_info]
    assert len(model.forward_intermediates(x, indices=2, intermediates_only=True)) == 2
    kept = model.prune_intermediate_layers(indices=[1])
    assert kept == [1] and len(model.stages) == 1


@pytest.mark.parametrize("name", ["pact_resnet32", "act_resnet32"])
def test_grad_checkpointing_matches(name):
    model = timm.create_model(name).train()
    x = torch.randn(4, *INPUT)
    torch.manual_seed(1)
    reference = model(x)
    reference.sum().backward()
    reference_grad = model.stem.weight.grad.clone()
    model.zero_grad()
    model.set_grad_checkpointing(True)
    torch.manual_seed(1)
    out = model(x)
    out.sum().backward()
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(model.stem.weight.grad, reference_grad)


@pytest.mark.parametrize("name", ["resnet32_cifar", "resnet110_cifar"])
def test_plain_flops_match_sact_reference(name):
    model = timm.create_model(name).eval()
    with torch.no_grad():
        model(torch.randn(1, *INPUT))
    report = pact_zoo.halting_report(model)
    # SACT flopsometer convention incl. the 64 -> 10 classifier (mfigurnov/sact flopsometer.py)
    expected = {"resnet32_cifar": 137_725_184, "resnet110_cifar": 505_775_360}[name]
    assert report.full_flops == expected
    assert report.flops.tolist() == [expected]


@pytest.mark.parametrize("name", ALL_MODELS)
def test_full_flops_agree_with_flop_counter(name):
    model = timm.create_model(name).train()
    x = torch.randn(2, *INPUT)
    with FlopCounterMode(display=False) as counter:
        model(x)  # a training forward: dense methods run every unit and head, sampled ones (policy gradient) fewer
    report = pact_zoo.halting_report(model)
    assert abs(report.flops.sum().item() - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()
    with pact_zoo.full_depth(model), FlopCounterMode(display=False) as plain_counter:
        model(x)  # full depth: every unit, no head
    assert abs(report.full_flops - plain_counter.get_total_flops() / 2) <= 0.01 * report.full_flops
    assert pact_zoo.halting_report(model).flops.tolist() == [report.full_flops] * 2


@pytest.mark.parametrize("name", ["pact_resnet32", "act_resnet32", "pact_resnet110"])
def test_per_sample_eval_flops_agree_with_flop_counter(name):
    model = timm.create_model(name).eval()
    _heterogeneous_heads(model)
    x = torch.randn(16, *INPUT)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    report = pact_zoo.halting_report(model)
    assert report.units_executed.unique(dim=0).shape[0] > 1, "samples should halt differently"
    assert abs(report.flops.sum().item() - counter.get_total_flops()) <= 0.01 * counter.get_total_flops()
    assert report.flops.max() <= report.full_flops and report.flops_ratio < 1.0


@pytest.mark.parametrize("name", ["pact_resnet32", "act_resnet32"])
def test_eval_batch_equals_each_sample_alone(name):
    model = timm.create_model(name).eval()
    _heterogeneous_heads(model)
    x = torch.randn(12, *INPUT)
    with torch.no_grad():
        batch_out = model(x)
        batch_units = pact_zoo.halting_report(model).units_executed
        assert batch_units.unique(dim=0).shape[0] > 1
        for i in range(12):
            torch.testing.assert_close(model(x[i:i + 1]), batch_out[i:i + 1], atol=1e-5, rtol=1e-5)
            assert torch.equal(pact_zoo.halting_report(model).units_executed[0], batch_units[i])
        pact_zoo.set_execution(model, "masked")
        torch.testing.assert_close(model(x), batch_out, atol=1e-5, rtol=1e-5)


def test_set_threshold_trades_flops():
    model = timm.create_model("pact_resnet32").eval()
    _heterogeneous_heads(model)
    x = torch.randn(32, *INPUT)
    ratios = []
    for threshold in (0.05, 0.5, 1.0):
        pact_zoo.set_threshold(model, threshold)
        with torch.no_grad():
            model(x)
        ratios.append(pact_zoo.halting_report(model).flops_ratio)
    assert ratios[0] < ratios[1] < ratios[2]
    assert model.halting_cfg.threshold == 1.0
    with pytest.raises(ValueError, match="threshold"):
        pact_zoo.set_threshold(model, 1.5)


@pytest.mark.parametrize("name", ["pact_resnet32", "act_resnet32"])
def test_optimisation_lowers_the_loss(name):
    torch.manual_seed(0)
    model = timm.create_model(name, layers=(2, 2, 2), channels=(8, 16, 32), tau=0.01).train()
    x, y = torch.randn(16, *INPUT), torch.randint(0, 10, (16,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y) + pact_zoo.halting_loss(model)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3


def test_report_keeps_frozen_modules_in_eval():
    model = timm.create_model("pact_resnet32").train()
    model.stages[0].units[0].norm1.eval()  # e.g. frozen BN while fine-tuning
    model(torch.randn(2, *INPUT))
    pact_zoo.halting_report(model)
    assert model.training and not model.stages[0].units[0].norm1.training


def test_calibrate_threshold_on_image_batches():
    from pact_zoo.data import collate_images

    model = timm.create_model("pact_resnet32").eval()
    _heterogeneous_heads(model)
    rows = [{"pixel_values": torch.randn(*INPUT), "labels": 0} for _ in range(32)]
    loader = [collate_images(rows[i:i + 16]) for i in (0, 16)]
    threshold, ratio = pact_zoo.calibrate_threshold(model, loader, 0.6, tolerance=0.05)
    assert 0.0 < threshold <= 1.0 and ratio <= 0.6 + 1e-9


def test_halting_loss_values():
    model = timm.create_model("pact_resnet32", tau=0.1).train()
    model(torch.randn(4, *INPUT))
    loss = pact_zoo.halting_loss(model)
    assert loss.dim() == 0 and loss.requires_grad
    assert 0.1 * 3 <= loss.item() <= 0.1 * 15  # each of 3 stages costs between 1 and 5 units
    plain = timm.create_model("resnet32_cifar").train()
    plain(torch.randn(2, *INPUT))
    assert pact_zoo.halting_loss(plain).item() == 0.0


@pytest.mark.parametrize("name", ["pact_resnet32", "act_resnet32"])
def test_save_for_hf_round_trip(name, tmp_path):
    knobs = {"threshold": 0.3} if "threshold" in pact_zoo.halting.HaltingConfig(
        timm.create_model(name).halting_cfg.method).knobs else {}
    model = timm.create_model(name, num_classes=7, **knobs).eval()
    _heterogeneous_heads(model)
    save_for_hf(model, tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").exists()
    loaded = timm.create_model(f"local-dir:{tmp_path}", pretrained=True).eval()
    assert loaded.halting_cfg == model.halting_cfg and loaded.num_classes == 7
    x = torch.randn(6, *INPUT)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_plain_checkpoint_loads_into_adaptive_model(tmp_path, caplog):
    plain = timm.create_model("resnet32_cifar")
    path = tmp_path / "resnet32_cifar.safetensors"
    save_file(plain.state_dict(), str(path))
    with caplog.at_level(logging.INFO, logger="pact_zoo"):
        model = timm.create_model("pact_resnet32", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert model.newly_initialized_keys and all(".heads." in k for k in model.newly_initialized_keys)
    assert "newly initialised" in caplog.text
    assert torch.equal(model.stages[1].units[2].conv1.weight, plain.stages[1].units[2].conv1.weight)
    model.eval(), plain.eval()
    pact_zoo.set_threshold(model, 1.0)  # no head reaches 1: full depth, same function as the backbone
    x = torch.randn(3, *INPUT)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("corrupt, message", [("extra", "stages.9.bogus"), ("missing", "stages.1.units.0.conv1")])
def test_checkpoint_key_errors_name_the_key(tmp_path, corrupt, message):
    state_dict = timm.create_model("resnet32_cifar").state_dict()
    if corrupt == "extra":
        state_dict["stages.9.bogus"] = torch.zeros(1)
    else:
        del state_dict["stages.1.units.0.conv1.weight"]
    path = tmp_path / "bad.safetensors"
    save_file(state_dict, str(path))
    with pytest.raises(KeyError, match=message):
        timm.create_model("pact_resnet32", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


@pytest.mark.parametrize("shape, message", [
    ((2, 1, 32, 32), "3, H, W"), ((3, 32, 32), "rank 4"), ((2, 3, 2, 2), ">= 4"),
])
def test_bad_input_shapes(shape, message):
    model = timm.create_model("pact_resnet32").eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_eval_input(value):
    model = timm.create_model("pact_resnet32").eval()
    x = torch.randn(2, *INPUT)
    x[1, 0, 3, 3] = value
    with pytest.raises(ValueError, match="NaN or inf"):
        model(x)


@pytest.mark.parametrize("kwargs, field", [
    (dict(tau=-1.0), "tau"), (dict(temperature=0.0), "temperature"), (dict(threshold=0.0), "threshold"),
    (dict(threshold=1.01), "threshold"), (dict(act_eps=1.0), "act_eps"), (dict(method="reinforce"), "method"),
])
def test_bad_halting_knobs(kwargs, field):
    with pytest.raises(ValueError, match=field):
        timm.create_model("pact_resnet32", **kwargs)


@pytest.mark.parametrize("name", ["pact_resnet110", "act_resnet110"])
def test_depth_110_eval_equivalence(name):
    model = timm.create_model(name).eval()
    _heterogeneous_heads(model)
    x = torch.randn(5, *INPUT)
    with torch.no_grad():
        batch_out = model(x)
        for i in range(5):
            torch.testing.assert_close(model(x[i:i + 1]), batch_out[i:i + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["resnet18", "mobilenetv2_050"])
def test_a_model_made_adaptive_saves_and_reloads(tmp_path, backbone):
    """make_adaptive on a plain timm model: the folder records how to rebuild it, and the reloaded model (knobs set
    after make_adaptive included) computes what the saved one did."""
    from pact_zoo.training.io import load_model_folder, save_model_folder

    model = pact_zoo.make_adaptive(timm.create_model(backbone, num_classes=3), method="pact", tau=0.03).eval()
    pact_zoo.set_threshold(model, 0.3)
    save_model_folder(model, tmp_path / "m")
    loaded = load_model_folder(tmp_path / "m")
    assert loaded.halting_cfg == model.halting_cfg and loaded.halting_cfg.threshold == 0.3
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert pact_zoo.halting_report(loaded).units_executed.shape[0] == 2
