"""Synthetic halting heads: reproducible heads under which per-sample depth is spread over the units.

Untrained heads (bias -3) never stop, so benchmarks, scripts and tests that need a realistic spread of depths
without training set the heads with :func:`synthesize_halting` - the one definition used everywhere.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from .report import adaptive_stages, full_depth, set_execution
from .stage import AdaptiveStage

__all__ = ["calibrate_batchnorm", "synthesize_halting"]

#: Default scale of the random head directions (logit std about this value on normalised features).
DEFAULT_WEIGHT_SCALE = 3.0
#: Generated inputs used to place the head biases.
DEFAULT_NUM_SAMPLES = 128
#: Batch size of the BatchNorm calibration forwards.
CALIBRATION_BATCH_SIZE = 32


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, input_shape: Sequence[int], seed: int,
                        num_samples: int = DEFAULT_NUM_SAMPLES, batch_size: int = CALIBRATION_BATCH_SIZE) -> None:
    """Running statistics of every backbone BatchNorm (halting heads excluded) = the average batch statistics of
    ``num_samples`` generated ``N(0, 1)`` inputs at full depth, as after training: a random network then normalises
    alike in train and eval mode and its activations keep their scale through a deep stack."""
    head_modules = {id(m) for _, stage in adaptive_stages(model) if stage.heads is not None
                    for m in stage.heads.modules()}
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in head_modules]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    param = next(model.parameters())
    generator = torch.Generator().manual_seed(int(seed) + 2)
    data = torch.randn((num_samples,) + tuple(input_shape), generator=generator)
    was_training = model.training
    model.train()
    try:
        with full_depth(model):
            for chunk in data.split(batch_size):
                if chunk.shape[0] > 1:  # a batch of one has no batch statistics
                    model(chunk.to(param.device, param.dtype))
    finally:
        model.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


@torch.no_grad()
def synthesize_halting(model: nn.Module, seed: int, input_shape: Optional[Sequence[int]],
                       num_samples: int = DEFAULT_NUM_SAMPLES, weight_scale: float = DEFAULT_WEIGHT_SCALE,
                       calibrate_norms: bool = False, inputs: Optional[Mapping[str, torch.Tensor]] = None) -> None:
    """Set reproducible halting heads under which each sample's depth is spread over the units.

    For every halting stage, in order: the head weights are drawn from ``N(0, weight_scale^2 / C)`` with a
    generator seeded by ``seed`` (a different random direction of the features per head, so the samples that stop
    differ from unit to unit); the heads' BatchNorm statistics are set to the mean / variance of their pooled inputs
    on ``num_samples`` generated inputs (``N(0, 1)``, same seed); and the bias of head ``n`` is set so that, on those
    inputs, a fraction ``1 / (L - n)`` of the samples still running stops there under the threshold rule at 0.5 (for
    methods with a threshold the threshold is set to 0.5): the halting step is uniform on ``1..L``, so each stage runs
    about half of its units on average, per sample. Heads without a BatchNorm (``VectorHaltingHead``) get weights and
    biases only. The model is left in eval mode with compact execution.

    Args:
        model: a model with halting stages whose heads end in a ``fc`` ``nn.Linear(C, 1)``.
        seed: generator seed.
        input_shape: per-sample model input shape (e.g. ``(3, 32, 32)``).
        num_samples: generated inputs the biases are placed on.
        weight_scale: std of the head logits' random directions (larger: more confident heads).
        calibrate_norms: first set the backbone BatchNorm statistics from generated inputs
            (:func:`calibrate_batchnorm`), as for an untrained network that should behave like a trained one.
        inputs: real inputs to place the biases on instead of generated images, as the keyword arguments of one
            model call (e.g. ``{"input_ids": [N, T], "attention_mask": [N, T]}`` for a token model); then
            ``input_shape`` and ``num_samples`` are not used.
    """
    from .report import set_threshold

    stages = [stage for _, stage in adaptive_stages(model) if isinstance(stage, AdaptiveStage) and stage.halting]
    if not stages:
        raise ValueError("synthesize_halting needs a model with halting stages (a method with heads)")
    if (inputs is None) == (input_shape is None):
        raise ValueError("synthesize_halting needs exactly one of input_shape (generated images) and inputs")
    if calibrate_norms:
        if input_shape is None:
            raise ValueError("calibrate_norms generates images: pass input_shape")
        calibrate_batchnorm(model, input_shape, seed, num_samples)
    generator = torch.Generator().manual_seed(int(seed))
    param = next(model.parameters())
    if inputs is None:
        images = torch.randn((num_samples,) + tuple(input_shape), generator=generator).to(param.device, param.dtype)
        call = {"x": images}
        num_samples = images.shape[0]
    else:
        call = dict(inputs)
        num_samples = next(iter(call.values())).shape[0]
    for stage in stages:
        for head in stage.heads:
            fc = head.fc
            fc.weight.copy_(torch.randn(fc.weight.shape, generator=generator) * weight_scale / fc.in_features ** 0.5)
            fc.bias.zero_()
    model.eval()
    if any(stage.method.has_threshold for stage in stages):
        set_threshold(model, 0.5)
    set_execution(model, "masked")  # every head sees every sample
    try:
        for stage in stages:  # in order: a stage's inputs depend on the depths chosen before it
            captured: dict[int, torch.Tensor] = {}
            hooks = []
            for index, head in enumerate(stage.heads):
                target = head.norm if hasattr(head, "norm") else head.fc
                hooks.append(target.register_forward_hook(
                    lambda _m, args, _out, index=index: captured.__setitem__(index, args[0].detach())))
            try:
                with torch.inference_mode():
                    model(call["x"]) if inputs is None else model(**call)
            finally:
                for hook in hooks:
                    hook.remove()
            running = torch.ones(num_samples, dtype=torch.bool, device=param.device)
            for index, head in enumerate(stage.heads):
                features = captured[index].float()
                if hasattr(head, "norm"):
                    head.norm.running_mean.copy_(features.mean(0))
                    head.norm.running_var.copy_(features.var(0))
                    features = head.act(head.norm(captured[index])).float()
                scores = (features @ head.fc.weight.float().t()).squeeze(-1)
                hazard = 1.0 / (stage.num_units - index)
                quantile = torch.quantile(scores[running], 1.0 - hazard) if running.any() else scores.max()
                head.fc.bias.fill_(-float(quantile))
                running &= scores < quantile
    finally:
        set_execution(model, "compact")
