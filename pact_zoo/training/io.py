"""Model folders that timm and transformers both load (written atomically)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..fileio import atomic_directory

__all__ = ["save_model_folder", "load_model_folder", "is_timm_folder"]

PathLike = Union[str, os.PathLike]


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
