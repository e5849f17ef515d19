"""Halting adapters: the weights a frozen-backbone conversion adds, over a backbone fetched by its id.

A frozen-backbone conversion (exits and a classifier on the frozen backbone, DeeBERT's second stage, Xin et al.
2020; PACT halting heads on top, Figurnov, Sobolev, Vetrov 2018) leaves every backbone weight as published, so its
checkpoint needs only the new weights, the backbone's id or path and the hash of the backbone's weights
(:mod:`pact_zoo.hf.halting_adapter` describes the folder). Hugging Face models write one with
``model.save_pretrained(folder, adapter_only=True)`` and load it with ``from_pretrained(folder)``; this module does
the same for the timm families (:func:`save_timm_adapter`, :func:`load_timm_adapter`), and :func:`save_adapter` /
:func:`load_adapter` take either kind.

The adapters pact_zoo ships lie in this package's folders (:func:`shipped_adapter`):
``pact_zoo.load_adapter(pact_zoo.shipped_adapter("minilm_rotten_tomatoes"))``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from ..hf.halting_adapter import (
    backbone_source, check_backbone_hash, is_adapter_folder, read_adapter, tensors_sha256, write_adapter,
)
from ..models._helpers import newly_initialized_state_keys

__all__ = ["load_adapter", "load_timm_adapter", "save_adapter", "save_timm_adapter", "shipped_adapter",
           "shipped_adapters"]

PathLike = Union[str, os.PathLike]
#: the weights file timm reads in a backbone folder (``pact-zoo data fetch`` writes it)
BACKBONE_WEIGHTS = "model.safetensors"


def shipped_adapters() -> list[str]:
    """Names of the adapters shipped with pact_zoo (folders of this package)."""
    here = Path(__file__).parent
    return sorted(item.name for item in here.iterdir() if is_adapter_folder(item))


def shipped_adapter(name: str) -> Path:
    """The folder of the shipped adapter ``name`` (see :func:`shipped_adapters`)."""
    folder = Path(__file__).parent / name
    if not is_adapter_folder(folder):
        raise ValueError(f"unknown shipped adapter {name!r}; choose from {shipped_adapters()}")
    return folder


def _backbone_file(source: PathLike) -> Path:
    """A timm backbone checkpoint: the file itself, or ``model.safetensors`` in a folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / BACKBONE_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights not found: {path} (a .safetensors file, or a folder with "
                                f"{BACKBONE_WEIGHTS})")
    return path


def _timm_reference(model_name: str, model_args: dict, backbone: Optional[Path]) -> nn.Module:
    """The adaptive architecture over the backbone's weights (fresh heads, exits and classifier)."""
    import timm

    overlay = dict(file=str(backbone)) if backbone is not None else None
    try:
        return timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **model_args).eval()
    except KeyError as exc:  # add_halting_heads_filter: the checkpoint's keys are another architecture's
        raise ValueError(f"backbone {backbone or model_name} does not fit {model_name}: "
                         f"{exc.args[0] if exc.args else exc}") from None


def save_timm_adapter(model: nn.Module, folder: PathLike, backbone: PathLike,
                      backbone_id: Optional[str] = None) -> Path:
    """Write a halting adapter of a timm adaptive model converted with its backbone frozen: ``config.json`` (timm's,
    as in a model folder), ``halting_adapter.safetensors`` (heads, exits, classifier) and ``halting_adapter.json``.

    Args:
        model: a pact_zoo timm model (``pact_efficientnet_lite0``, ...) whose backbone weights are those of
            ``backbone``.
        backbone: the backbone checkpoint (``.safetensors`` file, or a folder with ``model.safetensors``) the model
            was built over (``pretrained_cfg_overlay=dict(file=...)``).
        backbone_id: the backbone's timm name and pretrained tag (``tf_efficientnet_lite0.in1k``); default: the
            model's own pretrained tag (``<architecture>.<tag>`` then loads it from the hub).

    Raises ValueError (naming the first one) when a backbone weight of ``model`` differs from ``backbone``'s: a
    trained backbone needs the full checkpoint.
    """
    from timm.models._hub import get_model_args

    from ..training.io import write_timm_config

    path = _backbone_file(backbone)
    model_name = model.pretrained_cfg.get("architecture") or type(model).__name__
    reference = _timm_reference(model_name, get_model_args(model), path)
    new = newly_initialized_state_keys(reference) or set()
    state, base = model.state_dict(), reference.state_dict()
    if set(state) != set(base):
        raise ValueError(f"save_timm_adapter: the model's weights differ in name from {model_name} over {path}: "
                         f"{sorted(set(state) ^ set(base))[:5]}")
    changed = [key for key in sorted(base) if key not in new and not torch.equal(state[key], base[key])]
    if changed:
        raise ValueError(f"save_timm_adapter: backbone weight {changed[0]} (and {len(changed) - 1} more) differs from "
                         f"{path}: not a frozen-backbone conversion; save the full model folder")
    folder = Path(folder)
    write_timm_config(model, folder)
    tag = model.pretrained_cfg.get("tag")
    write_adapter(folder, {key: state[key] for key in sorted(new)},
                  backbone_id or (f"{model_name}.{tag}" if tag else model_name), str(path),
                  tensors_sha256({key: base[key] for key in base if key not in new}), architecture=model_name)
    return folder


def load_timm_adapter(folder: PathLike, backbone: Optional[PathLike] = None) -> nn.Module:
    """The timm adaptive model of an adapter folder, in eval mode: built over ``backbone`` (a ``.safetensors`` file
    or a folder with ``model.safetensors``), else the recorded path where it exists, else timm's hub weights of the
    architecture; the backbone's tensors must hash to the recorded hash (else a one-line ValueError naming the
    backbone and both hashes)."""
    from timm.models._hub import _parse_model_cfg, load_cfg_from_json

    record, weights = read_adapter(folder)
    config = load_cfg_from_json(Path(folder) / "config.json")
    pretrained_cfg, model_name, model_args = _parse_model_cfg(config, {})
    model_args = dict(model_args, num_classes=config["num_classes"])  # the backbone's cfg has its own classes
    source = backbone_source(record, backbone)
    local = Path(source).expanduser().exists()
    model = _timm_reference(model_name, model_args, _backbone_file(source) if local else None)
    state = model.state_dict()
    check_backbone_hash(record, {key: value for key, value in state.items() if key not in weights}, source, folder)
    misplaced = sorted(key for key in weights if key not in state or state[key].shape != weights[key].shape)
    if misplaced:
        raise ValueError(f"halting adapter {folder} does not fit {model_name}: weights without a place {misplaced[:5]}")
    model.load_state_dict(weights, strict=False)
    model.pretrained_cfg = dict(model.pretrained_cfg, **pretrained_cfg)
    return model.eval()


def save_adapter(model: nn.Module, folder: PathLike, backbone: Optional[PathLike] = None,
                 backbone_id: Optional[str] = None) -> Path:
    """Write ``model``'s halting adapter into ``folder``: Hugging Face models through
    ``save_pretrained(folder, adapter_only=True)``, timm models through :func:`save_timm_adapter`."""
    if hasattr(model, "save_adapter"):
        model.save_adapter(folder, backbone_id=backbone_id, backbone=backbone)
        return Path(folder)
    if backbone is None:
        raise ValueError("save_adapter: a timm model needs backbone= (the checkpoint it was built over)")
    return save_timm_adapter(model, folder, backbone, backbone_id)


def load_adapter(folder: PathLike, backbone: Optional[PathLike] = None) -> nn.Module:
    """The adaptive model of a halting adapter folder (timm or Hugging Face), in eval mode; ``backbone`` replaces
    the recorded backbone (a local folder or file)."""
    if not is_adapter_folder(folder):
        raise FileNotFoundError(f"not a halting adapter folder (no halting_adapter.json): {folder}")
    config = json.loads((Path(folder) / "config.json").read_text())
    if "pretrained_cfg" in config:
        return load_timm_adapter(folder, backbone)
    from ..training.io import hf_auto_class

    return hf_auto_class(folder).from_pretrained(folder, backbone=backbone)
