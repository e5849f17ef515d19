"""UCR/UEA time-series classification sets that a registry package ships offline, as ``datasets.Dataset`` splits.

The data come from the ``.ts`` files inside the ``sktime`` wheel (``sktime/datasets/data/<name>/``), so no network is
needed; ``sktime`` is an optional extra (``pip install "pact-zoo[uea]"``). JapaneseVowels (Kudo, Toyama, Shimbo
1999; UEA multivariate archive, Bagnall et al. 2018): 12 LPC cepstrum coefficients per frame, 7-29 frames, 9
speakers, the archive's split of 270 train / 370 test utterances.

Every example has ``inputs_embeds`` ``[T, F]`` float32 (only its real frames: the archive pads unequal lengths with
NaN, which are cut off here), ``labels`` (class ids in the order of the archive's class names) and ``length`` (T),
the layout of :func:`pact_zoo.data.sequences.collate_sequences`. :func:`load_uea_classification` adds a validation
split held out of the archive's train split (a fraction of every class, seeded), for choices made off the test split.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from datasets import Array2D, ClassLabel, Dataset, Features, Value

__all__ = ["UEA_EXTRA", "UEA_PREFIX", "UEA_EVAL_SPLITS", "load_uea_classification", "load_uea_splits", "read_ts_file",
           "stratified_holdout", "uea_dataset_path"]

#: The optional dependency group of pyproject.toml that installs the ``.ts`` files.
UEA_EXTRA = "uea"
#: a training recipe's ``dataset: uea:<name>`` (``uea:JapaneseVowels``)
UEA_PREFIX = "uea:"
#: evaluation splits of :func:`load_uea_classification`: the archive's test split, or the held-out validation split
UEA_EVAL_SPLITS = ("test", "validation")
#: share of every class of the archive's train split held out as the validation split, unless a recipe says
DEFAULT_VALIDATION_FRACTION = 0.25


def uea_dataset_path(name: str) -> Path:
    """Folder of the ``<name>_TRAIN.ts`` / ``<name>_TEST.ts`` files shipped in the sktime wheel."""
    try:
        import sktime
    except ImportError:
        raise ImportError(f"the UEA set {name!r} is read from the sktime wheel: pip install "
                          f"\"pact-zoo[{UEA_EXTRA}]\"") from None
    folder = Path(sktime.__file__).parent / "datasets" / "data" / name
    if not (folder / f"{name}_TRAIN.ts").is_file():
        shipped = sorted(p.name for p in folder.parent.iterdir() if (p / f"{p.name}_TRAIN.ts").is_file())
        raise ValueError(f"sktime does not ship the UEA set {name!r} offline; shipped: {', '.join(shipped)}")
    return folder


def read_ts_file(path: Path) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Parse a multivariate ``.ts`` file (sktime / UEA format) without sktime.

    Returns:
        per example a ``[T, F]`` float32 array (trailing NaN frames removed), its class label (string) and the
        header's class names in order.
    """
    series, labels, class_names = [], [], []
    in_data = False
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                lowered = line.lower()
                if lowered.startswith("@classlabel"):
                    parts = line.split()
                    if len(parts) > 2 and parts[1].lower() == "true":
                        class_names = parts[2:]
                elif lowered.startswith("@data"):
                    in_data = True
                continue
            *channels, label = line.split(":")
            if not channels:
                raise ValueError(f"{path}: a data line without channels: {line[:60]!r}")
            rows = [np.array([float(v) if v not in ("?", "NaN", "nan") else np.nan for v in c.split(",")],
                             dtype=np.float32) for c in channels]
            length = max(len(r) for r in rows)
            array = np.full((len(rows), length), np.nan, dtype=np.float32)
            for i, r in enumerate(rows):
                array[i, :len(r)] = r
            array = array.T  # [T, F]
            real = ~np.isnan(array).any(axis=1)
            if not real.any():
                raise ValueError(f"{path}: an example without a complete frame")
            last = int(np.nonzero(real)[0].max()) + 1
            if not real[:last].all():
                raise ValueError(f"{path}: missing values inside a series are not supported")
            series.append(array[:last])
            labels.append(label.strip())
    if not series:
        raise ValueError(f"{path}: no examples")
    return series, labels, class_names or sorted(set(labels))


def load_uea_splits(name: str = "JapaneseVowels", standardise: bool = True,
                    folder: Optional[Path] = None) -> tuple[Dataset, Dataset, list[str]]:
    """The archive's train and test splits of a shipped UEA set, and its class names.

    Args:
        name: the set (``"JapaneseVowels"``; :func:`uea_dataset_path` lists what the wheel ships).
        standardise: z-score every channel with the mean and std of the *train* frames (both splits).
        folder: read the ``.ts`` files from here instead of the sktime wheel.
    """
    folder = uea_dataset_path(name) if folder is None else Path(folder)
    train_x, train_y, class_names = read_ts_file(folder / f"{name}_TRAIN.ts")
    test_x, test_y, _ = read_ts_file(folder / f"{name}_TEST.ts")
    index = {c: i for i, c in enumerate(class_names)}
    unknown = sorted({y for y in train_y + test_y if y not in index})
    if unknown:
        raise ValueError(f"{name}: labels {unknown} are not among the header's classes {class_names}")
    num_features = train_x[0].shape[1]
    if any(x.shape[1] != num_features for x in train_x + test_x):
        raise ValueError(f"{name}: examples with different channel counts")
    if standardise:
        frames = np.concatenate(train_x)
        mean, std = frames.mean(0), frames.std(0)
        std = np.where(std > 0, std, 1.0).astype(np.float32)
        train_x = [(x - mean) / std for x in train_x]
        test_x = [(x - mean) / std for x in test_x]
    features = Features({"inputs_embeds": Array2D(shape=(None, num_features), dtype="float32"),
                         "labels": ClassLabel(names=list(class_names)), "length": Value("int64")})

    def to_dataset(xs: list[np.ndarray], ys: list[str]) -> Dataset:
        return Dataset.from_dict({"inputs_embeds": [x.astype(np.float32) for x in xs],
                                  "labels": [index[y] for y in ys], "length": [len(x) for x in xs]},
                                 features=features)

    return to_dataset(train_x, train_y), to_dataset(test_x, test_y), list(class_names)


def stratified_holdout(dataset: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """``dataset`` split into (rest, held out): ``round(fraction * n_c)`` rows of every class c (``labels`` column)
    are held out, drawn with a ``torch.Generator`` seeded with ``seed`` (apart from any training seed, so every run
    trains on the same rows); both parts keep the original row order."""
    import torch

    if not (isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 <= fraction < 1):
        raise ValueError(f"validation_fraction must be a number in [0, 1), got {fraction!r}")
    labels = torch.as_tensor(dataset["labels"])
    generator = torch.Generator().manual_seed(seed)
    held: list[int] = []
    for label in labels.unique().tolist():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        held += members[:round(fraction * len(members))].tolist()
    held_set = set(held)
    return (dataset.select([i for i in range(len(dataset)) if i not in held_set]), dataset.select(sorted(held)))


def load_uea_classification(name: str, eval_split: Optional[str] = None,
                            validation_fraction: float = DEFAULT_VALIDATION_FRACTION, split_seed: int = 0,
                            folder: Optional[Path] = None,
                            standardise: bool = True) -> tuple[Dataset, Dataset, list[str]]:
    """Train and evaluation splits of a UEA set for training: the archive's train split less a stratified
    validation holdout (:func:`stratified_holdout` of ``validation_fraction`` with ``split_seed``; 0: none), and
    as evaluation split the archive's test split (``eval_split`` ``"test"`` or None) or the holdout
    (``"validation"``). Channels are z-scored with the whole archive train split's statistics
    (:func:`load_uea_splits`)."""
    if eval_split not in (None,) + UEA_EVAL_SPLITS:
        raise ValueError(f"eval_split must be one of {UEA_EVAL_SPLITS} for a UEA set, got {eval_split!r}")
    train, test, class_names = load_uea_splits(name, standardise=standardise, folder=folder)
    if eval_split == "validation" and not validation_fraction:
        raise ValueError("eval_split: validation needs dataset_kwargs.validation_fraction > 0 (the share of every "
                         "class of the archive's train split held out)")
    train, validation = stratified_holdout(train, validation_fraction, split_seed)
    return train, validation if eval_split == "validation" else test, class_names
