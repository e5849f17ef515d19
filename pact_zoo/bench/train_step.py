"""Training-step timing: one SGD step (what the training loop does per batch) of the plain network, the model and
its twins under other halting methods, all with the model's weights, round robin."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .inputs import InputSpec, main_output, make_batches, run_model
from .networks import (
    copy_weights, create_model, describe, halting_stages, is_hf, plain_network, set_synthetic_heads,
    twin_kwargs, twins,
)
from .timing import medians as summarise, time_round_robin

__all__ = ["TRAIN_STEP_TARGET", "REFERENCE_NETWORKS", "DEFAULT_TRAIN_NETWORKS", "train_networks",
           "build_training_networks", "benchmark_training"]

#: Target for a PACT training step relative to a plain network step.
TRAIN_STEP_TARGET = 1.10
#: Every step is also reported relative to these networks' steps (``<name>_vs_<reference>``).
REFERENCE_NETWORKS = ("plain", "pact")
DEFAULT_TRAIN_NETWORKS = ("plain", "pact", "pg", "pg_batch_mean")


def train_networks() -> tuple[str, ...]:
    """The networks whose training step can be timed: ``model`` (the benchmarked model as configured), ``plain``
    (no halting) and the twins of the model (:func:`~pact_zoo.bench.networks.twins`: one per registered head
    method, and the knob variants)."""
    return ("model", "plain") + tuple(twins())


def build_training_networks(model: nn.Module, names: Sequence[str], model_name: str, kwargs: dict,
                            plain_model: Optional[str], seed: int, input_shape: Sequence[int],
                            synthetic_halting: Optional[int], synthetic_samples: int = 128,
                            device: str = "cpu", channels_last: bool = False) -> dict[str, nn.Module]:
    """The networks of the training comparison, every one with ``model``'s weights where it has them.

    ``model`` is the benchmarked model itself; ``plain`` is ``plain_model`` (or ``model_name`` under the plain
    method); the others are twins of ``model_name`` under another method (:func:`~pact_zoo.bench.networks.twins`).
    With ``synthetic_halting`` the twins get synthetic heads (:func:`~pact_zoo.bench.networks.set_synthetic_heads`).
    """
    available = twins()
    networks: dict[str, nn.Module] = {}
    for name in names:
        if name == "model":
            networks[name] = model
            continue
        if name == "plain":
            net = plain_network(model, model_name, kwargs, plain_model, seed, device)
        else:
            if name not in available:
                raise ValueError(f"unknown training network {name!r}; choose from {train_networks()}")
            method, extra = available[name]
            net = create_model(model_name, twin_kwargs(kwargs, method, extra, is_hf(model_name)), seed, device)
            missing = copy_weights(model, net)
            if missing and any(".method_state." not in key for key in missing):
                raise ValueError(f"training twin {name!r} of {model_name} does not take the model's weights: "
                                 f"{missing[:5]}")
            if synthetic_halting is not None and halting_stages(net):
                set_synthetic_heads(net, synthetic_halting, input_shape, synthetic_samples)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        networks[name] = net
    return networks


def benchmark_training(networks: Mapping[str, nn.Module], input_shape: Union[InputSpec, Sequence[int]],
                       batch_size: int, warmup: int, repeats: int, seed: int, channels_last: bool,
                       device: str = "cpu", clock: str = "wall") -> dict:
    """Median time of one SGD step per network, round-robin.

    A step is what the training loop does per batch (:func:`~pact_zoo.halting.training_loss`): the self-critical
    baseline forward where the method needs one, the training forward, the per-sample cross-entropy plus
    ``halting_loss``, backward, update. The JSON also gives the fraction of units each training forward ran.
    """
    from ..halting import adaptive_stages, training_loss

    generator = torch.Generator().manual_seed(seed)
    batch = make_batches(input_shape, batch_size, batch_size, seed, channels_last, device)[0]
    first = next(iter(networks.values()))
    num_classes = (getattr(first, "num_classes", None) or getattr(getattr(first, "config", None), "num_labels", None)
                   or 10)
    labels = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
    optimizers = {name: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for name, m in networks.items()}
    units: dict[str, list[list[torch.Tensor]]] = {name: [] for name in networks}

    def step(name: str) -> None:
        model, optimizer = networks[name], optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss = training_loss(model, lambda: main_output(run_model(model, batch)),
                             lambda logits: nn.functional.cross_entropy(logits, labels, reduction="none")).loss
        loss.backward()
        optimizer.step()
        units[name].append([stage.record.total_units for _, stage in adaptive_stages(model)])

    for model in networks.values():
        model.train()
    try:
        times = time_round_robin({name: (lambda name=name: step(name)) for name in networks}, warmup, repeats,
                                 device=torch.device(device), clock=clock)
    finally:
        for model in networks.values():
            model.eval()
    medians, minima = summarise(times)
    fractions = {}
    for name, model in networks.items():
        stages = [stage for _, stage in adaptive_stages(model)]
        timed = units[name][warmup:]
        if stages and timed:
            total_units = sum(stage.num_units for stage in stages)
            fractions[name] = float(torch.stack([sum(u.double() for u in step_units) for step_units in timed])
                                    .mean() / total_units)
    ratios = {}
    for base in REFERENCE_NETWORKS:
        for name in networks:
            if base in medians and name not in ("plain", base):
                ratios[f"{name}_vs_{base}"] = medians[name] / medians[base]
    ratio = ratios.get("pact_vs_plain")
    return {"batch_size": batch_size, "networks": {name: describe(m) for name, m in networks.items()},
            "times_s": times, "median_s": medians, "min_s": minima, "units_fraction": fractions,
            "ratios": ratios, "ratio": ratio, "target": TRAIN_STEP_TARGET,
            "target_met": None if ratio is None else ratio <= TRAIN_STEP_TARGET}
