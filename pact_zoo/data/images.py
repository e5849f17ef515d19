"""Image classification data through the ``datasets`` library.

Sources: the bundled offline ``digits`` set (scikit-learn's 8x8 handwritten digits upsampled to 32x32), hub
datasets by name (``uoft-cs/cifar10``, ``uoft-cs/cifar100``, ``ILSVRC/imagenet-1k`` or any dataset with an
image and a label column), a local ``imagefolder`` directory, or parquet files.
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "ImageSplits", "DIGITS_SIZE", "load_digits_dataset", "load_image_dataset", "image_transforms",
    "IMAGE_COLUMNS", "LABEL_COLUMNS", "AUGMENTATIONS", "check_eval_labels", "IMAGEFOLDER_LAYOUT",
]

DIGITS_SIZE = 32  # 8x8 digits upsampled to the CIFAR input size
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16  # scikit-learn digits pixel range 0..16
CIFAR_PADDING = 4  # SACT / He et al.: pad 4, random 32x32 crop
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")
#: train-time augmentation recipes
AUGMENTATIONS = ("cifar", "crop", "timm", "none")


@dataclass
class ImageSplits:
    """Train and eval splits with the column names and class names they use."""

    train: Any  # datasets.Dataset
    eval: Any  # datasets.Dataset
    image_column: str
    label_column: str
    class_names: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_digits_dataset():
    """Bundled offline ``digits`` (1,797 images, 10 classes) as a ``DatasetDict`` with train/test splits.

    Images are the 8x8 scikit-learn digits scaled to 0..255, bilinearly upsampled to 32x32, as RGB.
    The split is fixed (stratified, 20 % test, seed 0).
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.clip(digits.images / DIGITS_MAX_VALUE * 255.0, 0, 255).astype(np.uint8)
    images = [Image.fromarray(p, mode="L").resize((DIGITS_SIZE, DIGITS_SIZE), Image.BILINEAR).convert("RGB")
              for p in pixels]
    indices = np.arange(len(images))
    train_idx, test_idx = train_test_split(indices, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                           stratify=digits.target)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def split(idx: np.ndarray):
        return Dataset.from_dict({"image": [images[i] for i in idx], "label": digits.target[idx].tolist()},
                                 features=features)

    return DatasetDict(train=split(np.sort(train_idx)), test=split(np.sort(test_idx)))


def _pick_column(columns: Sequence[str], requested: Optional[str], candidates: Sequence[str], what: str) -> str:
    if requested is not None:
        if requested not in columns:
            raise ValueError(f"{what}_column {requested!r} is not a column of the dataset; columns: {list(columns)}")
        return requested
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"no {what} column found (looked for {list(candidates)}); columns: {list(columns)}; "
                     f"set {what}_column")


def _split_names(dataset_dict, train_split: str, eval_split: Optional[str]) -> tuple[str, str]:
    names = list(dataset_dict.keys())
    if train_split not in names:
        raise ValueError(f"train_split {train_split!r} not found; splits: {names}")
    if eval_split is None:
        for candidate in ("test", "validation", "valid", "val"):
            if candidate in names:
                return train_split, candidate
        raise ValueError(f"no eval split found (looked for test/validation); splits: {names}; set eval_split")
    if eval_split not in names:
        raise ValueError(f"eval_split {eval_split!r} not found; splits: {names}")
    return train_split, eval_split


def check_eval_labels(train, evaluation, column: str, class_names: Sequence[str], dataset: str) -> None:
    """Raise one line naming the labels of the eval split that the train split never has (a class the classifier
    would get without one training example: a typo'd or missing class folder, or mismatched parquet files)."""
    unseen = sorted(set(evaluation.unique(column)) - set(train.unique(column)))
    if unseen:
        names = [class_names[i] if 0 <= i < len(class_names) else str(i) for i in unseen]
        raise ValueError(f"dataset {dataset!r}: label(s) {names} occur in the eval split but never in the train "
                         f"split; every eval class needs training examples (check the class folders or files)")


#: the folder layout ``imagefolder:<dir>`` reads
IMAGEFOLDER_LAYOUT = "<dir>/train/<class>/*.png and <dir>/test/<class>/*.png (or validation/ instead of test/)"


def _local_source(dataset: str, data_dir: Optional[str], data_files: Optional[Dict[str, str]]):
    from datasets import load_dataset

    kind, _, location = dataset.partition(":")
    if kind == "imagefolder":
        directory = location or data_dir
        if not directory or not os.path.isdir(directory):
            raise FileNotFoundError(f"imagefolder directory not found: {directory!r} (dataset='imagefolder:<dir>')")
        entries = [e for e in os.listdir(directory) if not e.startswith(".")]
        split_folders = {"train", "test", "validation", "valid", "val"} & set(entries)
        if entries and not split_folders and all(os.path.isdir(os.path.join(directory, e)) for e in entries):
            raise ValueError(f"imagefolder {directory!r} holds class folders ({', '.join(sorted(entries)[:5])}"
                             f"{', ...' if len(entries) > 5 else ''}) but no train/ and test/ split folders (the "
                             f"torchvision ImageFolder layout); pact_zoo reads {IMAGEFOLDER_LAYOUT}: move the "
                             f"images into those folders, so that the evaluation images are chosen by you")
        return load_dataset("imagefolder", data_dir=directory)
    # parquet: 'parquet:<dir or file>' with train/test files found by name, or explicit data_files
    files = dict(data_files or {})
    if location and not files:
        if os.path.isdir(location):
            for split in ("train", "test", "validation"):
                found = sorted(glob.glob(os.path.join(location, f"{split}*.parquet")))
                if found:
                    files[split] = found
        elif os.path.isfile(location):
            files["train"] = location
    if not files:
        raise FileNotFoundError(f"no parquet files found for {dataset!r}: give 'parquet:<dir>' holding "
                                f"train*.parquet / test*.parquet, or data_files={{'train': ..., 'test': ...}}")
    for split, paths in files.items():
        for path in [paths] if isinstance(paths, str) else paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"parquet file for split {split!r} not found: {path}")
    try:
        return load_dataset("parquet", data_files=files)
    except Exception as exc:  # pyarrow / datasets errors of an unreadable file
        raise ValueError(f"cannot read the parquet files {files} ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from exc


def _load_hub_dataset(dataset: str):
    """A hub dataset by id; a failure (offline, no cache, typo) is one error that names the local alternatives."""
    from datasets import load_dataset

    try:
        return load_dataset(dataset)
    except Exception as exc:  # network, cache and not-found errors of datasets / huggingface_hub
        raise ValueError(f"dataset {dataset!r}: cannot load it from the Hugging Face hub ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]}); offline or misspelt? A local copy loads with "
                         f"dataset='imagefolder:<dir>' or 'parquet:<dir or file>'") from exc


def _decode_images(split, column: str):
    """``split`` with ``column`` decoded to PIL images: parquet written by pandas / pyarrow keeps datasets' image
    structs ``{bytes, path}`` but not the feature metadata that marks them as images."""
    from datasets import Image as ImageFeature

    feature = split.features[column]
    if isinstance(feature, ImageFeature):
        return split
    if isinstance(feature, dict) and {"bytes", "path"} <= set(feature):
        return split.cast_column(column, ImageFeature())
    raise ValueError(f"image_column {column!r} holds {feature}, not images: expected an image feature or "
                     f"{{bytes, path}} structs (as written by datasets or pandas)")


def _check_labels(split, column: str) -> None:
    from datasets import ClassLabel, Value

    feature = split.features[column]
    if isinstance(feature, ClassLabel):
        return
    if not (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
        raise ValueError(f"label_column {column!r} must hold integer class ids 0..C-1 (or be a ClassLabel), "
                         f"got {feature}")
    if len(split) and min(split[column]) < 0:
        raise ValueError(f"label_column {column!r} must hold class ids >= 0, got {min(split[column])}")


def load_image_dataset(
        dataset: str,
        data_dir: Optional[str] = None,
        data_files: Optional[Dict[str, str]] = None,
        train_split: str = "train",
        eval_split: Optional[str] = None,
        image_column: Optional[str] = None,
        label_column: Optional[str] = None,
) -> ImageSplits:
    """Load an image-classification dataset as train/eval ``datasets.Dataset`` splits.

    Args:
        dataset: ``"digits"``, ``"imagefolder:<dir>"`` (:data:`IMAGEFOLDER_LAYOUT`; class folders directly in
            ``<dir>`` raise, no random eval split is made), ``"parquet:<dir or file>"`` or a hub id (``"org/name"``).
        data_dir, data_files: alternatives to the location after ``:``.
        train_split, eval_split: split names (eval defaults to test, then validation).
        image_column, label_column: column names (auto-detected when ``None``).
    """
    from datasets import ClassLabel

    if dataset == "digits":
        dataset_dict = load_digits_dataset()
    elif dataset.split(":", 1)[0] in ("imagefolder", "parquet"):
        dataset_dict = _local_source(dataset, data_dir, data_files)
    elif "/" in dataset:
        dataset_dict = _load_hub_dataset(dataset)  # needs the network or a warm cache
    else:
        raise ValueError(f"unknown dataset {dataset!r}; valid choices: 'digits' (bundled, offline), "
                         f"'imagefolder:<dir>', 'parquet:<dir or file>', or a hub id such as 'uoft-cs/cifar10'")
    train_name, eval_name = _split_names(dataset_dict, train_split, eval_split)
    train, evaluation = dataset_dict[train_name], dataset_dict[eval_name]
    image_col = _pick_column(train.column_names, image_column, IMAGE_COLUMNS, "image")
    label_col = _pick_column(train.column_names, label_column, LABEL_COLUMNS, "label")
    for split in (train, evaluation):
        _check_labels(split, label_col)
    train, evaluation = _decode_images(train, image_col), _decode_images(evaluation, image_col)
    feature = train.features[label_col]
    if isinstance(feature, ClassLabel):
        class_names = list(feature.names)
    else:
        num_classes = int(max(max(train[label_col]), max(evaluation[label_col]))) + 1
        class_names = [str(i) for i in range(num_classes)]
    check_eval_labels(train, evaluation, label_col, class_names, dataset)
    return ImageSplits(train=train, eval=evaluation, image_column=image_col, label_column=label_col,
                       class_names=class_names, name=dataset)


def image_transforms(data_config: Dict[str, Any], augment: str, is_training: bool) -> Callable:
    """A PIL -> ``[3, H, W]`` float tensor transform, normalised with the model's ``data_config``.

    ``augment`` (training only): ``"cifar"`` pad-4 random crop + horizontal flip, ``"crop"`` pad-4 random
    crop, ``"timm"`` timm's ImageNet training transform, ``"none"``.
    """
    from timm.data import create_transform
    from torchvision import transforms as T

    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
    if augment == "timm" or (not is_training and data_config["input_size"][-1] > DIGITS_SIZE):
        return create_transform(**data_config, is_training=is_training and augment == "timm")
    size = tuple(data_config["input_size"][-2:])
    steps = [T.Resize(size)]
    if is_training and augment in ("cifar", "crop"):
        steps.append(T.RandomCrop(size, padding=CIFAR_PADDING))
    if is_training and augment == "cifar":
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(data_config["mean"], data_config["std"])]
    return T.Compose(steps)


def with_image_transform(split, image_column: str, label_column: str, transform: Callable,
                         in_chans: int = 3):
    """``split.with_transform`` producing ``{"pixel_values": [3, H, W], "labels": long}`` rows."""
    mode = "RGB" if in_chans == 3 else "L"

    def apply(batch: Dict[str, list]) -> Dict[str, Any]:
        pixels = [transform(image.convert(mode)) for image in batch[image_column]]
        return {"pixel_values": pixels, "labels": [int(label) for label in batch[label_column]]}

    return split.with_transform(apply)


def collate_images(rows: list[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
    return {"pixel_values": torch.stack([r["pixel_values"] for r in rows]),
            "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long)}
