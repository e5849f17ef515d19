"""Model folders that timm and transformers both load (written atomically)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Union

import torch
from torch import nn

from ..data.tokens import TOKEN_REMAP_ATTR, load_token_remap, save_token_remap
from ..fileio import atomic_directory
from ..models._checkpoint import check_safetensors
from ..models.adaptive import MADE_ADAPTIVE_ATTR

__all__ = ["save_model_folder", "load_model_folder", "is_timm_folder", "check_model_folder", "folder_model_name",
           "check_safetensors", "hf_auto_class", "write_timm_config"]

WEIGHTS_FILE = "model.safetensors"

PathLike = Union[str, os.PathLike]


def _folder_config(path: PathLike) -> dict:
    config = Path(path) / "config.json"
    try:
        return json.loads(config.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config} is not valid JSON ({exc}): re-export the model folder") from None


def is_timm_folder(path: PathLike) -> bool:
    return (Path(path) / "config.json").is_file() and "pretrained_cfg" in _folder_config(path)


def check_model_folder(path: PathLike, what: str = "model folder") -> Path:
    """Raise a one-line error unless ``path`` is a model folder with a readable ``config.json`` and
    ``model.safetensors`` (header checked, so a truncated or corrupt file is named before loading)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} (a folder with config.json and model.safetensors, "
                                f"e.g. <output_dir>/model of a training run)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a model folder: config.json is missing (expected <output_dir>/model "
                                f"of a training run, or an exported folder)")
    _folder_config(path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{path} is not a model folder: {WEIGHTS_FILE} is missing")
    check_safetensors(weights)
    return path


def folder_model_name(path: PathLike) -> str:
    """The model a folder holds: timm's ``architecture`` or the transformers ``model_type``."""
    config = _folder_config(path)
    name = config.get("architecture") or config.get("model_type")
    if not name:
        raise ValueError(f"{Path(path) / 'config.json'} names no model (neither 'architecture' nor 'model_type')")
    return name


def save_model_folder(model: nn.Module, path: PathLike) -> None:
    """Write ``model.safetensors`` + ``config.json`` atomically.

    timm models are saved with ``timm.models.save_for_hf``; ``model_args.num_classes`` is dropped so that
    transformers' ``TimmWrapper`` also loads the folder (it passes ``num_classes`` itself; timm reads the
    top-level ``num_classes``); the class names in ``model.pretrained_cfg["label_names"]`` (set by the training loop
    from the dataset) are kept as ``label_names``. Hugging Face models use ``save_pretrained``; a token-sequence
    model's remap of its tokenizer's ids (``model.token_remap``, :mod:`pact_zoo.data.tokens`) is written beside
    the weights, and :func:`load_model_folder` puts it back.
    """
    with atomic_directory(path) as tmp:
        if hasattr(model, "save_pretrained"):
            model.save_pretrained(tmp)
            remap = getattr(model, TOKEN_REMAP_ATTR, None)
            if remap is not None:
                save_token_remap(remap, tmp)
            return
        from timm.models import save_for_hf

        save_for_hf(model, tmp, model_config=_timm_model_config(model), safe_serialization=True)
        _drop_model_args_classes(tmp / "config.json")


def _timm_model_config(model: nn.Module) -> dict:
    """``model_config`` of timm's exports: the class names in ``model.pretrained_cfg["label_names"]``, if any, and
    for a plain timm architecture made adaptive (``pact_zoo.make_adaptive``) the arguments that rebuild it."""
    model_config = {}
    cfg = getattr(model, "pretrained_cfg", None) or {}
    label_names = cfg.get("label_names")
    if label_names is not None and len(label_names) == getattr(model, "num_classes", None):
        model_config["label_names"] = list(label_names)  # config.json: timm's label_names, transformers' id2label
    made_adaptive = getattr(model, MADE_ADAPTIVE_ATTR, None)
    if made_adaptive is not None and cfg.get("architecture") not in _pact_zoo_models():
        halting = getattr(model, "halting_cfg", None)  # knobs as they are now (set_threshold since)
        model_config[MADE_ADAPTIVE_ATTR] = {**made_adaptive, **(halting.to_dict() if halting else {})}
    return model_config


def _drop_model_args_classes(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    config.get("model_args", {}).pop("num_classes", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def write_timm_config(model: nn.Module, path: PathLike) -> None:
    """Write the ``config.json`` :func:`save_model_folder` writes for a timm model (no weights), atomically."""
    from timm.models._hub import save_config_for_hf

    from ..fileio import atomic_path

    with atomic_path(Path(path) / "config.json") as tmp:
        save_config_for_hf(model, str(tmp), model_config=_timm_model_config(model))
        _drop_model_args_classes(tmp)


def load_model_folder(path: PathLike, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load a folder written by :func:`save_model_folder` (timm ``local-dir:`` or transformers ``from_pretrained``)."""
    path = check_model_folder(path)
    if is_timm_folder(path):
        import timm

        from .. import models  # noqa: F401  (registers the timm models)

        config = _folder_config(path)
        if MADE_ADAPTIVE_ATTR in config:  # a plain timm architecture made adaptive: rebuild it, then load
            return _load_made_adaptive(path, config).to(device)
        return timm.create_model(f"local-dir:{path}", pretrained=True).to(device)
    model = hf_auto_class(path).from_pretrained(path).to(device)
    remap = load_token_remap(path)
    if remap is not None:  # a token-sequence model: the remap of its tokenizer's ids is part of it
        setattr(model, TOKEN_REMAP_ATTR, remap)
    return model


def hf_auto_class(path: PathLike) -> type:
    """The transformers Auto class of a Hugging Face model folder: token or sequence classification, from the
    ``architectures`` of its ``config.json``."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    architectures = _folder_config(path).get("architectures") or []
    return AutoModelForTokenClassification if any("TokenClassification" in a for a in architectures) \
        else AutoModelForSequenceClassification


def _pact_zoo_models() -> set[str]:
    from ..models import list_models

    return set(list_models())


def _load_made_adaptive(path: Path, config: dict) -> nn.Module:
    """A folder of a timm model made adaptive with ``pact_zoo.make_adaptive``: the plain architecture built from
    ``config.json``, made adaptive with the recorded arguments, then the weights (all keys must match)."""
    import timm
    from safetensors.torch import load_file

    from ..models.adaptive import remake_adaptive

    args = dict(config.get("model_args", {}))
    if config.get("num_classes") is not None:
        args["num_classes"] = config["num_classes"]
    model = timm.create_model(config["architecture"], pretrained=False, **args)
    remake_adaptive(model, config[MADE_ADAPTIVE_ATTR])
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    model.pretrained_cfg = {**model.pretrained_cfg, **config.get("pretrained_cfg", {})}
    if config.get("label_names") is not None:
        model.pretrained_cfg["label_names"] = config["label_names"]
    return model.eval()
