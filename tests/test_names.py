"""One name per concept across timm models, Hugging Face models and ACM: ``method`` (the halting method),
``units_executed`` (the depth each sample ran) and ``halting_cfg`` (the halting method and knobs, a HaltingConfig).
Each former name (``halting_method``, ``acm_gating``, ``gating``, ``layers_executed``, ``ponder_steps``, the whole
config behind an HF model's ``halting_cfg``) still works, with a DeprecationWarning, and gives what the new name
gives; old ``config.json`` files load into identical models and saving writes the new key only."""
from __future__ import annotations

import copy
import json
import warnings

import pytest
import timm
import torch
from transformers import BertConfig, BertForSequenceClassification

import pact_zoo
from pact_zoo import acm
from pact_zoo.halting import HaltingConfig
from pact_zoo.hf import (
    AcmBertConfig, AcmBertForSequenceClassification, PactEncoderConfig, PactEncoderForSequenceClassification,
    PactLSTMConfig, PactLSTMForSequenceClassification,
)

TINY_BERT = dict(vocab_size=40, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                 max_position_embeddings=16)
LSTM = dict(input_size=3, hidden_size=8, max_ponder_steps=3, num_labels=2)


def no_warning(build):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        return build()


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# -- method ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config_cls, kwargs", [
    (PactLSTMConfig, LSTM), (PactEncoderConfig, dict(encoder=BertConfig(**TINY_BERT).to_dict())),
])
def test_hf_config_halting_method_is_a_deprecated_alias_of_method(config_cls, kwargs):
    new = no_warning(lambda: config_cls(method="act", tau=0.05, **kwargs))
    with pytest.warns(DeprecationWarning, match="'halting_method' is deprecated, use 'method'"):
        old = config_cls(halting_method="act", tau=0.05, **kwargs)
    assert old.method == new.method == "act" and old.to_dict() == new.to_dict()
    saved = new.to_dict()
    assert saved["method"] == "act" and "halting_method" not in saved  # saved configs carry the new key only
    with pytest.warns(DeprecationWarning, match="halting_method"):
        assert new.halting_method == "act"  # the attribute read
    with pytest.warns(DeprecationWarning, match="halting_method"):
        new.halting_method = "pact"  # ... and write
    assert new.method == "pact"
    with pytest.raises(ValueError, match="method"), pytest.warns(DeprecationWarning):
        config_cls(method="act", halting_method="none", **kwargs)  # both, disagreeing


def test_old_lstm_config_json_loads_into_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = PactLSTMForSequenceClassification(PactLSTMConfig(method="policy_gradient", **LSTM)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["method"] == "policy_gradient" and "halting_method" not in saved
    saved["halting_method"] = saved.pop("method")  # a checkpoint written before the rename
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.warns(DeprecationWarning, match="halting_method"):
        old = PactLSTMForSequenceClassification.from_pretrained(tmp_path).eval()
    assert old.config.method == "policy_gradient" and state_equal(old, model)
    x = torch.randn(2, 4, 3)
    assert torch.equal(old(inputs_embeds=x).logits, model(inputs_embeds=x).logits)


def test_shipped_adapter_config_with_the_old_key_loads():
    """The shipped MiniLM adapter's config.json was written with ``halting_method``: it is read as ``method``."""
    folder = pact_zoo.shipped_adapter("minilm_rotten_tomatoes")
    raw = json.loads((folder / "config.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        config = PactEncoderConfig.from_pretrained(folder)
    assert config.method == raw.get("method", raw.get("halting_method")) == "pact"
    assert config.halting_knobs == raw["halting_knobs"] and "halting_method" not in config.to_dict()


def test_from_backbone_and_convert_from_take_the_old_keyword(tmp_path):
    backbone = BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=2))
    torch.manual_seed(0)
    new = no_warning(lambda: PactEncoderForSequenceClassification.from_backbone(backbone, 2, method="act"))
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="halting_method"):
        old = PactEncoderForSequenceClassification.from_backbone(backbone, 2, halting_method="act")
    assert old.config.to_dict() == new.config.to_dict() and state_equal(old, new)
    new.save_pretrained(tmp_path)
    with pytest.warns(DeprecationWarning, match="halting_method"):
        converted = PactEncoderForSequenceClassification.convert_from(tmp_path, halting_method="pact")
    assert converted.config.method == "pact"


def test_acm_gating_is_a_deprecated_alias_of_method():
    torch.manual_seed(0)
    new = no_warning(lambda: acm.AdaptiveWidth(8, 4, method="condnet"))
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="'gating' is deprecated, use 'method'"):
        old = acm.AdaptiveWidth(8, 4, gating="condnet")
    assert type(old.method) is type(new.method) and state_equal(old, new) and "method='condnet'" in repr(new)
    with pytest.warns(DeprecationWarning, match="gating"):
        assert new.gating == "condnet"
    vit = dict(img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    torch.manual_seed(0)
    timm_new = no_warning(lambda: timm.create_model("acm_vit_tiny_patch16_224", method="condnet", **vit))
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match="gating"):
        timm_old = timm.create_model("acm_vit_tiny_patch16_224", gating="condnet", **vit)
    assert state_equal(timm_old, timm_new)
    assert timm_old._model_args["method"] == "condnet" and "gating" not in timm_old._model_args  # saved as method
    plain = timm.create_model("vit_tiny_patch16_224", **vit)
    torch.manual_seed(1)
    with pytest.warns(DeprecationWarning, match="gating"):
        converted = acm.acmize(copy.deepcopy(plain), gating="condnet")
    torch.manual_seed(1)
    assert state_equal(converted, no_warning(lambda: acm.acmize(copy.deepcopy(plain), method="condnet")))
    assert all(m.method.name == "condnet" for _, m in acm.acm_modules(converted))
    with pytest.raises(ValueError, match="method"), pytest.warns(DeprecationWarning):
        acm.acmize(copy.deepcopy(plain), method="condnet", gating="acm")  # both, disagreeing


def test_acm_bert_config_acm_gating_is_a_deprecated_alias_of_acm_method(tmp_path):
    new = no_warning(lambda: AcmBertConfig(acm_method="condnet", **TINY_BERT))
    with pytest.warns(DeprecationWarning, match="acm_gating"):
        old = AcmBertConfig(acm_gating="condnet", **TINY_BERT)
    assert old.to_dict() == new.to_dict() and "acm_gating" not in new.to_dict()
    with pytest.warns(DeprecationWarning, match="acm_gating"):
        assert new.acm_gating == "condnet"
    torch.manual_seed(0)
    model = AcmBertForSequenceClassification(new).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["acm_method"] == "condnet" and "acm_gating" not in saved
    saved["acm_gating"] = saved.pop("acm_method")
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.warns(DeprecationWarning, match="acm_gating"):
        loaded = AcmBertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert loaded.config.acm_method == "condnet" and state_equal(loaded, model)


# -- units_executed --------------------------------------------------------------------------------------------------
def test_output_depth_fields_are_deprecated_aliases_of_units_executed():
    torch.manual_seed(0)
    lstm = PactLSTMForSequenceClassification(PactLSTMConfig(**LSTM)).eval()
    out = lstm(inputs_embeds=torch.randn(2, 4, 3))
    assert list(out.keys()) == ["logits", "ponder_cost", "units_executed"] and out.to_tuple()[-1] is out.units_executed
    with pytest.warns(DeprecationWarning, match="'ponder_steps' is deprecated, use 'units_executed'"):
        assert out.ponder_steps is out.units_executed
    with pytest.warns(DeprecationWarning, match="ponder_steps"):
        assert out["ponder_steps"] is out.units_executed
    backbone = BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=2))
    encoder = PactEncoderForSequenceClassification.from_backbone(backbone, 2, method="pact").eval()
    out = encoder(input_ids=torch.randint(0, 40, (3, 5)))
    assert list(out.keys()) == ["logits", "ponder_cost", "units_executed"]
    with pytest.warns(DeprecationWarning, match="layers_executed"):
        assert out.layers_executed is out.units_executed
    with pytest.warns(DeprecationWarning, match="layers_executed"):
        assert out["layers_executed"] is out.units_executed
    with pytest.raises(AttributeError):
        out.ponder_steps  # another family's former name is no alias here


# -- halting_cfg -----------------------------------------------------------------------------------------------------
def test_halting_cfg_is_the_halting_config_on_timm_and_hf_models():
    timm_model = timm.create_model("pact_resnet32", method="act", tau=0.05, num_classes=2)
    hf_model = PactLSTMForSequenceClassification(PactLSTMConfig(method="act", tau=0.05, **LSTM))
    for model in (timm_model, hf_model):
        assert isinstance(model.halting_cfg, HaltingConfig)
        assert model.halting_cfg.method == "act" and model.halting_cfg.tau == 0.05
    assert hf_model.halting_cfg == timm_model.halting_cfg == HaltingConfig("act", tau=0.05)
    # it is the config's halting fields, live: a knob set through it (or pact_zoo.set_threshold) is saved
    pact = PactLSTMForSequenceClassification(PactLSTMConfig(method="pact", **LSTM))
    pact_zoo.set_threshold(pact, 0.3)
    assert pact.halting_cfg.threshold == 0.3 and pact.config.halting_knobs["threshold"] == 0.3
    pact.halting_cfg.set_halting_knob("tau", 0.2)
    assert pact.config.halting_knobs["tau"] == 0.2
    with pytest.warns(DeprecationWarning, match="config.hidden_size"):  # it used to be the whole config
        assert hf_model.halting_cfg.hidden_size == 8


def test_acm_bert_halting_cfg_holds_the_acm_method_and_knobs():
    model = acm.acmize(BertForSequenceClassification(BertConfig(**TINY_BERT, num_labels=2)), method="acm")
    assert model.halting_cfg.method == "acm" and model.halting_cfg.threshold == 0.5
    pact_zoo.set_threshold(model, 0.7)
    assert model.halting_cfg.threshold == 0.7 and model.config.acm_knobs["threshold"] == 0.7
