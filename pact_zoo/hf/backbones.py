# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""Building an adaptive model over a plain pretrained transformers encoder: loading the backbone by folder or hub id
(with a one-line error), the pooling a sentence-transformers folder was trained with, pooling token states, and the
tokenizer saved in a model folder.

Shipped as remote code beside the modeling files (flat, no imports from pact_zoo).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel

__all__ = ["SENTENCE_TRANSFORMERS_MODULES", "SENTENCE_TRANSFORMERS_POOLING", "TOKENIZER_FILES", "folder_tokenizer",
           "load_backbone", "looks_like_path", "pool_tokens", "sentence_transformers_pooling"]

#: Files that mark a model folder as holding its tokenizer (saved beside the weights).
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt")


#: Files a sentence-transformers folder describes its pooling with (``modules.json`` names the pooling module's folder).
SENTENCE_TRANSFORMERS_MODULES, SENTENCE_TRANSFORMERS_POOLING = "modules.json", "sentence_transformers.models.Pooling"
#: sentence-transformers pooling flags -> pooling mode of this family
_SENTENCE_POOLING_FLAGS = (("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"),
                           ("pooling_mode_max_tokens", "max"))


def pool_tokens(hidden: torch.Tensor, mask: Optional[torch.Tensor], mode: str) -> torch.Tensor:
    """``[B, T, H]`` states -> ``[B, H]``: the first token (``"cls"``), or the mean / max over the real tokens of
    ``mask`` ``[B, T]`` (1 = real; any padding side)."""
    if mode == "cls":
        return hidden[:, 0]
    if mask is None:
        return hidden.mean(1) if mode == "mean" else hidden.amax(1)
    real = mask.to(hidden.dtype).unsqueeze(-1)
    if mode == "mean":
        return (hidden * real).sum(1) / real.sum(1).clamp(min=1.0)
    return hidden.masked_fill(real == 0, torch.finfo(hidden.dtype).min).amax(1)


def sentence_transformers_pooling(folder: Union[str, os.PathLike]) -> Optional[str]:
    """The pooling a sentence-transformers folder was trained with (``"mean"``, ``"cls"``, ``"max"``), from its
    ``modules.json`` and pooling ``config.json``; None when the folder has no pooling module."""
    import json

    folder = Path(folder)
    modules_file = folder / SENTENCE_TRANSFORMERS_MODULES
    if not modules_file.is_file():
        return None
    for module in json.loads(modules_file.read_text()):
        if module.get("type") != SENTENCE_TRANSFORMERS_POOLING:
            continue
        config_file = folder / module.get("path", "") / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{modules_file} names a pooling module without its config {config_file}")
        flags = json.loads(config_file.read_text())
        for flag, mode in _SENTENCE_POOLING_FLAGS:
            if flags.get(flag):
                return mode
        raise ValueError(f"{config_file}: unsupported sentence-transformers pooling {flags}; pact_encoder pools by "
                         "cls, mean or max")
    return None


def looks_like_path(source: str) -> bool:
    """True for a string that can only be a local path (absolute, ``./``, ``../``, ``~``, or more than one ``/``),
    not a hub id (``name`` or ``org/name``)."""
    return (os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
            or (os.sep != "/" and os.sep in source))


def load_backbone(source: str) -> PreTrainedModel:
    """``AutoModel.from_pretrained(source)`` with a one-line error that says when ``source`` is no local folder."""
    if not Path(source).expanduser().exists() and looks_like_path(source):
        raise FileNotFoundError(f"backbone folder not found: {source} (a local path that does not exist)")
    try:
        return AutoModel.from_pretrained(source)
    except OSError as exc:
        if Path(source).expanduser().exists():
            raise
        from huggingface_hub import constants

        offline = " (the hub is offline: HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(f"backbone {source!r} is not a local folder (no such path) and could not be loaded as a hub "
                      f"id{offline}: {reason}") from None


def folder_tokenizer(folder: Union[str, os.PathLike], config: Any = None) -> Any:
    """The tokenizer saved in the local model folder ``folder``, or None when it holds none (or is no folder: a caller
    keeps the tokenizer it has, e.g. its backbone's, as an adapter folder holds none). It is
    read with the model's ``config``: ``AutoTokenizer`` would otherwise read ``config.json`` through ``AutoConfig``
    without ``trust_remote_code`` (which the Auto classes do not pass on), and where the model runs as remote code
    (pact_zoo not installed) that asks ``[y/N]`` on the terminal."""
    folder = Path(folder)
    if not (folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)):
        return None
    return AutoTokenizer.from_pretrained(folder, config=config)
