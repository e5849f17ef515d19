"""Atomic file and folder writes, and model folders that timm and transformers both load."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

import torch
from torch import nn

__all__ = ["atomic_write_text", "atomic_write_json", "atomic_directory", "save_model_folder", "load_model_folder",
           "is_timm_folder"]

PathLike = Union[str, os.PathLike]


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_directory(path: PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` as a whole, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_timm_folder(path: PathLike) -> bool:
    config = Path(path) / "config.json"
    return config.is_file() and "pretrained_cfg" in json.loads(config.read_text())


def save_model_folder(model: nn.Module, path: PathLike) -> None:
    """Write ``model.safetensors`` + ``config.json`` atomically.

    timm models are saved with ``timm.models.save_for_hf``; ``model_args.num_classes`` is dropped so that
    transformers' ``TimmWrapper`` also loads the folder (ecosystem.md §1.6; timm reads the top-level
    ``num_classes``). Hugging Face models use ``save_pretrained``.
    """
    with atomic_directory(path) as tmp:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(tmp)
            return
        from timm.models import save_for_hf

        save_for_hf(model, tmp, safe_serialization=True)
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text())
        config.get("model_args", {}).pop("num_classes", None)
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def load_model_folder(path: PathLike, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load a folder written by :func:`save_model_folder` (timm ``local-dir:`` or transformers ``from_pretrained``)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no model folder at {path} (config.json missing)")
    if is_timm_folder(path):
        import timm

        import pact_zoo  # noqa: F401  (registers the timm models)

        return timm.create_model(f"local-dir:{path}", pretrained=True).to(device)
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(path)
    architectures = config.architectures or []
    auto = AutoModelForTokenClassification if any("TokenClassification" in a for a in architectures) \
        else AutoModelForSequenceClassification
    return auto.from_pretrained(path).to(device)
