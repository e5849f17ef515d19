"""UEA .ts reader and splits on a generated file (no sktime, no network)."""
from __future__ import annotations

import builtins

import numpy as np
import pytest

from pact_zoo.data.sequences import collate_sequences
from pact_zoo.data.uea import load_uea_splits, read_ts_file, uea_dataset_path

HEADER = """#comment line
@problemName Toy
@univariate false
@dimensions 2
@equalLength false
@classLabel true a b c
@data
"""


def _series(rng: np.random.Generator, length: int, pad: int = 0) -> str:
    x = rng.normal(size=(length, 2)).round(4)
    channels = [",".join([f"{v:g}" for v in x[:, c]] + ["NaN"] * pad) for c in range(2)]
    return ":".join(channels)


@pytest.fixture()
def toy(tmp_path):
    rng = np.random.default_rng(0)
    for split, rows in (("TRAIN", [(3, "a", 0), (5, "b", 2), (4, "c", 0)]), ("TEST", [(2, "b", 1), (6, "a", 0)])):
        lines = [f"{_series(rng, length, pad)}:{label}" for length, label, pad in rows]
        (tmp_path / f"Toy_{split}.ts").write_text(HEADER + "\n".join(lines) + "\n")
    return tmp_path


def test_read_ts_file_cuts_trailing_nan_frames(toy):
    series, labels, names = read_ts_file(toy / "Toy_TRAIN.ts")
    assert names == ["a", "b", "c"] and labels == ["a", "b", "c"]
    assert [s.shape for s in series] == [(3, 2), (5, 2), (4, 2)]
    assert all(np.isfinite(s).all() and s.dtype == np.float32 for s in series)


def test_splits_standardise_with_train_statistics(toy):
    train, test, names = load_uea_splits("Toy", folder=toy)
    assert names == ["a", "b", "c"] and len(train) == 3 and len(test) == 2
    frames = np.concatenate([np.asarray(x) for x in train["inputs_embeds"]])
    np.testing.assert_allclose(frames.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(frames.std(0), 1.0, atol=1e-5)
    assert test["labels"] == [1, 0] and test["length"] == [2, 6]
    raw_train, _, _ = load_uea_splits("Toy", standardise=False, folder=toy)
    raw = np.concatenate([np.asarray(x) for x in raw_train["inputs_embeds"]])
    np.testing.assert_allclose((raw - raw.mean(0)) / raw.std(0), frames, atol=1e-5)
    batch = collate_sequences([test[0], test[1]])
    assert batch["inputs_embeds"].shape == (2, 6, 2) and batch["attention_mask"].sum(1).tolist() == [2, 6]


def test_unknown_label_and_inner_gap_raise(toy, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Toy_TRAIN.ts").write_text(HEADER + "1,2:3,4:z\n")
    (bad / "Toy_TEST.ts").write_text(HEADER + "1,2:3,4:a\n")
    with pytest.raises(ValueError, match="not among"):
        load_uea_splits("Toy", folder=bad)
    (bad / "gap.ts").write_text(HEADER + "1,NaN,2:3,4,5:a\n")
    with pytest.raises(ValueError, match="inside a series"):
        read_ts_file(bad / "gap.ts")


def test_missing_sktime_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sktime":
            raise ImportError("no sktime")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pact-zoo\[uea\]"):
        uea_dataset_path("JapaneseVowels")
