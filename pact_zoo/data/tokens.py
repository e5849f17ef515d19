"""Text as token-id sequences for a model with its own embedding (the PACT-LSTM's ``vocab_size``).

A tokenizer's ids are remapped to a compact vocabulary: the ids that occur in the training rows get rows
``FIRST_TOKEN_ID, FIRST_TOKEN_ID + 1, ...`` in order of the tokenizer's id, every other id :data:`UNK_ID`, the
tokenizer's padding id :data:`PAD_ID`; so the embedding holds only rows that can learn. The remap (``[V]`` int64
over the tokenizer's ``V`` ids) is part of the model: it is saved beside the weights as
:data:`TOKEN_REMAP_FILE` (safetensors) and applied wherever the saved model is evaluated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

__all__ = ["PAD_ID", "UNK_ID", "FIRST_TOKEN_ID", "TOKEN_REMAP_FILE", "TOKEN_REMAP_ATTR", "token_remap",
           "remap_token_split", "save_token_remap", "load_token_remap"]

#: compact ids of padding and of every token not seen in training
PAD_ID, UNK_ID = 0, 1
#: the first compact id of a token seen in training
FIRST_TOKEN_ID = 2
#: the remap's file in a model folder, and the attribute a loaded model carries it in
TOKEN_REMAP_FILE = "token_remap.safetensors"
TOKEN_REMAP_ATTR = "token_remap"
_TENSOR_KEY = "token_remap"


def token_remap(rows: Sequence[Sequence[int]], tokenizer_size: int, pad_token_id: int,
                min_count: int = 1) -> torch.Tensor:
    """The remap ``[tokenizer_size]`` int64 from a tokenizer's ids to the compact vocabulary: ids that occur at
    least ``min_count`` times in ``rows`` (the training rows' ids) get ``FIRST_TOKEN_ID, ...``; the rest
    :data:`UNK_ID`; ``pad_token_id`` :data:`PAD_ID`. The compact vocabulary size is ``int(remap.max()) + 1``."""
    if not (isinstance(min_count, int) and not isinstance(min_count, bool) and min_count >= 1):
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    if not (isinstance(pad_token_id, int) and 0 <= pad_token_id < tokenizer_size):
        raise ValueError(f"pad_token_id must be one of the tokenizer's {tokenizer_size} ids (a tokenizer with a "
                         f"padding token), got {pad_token_id!r}")
    ids = np.concatenate([np.asarray(row, dtype=np.int64) for row in rows]) if len(rows) else np.zeros(0, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= tokenizer_size):
        raise ValueError(f"token ids must lie in [0, {tokenizer_size}) (the tokenizer's size)")
    counts = np.bincount(ids, minlength=tokenizer_size)
    counts[pad_token_id] = 0
    keep = np.nonzero(counts >= min_count)[0]
    remap = np.full(tokenizer_size, UNK_ID, dtype=np.int64)
    remap[keep] = np.arange(FIRST_TOKEN_ID, FIRST_TOKEN_ID + len(keep))
    remap[pad_token_id] = PAD_ID
    return torch.from_numpy(remap)


def remap_token_split(split, remap: torch.Tensor):
    """A tokenised ``datasets.Dataset`` split (``input_ids``, ``labels``) as rows of compact ``input_ids`` (through
    ``remap``), ``labels`` and ``length`` (tokens per row, a per-sample property)."""
    table = remap.numpy()
    size = len(table)

    def encode(batch):
        ids = [np.asarray(row, dtype=np.int64) for row in batch["input_ids"]]
        if any(row.size and (row.min() < 0 or row.max() >= size) for row in ids):
            raise ValueError(f"token ids beyond the remap's {size} entries: the tokenizer is not the one the model "
                             f"was trained with")
        return {"input_ids": [table[row].tolist() for row in ids], "labels": batch["labels"],
                "length": [len(row) for row in ids]}

    return split.map(encode, batched=True, remove_columns=split.column_names, desc="remapping token ids")


def save_token_remap(remap: torch.Tensor, folder: Union[str, Path]) -> None:
    """Write ``remap`` as ``folder / TOKEN_REMAP_FILE`` (safetensors; the caller's folder is written atomically)."""
    from safetensors.torch import save_file

    save_file({_TENSOR_KEY: remap.to(torch.int64).contiguous()}, str(Path(folder) / TOKEN_REMAP_FILE))


def load_token_remap(folder: Union[str, Path]) -> Optional[torch.Tensor]:
    """The remap saved in ``folder`` (``[V]`` int64), or None when the folder holds none."""
    from safetensors.torch import load_file

    path = Path(folder) / TOKEN_REMAP_FILE
    if not path.is_file():
        return None
    tensors = load_file(str(path))
    if set(tensors) != {_TENSOR_KEY} or tensors[_TENSOR_KEY].dtype != torch.int64 or tensors[_TENSOR_KEY].dim() != 1:
        raise ValueError(f"{path} must hold one [V] int64 tensor {_TENSOR_KEY!r}, got {sorted(tensors)}")
    return tensors[_TENSOR_KEY]
