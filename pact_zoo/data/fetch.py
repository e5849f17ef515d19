"""``pact-zoo data fetch NAME... [--dest DIR]``: local copies of the data and weights the recipes and docs read.

Every entry is written in the layout the recipes use (``parquet:data/fashion_mnist``,
``pretrained_file: data/all-MiniLM-L6-v2``, ...): with ``--dest data`` in the repository root the recipes run
unchanged. Without ``--dest`` the copies go to ``$PACT_ZOO_DATA`` or ``~/.cache/pact_zoo/data``.

==================== ==================================== ==================================================
name                 written under DEST                   source (needs the network once)
==================== ==================================== ==================================================
fashion_mnist        fashion_mnist/{train,test}.parquet   hub dataset zalando-datasets/fashion_mnist
rotten_tomatoes      rotten_tomatoes/{train,validation,   hub dataset cornell-movie-review-data/rotten_tomatoes
                     test}.parquet
minilm               all-MiniLM-L6-v2/                    hub model sentence-transformers/all-MiniLM-L6-v2
efficientnet_lite0   tf_efficientnet_lite0/               timm tf_efficientnet_lite0 ImageNet weights
                     model.safetensors
mobilenetv2_100      mobilenetv2_100/model.safetensors    timm mobilenetv2_100 ImageNet weights
japanese_vowels      japanese_vowels/JapaneseVowels_      the UEA archive's .ts files in the sktime wheel
                     {TRAIN,TEST}.ts                      (``pip install "pact-zoo[uea]"``; no network)
==================== ==================================== ==================================================

Image parquet files have the columns ``image`` (``{bytes, path}`` structs of PNG bytes) and ``label``; text ones
``text`` and ``label``. Weights are timm state dicts (timm's key layout, 1000-class head included). Every file is
written atomically (a temporary sibling, then a rename), so an interrupted fetch leaves no half entry; an entry whose
files are all present is skipped (``--force`` fetches it again).
"""
from __future__ import annotations

import argparse
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..fileio import atomic_directory, atomic_path

__all__ = ["ENTRIES", "DataEntry", "FetchError", "default_dest", "fetch", "main"]

DATA_ENV = "PACT_ZOO_DATA"
DEFAULT_DEST = Path("~/.cache/pact_zoo/data")
MINILM_REPO = "sentence-transformers/all-MiniLM-L6-v2"
#: the files of the MiniLM repository a local copy needs (no ONNX / OpenVINO / TF exports)
MINILM_PATTERNS = ["*.json", "*.txt", "model.safetensors", "1_Pooling/*"]


class FetchError(ConnectionError):
    """An entry could not be fetched (offline, or the source failed): one line naming the entry and its source."""


@dataclass(frozen=True)
class DataEntry:
    """One fetchable entry: the folder it fills under DEST, the files that make it complete, where it comes from."""

    name: str
    folder: str
    files: tuple[str, ...]
    source: str
    write: Callable[["DataEntry", Path], None]


def default_dest() -> Path:
    """``$PACT_ZOO_DATA`` when set, else ``~/.cache/pact_zoo/data``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_DEST).expanduser()


# ------------------------------------------------------------------------------------------------ loaders
# Module-level so that tests (and users behind a proxy) can replace them.
def load_hub_dataset(repo_id: str):
    """``datasets.load_dataset(repo_id)``: a ``DatasetDict``."""
    from datasets import load_dataset

    return load_dataset(repo_id)


def download_hub_folder(repo_id: str, local_dir: Path, allow_patterns: Sequence[str]) -> None:
    """``huggingface_hub.snapshot_download`` of ``repo_id`` into ``local_dir``."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id, local_dir=str(local_dir), allow_patterns=list(allow_patterns))


def timm_state_dict(model_name: str) -> dict:
    """The pretrained state dict of a timm model, in timm's key layout."""
    import timm

    return timm.create_model(model_name, pretrained=True).state_dict()


# ------------------------------------------------------------------------------------------------ writers
def _parquet_splits(entry: DataEntry, folder: Path, repo_id: str, splits: Sequence[str],
                    columns: Sequence[str]) -> None:
    dataset_dict = load_hub_dataset(repo_id)
    for split in splits:
        if split not in dataset_dict:
            raise ValueError(f"{repo_id} has no {split!r} split (it has {sorted(dataset_dict)})")
        data = dataset_dict[split]
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise ValueError(f"{repo_id} split {split!r} lacks the columns {missing} (it has {data.column_names})")
        data = data.select_columns(list(columns))  # an image column is stored as {bytes, path} structs of PNG bytes
        with atomic_path(folder / f"{split}.parquet") as tmp:
            data.to_parquet(str(tmp))


def _write_fashion_mnist(entry: DataEntry, folder: Path) -> None:
    _parquet_splits(entry, folder, "zalando-datasets/fashion_mnist", ("train", "test"), ("image", "label"))


def _write_rotten_tomatoes(entry: DataEntry, folder: Path) -> None:
    _parquet_splits(entry, folder, "cornell-movie-review-data/rotten_tomatoes", ("train", "validation", "test"),
                    ("text", "label"))


def _write_minilm(entry: DataEntry, folder: Path) -> None:
    with atomic_directory(folder) as tmp:
        download_hub_folder(MINILM_REPO, tmp, MINILM_PATTERNS)
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
        missing = [name for name in entry.files if not (tmp / name).is_file()]
        if missing:
            raise ValueError(f"the download lacks {missing}")


def _timm_writer(model_name: str) -> Callable[[DataEntry, Path], None]:
    def write(entry: DataEntry, folder: Path) -> None:
        from safetensors.torch import save_file

        state = {key: value.detach().contiguous() for key, value in timm_state_dict(model_name).items()}
        with atomic_path(folder / "model.safetensors") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "source": f"timm {model_name} pretrained"})

    return write


def uea_source_folder(name: str) -> Path:
    """Folder of the ``.ts`` files of the UEA set ``name`` (the sktime wheel's copy; see :mod:`pact_zoo.data.uea`)."""
    from .uea import uea_dataset_path

    return uea_dataset_path(name)


def _uea_writer(name: str) -> Callable[[DataEntry, Path], None]:
    def write(entry: DataEntry, folder: Path) -> None:
        source = uea_source_folder(name)
        folder.mkdir(parents=True, exist_ok=True)
        for file_name in entry.files:
            with atomic_path(folder / file_name) as tmp:
                shutil.copyfile(source / file_name, tmp)

    return write


ENTRIES: dict[str, DataEntry] = {entry.name: entry for entry in (
    DataEntry("fashion_mnist", "fashion_mnist", ("train.parquet", "test.parquet"),
              "hub dataset zalando-datasets/fashion_mnist", _write_fashion_mnist),
    DataEntry("rotten_tomatoes", "rotten_tomatoes", ("train.parquet", "validation.parquet", "test.parquet"),
              "hub dataset cornell-movie-review-data/rotten_tomatoes", _write_rotten_tomatoes),
    DataEntry("minilm", "all-MiniLM-L6-v2", ("config.json", "model.safetensors", "modules.json",
                                             "1_Pooling/config.json", "tokenizer_config.json"),
              f"hub model {MINILM_REPO}", _write_minilm),
    DataEntry("efficientnet_lite0", "tf_efficientnet_lite0", ("model.safetensors",),
              "timm.create_model('tf_efficientnet_lite0', pretrained=True)", _timm_writer("tf_efficientnet_lite0")),
    DataEntry("mobilenetv2_100", "mobilenetv2_100", ("model.safetensors",),
              "timm.create_model('mobilenetv2_100', pretrained=True)", _timm_writer("mobilenetv2_100")),
    DataEntry("japanese_vowels", "japanese_vowels", ("JapaneseVowels_TRAIN.ts", "JapaneseVowels_TEST.ts"),
              "the UEA archive's .ts files in the sktime wheel (pip install \"pact-zoo[uea]\")",
              _uea_writer("JapaneseVowels")),
)}


def is_complete(entry: DataEntry, dest: Path) -> bool:
    """Whether every file of ``entry`` is present under ``dest``."""
    return all((Path(dest) / entry.folder / name).is_file() for name in entry.files)


def fetch(names: Sequence[str], dest: Optional[os.PathLike] = None, force: bool = False,
          log: Callable[[str], None] = print) -> list[Path]:
    """Write the entries ``names`` under ``dest`` (default :func:`default_dest`); returns their folders.

    Complete entries are skipped unless ``force``. A failed entry raises :class:`FetchError` naming it and its source;
    entries fetched before it stay.
    """
    unknown = [name for name in names if name not in ENTRIES and name != "all"]
    if unknown:
        raise ValueError(f"unknown data entry {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(ENTRIES)} or 'all'")
    if not names:
        raise ValueError(f"no data entry given; choose from {', '.join(ENTRIES)} or 'all'")
    chosen = list(ENTRIES) if "all" in names else list(dict.fromkeys(names))
    dest = Path(dest).expanduser() if dest is not None else default_dest()
    folders = []
    for name in chosen:
        entry = ENTRIES[name]
        folder = dest / entry.folder
        folders.append(folder)
        if is_complete(entry, dest) and not force:
            log(f"{name}: {folder} is complete, skipped (--force fetches it again)")
            continue
        log(f"{name}: fetching from {entry.source} ...")
        try:
            entry.write(entry, folder)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # network, hub, cache and format errors of datasets / huggingface_hub / timm
            detail = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise FetchError(f"data entry {name!r}: cannot fetch it from {entry.source} ({type(exc).__name__}: "
                             f"{detail}); offline? Fetch it once on a machine with a network and copy "
                             f"{folder} over") from exc
        log(f"{name}: wrote {folder} ({', '.join(entry.files)})")
    return folders


def build_parser() -> argparse.ArgumentParser:
    from ..cli import ArgumentParser

    parser = ArgumentParser(prog="pact-zoo data", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="action", required=True, metavar="{fetch,list}",
                                     help="fetch: download entries; list: show them")
    fetch_parser = commands.add_parser("fetch", help="download entries into DEST (skips complete ones)")
    fetch_parser.add_argument("names", nargs="+", metavar="NAME", help=f"{', '.join(ENTRIES)} or all")
    fetch_parser.add_argument("--dest", default=None,
                              help=f"folder to write into (default ${DATA_ENV} or {DEFAULT_DEST}); "
                                   f"'--dest data' in the repository root is where the recipes look")
    fetch_parser.add_argument("--force", action="store_true", help="fetch complete entries again")
    list_parser = commands.add_parser("list", help="the entries, where they go and whether DEST holds them")
    list_parser.add_argument("--dest", default=None, help=f"folder to look in (default ${DATA_ENV} or {DEFAULT_DEST})")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "list":
        dest = Path(args.dest).expanduser() if args.dest is not None else default_dest()
        for entry in ENTRIES.values():
            state = "complete" if is_complete(entry, dest) else "missing"
            print(f"{entry.name:<20} {dest / entry.folder} [{state}]  from {entry.source}")
        return 0
    fetch(args.names, args.dest, force=args.force)
    return 0


if __name__ == "__main__":
    import sys

    from ..cli import run_command

    sys.exit(run_command(main))
