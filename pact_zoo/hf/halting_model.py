# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""What every Hugging Face model of pact_zoo shares on top of ``PreTrainedModel``: the halting knobs, the loss of the
forward that just ran (with the self-critical baseline of policy-gradient halting), and saving with remote code.

Shipped as remote code next to the modeling files (flat): it imports the halting core from ``pact_zoo.halting`` when
pact_zoo is installed and from the copy saved beside it otherwise.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, ClassVar, Optional, Union

import torch
from transformers.utils import logging

try:  # the one halting core (pact_zoo/halting)
    from pact_zoo.halting.report import (
        halting_loss, needs_rollout, needs_task_loss, self_critical_baseline, set_threshold,
    )
except ModuleNotFoundError as error:  # remote code without pact_zoo: the core files are saved next to this file
    if error.name is None or not error.name.startswith("pact_zoo"):
        raise
    from .report import halting_loss, needs_rollout, needs_task_loss, self_critical_baseline, set_threshold
from .remote_code import write_remote_code

__all__ = ["HaltingModelMixin"]

logger = logging.get_logger(__name__)


class HaltingModelMixin:
    """Mixin of the pact_zoo ``PreTrainedModel`` bases (list it first).

    A subclass sets :attr:`auto_map_classes` (Auto class -> class name of its modeling file) and
    :meth:`remote_code_files` (the files its checkpoints ship).
    """

    #: Auto classes written to ``config.json`` (``auto_map``) by :meth:`save_pretrained`.
    auto_map_classes: ClassVar[dict[str, str]] = {}

    @classmethod
    def remote_code_files(cls) -> list[Path]:
        raise NotImplementedError

    # -- halting knobs ------------------------------------------------------------------------------------------------
    @property
    def halting_cfg(self):
        """The object holding the halting knobs (``pact_zoo.set_threshold`` keeps them in step, so they are saved)."""
        return self.config

    def set_threshold(self, threshold: float) -> None:
        """``pact_zoo.set_threshold(self, threshold)``: the eval rule's threshold, saved with the config."""
        set_threshold(self, threshold)

    # -- losses -------------------------------------------------------------------------------------------------------
    def _rollout_baseline(self, labels: Optional[torch.Tensor],
                          greedy_loss: Callable[[], torch.Tensor]) -> Optional[torch.Tensor]:
        """Policy-gradient halting with the self-critical baseline: the ``[B]`` path loss of the deterministic rule,
        from ``greedy_loss()`` (a forward without labels -> per-sample task loss), run *before* the training forward.
        None where no baseline forward is needed."""
        if labels is None or not (self.training and torch.is_grad_enabled()) or not needs_rollout(self):
            return None
        return self_critical_baseline(self, greedy_loss)

    def _halting_loss(self, per_sample_loss: Callable[[], torch.Tensor],
                      baseline: Optional[torch.Tensor]) -> torch.Tensor:
        """``pact_zoo.halting_loss`` of the forward that just ran; methods that need it (REINFORCE) get the
        per-sample task loss ``per_sample_loss()`` in training. An eval forward of such a method adds nothing."""
        if not needs_task_loss(self):
            return halting_loss(self)
        if not (self.training and torch.is_grad_enabled()):
            return torch.zeros((), device=next(self.parameters()).device)
        return halting_loss(self, task_loss=per_sample_loss(), baseline_loss=baseline)

    # -- remote code --------------------------------------------------------------------------------------------------
    @classmethod
    def register_for_auto_class(cls, auto_class: Union[str, type] = "AutoModel") -> None:
        """No-op: every :meth:`save_pretrained` already ships the code and an ``auto_map`` for every Auto class."""
        logger.info(f"{cls.__name__}: checkpoints always carry their remote code; register_for_auto_class is not "
                    "needed")

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, **kwargs) -> None:
        """``PreTrainedModel.save_pretrained`` (``config.json`` + ``model.safetensors``), plus remote code:
        ``config.json`` gets an ``auto_map`` for ``AutoConfig`` and :attr:`auto_map_classes`, and
        :meth:`remote_code_files` are copied next to it, so the folder loads with ``trust_remote_code=True`` without
        pact_zoo (with pact_zoo imported, the registered in-library classes are used and no remote code runs).
        ``push_to_hub`` is not supported here: save, then upload the folder."""
        if kwargs.get("push_to_hub"):
            raise ValueError(f"push_to_hub is not supported by {type(self).__name__}.save_pretrained: save, then "
                             "upload the folder")
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory must be a directory, got the file {save_directory}")
        config_module = Path(sys.modules[self.config_class.__module__].__file__).stem
        modeling_module = Path(sys.modules[type(self).__module__].__file__).stem
        self.config.auto_map = {"AutoConfig": f"{config_module}.{self.config_class.__name__}",
                                **{auto: f"{modeling_module}.{name}" for auto, name in self.auto_map_classes.items()}}
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(save_directory, self.remote_code_files())
