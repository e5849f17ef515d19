"""Datasets: hub datasets through ``datasets``, local folders / parquet, and bundled offline sets."""
from .images import (
    AUGMENTATIONS, ImageSplits, collate_images, image_transforms, load_digits_dataset, load_image_dataset,
    with_image_transform,
)

__all__ = [
    "AUGMENTATIONS", "ImageSplits", "collate_images", "image_transforms", "load_digits_dataset",
    "load_image_dataset", "with_image_transform",
]
