# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""Halting adapters: the checkpoint of a frozen-backbone conversion without the backbone.

A frozen-backbone conversion (DeeBERT's second stage, Xin et al. 2020; PACT heads on top, Figurnov et al. 2018)
changes no backbone weight, so its checkpoint needs only the weights it added (halting heads, exit classifiers, a
new classifier), the backbone's id or path and a hash of the backbone's weights. An adapter folder holds

* ``halting_adapter.safetensors``: the new weights, under the adaptive model's state-dict names;
* ``halting_adapter.json``: ``format``, ``backbone`` (``id``: hub id or timm ``name.tag``; ``path``: the local
  folder or file it was read from, if any; ``sha256``: :func:`tensors_sha256` of the backbone's tensors as the
  adaptive model holds them) and ``weights`` (the names in the safetensors file);
* the model's own config (``config.json``), and for Hugging Face models the remote code.

The hash covers the tensors (names, dtypes, shapes, bytes), not a file, so a backbone re-saved in another format
still matches. Shipped as remote code (flat, no imports from pact_zoo); the timm families use it too.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from .remote_code import atomic_write

__all__ = ["ADAPTER_CONFIG", "ADAPTER_FORMAT", "ADAPTER_WEIGHTS", "backbone_source", "check_backbone_hash",
           "is_adapter_folder", "read_adapter", "tensors_sha256", "write_adapter"]

ADAPTER_CONFIG = "halting_adapter.json"
ADAPTER_WEIGHTS = "halting_adapter.safetensors"
#: ``format`` of ``halting_adapter.json``; a reader refuses any other
ADAPTER_FORMAT = "pact_zoo.halting_adapter.v1"
_HASH_PREFIX = "sha256:"


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` of named tensors: for each name in sorted order, its name, dtype and shape (as JSON) and
    its bytes in memory order. Independent of the file format the tensors were read from."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        digest.update(header.encode() + b"\0")
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return _HASH_PREFIX + digest.hexdigest()


def is_adapter_folder(path: Union[str, os.PathLike]) -> bool:
    """Whether ``path`` is a local folder holding ``halting_adapter.json``."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def write_adapter(folder: Union[str, os.PathLike], weights: Mapping[str, torch.Tensor], backbone_id: Optional[str],
                  backbone_path: Optional[str], backbone_sha256: str, **extra: Any) -> None:
    """Write ``halting_adapter.safetensors`` and ``halting_adapter.json`` into ``folder`` (each atomically).

    Args:
        weights: the new weights (``[...]`` tensors of any shape) under the adaptive model's state-dict names.
        backbone_id: hub id or timm ``name.tag`` of the backbone (None where only a local path is known).
        backbone_path: the local folder or file the backbone was read from (None for a hub download).
        backbone_sha256: :func:`tensors_sha256` of the backbone's tensors.
        **extra: more JSON fields for the family's loader.
    """
    from safetensors.torch import save_file

    if not backbone_id and not backbone_path:
        raise ValueError("a halting adapter needs the backbone's id or path, got neither")
    folder = Path(folder)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}
    record = {"format": ADAPTER_FORMAT,
              "backbone": {"id": backbone_id, "path": backbone_path, "sha256": backbone_sha256},
              "weights": sorted(tensors), **extra}
    atomic_write(folder / ADAPTER_WEIGHTS, lambda path: save_file(tensors, str(path), metadata={"format": "pt"}))
    atomic_write(folder / ADAPTER_CONFIG, lambda path: path.write_text(json.dumps(record, indent=2) + "\n"))


def read_adapter(folder: Union[str, os.PathLike]) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(record, weights)`` of an adapter folder; a one-line ValueError / FileNotFoundError names what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config_file, weights_file = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    for path in (config_file, weights_file):
        if not path.is_file():
            raise FileNotFoundError(f"halting adapter {folder}: {path.name} is missing")
    try:
        record = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"halting adapter {config_file} is not valid JSON ({exc})") from None
    backbone = record.get("backbone") if isinstance(record, dict) else None
    if (not isinstance(record, dict) or record.get("format") != ADAPTER_FORMAT or not isinstance(backbone, dict)
            or not str(backbone.get("sha256", "")).startswith(_HASH_PREFIX)
            or not (backbone.get("id") or backbone.get("path"))):
        raise ValueError(f"halting adapter {config_file}: expected format {ADAPTER_FORMAT!r} with a backbone "
                         f"(id or path, and sha256)")
    try:
        weights = load_file(str(weights_file))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"halting adapter {weights_file} is truncated or corrupt ({' '.join(str(exc).split())})") \
            from None
    if sorted(weights) != sorted(record.get("weights", [])):
        raise ValueError(f"halting adapter {folder}: {ADAPTER_WEIGHTS} holds other weights than "
                         f"{ADAPTER_CONFIG} lists")
    return record, weights


def backbone_source(record: Mapping[str, Any], backbone: Optional[Union[str, os.PathLike]] = None) -> str:
    """Where to read an adapter's backbone from: ``backbone`` when given, else the recorded path when it exists
    here, else the recorded id."""
    if backbone is not None:
        return str(backbone)
    recorded = record["backbone"]
    if recorded.get("path") and Path(recorded["path"]).expanduser().exists():
        return str(recorded["path"])
    if recorded.get("id"):
        return str(recorded["id"])
    raise FileNotFoundError(f"the adapter's backbone {recorded['path']} does not exist here and no backbone id is "
                            f"recorded: pass backbone=<path>")


def check_backbone_hash(record: Mapping[str, Any], tensors: Mapping[str, torch.Tensor], source: str,
                        folder: Union[str, os.PathLike]) -> None:
    """Raise a one-line ValueError naming the backbone ``source`` and both hashes unless ``tensors`` (the backbone
    as the rebuilt model holds it) hash to the adapter's recorded ``sha256``."""
    expected, actual = record["backbone"]["sha256"], tensors_sha256(tensors)
    if actual != expected:
        trained_on = record["backbone"].get("id") or record["backbone"].get("path")
        raise ValueError(f"backbone {source} does not match the halting adapter {folder}: its weights hash to "
                         f"{actual}, the adapter was trained on {trained_on} with weights hashing to {expected}")
