"""Text classification data through the ``datasets`` library, tokenised with the model's saved tokenizer.

Sources: hub datasets by name (``cornell-movie-review-data/rotten_tomatoes`` or any dataset with a text and a label
column; needs the network or a warm cache) and local parquet files (``parquet:<dir>`` holding ``train*.parquet``,
``validation*.parquet``, ``test*.parquet``; offline).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

from .images import LABEL_COLUMNS, _local_source, _pick_column, _split_names, check_eval_labels

__all__ = ["TextSplits", "TEXT_COLUMNS", "DEFAULT_MAX_LENGTH", "load_text_dataset", "tokenize_split", "TextCollator"]

TEXT_COLUMNS = ("text", "sentence", "content", "review")
#: Tokens per sample after truncation (special tokens included) unless a recipe sets ``max_length``.
DEFAULT_MAX_LENGTH = 128


@dataclass
class TextSplits:
    """Train and eval splits with the column names and class names they use."""

    train: Any  # datasets.Dataset
    eval: Any  # datasets.Dataset
    text_column: str
    label_column: str
    class_names: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_text_dataset(
        dataset: str,
        data_dir: Optional[str] = None,
        data_files: Optional[Dict[str, str]] = None,
        train_split: str = "train",
        eval_split: Optional[str] = None,
        text_column: Optional[str] = None,
        label_column: Optional[str] = None,
) -> TextSplits:
    """Load a text-classification dataset as train/eval ``datasets.Dataset`` splits.

    Args:
        dataset: ``"parquet:<dir or file>"`` or a hub id (``"cornell-movie-review-data/rotten_tomatoes"``).
        data_dir, data_files: alternatives to the location after ``:``.
        train_split, eval_split: split names (eval defaults to test, then validation).
        text_column, label_column: column names (auto-detected when ``None``: ``text``, ``label``, ...).
    """
    from datasets import ClassLabel, load_dataset

    if dataset.split(":", 1)[0] == "parquet":
        dataset_dict = _local_source(dataset, data_dir, data_files)
    elif "/" in dataset and ":" not in dataset:
        dataset_dict = load_dataset(dataset)  # hub dataset: needs the network or a warm cache
    else:
        raise ValueError(f"unknown text dataset {dataset!r}; valid choices: 'parquet:<dir or file>' or a hub id "
                         f"such as 'cornell-movie-review-data/rotten_tomatoes'")
    train_name, eval_name = _split_names(dataset_dict, train_split, eval_split)
    train, evaluation = dataset_dict[train_name], dataset_dict[eval_name]
    text_col = _pick_column(train.column_names, text_column, TEXT_COLUMNS, "text")
    label_col = _pick_column(train.column_names, label_column, LABEL_COLUMNS, "label")
    feature = train.features[label_col]
    if isinstance(feature, ClassLabel):
        class_names = list(feature.names)
    else:
        labels = list(train[label_col]) + list(evaluation[label_col])
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels):
            raise ValueError(f"label column {label_col!r} must hold class ids (ints >= 0)")
        class_names = [str(i) for i in range(max(labels) + 1)]
    check_eval_labels(train, evaluation, label_col, class_names, dataset)
    return TextSplits(train=train, eval=evaluation, text_column=text_col, label_column=label_col,
                      class_names=class_names, name=dataset)


def tokenize_split(split, tokenizer, text_column: str, label_column: str, max_length: int = DEFAULT_MAX_LENGTH):
    """``split`` as ``{"input_ids", "attention_mask", ["token_type_ids"], "labels"}`` rows, truncated to
    ``max_length`` tokens and not padded (:class:`TextCollator` pads each batch to its longest row)."""
    if not (isinstance(max_length, int) and not isinstance(max_length, bool) and max_length >= 2):
        raise ValueError(f"max_length must be an int >= 2 (room for [CLS] and [SEP]), got {max_length!r}")

    def encode(batch: Dict[str, list]) -> Dict[str, list]:
        texts = batch[text_column]
        if any(not isinstance(t, str) for t in texts):
            raise ValueError(f"text column {text_column!r} must hold strings")
        encoded = tokenizer(texts, truncation=True, max_length=max_length)
        encoded["labels"] = [int(v) for v in batch[label_column]]
        return dict(encoded)

    return split.map(encode, batched=True, remove_columns=split.column_names, desc="tokenising")


class TextCollator:
    """Pads a list of tokenised rows to the longest one (right padding, the tokenizer's pad id) -> ``[B, T]`` long
    tensors plus ``labels`` ``[B]``."""

    def __init__(self, tokenizer) -> None:
        if getattr(tokenizer, "padding_side", "right") != "right":
            raise ValueError(f"tokenizer.padding_side must be 'right' (the model reads [CLS] at position 0), "
                             f"got {tokenizer.padding_side!r}")
        self.tokenizer = tokenizer

    def __call__(self, rows: list[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        labels = torch.tensor([r["labels"] for r in rows], dtype=torch.long)
        features = [{k: v for k, v in r.items() if k != "labels"} for r in rows]
        batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        return dict(batch, labels=labels)
