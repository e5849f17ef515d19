# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""What every Hugging Face model of pact_zoo shares on top of ``PreTrainedModel``: the halting knobs, the loss of the
forward that just ran (with the self-critical baseline of policy-gradient halting), saving with remote code, and
halting adapters (``save_pretrained(..., adapter_only=True)``: the new weights of a frozen-backbone conversion, the
backbone's id and a hash of its weights; ``from_pretrained`` of such a folder fetches the backbone and checks it).

Shipped as remote code next to the modeling files (flat): it imports the halting core from ``pact_zoo.halting`` when
pact_zoo is installed and from the copy saved beside it otherwise.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional, Union

import torch
from torch import nn
from transformers.utils import logging

try:  # the one halting core (pact_zoo/halting)
    from pact_zoo.halting.config import HaltingConfig
    from pact_zoo.halting.deprecation import warn_renamed
    from pact_zoo.halting.method import HaltingMethod, get_halting_method
    from pact_zoo.halting.report import (
        halting_loss, needs_rollout, needs_task_loss, self_critical_baseline, set_threshold,
    )
except ModuleNotFoundError as error:  # remote code without pact_zoo: the core files are saved next to this file
    if error.name is None or not error.name.startswith("pact_zoo"):
        raise
    from .config import HaltingConfig
    from .deprecation import warn_renamed
    from .method import HaltingMethod, get_halting_method
    from .report import halting_loss, needs_rollout, needs_task_loss, self_critical_baseline, set_threshold
from .halting_adapter import (
    ADAPTER_CONFIG, backbone_source, check_backbone_hash, is_adapter_folder, read_adapter, tensors_sha256, write_adapter,
)
from .remote_code import atomic_write, write_remote_code

__all__ = ["ConfigHaltingView", "HaltingModelMixin", "UnitsExecutedOutput"]

logger = logging.get_logger(__name__)

#: keyword arguments of ``from_pretrained`` (as the Auto classes pass them) that a local adapter folder does not need
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "subfolder", "revision", "token",
               "code_revision", "trust_remote_code", "adapter_kwargs")


class UnitsExecutedOutput:
    """Mixin of the models' outputs, whose ``units_executed`` field is the depth each sample ran under the name the
    halting core gives it (``HaltingRecord.units_executed``, ``HaltingReport.units_executed``): encoder ``[B]``
    layers, LSTM ``[B, T]`` cell applications. The family's former name of that field (:attr:`former_units_field`:
    encoder ``layers_executed``, LSTM ``ponder_steps``) still reads it, as attribute or key, with a
    DeprecationWarning."""

    #: the former name of the ``units_executed`` field
    former_units_field = ""

    def __getattr__(self, name: str) -> Any:  # only reached when ``name`` is no attribute
        if name and name == type(self).former_units_field:
            warn_renamed(name, "units_executed", type(self).__name__)
            return self.units_executed
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str) and key and key == type(self).former_units_field:
            warn_renamed(key, "units_executed", type(self).__name__)
            key = "units_executed"
        return super().__getitem__(key)


class ConfigHaltingView(HaltingConfig):
    """``model.halting_cfg`` of the Hugging Face models: the halting method and knobs as a :class:`HaltingConfig`
    (what ``halting_cfg`` is on pact_zoo's timm models), read from and written to the model's config, so that
    ``set_halting_knob`` (and ``pact_zoo.set_threshold``) change what ``save_pretrained`` writes.

    Args:
        config: the model's ``PreTrainedConfig``.
        method_field, knobs_field, bias_field: the config fields that hold the method's name, its knobs and the
            halting heads' bias init (``bias_field=None``: the model has none, e.g. ACM's gates).
        lookup: method name -> its :class:`HaltingMethod` class (default: the halting-method registry).

    ``halting_cfg`` used to be the whole config: another config field read through it still works, with a
    DeprecationWarning (read ``model.config.<field>``).
    """

    def __init__(self, config: Any, method_field: str = "method", knobs_field: str = "halting_knobs",
                 bias_field: Optional[str] = "halting_bias_init",
                 lookup: Callable[[str], type[HaltingMethod]] = get_halting_method) -> None:
        self.__dict__.update(config=config, method_field=method_field, knobs_field=knobs_field,
                             bias_field=bias_field, lookup=lookup)

    @property
    def method(self) -> str:
        return getattr(self.config, self.method_field)

    @property
    def method_cls(self) -> type[HaltingMethod]:
        return self.lookup(self.method)

    @property
    def halting_bias_init(self) -> Optional[float]:
        return getattr(self.config, self.bias_field) if self.bias_field else None

    @property
    def knobs(self) -> dict[str, Any]:
        """Every knob of the method (missing ones at their defaults), validated."""
        return self.method_cls.validate_knobs(dict(getattr(self.config, self.knobs_field) or {}))

    def set_halting_knob(self, key: str, value: Any) -> None:
        """Change one knob in the model's config (``config.set_halting_knob``, validated there)."""
        self.config.set_halting_knob(key, value)

    def to_dict(self) -> dict[str, Any]:
        bias = {} if self.bias_field is None else {"halting_bias_init": self.halting_bias_init}
        return {"method": self.method, **bias, **self.knobs}

    def __getattr__(self, name: str) -> Any:  # knobs, then (deprecated) the config's other fields
        if name.startswith("__") or "config" not in self.__dict__:
            raise AttributeError(name)
        knobs = self.knobs
        if name in knobs:
            return knobs[name]
        config = self.__dict__["config"]
        if hasattr(config, name):
            warn_renamed(f"halting_cfg.{name}", f"config.{name}",
                         "model.halting_cfg (now the halting method and knobs, not the whole config)")
            return getattr(config, name)
        raise AttributeError(f"halting_cfg of method {self.method!r} has no attribute or knob {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"halting_cfg is read from model.config: change a knob with "
                             f"halting_cfg.set_halting_knob({name!r}, value) or set model.config.{name}")


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
    def halting_cfg(self) -> ConfigHaltingView:
        """The halting method and knobs as a :class:`HaltingConfig` (``.method``, ``.halting_bias_init``, knobs as
        attributes), as on pact_zoo's timm models; read from and written to ``self.config`` (``pact_zoo.set_threshold``
        keeps them in step, so they are saved)."""
        return ConfigHaltingView(self.config)

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

    def _total_loss(self, task_loss: Callable[..., torch.Tensor], baseline: Optional[torch.Tensor]) -> torch.Tensor:
        """The loss of the forward that just ran: ``task_loss()`` (the mean task loss) plus its halting loss, to which
        a REINFORCE method gives ``task_loss(rows=True)`` (the ``[B]`` per-sample task losses)."""
        return task_loss() + self._halting_loss(lambda: task_loss(rows=True), baseline)

    # -- remote code --------------------------------------------------------------------------------------------------
    @classmethod
    def register_for_auto_class(cls, auto_class: Union[str, type] = "AutoModel") -> None:
        """No-op: every :meth:`save_pretrained` already ships the code and an ``auto_map`` for every Auto class."""
        logger.info(f"{cls.__name__}: checkpoints always carry their remote code; register_for_auto_class is not "
                    "needed")

    def _set_auto_map(self) -> None:
        """``config.auto_map``: ``AutoConfig`` and :attr:`auto_map_classes`, pointing into the shipped files."""
        config_module = Path(sys.modules[self.config_class.__module__].__file__).stem
        modeling_module = Path(sys.modules[type(self).__module__].__file__).stem
        self.config.auto_map = {"AutoConfig": f"{config_module}.{self.config_class.__name__}",
                                **{auto: f"{modeling_module}.{name}" for auto, name in self.auto_map_classes.items()}}

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, adapter_only: bool = False,
                        backbone_id: Optional[str] = None, backbone: Optional[Union[str, os.PathLike]] = None,
                        **kwargs) -> None:
        """``PreTrainedModel.save_pretrained`` (``config.json`` + ``model.safetensors``), plus remote code:
        ``config.json`` gets an ``auto_map`` for ``AutoConfig`` and :attr:`auto_map_classes`, and
        :meth:`remote_code_files` are copied next to it, so the folder loads with ``trust_remote_code=True`` without
        pact_zoo (with pact_zoo imported, the registered in-library classes are used and no remote code runs).
        ``push_to_hub`` is not supported here: save, then upload the folder.

        With ``adapter_only=True`` a halting adapter is written instead of ``model.safetensors`` (see
        :meth:`save_adapter`; ``backbone_id``: the backbone's hub id, ``backbone``: its local folder)."""
        if kwargs.get("push_to_hub"):
            raise ValueError(f"push_to_hub is not supported by {type(self).__name__}.save_pretrained: save, then "
                             "upload the folder")
        if os.path.isfile(save_directory):
            raise ValueError(f"save_directory must be a directory, got the file {save_directory}")
        if adapter_only:
            other = sorted(set(kwargs) - {"is_main_process", "safe_serialization"})
            if args or other:
                raise ValueError(f"save_pretrained(adapter_only=True) takes backbone_id= and backbone= only, got "
                                 f"{other or 'positional arguments'}")
            if kwargs.get("is_main_process", True):
                self.save_adapter(save_directory, backbone_id=backbone_id, backbone=backbone)
            return
        if backbone_id is not None or backbone is not None:
            raise ValueError("backbone_id= / backbone= are only read by save_pretrained(..., adapter_only=True)")
        self._set_auto_map()
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(save_directory, self.remote_code_files())

    # -- halting adapters ---------------------------------------------------------------------------------------------
    def adapter_backbone(self) -> tuple[str, nn.Module]:
        """``(prefix, module)``: the pretrained backbone inside this model and its state-dict prefix. Families
        built on a pretrained backbone override it; the others cannot be saved as adapters."""
        raise ValueError(f"{type(self).__name__} is not built on a pretrained backbone: it has no halting adapter "
                         f"(save the full checkpoint)")

    def load_adapter_backbone(self, source: str) -> None:
        """Load the backbone's weights from ``source`` (a folder or hub id) into :meth:`adapter_backbone`."""
        raise ValueError(f"{type(self).__name__} is not built on a pretrained backbone")

    def _backbone_record(self) -> Optional[str]:
        """Where the backbone was read from when the model was built (a path or a hub id), if recorded."""
        return getattr(self.config, "backbone_source", None)

    def save_adapter(self, save_directory: Union[str, os.PathLike], backbone_id: Optional[str] = None,
                     backbone: Optional[Union[str, os.PathLike]] = None) -> None:
        """Write a halting adapter into ``save_directory``: ``config.json`` (with ``auto_map``), the remote code,
        ``halting_adapter.safetensors`` (the weights in ``config.new_weights``) and ``halting_adapter.json`` (the
        backbone's id, its path if local, and the hash of the backbone's tensors). Each file is written atomically.
        ``backbone_id`` (hub id) and ``backbone`` (local folder) replace what the config records
        (``config.backbone_source``).

        Raises ValueError when the model records no new weights, holds weights that are neither new nor the
        backbone's, or (where the backbone's folder is here) when its backbone differs from that folder's: a
        fine-tuned backbone needs the full checkpoint."""
        new = sorted(getattr(self.config, "new_weights", None) or [])
        if not new:
            raise ValueError(f"adapter_only=True: {type(self).__name__} records no new_weights (build it with "
                             f"from_backbone or convert_from)")
        prefix, module = self.adapter_backbone()
        state, backbone_state = self.state_dict(), module.state_dict()
        backbone_keys = {prefix + key for key in backbone_state}
        unknown = sorted(set(new) - set(state))
        stray = sorted(set(state) - set(new) - backbone_keys)
        if unknown or stray:
            raise ValueError(f"adapter_only=True: new_weights name keys the model lacks {unknown[:5]}, or the model "
                             f"holds weights that are neither new nor the backbone's {stray[:5]}")
        if set(new) & backbone_keys:
            raise ValueError(f"adapter_only=True: new_weights include backbone weights "
                             f"{sorted(set(new) & backbone_keys)[:5]}: the backbone was trained; save the full "
                             f"checkpoint")
        source = str(backbone) if backbone is not None else self._backbone_record()
        if backbone is not None and not Path(source).expanduser().exists():
            raise FileNotFoundError(f"save_adapter: backbone folder not found: {source}")
        local = source if source and Path(source).expanduser().exists() else None
        backbone_id = backbone_id or (source if source and local is None else None)
        if not (backbone_id or local):
            raise ValueError(f"adapter_only=True: {type(self).__name__} records no backbone (config.backbone_source): "
                             f"pass backbone_id=<hub id>")
        digest = tensors_sha256(backbone_state)
        if local is not None:  # the backbone is here: check that the conversion left it unchanged
            reference = type(self)(copy.deepcopy(self.config))
            reference.load_adapter_backbone(local)
            check_backbone_hash({"backbone": {"sha256": digest, "id": "this model's backbone"}},
                                reference.adapter_backbone()[1].state_dict(), local,
                                f"{save_directory} (not a frozen-backbone conversion: save the full checkpoint)")
        folder = Path(save_directory)
        self._set_auto_map()
        self.config.architectures = [type(self).__name__]
        atomic_write(folder / "config.json", lambda path: self.config.to_json_file(path))
        write_remote_code(folder, self.remote_code_files())
        write_adapter(folder, {key: state[key] for key in new}, backbone_id, local, digest,
                      architecture=type(self).__name__)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, backbone: Optional[Union[str, os.PathLike]] = None,
                        **kwargs):
        """``PreTrainedModel.from_pretrained``; a halting adapter folder (``halting_adapter.json``) is rebuilt with
        :meth:`from_adapter` (``backbone``: the backbone's folder or hub id instead of the recorded one)."""
        if is_adapter_folder(str(pretrained_model_name_or_path)):
            return cls.from_adapter(pretrained_model_name_or_path, *args, backbone=backbone, **kwargs)
        if backbone is not None:
            raise ValueError(f"backbone= is only read for a halting adapter folder; {pretrained_model_name_or_path} "
                             f"holds no {ADAPTER_CONFIG}")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @classmethod
    def from_adapter(cls, folder: Union[str, os.PathLike], *args,
                     backbone: Optional[Union[str, os.PathLike]] = None, **kwargs: Any):
        """The adaptive model of a halting adapter folder, in eval mode: the backbone is read from ``backbone``, else
        the recorded path where it exists, else the recorded hub id; its tensors must hash to the recorded hash
        (else a one-line ValueError naming the backbone and both hashes); then the adapter's weights are loaded.

        ``config=`` (as the Auto classes pass it) is used when given; hub keyword arguments are ignored (the
        folder is local)."""
        config = kwargs.pop("config", None)
        for key in _HUB_KWARGS:
            kwargs.pop(key, None)
        unknown = sorted(key for key, value in kwargs.items() if not key.startswith("_") and value is not None)
        if args or unknown:
            raise ValueError(f"from_pretrained of the halting adapter {folder} takes backbone= and config= only, got "
                             f"{unknown or 'positional arguments'}")
        record, weights = read_adapter(folder)
        if not isinstance(config, cls.config_class):
            config = cls.config_class.from_pretrained(folder)
        model = cls(config)
        source = backbone_source(record, backbone)
        model.load_adapter_backbone(source)
        prefix, module = model.adapter_backbone()
        backbone_state = module.state_dict()
        check_backbone_hash(record, backbone_state, source, folder)
        own = model.state_dict()
        misplaced = sorted(key for key in weights if key not in own or own[key].shape != weights[key].shape)
        uncovered = sorted(set(own) - set(weights) - {prefix + key for key in backbone_state})
        if misplaced or uncovered:
            raise ValueError(f"halting adapter {folder} does not fit {cls.__name__}: weights without a place "
                             f"{misplaced[:5]}, weights it does not give {uncovered[:5]}")
        model.load_state_dict(weights, strict=False)
        model.new_weights = sorted(weights)
        return model.eval()
