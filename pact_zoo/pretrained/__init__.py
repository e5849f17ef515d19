"""Trained adaptive checkpoints shipped inside the package: timm pretrained tags that load offline.

Each tag ``<architecture>.<tag>`` (e.g. ``pact_resnet32.fashion_mnist``) is a folder beside this file, written by
``pact-zoo export`` in the layout the Hugging Face hub serves (``config.json``, ``model.safetensors``, the
``README.md`` model card, ``tradeoff.json``, ``sample_eval.json`` and the plots). The architecture's
``default_cfgs`` entry points timm's ``file`` at the folder's weights, so

    timm.create_model("pact_resnet32.fashion_mnist", pretrained=True)

loads the trained model with no network, and ``timm.list_pretrained("pact_*")`` lists it. The halting knobs the
model was trained with (``model_args`` of its ``config.json``) are the defaults of that call; keyword arguments still
override them. Standard library only: the model modules import it at registration.
"""
from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, Tuple

__all__ = ["FASHION_MNIST_CLASSES", "SHIPPED_TAGS", "keep_untagged_default", "shipped_cfg", "shipped_folder",
           "shipped_model_args"]

#: the shipped pretrained tags, ``<architecture>.<tag>``: one folder each beside this file
SHIPPED_TAGS: Tuple[str, ...] = (
    "pact_resnet32.fashion_mnist",
    "pg_resnet32.fashion_mnist",
    "act_resnet32.fashion_mnist",
)
#: Fashion-MNIST class names, label ids 0-9 (Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747)
FASHION_MNIST_CLASSES: Tuple[str, ...] = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                          "Sneaker", "Bag", "Ankle boot")
#: weights and config file names of a shipped folder (those of ``pact-zoo export`` / ``save_model_folder``)
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def shipped_folder(name: str) -> Path:
    """The package folder of the shipped tag ``name`` (``"<architecture>.<tag>"``); ValueError for an unknown name.

    A regular (non-zipped) install keeps package data on disk, which timm's ``file`` loading needs."""
    if name not in SHIPPED_TAGS:
        raise ValueError(f"name must be a shipped pretrained tag, one of {', '.join(SHIPPED_TAGS)}; got {name!r}")
    return Path(str(files(__name__).joinpath(name)))


def shipped_model_args(architecture: str, pretrained_cfg: Any) -> Dict[str, Any]:
    """The ``model_args`` (halting knobs) of the shipped tag that ``timm.create_model`` selected, or ``{}``.

    ``pretrained_cfg`` is what timm hands a model's entry point: the tag string of ``"<architecture>.<tag>"`` (or
    a cfg / None when no shipped tag was named). Reads JSON only; a missing ``config.json`` gives ``{}`` and the
    weights' own check (``pact_zoo.models._checkpoint``) names the missing folder."""
    name = f"{architecture}.{pretrained_cfg}" if isinstance(pretrained_cfg, str) else None
    if name not in SHIPPED_TAGS:
        return {}
    config = shipped_folder(name) / CONFIG_FILE
    if not config.is_file():
        return {}
    model_args = json.loads(config.read_text()).get("model_args", {})
    model_args.pop("num_classes", None)  # the pretrained cfg's num_classes applies
    return model_args


def keep_untagged_default(default_cfgs: Dict[str, Any]) -> Dict[str, Any]:
    """Make the untagged cfg the default of every architecture in ``default_cfgs`` (timm's
    ``generate_default_cfgs`` output) that has one, and return ``default_cfgs``.

    timm makes the first tag with weights an architecture's default, so a shipped tag would otherwise turn
    ``timm.create_model("pact_resnet32", pretrained=True)`` into the shipped model; an architecture's plain name keeps
    its plain cfg (no weights) and only ``"<architecture>.<tag>"`` loads a shipped checkpoint."""
    for default_cfg in default_cfgs.values():
        if "" in default_cfg.tags and default_cfg.tags[0] != "":
            default_cfg.tags.remove("")
            default_cfg.tags.appendleft("")
    return default_cfgs


def shipped_cfg(name: str, **kwargs: Any) -> Dict[str, Any]:
    """The timm pretrained-cfg fields of a shipped tag: ``file`` (its weights) and the model card's description,
    plus ``kwargs`` (``num_classes``, ``label_names``, mean / std: what the model was trained with)."""
    return dict(file=str(shipped_folder(name) / WEIGHTS_FILE),
                description=f"trained by pact_zoo; model card: pact_zoo/pretrained/{name}/README.md", **kwargs)
