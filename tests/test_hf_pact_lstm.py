"""Contract tests of the PACT-LSTM transformers models, standing in for transformers' ModelTesterMixin (which a
package cannot import): save/load, batching equivalence, determinism, gradients, meta-device init, outputs, remote
code, bad inputs. Tiny configs; generated data only."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import (
    AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoModelForTokenClassification,
)

import pact_zoo
from pact_zoo.hf import (
    PactLSTMConfig, PactLSTMForSequenceClassification, PactLSTMForTokenClassification, PactLSTMModel,
    remote_code_files,
)

METHODS = ("pact", "act", "none")
MODEL_CLASSES = (PactLSTMModel, PactLSTMForSequenceClassification, PactLSTMForTokenClassification)
INPUT_SIZE, HIDDEN, STEPS, BATCH, SEQ = 5, 8, 4, 4, 6


def tiny_config(method: str = "pact", **overrides) -> PactLSTMConfig:
    kwargs = dict(input_size=INPUT_SIZE, hidden_size=HIDDEN, max_ponder_steps=STEPS, method=method,
                  halting_bias_init=0.0, num_labels=3, num_hidden_layers=2)
    kwargs.update(overrides)
    return PactLSTMConfig(**kwargs)


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T, F]`` inputs and a mask with right padding, left padding, a full row and a one-step row."""
    inputs = torch.randn(BATCH, SEQ, INPUT_SIZE)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 4:] = 0
    mask[2, :3] = 0
    mask[3, 1:] = 0
    return inputs, mask


def main_output(output) -> torch.Tensor:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output.logits


def labels_for(model_class: type, num_labels: int = 3) -> torch.Tensor | None:
    if model_class is PactLSTMForSequenceClassification:
        return torch.randint(num_labels, (BATCH,))
    if model_class is PactLSTMForTokenClassification:
        return torch.randint(num_labels, (BATCH, SEQ))
    return None


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("input_size", 0), ("hidden_size", -1), ("num_hidden_layers", 0), ("max_ponder_steps", 0),
    ("max_ponder_steps", 2.5), ("method", "sact"), ("tau", -0.1), ("temperature", 0.0),
    ("threshold", 1.5), ("act_eps", 1.0), ("cost_estimator", "exact"), ("classifier_dropout", 1.0),
    ("vocab_size", 0), ("pad_token_id", 7),
])
def test_config_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        PactLSTMConfig(**{field: value})


def test_registered_with_auto_classes():
    config = AutoConfig.for_model("pact_lstm", input_size=INPUT_SIZE, hidden_size=HIDDEN, max_ponder_steps=2)
    assert isinstance(config, PactLSTMConfig)
    assert type(AutoModel.from_config(config)) is PactLSTMModel
    assert type(AutoModelForSequenceClassification.from_config(config)) is PactLSTMForSequenceClassification
    assert type(AutoModelForTokenClassification.from_config(config)) is PactLSTMForTokenClassification


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_save_load_round_trip(tmp_path, model_class, method):
    model = model_class(tiny_config(method)).eval()
    inputs, mask = padded_batch()
    expected = model(inputs_embeds=inputs, attention_mask=mask)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"config.json", "model.safetensors", "modeling_pact_lstm.py", "configuration_pact_lstm.py"} <= files
    assert not any(name.endswith((".bin", ".tmp")) for name in files)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "pact_lstm" and config["method"] == method
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForSequenceClassification",
                                       "AutoModelForTokenClassification"}
    for loaded in (model_class.from_pretrained(tmp_path),
                   {PactLSTMModel: AutoModel, PactLSTMForSequenceClassification: AutoModelForSequenceClassification,
                    PactLSTMForTokenClassification: AutoModelForTokenClassification}[model_class]
                   .from_pretrained(tmp_path)):
        assert type(loaded) is model_class  # the registered in-library class, no remote code
        loaded.eval()
        output = loaded(inputs_embeds=inputs, attention_mask=mask)
        torch.testing.assert_close(main_output(output), main_output(expected), rtol=1e-5, atol=1e-6)
        assert torch.equal(output.units_executed, expected.units_executed)


def test_state_dict_holds_each_weight_once():
    model = PactLSTMForSequenceClassification(tiny_config("pact", num_hidden_layers=1))
    assert sorted(model.state_dict()) == sorted([
        "pact_lstm.layers.0.cell.weight_ih", "pact_lstm.layers.0.cell.weight_hh", "pact_lstm.layers.0.cell.bias_ih",
        "pact_lstm.layers.0.cell.bias_hh", "pact_lstm.layers.0.halting_head.fc.weight",
        "pact_lstm.layers.0.halting_head.fc.bias", "classifier.weight", "classifier.bias"])
    assert model.pact_lstm.layers[0].cell.weight_ih.shape == (4 * HIDDEN, INPUT_SIZE + 1)  # + first-step flag


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_class", (PactLSTMForSequenceClassification, PactLSTMForTokenClassification))
def test_batching_equivalence(model_class, method):
    """A padded batch gives, row by row, what each sequence gives alone (eval: halted rows leave the batch)."""
    model = model_class(tiny_config(method)).eval()
    inputs, mask = padded_batch()
    batch = model(inputs_embeds=inputs, attention_mask=mask)
    assert (batch.units_executed[mask == 0] == 0).all()
    for row in range(BATCH):
        real = mask[row].bool()
        alone = model(inputs_embeds=inputs[row:row + 1, real])
        if model_class is PactLSTMForSequenceClassification:
            torch.testing.assert_close(batch.logits[row], alone.logits[0], rtol=1e-5, atol=1e-6)
        else:
            torch.testing.assert_close(batch.logits[row, real], alone.logits[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batch.units_executed[row, real], alone.units_executed[0])
        torch.testing.assert_close(batch.ponder_cost[row], alone.ponder_cost[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ("pact", "act"))
def test_eval_compaction_matches_masked_reference(method):
    """Eval with halted rows leaving the batch equals running every ponder step and masking (the stage's
    reference mode), and the halting rule really varies the number of ponder steps."""
    model = PactLSTMForSequenceClassification(tiny_config(method, halting_bias_init=0.0)).eval()
    torch.nn.init.normal_(model.pact_lstm.layers[0].halting_head.fc.weight, std=3.0)
    inputs = torch.randn(16, SEQ, INPUT_SIZE)
    compact = model(inputs_embeds=inputs)
    pact_zoo.set_execution(model, "masked")
    masked = model(inputs_embeds=inputs)
    torch.testing.assert_close(compact.logits, masked.logits, rtol=1e-5, atol=1e-6)
    assert torch.equal(compact.units_executed, masked.units_executed)
    assert compact.units_executed.unique().numel() > 1


@pytest.mark.parametrize("method", METHODS)
def test_eval_is_deterministic(method):
    model = PactLSTMForTokenClassification(tiny_config(method)).eval()
    inputs, mask = padded_batch()
    first, second = model(inputs_embeds=inputs, attention_mask=mask), model(inputs_embeds=inputs,
                                                                            attention_mask=mask)
    assert torch.equal(first.logits, second.logits) and torch.equal(first.units_executed, second.units_executed)


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_class", (PactLSTMForSequenceClassification, PactLSTMForTokenClassification))
def test_training_sends_gradient_to_every_parameter(model_class, method):
    config = tiny_config(method, vocab_size=11, pad_token_id=0)
    model = model_class(config).train()
    input_ids = torch.randint(1, 11, (BATCH, SEQ))
    _, mask = padded_batch()
    output = model(input_ids=input_ids, attention_mask=mask, labels=labels_for(model_class))
    output.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or (p.grad.abs().sum() == 0 and "embeddings" not in name)]
    assert not missing
    if method != "none":  # the loss carries the ponder term: task loss + tau * mean(sum_t rho_t)
        assert output.ponder_cost.requires_grad
        record = model.pact_lstm.layers[0].stage.record
        expected = config.halting_knobs["tau"] * output.ponder_cost.mean() + sum(
            sum(layer.stage.record.terms.values(), torch.zeros(())) for layer in model.pact_lstm.layers)
        assert torch.allclose(pact_zoo.halting_loss(model), expected)
        assert ("entropy" in record.terms) == (method == "pact")  # PACT's entropy bonus (entropy_weight)


def test_padding_labels_do_not_count():
    model = PactLSTMForTokenClassification(tiny_config("pact")).eval()
    inputs, mask = padded_batch()
    labels = torch.randint(3, (BATCH, SEQ))
    other = labels.clone()
    other[mask == 0] = (other[mask == 0] + 1) % 3
    loss = model(inputs_embeds=inputs, attention_mask=mask, labels=labels).loss
    assert torch.equal(loss, model(inputs_embeds=inputs, attention_mask=mask, labels=other).loss)


def test_multi_label_token_classification_loss():
    model = PactLSTMForTokenClassification(tiny_config("act", problem_type="multi_label_classification"))
    inputs, mask = padded_batch()
    output = model(inputs_embeds=inputs, attention_mask=mask, labels=torch.rand(BATCH, SEQ, 3).round())
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", MODEL_CLASSES)
def test_builds_and_runs_on_meta_device(model_class):
    with torch.device("meta"):
        model = model_class(tiny_config("pact"))
        output = model(inputs_embeds=torch.randn(BATCH, SEQ, INPUT_SIZE))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert main_output(output).device.type == "meta"


def test_missing_weights_are_initialised():
    """transformers' default init skips nn.LSTMCell: loading without weights must still give PyTorch's LSTM init
    and the configured halting bias (ecosystem.md §3.2)."""
    config = tiny_config("pact", halting_bias_init=-2.0)
    model = PactLSTMForSequenceClassification.from_pretrained(None, config=config, state_dict={})
    bound = 1.0 / math.sqrt(HIDDEN)
    for layer in model.pact_lstm.layers:
        for param in layer.cell.parameters():
            assert torch.isfinite(param).all() and param.abs().max() <= bound and param.abs().sum() > 0
        assert torch.all(layer.halting_head.fc.bias == -2.0)
    assert model.classifier.weight.abs().sum() > 0
    built = PactLSTMForSequenceClassification(config)
    assert all(torch.all(layer.halting_head.fc.bias == -2.0) for layer in built.pact_lstm.layers)


# ---------------------------------------------------------------------------------------------------------------------
def test_output_hidden_states_and_return_dict_false():
    model = PactLSTMForSequenceClassification(tiny_config("pact")).eval()
    inputs, mask = padded_batch()
    labels = torch.randint(3, (BATCH,))
    output = model(inputs_embeds=inputs, attention_mask=mask, labels=labels, output_hidden_states=True)
    assert len(output.hidden_states) == 1 + model.config.num_hidden_layers
    assert output.hidden_states[0].shape == (BATCH, SEQ, INPUT_SIZE)
    assert all(h.shape == (BATCH, SEQ, HIDDEN) for h in output.hidden_states[1:])
    assert output.units_executed.shape == (BATCH, SEQ) and output.ponder_cost.shape == (BATCH,)
    assert model(inputs_embeds=inputs).hidden_states is None
    as_tuple = model(inputs_embeds=inputs, attention_mask=mask, labels=labels, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], output.loss)
    torch.testing.assert_close(as_tuple[1], output.logits)


def test_set_threshold_updates_stages_and_config(tmp_path):
    model = PactLSTMForSequenceClassification(tiny_config("pact"))
    pact_zoo.set_threshold(model, 0.8)
    assert model.config.halting_knobs["threshold"] == 0.8
    assert all(layer.stage.method.threshold == 0.8 for layer in model.pact_lstm.layers)
    model.save_pretrained(tmp_path)
    loaded = PactLSTMForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.pact_lstm.layers[0].stage.method.threshold == 0.8


# ---------------------------------------------------------------------------------------------------------------------
REMOTE_LOAD = textwrap.dedent("""
    import sys
    sys.modules["pact_zoo"] = None  # the package is installed (editable) in this venv: block it
    try:
        import pact_zoo  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("pact_zoo is importable")
    import torch
    from transformers import AutoModelForSequenceClassification
    folder, expected_file = sys.argv[1], sys.argv[2]
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert model.__class__.__module__.startswith("transformers_modules."), model.__class__.__module__
    assert not any(name == "pact_zoo" or name.startswith("pact_zoo.") for name, module in sys.modules.items()
                   if module is not None)
    expected = torch.load(expected_file)
    output = model(inputs_embeds=expected["inputs"], attention_mask=expected["mask"])
    torch.testing.assert_close(output.logits, expected["logits"], rtol=1e-5, atol=1e-6)
    assert torch.equal(output.units_executed, expected["ponder_steps"])
    print("REMOTE_OK")
""")


def test_remote_code_loads_without_pact_zoo(tmp_path):
    model = PactLSTMForSequenceClassification(tiny_config("pact")).eval()
    inputs, mask = padded_batch()
    output = model(inputs_embeds=inputs, attention_mask=mask)
    model.save_pretrained(tmp_path / "checkpoint")
    assert {p.name for p in remote_code_files()} <= set(os.listdir(tmp_path / "checkpoint"))
    torch.save({"inputs": inputs, "mask": mask, "logits": output.logits.detach(),
                "ponder_steps": output.units_executed}, tmp_path / "expected.pt")
    (tmp_path / "load.py").write_text(REMOTE_LOAD)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load.py"), str(tmp_path / "checkpoint"), str(tmp_path / "expected.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "REMOTE_OK" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(inputs_embeds=torch.randn(2, 3, INPUT_SIZE + 1)), "inputs_embeds"),
    (dict(inputs_embeds=torch.randn(2, INPUT_SIZE)), "inputs_embeds"),
    (dict(inputs_embeds=torch.randint(2, (2, 3, INPUT_SIZE))), "inputs_embeds"),
    (dict(inputs_embeds=torch.randn(2, 3, INPUT_SIZE), attention_mask=torch.ones(2, 4)), "attention_mask"),
    (dict(inputs_embeds=torch.randn(2, 3, INPUT_SIZE), attention_mask=torch.full((2, 3), 2)), "attention_mask"),
    (dict(inputs_embeds=torch.randn(2, 3, INPUT_SIZE), attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])),
     "attention_mask"),
    (dict(inputs_embeds=torch.randn(2, 3, INPUT_SIZE), labels=torch.zeros(2, 3, dtype=torch.long)), "labels"),
    (dict(inputs_embeds=torch.randn(2, 3, INPUT_SIZE), labels=torch.tensor([0, 3])), "labels"),
    (dict(inputs_embeds=torch.randn(2, 3, INPUT_SIZE), labels=torch.rand(2, 4)), "labels"),
    (dict(input_ids=torch.zeros(2, 3, dtype=torch.long)), "input_ids"),
    (dict(), "input_ids"),
])
def test_bad_inputs_raise_value_error(kwargs, match):
    model = PactLSTMForSequenceClassification(tiny_config("pact"))
    with pytest.raises(ValueError, match=match):
        model(**kwargs)


def test_token_classification_rejects_sequence_labels():
    model = PactLSTMForTokenClassification(tiny_config("act"))
    with pytest.raises(ValueError, match="labels"):
        model(inputs_embeds=torch.randn(2, 3, INPUT_SIZE), labels=torch.zeros(2, dtype=torch.long))


def test_input_ids_out_of_vocabulary():
    model = PactLSTMModel(tiny_config("pact", vocab_size=7))
    with pytest.raises(ValueError, match="input_ids"):
        model(input_ids=torch.full((2, 3), 7))
    with pytest.raises(ValueError, match="input_ids"):
        model(input_ids=torch.zeros(2, 3, dtype=torch.long), inputs_embeds=torch.randn(2, 3, INPUT_SIZE))


def test_torch_compile_eval_runs_compiled_cells_and_halts_per_frame():
    """Under torch.compile every time step's stage runs its compact loop eagerly over compiled cell applications:
    logits and ponder steps are eager compact evaluation's."""
    import pact_zoo

    torch.manual_seed(0)
    model = PactLSTMForSequenceClassification(PactLSTMConfig(input_size=5, hidden_size=8, num_labels=3,
                                                             max_ponder_steps=4, halting_bias_init=0.0)).eval()
    x = torch.randn(6, 7, 5)
    with torch.no_grad():
        expected = model(inputs_embeds=x)
    pact_zoo.set_unit_compile(model, {"backend": "eager", "dynamic": True})
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, backend="eager")(inputs_embeds=x)
    torch.testing.assert_close(out.logits, expected.logits, rtol=0, atol=1e-5)
    assert torch.equal(out.units_executed, expected.units_executed) and len(expected.units_executed.unique()) > 1
