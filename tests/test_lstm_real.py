"""The PACT-LSTM on real sequences through the shared training loop: UEA sets with a stratified validation holdout,
text as token ids remapped to the training vocabulary (the remap saved, loaded, evaluated and exported with the
model) and length-bucketed batches (``bucket_batches``), on tiny data written into ``tmp_path``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pact_zoo.training.config import ConfigError, load_config

CLASSES, PER_CLASS, CHANNELS = ("a", "b", "c"), 8, 2
LSTM = {"hidden_size": 8, "max_ponder_steps": 3, "method": "pact", "tau": 0.01, "halting_bias_init": 2.0}
LOOP = dict(model="pact_lstm", model_kwargs=LSTM, batch_size=4, eval_batch_size=64, optimizer="adamw", lr=0.01,
            weight_decay=0.0, schedule="constant", eval_thresholds=[0.5], max_steps=2)
WORDS = "the a movie film plot was good bad great awful dull fun".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
UNSEEN = "awful"  # only in the evaluation split: the remap sends it to UNK


def _ts_files(folder: Path, name: str = "Tiny") -> Path:
    """A ``.ts`` train file of 3 classes x 8 series and a test file of 3 x 3, 2 channels, 3-9 frames."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("TRAIN", PER_CLASS), ("TEST", 3)):
        lines = [f"@problemName {name}", "@timeStamps false", "@univariate false", "@equalLength false",
                 f"@classLabel true {' '.join(CLASSES)}", "@data"]
        for label in CLASSES:
            for _ in range(count):
                length = int(rng.integers(3, 10))
                channels = [",".join(f"{v:.3f}" for v in rng.normal(CLASSES.index(label), 1.0, length))
                            for _ in range(CHANNELS)]
                lines.append(":".join(channels + [label]))
        (folder / f"{name}_{split}.ts").write_text("\n".join(lines) + "\n")
    return folder


def _uea_config(tmp_path: Path, **changes):
    fields = dict(LOOP, dataset="uea:Tiny", data_dir=str(_ts_files(tmp_path / "ts")), eval_split="validation",
                  dataset_kwargs={"validation_fraction": 0.25, "split_seed": 0}, output_dir=str(tmp_path / "run"))
    return load_config(None, {**fields, **changes})


def _rows(split) -> set:
    return {tuple(np.asarray(x).ravel().round(3).tolist()) for x in split["inputs_embeds"]}


def test_uea_validation_holdout_is_stratified_seeded_and_apart_from_the_training_seed(tmp_path):
    from pact_zoo.training.tasks import build_task

    task = build_task(_uea_config(tmp_path))
    data = task.load_data(None)
    assert len(data.train) == 3 * (PER_CLASS - 2) and len(data.eval) == 3 * 2  # round(0.25 * 8) per class
    assert sorted(data.eval["labels"]) == [0, 0, 1, 1, 2, 2] and not _rows(data.train) & _rows(data.eval)
    again = build_task(_uea_config(tmp_path, seed=5)).load_data(None)  # another training seed: the same rows
    assert _rows(again.eval) == _rows(data.eval) and _rows(again.train) == _rows(data.train)
    other = build_task(_uea_config(tmp_path, dataset_kwargs={"validation_fraction": 0.25, "split_seed": 1}))
    assert _rows(other.load_data(None).eval) != _rows(data.eval)
    test = build_task(_uea_config(tmp_path, eval_split="test"))
    test_data = test.load_data(None)
    assert len(test_data.eval) == 9 and _rows(test_data.train) == _rows(data.train)  # the holdout stays out
    lengths = test.sample_properties()["length"]
    assert lengths.tolist() == [len(x) for x in test_data.eval["inputs_embeds"]]
    with pytest.raises(ValueError, match="eval_split must be one of"):
        build_task(_uea_config(tmp_path, eval_split="dev")).load_data(None)
    with pytest.raises(ValueError, match="validation_fraction must be a number in"):
        build_task(_uea_config(tmp_path, dataset_kwargs={"validation_fraction": 1.5})).load_data(None)
    with pytest.raises(ConfigError, match="do not fit"):
        build_task(_uea_config(tmp_path, dataset_kwargs={"holdout": 0.2})).load_data(None)
    with pytest.raises(ValueError, match="unknown dataset 'uea:' for pact_lstm"):
        build_task(_uea_config(tmp_path, dataset="uea:"))


def test_length_bucketed_batches_cover_the_epoch_sorted_within_chunks(tmp_path, reset_accelerate):
    from pact_zoo.data.sequences import LengthBucketSampler
    from pact_zoo.training.loop import train

    lengths = np.random.default_rng(0).integers(1, 50, 103).tolist()
    sampler = LengthBucketSampler(lengths, batch_size=8, bucket_batches=len(lengths) // 8)  # one chunk: sorted
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12 and all(len(b) == 8 for b in batches)
    assert len({i for b in batches for i in b}) == 96  # every row once, the partial batch dropped
    spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches)
    assert all(high <= next_low for (_, high), (next_low, _) in zip(spans, spans[1:]))
    assert list(sampler) != batches  # the next epoch: another order
    sampler.set_epoch(0)
    assert list(sampler) == batches  # the same epoch: the same order
    metrics = train(_uea_config(tmp_path, bucket_batches=2, max_steps=5))  # 18 rows / 4: 4 batches an epoch
    assert metrics["step"] == 5
    with pytest.raises(ConfigError, match="bucket_batches must be >= 1, got 0"):
        _uea_config(tmp_path, bucket_batches=0)
    parity = dict(LOOP, dataset="parity", bucket_batches=2, output_dir=str(tmp_path / "parity"),
                  dataset_kwargs={"vector_size": 4, "train_samples": 16, "test_samples": 8})
    with pytest.raises(ConfigError, match="bucket_batches=2 needs a training split with a 'length' column"):
        train(load_config(None, parity))


def test_a_test_split_evaluation_reuses_the_validation_recipes_runs(tmp_path, reset_accelerate, capsys):
    """A recipe evaluated on validation, then with ``--eval-split test`` (evaluation_name test): the second reads
    the first one's trained runs on the test split, without training again or overwriting the validation results;
    depth by length."""
    import yaml

    from pact_zoo.cli import main
    from pact_zoo.training.compare import compare, load_comparison

    config = _uea_config(tmp_path)
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({k: v for k, v in config.to_dict().items()
                                                          if k in LOOP or k.startswith(("data", "eval"))}))
    evaluation = dict(dataset=config.dataset, data_dir=config.data_dir, eval_split="validation",
                      dataset_kwargs=config.dataset_kwargs, eval_batch_size=64)
    entries = [dict(name="lstm", train=str(tmp_path / "train.yaml"),
                    overrides={"model_kwargs": {"hidden_size": 8, "max_ponder_steps": 1, "method": "none"}}),
               dict(name="pact", train=str(tmp_path / "train.yaml"))]
    out, path = tmp_path / "compare", tmp_path / "compare.yaml"
    recipe = dict(output_dir=str(out), evaluation=evaluation, baseline="lstm", depth_by="length", entries=entries)
    path.write_text(yaml.safe_dump(recipe))
    validation = compare(load_comparison(str(path)))
    trained = {p: p.stat().st_mtime_ns for p in out.glob("*/model/*")}
    assert len(trained) >= 4  # both entries' weights and configs
    assert main(["compare", "--config", str(path), "--eval-split", "test"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/model/*")} == trained  # no second training
    assert json.loads((out / "comparison.json").read_text())["evaluation"]["eval_split"] == "validation"
    test = json.loads((out / "comparison.test.json").read_text())
    for name in ("comparison.test.md", "comparison.test.png", "depth_by.test.png", "pact/eval.test/tradeoff.json"):
        assert (out / name).is_file(), name
    assert {r["num_samples"] for r in test["rows"]} == {9} and {r["num_samples"] for r in validation["rows"]} == {6}
    assert test["depth_by"]["property"] == "length" and test["evaluation"]["eval_split"] == "test"
    path.write_text(yaml.safe_dump(dict(recipe, evaluation_name="test")))  # the same, named in the recipe
    assert load_comparison(str(path)).entries[1].eval_dir == out / "pact" / "eval.test"
    path.write_text(yaml.safe_dump(dict(recipe, evaluation_name="a/b")))
    with pytest.raises(ConfigError, match=r"evaluation_name \(or --eval-split\) must be a name"):
        load_comparison(str(path))


def _text_data(tmp_path: Path) -> tuple[Path, Path]:
    """A word-level tokenizer folder and a parquet dataset (train / validation / test) of short reviews; the word
    :data:`UNSEEN` occurs only in the test split."""
    import pandas as pd
    from transformers import BertTokenizer

    tokenizer = tmp_path / "tokenizer"
    BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)}).save_pretrained(tokenizer)
    data = tmp_path / "reviews"
    data.mkdir()
    rng = np.random.default_rng(0)
    seen = [w for w in WORDS if w != UNSEEN]
    for split, rows in (("train", 24), ("validation", 8), ("test", 8)):
        texts = [" ".join(rng.choice(seen, int(rng.integers(1, 7)))) for _ in range(rows)]
        if split == "test":
            texts = [f"{text} {UNSEEN}" for text in texts]
        labels = [int("good" in text or "great" in text) for text in texts]
        pd.DataFrame({"text": texts, "label": labels}).to_parquet(data / f"{split}.parquet")
    return tokenizer, data


def test_token_remap_is_saved_loaded_evaluated_and_exported_with_the_model(tmp_path, reset_accelerate):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from pact_zoo.data.tokens import FIRST_TOKEN_ID, PAD_ID, TOKEN_REMAP_FILE, UNK_ID
    from pact_zoo.hub import export_folder
    from pact_zoo.training import load_model_folder
    from pact_zoo.training.evaluate import main as evaluate_main
    from pact_zoo.training.loop import train
    from pact_zoo.training.tasks import build_task

    tokenizer_dir, data = _text_data(tmp_path)
    run = tmp_path / "run"
    config = load_config(None, dict(LOOP, dataset=f"parquet:{data}", eval_split="test", max_steps=3,
                                    dataset_kwargs={"tokenizer": str(tokenizer_dir), "max_length": 8},
                                    output_dir=str(run)))
    metrics = train(config)
    model = load_model_folder(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    remap = model.token_remap
    seen = [tokenizer.convert_tokens_to_ids(t) for t in ["[CLS]", "[SEP]"] + [w for w in WORDS if w != UNSEEN]]
    assert torch.equal(remap[sorted(seen)], torch.arange(FIRST_TOKEN_ID, FIRST_TOKEN_ID + len(seen)))
    assert int(remap[tokenizer.convert_tokens_to_ids(UNSEEN)]) == UNK_ID and int(remap[0]) == PAD_ID
    assert model.config.vocab_size == len(seen) + FIRST_TOKEN_ID and len(remap) == len(tokenizer)
    # a saved folder evaluates as the run did: the same accuracy and FLOPs on the same split
    assert evaluate_main(["--model-dir", str(run / "model")]) == 0
    tradeoff = json.loads((run / "eval" / "tradeoff.json").read_text())
    assert tradeoff["default"]["accuracy"] == metrics["accuracy"]
    assert tradeoff["default"]["mean_flops"] == pytest.approx(metrics["mean_flops"])
    hub = export_folder(str(run / "model"), str(tmp_path / "hub"))
    assert torch.equal(load_file(str(hub / TOKEN_REMAP_FILE))["token_remap"], remap)
    (run / "model" / TOKEN_REMAP_FILE).unlink()  # a folder without its remap is refused, not misread
    with pytest.raises(ConfigError, match=f"holds {TOKEN_REMAP_FILE}"):
        evaluate_main(["--model-dir", str(run / "model")])
    with pytest.raises(ConfigError, match=r"model_kwargs \['vocab_size'\]: a text dataset's token remap sets them"):
        build_task(load_config(None, dict(config.to_dict(), model_kwargs=dict(LSTM, vocab_size=9)))).build_model(2)
    with pytest.raises(ConfigError, match="and need tokenizer"):
        build_task(load_config(None, dict(config.to_dict(), dataset_kwargs={"max_length": 8})))


def test_the_real_sequence_recipes_carry_the_replaced_scripts_settings(monkeypatch):
    """The results recipes sweep tau for PACT, ACT and policy gradient beside the plain LSTMs with seed groups; the
    diagnosis recipes change one thing each on the issue's PACT; the training recipes hold the shared settings."""
    from pact_zoo.training.compare import load_comparison

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    prefix = "hub_configs/pact_lstm.real/"
    vowels, rt = (load_comparison(f"{prefix}compare_{task}.yaml") for task in ("vowels", "rt"))
    assert len(vowels.entries) == 45 and len(rt.entries) == 35 and vowels.depth_by == rt.depth_by == "length"
    taus = {load_config(e.path, e.overrides).model_kwargs["tau"] for e in vowels.entries if e.recipe_name == "pact"}
    assert taus == {0.001, 0.003, 0.01, 0.03} and vowels.evaluation["eval_split"] == "validation"
    assert {e.group for e in vowels.entries if e.recipe_name == "act"} == {f"act-tau{t:g}" for t in sorted(taus)}
    configs = [load_config(e.path, e.overrides) for e in vowels.entries + rt.entries]
    assert {(c.lr, c.batch_size, c.max_grad_norm, c.weight_decay, c.schedule) for c in configs} == {
        (0.003, 32, 1.0, 0.0, "constant")}
    assert {c.epochs for c in configs} == {30, 3} and {c.bucket_batches for c in configs if c.epochs == 3} == {20}
    issue = [c for c in configs if c.model_kwargs.get("halting_bias_init") == -3.0]
    assert issue and {c.head_lr_mult for c in issue} == {1.0}
    assert {c.head_lr_mult for c in configs if c not in issue} == {10.0}
    for task in ("vowels", "rt"):
        ladder = {e.name: load_config(e.path, e.overrides) for e in
                  load_comparison(f"{prefix}compare_{task}_diagnosis.yaml").entries}
        base = ladder["D0_baseline"]
        assert (base.model_kwargs["halting_terms_over_time"], base.model_kwargs["halting_bias_init"],
                base.head_lr_mult) == ("sum", -3.0, 1.0) and len(ladder) == 11
        assert ladder["D4_heads_lr_x10"].head_lr_mult == 10.0 and ladder["D7_anytime_half"].anytime
        assert {c.diagnose_every for c in ladder.values()} == {30 if task == "vowels" else 320}  # the last step too
        fix = ladder["F3_per_sequence_bias_plus2_heads_lr_x10"]
        assert (fix.model_kwargs["halting_terms_over_time"], fix.model_kwargs["halting_bias_init"],
                fix.head_lr_mult) == ("mean", 2.0, 10.0)


def test_token_remap_errors_name_the_argument():
    from pact_zoo.data.tokens import token_remap

    assert token_remap([[2, 5, 5], [3]], 8, pad_token_id=0).tolist() == [0, 1, 2, 3, 1, 4, 1, 1]
    assert token_remap([[2, 5, 5], [3]], 8, pad_token_id=0, min_count=2).tolist() == [0, 1, 1, 1, 1, 2, 1, 1]
    with pytest.raises(ValueError, match="pad_token_id must be one of the tokenizer's 8 ids"):
        token_remap([[2]], 8, pad_token_id=None)
    with pytest.raises(ValueError, match="min_count must be an int >= 1, got 0"):
        token_remap([[2]], 8, pad_token_id=0, min_count=0)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 8\)"):
        token_remap([[9]], 8, pad_token_id=0)


def test_halting_diagnostics_are_logged_without_changing_the_run(tmp_path, reset_accelerate):
    """``diagnose_every`` logs the loss terms and their gradients on the halting heads on a fixed batch; the trained
    weights equal those of the same run without it."""
    from safetensors.torch import load_file

    from pact_zoo.training.diagnose import DIAGNOSTICS_FILE
    from pact_zoo.training.loop import train

    runs = {}
    for every in (0, 2):
        config = _uea_config(tmp_path, max_steps=4, diagnose_every=every, output_dir=str(tmp_path / f"run{every}"),
                             model_kwargs=dict(LSTM, halting_terms_over_time="sum"))
        train(config)
        runs[every] = load_file(str(tmp_path / f"run{every}" / "model" / "model.safetensors"))
    assert runs[0].keys() == runs[2].keys() and all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])
    assert not (tmp_path / "run0" / DIAGNOSTICS_FILE).exists()
    lines = [json.loads(line) for line in (tmp_path / "run2" / DIAGNOSTICS_FILE).read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4]
    for line in lines:
        terms, grads = line["loss_terms"], line["head_grad_norm"]
        cost = next(key for key in terms if key.endswith(".cost"))
        entropy = next(key for key in terms if key.endswith(".entropy"))
        assert {"task", "halting", cost, entropy} <= set(grads) and all(np.isfinite(v) for v in grads.values())
        assert terms["halting"] == pytest.approx(terms[cost] + terms[entropy], rel=1e-5)
        assert grads["task"] > 0 and grads[cost] > 0
    with pytest.raises(ConfigError, match="diagnose_every must be >= 0, got -1"):
        _uea_config(tmp_path, diagnose_every=-1)
