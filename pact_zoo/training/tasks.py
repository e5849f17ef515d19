"""What the training loop needs to know about a model family: how to build it, feed it and read its report.

The loop itself (:mod:`pact_zoo.training.loop`) is shared; a task adapts one kind of model and data to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn

from ..data import collate_images, image_transforms, load_image_dataset, with_image_transform
from ..halting import adaptive_stages, halting_report
from .config import ConfigError, TrainConfig

__all__ = ["TaskData", "ImageClassificationTask", "build_task"]


@dataclass
class TaskData:
    train: Any  # torch Dataset
    eval: Any
    collate_fn: Callable
    class_names: list[str]
    raw_eval: Any = None  # untransformed eval split, for image grids


class ImageClassificationTask:
    """timm image classifiers (every ``pact_zoo`` model and any timm model) on image datasets."""

    input_key = "pixel_values"
    kind = "image"

    def __init__(self, config: TrainConfig) -> None:
        import timm

        self.config = config
        if config.model not in timm.list_models():
            import pact_zoo

            raise ConfigError(f"unknown model {config.model!r}; pact_zoo models: {', '.join(pact_zoo.list_models())} "
                              f"(any timm model name also works)")
        if config.pretrained_file is not None:
            import os

            if not os.path.isfile(config.pretrained_file):
                raise FileNotFoundError(f"pretrained_file not found: {config.pretrained_file}")
        self._splits = None

    def _load_splits(self):
        if self._splits is None:
            c = self.config
            self._splits = load_image_dataset(c.dataset, data_dir=c.data_dir, data_files=c.data_files,
                                              train_split=c.train_split, eval_split=c.eval_split,
                                              image_column=c.image_column, label_column=c.label_column)
        return self._splits

    def num_classes(self) -> int:
        return self._load_splits().num_classes

    def build_model(self, num_classes: int) -> nn.Module:
        import timm

        kwargs = dict(self.config.model_kwargs)
        kwargs.setdefault("num_classes", num_classes)
        if self.config.pretrained_file:
            return timm.create_model(self.config.model, pretrained=True,
                                     pretrained_cfg_overlay=dict(file=self.config.pretrained_file), **kwargs)
        return timm.create_model(self.config.model, pretrained=self.config.pretrained, **kwargs)

    def load_data(self, model: nn.Module) -> TaskData:
        from timm.data import resolve_data_config

        c = self.config
        splits = self._load_splits()
        data_config = resolve_data_config(model=model)
        in_chans = data_config["input_size"][0]
        train, evaluation = splits.train, splits.eval
        if c.max_train_samples:
            train = train.select(range(min(c.max_train_samples, len(train))))
        if c.max_eval_samples:
            evaluation = evaluation.select(range(min(c.max_eval_samples, len(evaluation))))
        return TaskData(
            train=with_image_transform(train, splits.image_column, splits.label_column,
                                       image_transforms(data_config, c.augment, is_training=True), in_chans),
            eval=with_image_transform(evaluation, splits.image_column, splits.label_column,
                                      image_transforms(data_config, c.augment, is_training=False), in_chans),
            collate_fn=collate_images,
            class_names=splits.class_names,
            raw_eval=(evaluation, splits.image_column),
        )

    @staticmethod
    def forward(model: nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``[B, num_classes]``."""
        return model(batch["pixel_values"])

    @staticmethod
    def report(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-sample FLOPs ``[B]``, units executed ``[B, S]`` and full-depth FLOPs of the last forward."""
        report = halting_report(model)
        return report.flops, report.units_executed, report.full_flops


def build_task(config: TrainConfig) -> ImageClassificationTask:
    """The task for ``config.model``."""
    return ImageClassificationTask(config)


def halting_head_parameters(model: nn.Module) -> set[int]:
    """``id`` of every halting-head parameter (they may get their own learning rate)."""
    return {id(p) for _, stage in adaptive_stages(model) if stage.heads is not None for p in stage.heads.parameters()}
