"""A comparison entry's model under other halting methods (the ``methods:`` key of a ``pact-zoo compare`` entry).

The entry's model folder is loaded the way a conversion phase loads its source: the training task's ``build_model``
with ``pretrained_file`` the folder and ``model_kwargs`` naming the method (``convert_from`` for a PACT-Encoder
folder; timm's ``create_model`` over the folder's weights and its other model arguments for a timm folder). Every
weight is the entry's own; only the halting rule changes, and a new method starts from its default knobs. The
early-exit rules of :mod:`pact_zoo.halting.exits` (``confidence``, ``entropy``, ``patience``) all read the same exit
classifiers, so one model with trained exits is evaluated under each rule:

    entries:
      - name: exits                                   # its own rule (confidence) at its thresholds
        convert: hub_configs/pact_minilm.rotten_tomatoes/convert_exits.yaml
        thresholds: [0.6, 0.8, 0.9]
        methods: {entropy: [0.1, 0.3, 0.5], patience: [0.2, 0.4, 0.6]}

Each method is evaluated like the entry (its thresholds plus its own default threshold, full depth), written to
``<entry's run folder>/eval_<method>/`` and labelled ``<entry>:<method>`` in the rows, the seed groups and the plot
(one curve per entry and method). A method the model's family refuses (e.g. an exit rule on a network without exits)
raises the model's own error.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from torch import nn

from .config import ConfigError, TrainConfig, check_fractions

__all__ = ["METHOD_SEPARATOR", "method_label", "load_methods", "method_fields", "build_with_method"]

#: between an entry's name and a method's in the label of the method's points (entry names never contain it)
METHOD_SEPARATOR = ":"


def method_label(name: str, method: str) -> str:
    """The label of entry (or seed group) ``name``'s points under ``method``: ``exits:entropy``."""
    return f"{name}{METHOD_SEPARATOR}{method}"


def load_methods(raw: Any, where: str) -> Dict[str, List[float]]:
    """The checked ``methods:`` value of an entry: registered method name -> thresholds in (0, 1] (``{}`` when
    absent); anything else raises a one-line ConfigError naming the key."""
    from ..halting import HALTING_METHODS

    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: methods must map halting methods to lists of thresholds, e.g. "
                          f"{{entropy: [0.1, 0.3], patience: [0.4]}}; got {raw!r}")
    unknown = sorted(str(name) for name in raw if name not in HALTING_METHODS)
    if unknown:
        raise ConfigError(f"{where}: methods names {', '.join(unknown)}; the registered halting methods are "
                          f"{', '.join(HALTING_METHODS)}")
    return {name: check_fractions(where, f"methods.{name}", values) for name, values in raw.items()}


def method_fields(model_dir: Path, method: str) -> Dict[str, Any]:
    """The config fields with which a training task builds the model of ``model_dir`` under ``method``:
    ``pretrained_file`` (the folder) and ``model_kwargs``. A timm model is built from its architecture's defaults,
    so a timm folder's other model arguments (sizes, ``halting_scope``, ...) come along; its halting knobs only
    when the method stays the same."""
    from ..halting import HALTING_METHODS
    from .io import _folder_config, is_timm_folder

    kwargs: Dict[str, Any] = {}
    if is_timm_folder(model_dir):
        args = dict(_folder_config(model_dir).get("model_args", {}))
        args.pop("num_classes", None)
        if args.get("method") != method:
            knobs = {knob for cls in HALTING_METHODS.values() for knob in cls.knobs}
            args = {key: value for key, value in args.items() if key not in knobs}
        kwargs.update(args)
    kwargs["method"] = method
    return {"pretrained_file": str(model_dir), "model_kwargs": kwargs}


def build_with_method(config: TrainConfig) -> nn.Module:
    """The model of ``config`` (fields from :func:`method_fields`) as its training task builds it, in eval mode; a
    timm model also gets its folder's ``pretrained_cfg`` (input size, normalisation), which the architecture's
    defaults would otherwise replace."""
    from .io import _folder_config, is_timm_folder
    from .tasks import build_task

    task = build_task(config)
    model = task.build_model(task.num_classes()).eval()
    if is_timm_folder(config.pretrained_file):
        model.pretrained_cfg = {**model.pretrained_cfg, **_folder_config(config.pretrained_file)["pretrained_cfg"]}
    return model
