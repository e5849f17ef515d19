"""Datasets: hub datasets through ``datasets``, local folders / parquet, and bundled or generated offline sets
(digits; Graves's parity, logic, addition and sort; MNIST-1D; UCR/UEA sets from the sktime wheel, extra ``uea``)."""
from .images import (
    AUGMENTATIONS, ImageSplits, collate_images, image_transforms, load_digits_dataset, load_image_dataset,
    with_image_transform,
)
from .mnist1d import MNIST1DConfig, mnist1d_dataset, mnist1d_splits
from .sequences import (
    SEQUENCE_CLASSIFICATION_DATASETS, addition_dataset, collate_sequences, load_sequence_splits, logic_dataset,
    parity_dataset, sort_dataset,
)
from .uea import load_uea_classification, load_uea_splits

__all__ = [
    "AUGMENTATIONS", "ImageSplits", "collate_images", "image_transforms", "load_digits_dataset",
    "load_image_dataset", "with_image_transform", "MNIST1DConfig", "mnist1d_dataset", "mnist1d_splits",
    "SEQUENCE_CLASSIFICATION_DATASETS", "addition_dataset", "collate_sequences", "load_sequence_splits",
    "logic_dataset", "parity_dataset", "sort_dataset", "load_uea_classification", "load_uea_splits",
]
