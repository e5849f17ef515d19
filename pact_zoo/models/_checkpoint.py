"""Pretrained loading for the timm families: the local checkpoint a builder is about to load is checked first.

timm loads a ``pretrained_cfg_overlay=dict(file=...)`` file or a ``local-dir:`` folder's checkpoint with
``safetensors.torch.load_file`` / ``torch.load``: a truncated or corrupt file raises safetensors' bare header error
(no file name) and a missing one an empty ``FileNotFoundError``. :func:`build_model` (``build_model_with_cfg`` with
that check in front) raises one line that names the file instead. A ``pretrained_filter_fn`` cannot do it: timm calls
it after the file is read.
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional, Union

from timm.models import build_model_with_cfg, resolve_pretrained_cfg
from torch import nn

__all__ = ["build_model", "check_checkpoint_file", "check_safetensors", "local_checkpoint"]

PathLike = Union[str, os.PathLike]

#: The files timm looks for in a ``local-dir:`` folder, in its order (``timm.models._hub``), then by extension.
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin", "pytorch_model.pth", "model.pth",
                 "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
                 "open_clip_pytorch_model.pth")
_FOLDER_EXTENSIONS = (".safetensors", ".pth", ".pth.tar", ".bin")
#: First byte of a pickle of protocol >= 2 (``torch.save`` with ``_use_new_zipfile_serialization=False``).
_PICKLE_PROTO = b"\x80"


def local_checkpoint(variant: str, pretrained_cfg: Any = None, pretrained_cfg_overlay: Optional[dict] = None
                     ) -> Optional[Path]:
    """The local file ``build_model_with_cfg(variant, pretrained=True, ...)`` would read: the ``file`` of the
    resolved pretrained cfg, or the checkpoint timm picks in a ``local-dir:`` folder; None for hub / url weights, a
    ``state_dict`` in the cfg, or a folder without a checkpoint (timm's own error names the folder)."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=pretrained_cfg_overlay).to_dict()
    location = cfg.get("file")
    if not location:
        return None
    if cfg.get("source") != "local-dir":
        return None if cfg.get("state_dict") is not None or cfg.get("source") == "hf-hub" else Path(location)
    folder = Path(location)
    for name in _FOLDER_FILES:
        if (folder / name).is_file():
            return folder / name
    for ext in _FOLDER_EXTENSIONS:
        found = sorted(folder.glob(f"*{ext}"))
        if found:
            return found[0]
    return None


def check_safetensors(path: PathLike, what: str = "") -> None:
    """Raise ValueError naming ``path`` (after the prefix ``what``) when its safetensors header cannot be read
    (truncated or corrupt)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{what}{path} is truncated or corrupt, or not a safetensors file "
                         f"({' '.join(str(exc).split())}): re-export or re-download it") from None


def check_checkpoint_file(path: PathLike, what: str = "pretrained checkpoint") -> None:
    """Raise a one-line error naming ``path`` unless it is a readable checkpoint: ``FileNotFoundError`` when it is
    missing, ``ValueError`` when a ``.safetensors`` header cannot be read (truncated or corrupt) or another file is
    neither a ``torch.save`` zip archive (complete: its central directory is at the end) nor a pickle."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} (pretrained_cfg_overlay=dict(file=...) or a local-dir: "
                                f"folder must hold an existing .safetensors / .pth file)")
    if path.name.endswith(".safetensors"):
        check_safetensors(path, f"{what} ")
        return
    with open(path, "rb") as handle:
        start = handle.read(1)
    if not (zipfile.is_zipfile(path) or start == _PICKLE_PROTO):
        raise ValueError(f"{what} {path} is truncated or corrupt: neither a safetensors file (name it *.safetensors) "
                         f"nor a complete torch.save archive; re-export or re-download it")


def build_model(model_cls: Callable[..., nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm's ``build_model_with_cfg`` (same arguments) that first checks the local checkpoint ``pretrained=True``
    loads (:func:`local_checkpoint`, :func:`check_checkpoint_file`)."""
    if pretrained:
        path = local_checkpoint(variant, kwargs.get("pretrained_cfg"), kwargs.get("pretrained_cfg_overlay"))
        if path is not None:
            check_checkpoint_file(path)
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
