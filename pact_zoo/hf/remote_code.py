# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""Remote code of the Hugging Face models: the files a checkpoint ships so that it loads with
``trust_remote_code=True`` where pact_zoo is not installed, and their atomic copy.

Shipped as remote code itself (flat, no imports from pact_zoo).
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from transformers.dynamic_module_utils import get_relative_import_files, get_relative_imports

__all__ = ["atomic_copy", "atomic_write", "remote_code_files", "write_remote_code"]


def atomic_write(destination: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` into a temporary file in ``destination``'s folder, then rename it over ``destination``
    (the usual 0644 under umask 022, not mkstemp's 0600)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_copy(source: Path, destination: Path) -> None:
    """Copy ``source`` to ``destination`` through a temporary file in the same folder, then rename."""
    atomic_write(destination, lambda temporary: shutil.copyfile(source, temporary))


def _module_file(obj: Any) -> Path:
    return Path(sys.modules[obj.__module__].__file__)


def remote_code_files(anchors: Iterable[Any], core: Iterable[Any]) -> list[Path]:
    """Source files a checkpoint needs to load with ``trust_remote_code=True`` without pact_zoo.

    Args:
        anchors: objects (classes, functions) whose files are the model's own: its configuration and modeling files.
            Their relative imports that lie beside them (shared helpers such as ``losses.py``) join, recursively.
        core: objects of the halting core the anchors import (with their fallback ``from .x import``); their files
            and, recursively, the core files those import (transformers' ``get_relative_import_files`` rule, so that
            what is saved is what transformers copies when loading).

    Works in the library and in a model that was itself loaded as remote code (every file then lies in one folder).
    Raises RuntimeError when a shipped file's relative import has no file, or two files share a name.
    """
    files: dict[str, Path] = {}

    def add(path: Path) -> bool:
        previous = files.setdefault(path.name, path)
        if previous.resolve() != path.resolve():
            raise RuntimeError(f"remote code would hold two files named {path.name}: {previous} and {path}")
        return previous is path

    for obj in core:
        core_file = _module_file(obj)
        add(core_file)
        for dependency in get_relative_import_files(str(core_file)):
            add(Path(dependency))
    pending = [_module_file(obj) for obj in anchors]
    for path in pending:
        add(path)
    while pending:  # helpers beside the model's files
        path = pending.pop()
        for name in get_relative_imports(str(path)):
            candidate = path.parent / f"{name}.py"
            if f"{name}.py" not in files and candidate.is_file():
                add(candidate)
                pending.append(candidate)
    # transformers resolves every relative import of a shipped file inside the checkpoint folder
    missing = {f"{name}.py" for path in files.values() for name in get_relative_imports(str(path))} - files.keys()
    if missing:
        raise RuntimeError(f"remote code misses {sorted(missing)}")
    return [files[name] for name in sorted(files)]


def write_remote_code(save_directory: os.PathLike, files: Iterable[Path]) -> None:
    """Copy ``files`` into ``save_directory`` (atomically, one by one)."""
    for source in files:
        atomic_copy(source, Path(save_directory) / source.name)
