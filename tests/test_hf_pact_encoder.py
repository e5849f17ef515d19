"""PACT-Encoder (adaptive depth over a pretrained transformer encoder's layers) on tiny random backbones built
offline: from_backbone per architecture, Auto / pipeline / remote-code round trips, per-sample early exit equal to
running each sample alone, FLOPs against FlopCounterMode, bad input, text data and a two-process fine-tune."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification, BertModel, BertTokenizer,
    DistilBertConfig, DistilBertModel, ElectraConfig, ElectraModel, GPT2Config, GPT2Model, RobertaConfig,
    RobertaModel, pipeline,
)

import pact_zoo
from pact_zoo.halting.flops import torch_flop_counter_mapping
from pact_zoo.hf import (
    SUPPORTED_ENCODERS, PactEncoderConfig, PactEncoderForSequenceClassification, PactEncoderForTokenClassification,
)
from pact_zoo.hf.modeling_pact_encoder import remote_code_files

REPO = Path(__file__).resolve().parent.parent
WORDS = "the a movie film plot acting was is not very good bad great awful dull fun".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = len(SPECIAL) + len(WORDS)
FIRST_WORD_ID = len(SPECIAL)
HIDDEN, LAYERS, LABELS = 32, 3, 3
LENGTHS = (7, 3, 5, 1, 7, 2)  # mixed lengths, with padding


def tiny_backbone(kind: str):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                  intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)
    if kind == "bert":
        return BertModel(BertConfig(**common))
    if kind == "roberta":
        return RobertaModel(RobertaConfig(**common, pad_token_id=0))
    if kind == "electra":
        return ElectraModel(ElectraConfig(**common, embedding_size=16))
    return DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=LAYERS, n_heads=2, hidden_dim=64,
                                            max_position_embeddings=16, dropout=0.0, attention_dropout=0.0))


def tiny_tokenizer():
    return BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})


def padded_batch(lengths=LENGTHS, seed=0):
    """``[B, T]`` ids (words only, [PAD] = 0 after each row's length) and the 0/1 mask."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_WORD_ID, VOCAB, (len(lengths), max(lengths)), generator=generator)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def heterogeneous(model):
    """Halting heads under which the samples stop at different layers."""
    torch.manual_seed(1)
    with torch.no_grad():
        for head in model.base_model.stage.heads:
            head.fc.weight.normal_(0.0, 3.0)
            head.fc.bias.zero_()
    return model.eval()


def adaptive(kind="bert", method="pact", cls=PactEncoderForSequenceClassification, **kwargs):
    return cls.from_backbone(tiny_backbone(kind), num_labels=LABELS, method=method, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(SUPPORTED_ENCODERS))
def test_from_backbone_keeps_weights_and_round_trips(tmp_path, kind):
    backbone = tiny_backbone(kind)
    model = PactEncoderForSequenceClassification.from_backbone(backbone, num_labels=LABELS, tau=0.02,
                                                               tokenizer=tiny_tokenizer())
    state = model.state_dict()
    for key, value in backbone.state_dict().items():  # loaded unchanged
        assert torch.equal(state[f"pact_encoder.backbone.{key}"], value), key
    heads = [f"pact_encoder.stage.heads.{n}.fc.{p}" for n in range(LAYERS - 1) for p in ("bias", "weight")]
    pooler = [] if getattr(backbone, "pooler", None) is not None else ["pooler.dense.bias", "pooler.dense.weight"]
    assert model.new_weights == sorted(heads + ["classifier.bias", "classifier.weight"] + pooler)
    assert model.config.halting_knobs["tau"] == 0.02 and model.config.encoder.model_type == kind

    heterogeneous(model)
    ids, mask = padded_batch()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(loaded) is PactEncoderForSequenceClassification and loaded.tokenizer is not None
    with torch.no_grad():
        output = loaded(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(output.logits, expected.logits, rtol=0, atol=0)
    assert torch.equal(output.units_executed, expected.units_executed)


def test_sequence_classification_checkpoint_gives_its_classifier():
    torch.manual_seed(0)
    plain = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=LABELS))
    model = PactEncoderForSequenceClassification.from_backbone(plain, num_labels=LABELS, method="act")
    assert torch.equal(model.classifier.weight, plain.classifier.weight)
    assert not any(key.startswith("classifier") for key in model.new_weights)


def test_plain_method_equals_the_transformers_model():
    """method="none" is the backbone's own computation: same logits as BertForSequenceClassification."""
    torch.manual_seed(0)
    plain = BertForSequenceClassification(BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                                     num_attention_heads=2, intermediate_size=64,
                                                     num_labels=LABELS)).eval()
    model = PactEncoderForSequenceClassification.from_backbone(plain, num_labels=LABELS, method="none").eval()
    ids, mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, attention_mask=mask).logits,
                                   plain(input_ids=ids, attention_mask=mask).logits, rtol=0, atol=1e-6)


def test_unsupported_backbone_lists_the_supported_ones():
    gpt2 = GPT2Model(GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=2))
    supported = "unsupported backbone architecture 'gpt2'.*bert, roberta, electra, distilbert"
    with pytest.raises(ValueError, match=supported):
        PactEncoderForSequenceClassification.from_backbone(gpt2, num_labels=2)


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, method", [("bert", "pact"), ("roberta", "act"), ("electra", "policy_gradient"),
                                          ("distilbert", "pact")])
def test_compact_equals_each_sample_alone_and_masked(kind, method):
    model = heterogeneous(adaptive(kind, method))
    ids, mask = padded_batch()
    with torch.no_grad():
        compact = model(input_ids=ids, attention_mask=mask)
        alone = [model(input_ids=ids[i:i + 1, :n]) for i, n in enumerate(LENGTHS)]
        pact_zoo.set_execution(model, "masked")
        masked = model(input_ids=ids, attention_mask=mask)
    assert len(set(compact.units_executed.tolist())) > 1, "samples should stop at different layers"
    torch.testing.assert_close(compact.logits, torch.cat([o.logits for o in alone]), rtol=0, atol=1e-5)
    torch.testing.assert_close(compact.logits, masked.logits, rtol=0, atol=1e-5)
    assert torch.equal(compact.units_executed, torch.cat([o.units_executed for o in alone]))
    assert torch.equal(compact.units_executed, masked.units_executed)


def test_token_classification_compact_equals_masked_and_trains():
    model = heterogeneous(adaptive("bert", "pact", cls=PactEncoderForTokenClassification))
    ids, mask = padded_batch()
    with torch.no_grad():
        compact = model(input_ids=ids, attention_mask=mask).logits
        pact_zoo.set_execution(model, "masked")
        masked = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(compact[mask.bool()], masked[mask.bool()], rtol=0, atol=1e-5)
    model.train()
    labels = torch.where(mask.bool(), ids % LABELS, -100)
    output = model(input_ids=ids, attention_mask=mask, labels=labels)
    output.loss.backward()
    assert output.logits.shape == (len(LENGTHS), max(LENGTHS), LABELS) and torch.isfinite(output.loss)
    assert all(p.grad is not None for p in model.parameters())


def _left_padded(ids, mask):
    """The rows of a right-padded batch moved to the right end (left padding)."""
    lengths = mask.sum(1)
    width = mask.shape[1]
    ids_left, mask_left = torch.zeros_like(ids), torch.zeros_like(mask)
    for i, n in enumerate(lengths.tolist()):
        ids_left[i, width - n:], mask_left[i, width - n:] = ids[i, :n], 1
    return ids_left, mask_left


def length_heads(model, min_lengths=(5, 3)):
    """Halting heads that stop, after layer n + 1, the rows with at least ``min_lengths[n]`` real tokens (logits
    +-20): the long rows leave first, so every compacted sub-batch is shorter than the one before."""
    for head, limit in zip(model.base_model.stage.heads, min_lengths):
        head.forward = lambda x, mask=None, limit=limit: (mask.sum(1) >= limit).float() * 40.0 - 20.0
    return model.eval()


def _unit_lengths(model):
    """Sequence lengths the encoder layers see (forward pre-hooks on the stage's units)."""
    seen, hooks = [], []
    for unit in model.base_model.stage.units:
        hooks.append(unit.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1])))
    return seen, hooks


@pytest.mark.parametrize("padding, pooling", [("right", "cls"), ("right", "mean"), ("right", "max"),
                                              ("left", "mean"), ("left", "max")])
@pytest.mark.parametrize("method", ["pact", "act"])
def test_trimmed_sub_batches_equal_untrimmed_and_masked(padding, pooling, method):
    """Every compacted sub-batch cut to its own longest row (and its mask with it) gives the logits, depths and
    real-position states of the untrimmed sub-batches and of the masked path; a padded batch of one is cut too."""
    model = length_heads(adaptive("bert", method, pooling=pooling))
    ids, mask = padded_batch(lengths=(7, 3, 5, 1, 7, 2, 2))
    if padding == "left":
        ids, mask = _left_padded(ids, mask)
    stage = model.base_model.stage
    assert stage.trim_padding, "the encoder family trims by default"
    results = {}
    with torch.inference_mode():
        for name in ("trimmed", "untrimmed", "masked"):
            stage.trim_padding = name == "trimmed"
            pact_zoo.set_execution(model, "masked" if name == "masked" else "compact")
            seen, hooks = _unit_lengths(model)
            logits = model(input_ids=ids, attention_mask=mask).logits
            hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
            for hook in hooks:
                hook.remove()
            results[name] = (logits, hidden, stage.record.units_executed.clone(), min(seen))
            alone = model(input_ids=ids[3:4], attention_mask=mask[3:4]).logits  # one token, padded to 7
            results[name] += (alone, stage.record.units_executed.clone())
    trimmed = results["trimmed"]
    assert trimmed[2].tolist() == [1, 2, 1, 3, 1, 3, 3] and trimmed[5].tolist() == [3]
    assert trimmed[3] == 2 and results["untrimmed"][3] == ids.shape[1], "the last layer runs on 2 positions"
    real = mask.bool()
    for name in ("untrimmed", "masked"):
        other = results[name]
        torch.testing.assert_close(trimmed[0], other[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(trimmed[1][real], other[1][real], rtol=0, atol=1e-5)
        assert torch.equal(trimmed[2], other[2]) and torch.equal(trimmed[5], other[5])
        torch.testing.assert_close(trimmed[4], other[4], rtol=0, atol=1e-5)
    if method == "pact" and padding == "right":  # the one-token row ended in a 2-position sub-batch
        assert not trimmed[1][3, 2:].any() and results["untrimmed"][1][3, 2:].abs().sum() > 0


def test_token_classification_trimmed_equals_untrimmed():
    model = length_heads(adaptive("bert", "pact", cls=PactEncoderForTokenClassification))
    ids, mask = padded_batch()
    stage = model.base_model.stage
    with torch.inference_mode():
        trimmed = model(input_ids=ids, attention_mask=mask).logits
        stage.trim_padding = False
        untrimmed = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(trimmed[mask.bool()], untrimmed[mask.bool()], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_flops_per_sample_count_attention_and_real_length(kind):
    model = heterogeneous(adaptive(kind))
    ids, mask = padded_batch()
    counted = []
    with pact_zoo.full_depth(model), torch.no_grad():
        for i, n in enumerate(LENGTHS):
            with FlopCounterMode(display=False, custom_mapping=torch_flop_counter_mapping()) as counter:
                model(input_ids=ids[i:i + 1, :n])
            counted.append(counter.get_total_flops())
            assert pact_zoo.halting_report(model).flops.item() == pytest.approx(counted[-1], rel=0.02)
        model(input_ids=ids, attention_mask=mask)
        full = pact_zoo.halting_report(model)
    assert full.flops.tolist() == full.sample_full_flops.tolist()
    torch.testing.assert_close(full.flops.double(), torch.tensor(counted, dtype=torch.double), rtol=0.02, atol=0)
    assert full.full_flops == max(full.flops.tolist())  # the longest sample's
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask)
    report = pact_zoo.halting_report(model)
    assert torch.equal(report.units_executed[:, 0], output.units_executed)
    early = output.units_executed < LAYERS
    assert early.any() and (report.flops[early] < full.flops[early]).all()
    assert report.flops_ratio < 1.0


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 5)), "attention_mask"),
    (dict(input_ids=torch.ones(2, 4, dtype=torch.long), attention_mask=torch.full((2, 4), 2)), "attention_mask"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]])),
     "empty sequences"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 1], [0, 1, 1]])),
     "left padding"),
    (dict(input_ids=torch.ones(2, 0, dtype=torch.long)), "at least one token"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long), labels=torch.tensor([0, LABELS])), "labels"),
    (dict(input_ids=torch.ones(2, 3, dtype=torch.long), labels=torch.tensor([0, -1])), "labels"),
    (dict(input_ids=torch.full((2, 3), VOCAB)), "input_ids"),
    (dict(), "input_ids"),
])
def test_bad_inputs_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adaptive()(**kwargs)


@pytest.mark.parametrize("source, error, match", [
    ("./no/such_dir", FileNotFoundError, "backbone folder not found: ./no/such_dir"),
    ("no/such_dir", OSError, "'no/such_dir' is not a local folder .*offline"),  # a hub id's shape, the hub offline
])
def test_from_backbone_missing_path_says_so(source, error, match):
    with pytest.raises(error, match=match) as caught:
        PactEncoderForSequenceClassification.from_backbone(source, num_labels=2)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("num_labels", [0, -1, True, 2.0])
def test_from_backbone_rejects_bad_num_labels(num_labels):
    with pytest.raises(ValueError, match="num_labels must be an int >= 1"):
        PactEncoderForSequenceClassification.from_backbone(tiny_backbone("bert"), num_labels=num_labels)


def test_token_types_rejected_where_the_backbone_has_none():
    with pytest.raises(ValueError, match="token_type_ids"):
        adaptive("distilbert")(input_ids=torch.ones(1, 3, dtype=torch.long),
                               token_type_ids=torch.zeros(1, 3, dtype=torch.long))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="method"):
        PactEncoderConfig(method="sometimes")
    with pytest.raises(ValueError, match="temperature"):
        PactEncoderConfig(method="act", temperature=0.5)  # a PACT knob given to ACT
    with pytest.raises(ValueError, match="unsupported backbone"):
        PactEncoderConfig(encoder={"model_type": "gpt2"})


# ---------------------------------------------------------------------------------------------------------------------
def test_pipeline_loads_the_saved_folder_with_its_tokenizer(tmp_path):
    model = adaptive(tokenizer=tiny_tokenizer(), id2label={0: "neg", 1: "neutral", 2: "pos"})
    model.save_pretrained(tmp_path)
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    classify = pipeline("text-classification", model=str(tmp_path), device="cpu")
    results = classify(["the movie was very good", "dull"])
    assert [r["label"] in {"neg", "neutral", "pos"} for r in results] == [True, True]


REMOTE_LOAD = textwrap.dedent("""
    import sys
    sys.modules["pact_zoo"] = None  # the package is installed (editable) in this venv: block it
    import torch
    from transformers import AutoModelForSequenceClassification
    folder, expected_file = sys.argv[1], sys.argv[2]
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert model.__class__.__module__.startswith("transformers_modules."), model.__class__.__module__
    assert not any(name == "pact_zoo" or name.startswith("pact_zoo.") for name, module in sys.modules.items()
                   if module is not None)
    expected = torch.load(expected_file)
    with torch.no_grad():
        output = model(input_ids=expected["ids"], attention_mask=expected["mask"])
    torch.testing.assert_close(output.logits, expected["logits"], rtol=1e-5, atol=1e-6)
    assert torch.equal(output.units_executed, expected["layers"])
    print("REMOTE_OK")
""")


def test_remote_code_loads_without_pact_zoo(tmp_path):
    model = heterogeneous(adaptive("roberta"))
    ids, mask = padded_batch()
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=mask)
    model.save_pretrained(tmp_path / "checkpoint")
    assert {p.name for p in remote_code_files()} <= set(os.listdir(tmp_path / "checkpoint"))
    torch.save({"ids": ids, "mask": mask, "logits": output.logits, "layers": output.units_executed},
               tmp_path / "expected.pt")
    (tmp_path / "load.py").write_text(REMOTE_LOAD)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "load.py"), str(tmp_path / "checkpoint"), str(tmp_path / "expected.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "REMOTE_OK" in result.stdout, result.stdout + result.stderr


REMOTE_PIPELINE = textwrap.dedent("""
    import builtins
    import sys
    sys.modules["pact_zoo"] = None  # the package is installed (editable) in this venv: block it

    def no_prompt(*args, **kwargs):
        raise SystemExit(f"PROMPTED: {args}")  # not an Exception: transformers' prompt code cannot swallow it

    builtins.input = no_prompt
    from transformers import pipeline
    classify = pipeline("text-classification", model=sys.argv[1], trust_remote_code=True, device="cpu")
    assert classify.model.__class__.__module__.startswith("transformers_modules."), classify.model.__class__
    results = classify(["the movie was very good", "dull"])
    assert [r["label"] in {"neg", "neutral", "pos"} for r in results] == [True, True], results
    print("PIPELINE_OK")
""")


def test_pipeline_with_trust_remote_code_runs_without_pact_zoo_and_without_a_prompt(tmp_path):
    """``pipeline(..., trust_remote_code=True)`` on a saved folder where pact_zoo is not importable: no ``[y/N]``
    prompt (stdin closed, ``input`` exits), the remote classes and the saved tokenizer are used."""
    model = adaptive(tokenizer=tiny_tokenizer(), id2label={0: "neg", 1: "neutral", 2: "pos"})
    model.save_pretrained(tmp_path / "checkpoint")
    (tmp_path / "classify.py").write_text(REMOTE_PIPELINE)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-I", str(tmp_path / "classify.py"), str(tmp_path / "checkpoint")],
                            cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "PIPELINE_OK" in result.stdout, output
    assert "[y/N]" not in output and "custom code" not in output, output


# ---------------------------------------------------------------------------------------------------------------------
def _text_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny BERT backbone folder with its tokenizer, and a parquet text dataset (train / test)."""
    import pandas as pd

    backbone = tmp_path / "backbone"
    tiny_backbone("bert").save_pretrained(backbone)
    tiny_tokenizer().save_pretrained(backbone)
    data = tmp_path / "reviews"
    data.mkdir()
    generator = torch.Generator().manual_seed(0)
    for split, rows in (("train", 32), ("test", 12)):
        texts, labels = [], []
        for _ in range(rows):
            n = int(torch.randint(1, 9, (1,), generator=generator))
            words = [WORDS[int(i)] for i in torch.randint(len(WORDS), (n,), generator=generator)]
            texts.append(" ".join(words))
            labels.append(int("good" in words or "great" in words))
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(data / f"{split}.parquet")
    return backbone, data


def test_text_data_tokenises_and_pads_right(tmp_path):
    from pact_zoo.data.text import TextCollator, load_text_dataset, tokenize_split

    backbone, data = _text_folder(tmp_path)
    splits = load_text_dataset(f"parquet:{data}")
    assert (splits.text_column, splits.label_column, splits.num_classes) == ("text", "label", 2)
    tokenizer = tiny_tokenizer()
    rows = tokenize_split(splits.train, tokenizer, "text", "label", max_length=5)
    batch = TextCollator(tokenizer)([rows[i] for i in range(8)])
    assert batch["input_ids"].shape[1] <= 5 and (batch["input_ids"][:, 0] == SPECIAL.index("[CLS]")).all()
    assert batch["attention_mask"][:, 0].all() and batch["labels"].shape == (8,)
    with pytest.raises(ValueError, match="unknown text dataset"):
        load_text_dataset("reviews")
    tokenizer.padding_side = "left"
    with pytest.raises(ValueError, match="padding_side"):
        TextCollator(tokenizer)


def test_two_process_cpu_fine_tune(tmp_path, launch_env):
    """``accelerate launch`` with two CPU processes (DDP) fine-tunes an encoder through the shared loop."""
    backbone, data = _text_folder(tmp_path)
    out = tmp_path / "run"
    overrides = dict(model="pact_encoder", pretrained_file=str(backbone), dataset=f"parquet:{data}",
                     model_kwargs={"method": "policy_gradient", "halting_bias_init": 2.0}, epochs=1,
                     batch_size=4, eval_batch_size=6, optimizer="adamw", lr=1e-3, output_dir=str(out),
                     dataset_kwargs={"max_length": 8})
    argv = []
    for key, value in overrides.items():
        argv += [f"--{key.replace('_', '-')}", json.dumps(value) if not isinstance(value, str) else value]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
                "29531"]
    proc = subprocess.run([*launcher, str(REPO / "scripts" / "train.py"), *argv], cwd=REPO, env=launch_env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    metrics = json.loads((out / "final_metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["step"] == 32 // (4 * 2) and metrics["num_samples"] == 12
    assert 0 < metrics["flops_ratio"] <= 1.0
    assert {"tokenizer.json", "config.json", "model.safetensors"} <= set(os.listdir(out / "model"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert reloaded.config.method == "policy_gradient"


def test_synthetic_heads_from_token_inputs_spread_depth():
    """synthesize_halting places the heads on given model inputs (a token model) instead of generated images."""
    from pact_zoo.halting import synthesize_halting

    model = adaptive("bert", "pact")
    ids, mask = padded_batch(lengths=(7, 3, 5, 1, 7, 2) * 4, seed=1)
    synthesize_halting(model, seed=0, input_shape=None, inputs={"input_ids": ids, "attention_mask": mask})
    with torch.no_grad():
        layers = model(input_ids=ids, attention_mask=mask).units_executed
    assert len(set(layers.tolist())) == LAYERS, "every depth 1..L should occur"
    with pytest.raises(ValueError, match="exactly one of input_shape"):
        synthesize_halting(model, seed=0, input_shape=(4,), inputs={"input_ids": ids})


def test_torch_compile_eval_runs_compiled_layers_on_trimmed_sub_batches():
    """Under torch.compile the encoder's stage runs its compact loop eagerly over layers compiled one by one: logits
    and depths are eager compact evaluation's, sub-batches trimmed to their own longest row included."""
    model = length_heads(adaptive("bert", "pact")).eval()
    ids, mask = padded_batch(lengths=(7, 3, 5, 1, 7, 2, 2))
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        depths = model.base_model.stage.record.units_executed.clone()
    pact_zoo.set_unit_compile(model, {"backend": "eager", "dynamic": True})
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    with torch.no_grad():
        logits = compiled(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert torch.equal(model.base_model.stage.record.units_executed, depths)
    assert len(depths.unique()) > 1


def test_compare_evaluates_and_times_a_text_model_folder(tmp_path):
    """``pact-zoo compare`` on a saved PACT-Encoder folder (its own tokenizer is the text task's): evaluated on the
    text split at its own rule and full depth, and timed (also at full depth)."""
    import yaml

    from pact_zoo.training.compare import compare, load_comparison

    backbone, data = _text_folder(tmp_path)
    model = PactEncoderForSequenceClassification.from_backbone(str(backbone), num_labels=2, method="pact")
    heterogeneous(model)
    model.save_pretrained(tmp_path / "model")
    model.tokenizer.save_pretrained(tmp_path / "model")
    recipe = dict(evaluation=dict(dataset=f"parquet:{data}", eval_split="test", eval_batch_size=6,
                                  dataset_kwargs={"max_length": 8}),
                  entries=[dict(name="pact", model_dir=str(tmp_path / "model"))],
                  timing=dict(batch_sizes=[1, 6], samples=6, repeats=1, warmup=0))
    (tmp_path / "compare.yaml").write_text(yaml.safe_dump(recipe))
    summary = compare(load_comparison(str(tmp_path / "compare.yaml"), str(tmp_path / "out")))
    rules = {row["rule"] for row in summary["rows"]}
    assert {"pact", "full_depth"} <= rules and all(row["num_samples"] == 12 for row in summary["rows"])
    assert set(summary["timing"]["batch_sizes"]["6"]["ms_per_sample"]) == {"pact", "pact (full depth)"}
