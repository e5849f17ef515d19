"""The networks a benchmark compares: the model factory (timm names and ``hf:<ClassName>``), twins of the model
under another halting method with the same weights, and the synthetic halting heads.

Which twins exist comes from the halting-method registry (:data:`~pact_zoo.halting.HALTING_METHODS`): every
registered method that stops on halting heads (``uses_heads``, no exit classifiers) gives a twin of its own name,
and the method without heads or exits is the plain network. :data:`TWIN_VARIANTS` adds short names for knob
settings of a method (the policy-gradient baselines).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Optional, Sequence

from torch import nn

__all__ = ["HF_PREFIX", "TWIN_VARIANTS", "SAMPLED_HEAD_WEIGHT_SCALE", "create_model", "hf_class", "is_hf",
           "halting_stages", "head_methods", "plain_method", "twins", "twin_kwargs", "copy_weights",
           "set_synthetic_heads", "describe", "plain_network"]

HF_PREFIX = "hf:"
#: Short names of twins with other knobs than the method's defaults: name -> (method, knobs).
TWIN_VARIANTS = {
    "pg": ("policy_gradient", {"baseline": "greedy"}),  # self-critical: one extra gradient-free forward
    "pg_batch_mean": ("policy_gradient", {"baseline": "batch_mean"}),  # no extra forward
}
#: Head weight scale of the synthetic heads of a method whose training *samples* its depth: confident heads
#: (logits of magnitude ~10), so that the sampled depth follows the deterministic one (about half of the units);
#: at the default scale 3 the sampled stops come early and a stage runs ~30 % of its units.
SAMPLED_HEAD_WEIGHT_SCALE = 10.0


def hf_class(name: str) -> type:
    """The pact_zoo Hugging Face model class ``name`` (``pact_zoo.hf`` or one of its ``modeling_*`` modules)."""
    import pact_zoo.hf as hf

    if hasattr(hf, name):
        return getattr(hf, name)
    for info in pkgutil.iter_modules(hf.__path__):
        if info.name.startswith("modeling_"):
            module = importlib.import_module(f"pact_zoo.hf.{info.name}")
            if hasattr(module, name):
                return getattr(module, name)
    raise ValueError(f"--model {HF_PREFIX}{name}: no such class in pact_zoo.hf")


def is_hf(name: str) -> bool:
    return name.startswith(HF_PREFIX)


def create_model(name: str, kwargs: dict, seed: int = 0, device: str = "cpu") -> nn.Module:
    """``timm.create_model(name, **kwargs)`` (or, for ``hf:<ClassName>``, that pact_zoo Hugging Face class built
    from ``config_class(**kwargs)``) in eval mode on ``device``, weights drawn after ``torch.manual_seed(seed)``."""
    import torch

    import pact_zoo  # noqa: F401  (registers the models)

    torch.manual_seed(seed)
    if is_hf(name):
        cls = hf_class(name[len(HF_PREFIX):])
        return cls(cls.config_class(**kwargs)).to(device).eval()
    import timm

    return timm.create_model(name, **kwargs).to(device).eval()


def halting_stages(model: nn.Module) -> list:
    """The model's stages that have halting heads."""
    from ..halting import adaptive_stages

    return [stage for _, stage in adaptive_stages(model) if stage.adaptive]


def head_methods() -> tuple[str, ...]:
    """The registered halting methods that stop on halting heads (not on exit classifiers), in registry order."""
    from ..halting import HALTING_METHODS

    return tuple(name for name, cls in HALTING_METHODS.items()
                 if cls.uses_heads and not getattr(cls, "reads_exits", False))


def plain_method() -> str:
    """The registered method without heads or exits: every unit runs (the plain network)."""
    from ..halting import HALTING_METHODS

    return next(name for name, cls in HALTING_METHODS.items()
                if not cls.uses_heads and not getattr(cls, "reads_exits", False))


def twins() -> dict[str, tuple[str, dict]]:
    """Twin name -> (method, extra knobs): one per head method (:func:`head_methods`), then :data:`TWIN_VARIANTS`."""
    return dict({name: (name, {}) for name in head_methods()}, **TWIN_VARIANTS)


def twin_kwargs(kwargs: dict, method: str, extra: dict, hf: bool = False) -> dict:
    """``kwargs`` for ``method`` instead of the model's own: knobs the target method does not have are dropped
    (e.g. PACT's ``temperature`` for a policy-gradient twin), ``extra`` knobs are added."""
    from ..halting import HaltingConfig, get_halting_method

    rest = dict(kwargs)
    knobs = HaltingConfig.pop_knob_kwargs(rest)
    target = get_halting_method(method).knobs
    kept = {k: v for k, v in knobs.items() if k in target}
    if hf:  # a Hugging Face config: method / halting_knobs
        rest.pop("halting_method", None)  # the former name of ``method``
        old = rest.pop("halting_knobs", None) or {}
        return dict(rest, method=method,
                    halting_knobs=dict({k: v for k, v in old.items() if k in target}, **kept, **extra))
    return dict(rest, **kept, method=method, **extra)


def copy_weights(source: nn.Module, target: nn.Module) -> list[str]:
    """Copy every parameter / buffer of ``target`` that ``source`` has (same name and shape); returns the names of
    the target's entries that were left as they were (e.g. a plain network has no halting heads to receive)."""
    src = source.state_dict()
    dst = target.state_dict()
    copied = {k: v for k, v in src.items() if k in dst and dst[k].shape == v.shape}
    target.load_state_dict(copied, strict=False)
    return sorted(set(dst) - set(copied))


def _samples_depth_in_training(model: nn.Module) -> bool:
    """True when a halting stage's method samples its depth in training (asks the method: ``dense_training``)."""
    return any(not stage.method.dense_training for stage in halting_stages(model))


def set_synthetic_heads(model: nn.Module, seed: int, input_shape: Sequence[int], num_samples: int = 128) -> None:
    """Synthetic halting heads for the benchmark: :func:`~pact_zoo.halting.synthesize_halting` (depth uniform over
    each stage's units under the deterministic rule). For a method whose training samples the depth the backbone
    BatchNorms are calibrated first (:func:`~pact_zoo.halting.calibrate_batchnorm`) and the heads are confident
    (:data:`SAMPLED_HEAD_WEIGHT_SCALE`), so that the sampled training depth is also about half of the units."""
    from ..halting import synthesize_halting

    if _samples_depth_in_training(model):
        synthesize_halting(model, seed, input_shape, num_samples=num_samples,
                           weight_scale=SAMPLED_HEAD_WEIGHT_SCALE, calibrate_norms=True)
    else:
        synthesize_halting(model, seed, input_shape, num_samples=num_samples)


def describe(model: nn.Module) -> str:
    """``method`` (and ``baseline`` where the method has one) of the model's halting stages, or ``plain``."""
    stages = halting_stages(model)
    if not stages:
        return "plain"
    method = stages[0].method
    baseline = getattr(method, "baseline", None)
    return method.name + (f" (baseline {baseline})" if baseline is not None else "")


def plain_network(model: nn.Module, model_name: str, kwargs: dict, plain_model: Optional[str], seed: int,
                  device: str = "cpu") -> nn.Module:
    """The plain network with ``model``'s weights: ``plain_model`` (e.g. timm's ``resnet50``), else ``model_name``
    under the plain method (:func:`plain_method`)."""
    plain = (create_model(plain_model, {}, seed, device) if plain_model
             else create_model(model_name, twin_kwargs(kwargs, plain_method(), {}, is_hf(model_name)), seed, device))
    copy_weights(model, plain)
    return plain
