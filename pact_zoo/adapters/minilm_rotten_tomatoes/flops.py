"""Analytic FLOPs of what actually ran (SACT ``flopsometer.py`` convention: 2 FLOPs per multiply-add of every
convolution and linear layer; normalisation, pooling, activations and additions are not counted)."""
from __future__ import annotations

import functools
import math
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch import nn

__all__ = ["ATTENTION_FLOPS_PER_QK_CHANNEL", "FlopsProfiler", "current_profiler", "module_flops_per_sample",
           "recurrent_cell_flops", "self_attention_flops", "torch_flop_counter_mapping"]

#: Multiply-adds of self-attention per query, key and channel: Q K^T and softmax(.) V (2 FLOPs each).
ATTENTION_FLOPS_PER_QK_CHANNEL = 4

_ACTIVE: list["FlopsProfiler"] = []


def self_attention_flops(seq_len: int, width: int) -> int:
    """FLOPs per sample of one self-attention's two matmuls, Q K^T and softmax(.) V, over ``seq_len`` tokens of
    ``width`` channels (all heads): no module runs them, so a model adds them to the profiler
    (:meth:`FlopsProfiler.add`)."""
    return ATTENTION_FLOPS_PER_QK_CHANNEL * seq_len * seq_len * width


def recurrent_cell_flops(cell: nn.RNNCellBase) -> int:
    """FLOPs of one step of an RNN / LSTM / GRU cell for one sample (its input and hidden matmuls)."""
    return 2 * (cell.weight_ih.numel() + cell.weight_hh.numel())


def module_flops_per_sample(module: nn.Module, output: torch.Tensor) -> int:
    """FLOPs per sample of one call of a convolution, linear or recurrent-cell layer given its output."""
    if isinstance(output, tuple):  # LSTMCell returns (h, c)
        output = output[0]
    batch = output.shape[0] if output.dim() > 1 else 1
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel_macs = module.in_channels // module.groups * math.prod(module.kernel_size)
        return 2 * (output.numel() // batch) * kernel_macs
    if isinstance(module, nn.Linear):
        return 2 * (output.numel() // batch) * module.in_features
    if isinstance(module, nn.RNNCellBase):
        return recurrent_cell_flops(module)
    return 0


_COUNTED = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNCellBase)


class FlopsProfiler:
    """Attributes the per-sample FLOPs of one forward to slots: ``"base"`` or (stage, kind, index).

    Used on a batch of one sample; adaptive stages switch to their dense path while it is active so every
    unit and head runs once.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.flops: dict = defaultdict(int)
        self._slots: list = ["base"]
        self._handles: list = []

    def __enter__(self) -> "FlopsProfiler":
        for module in self.model.modules():
            if isinstance(module, _COUNTED):
                self._handles.append(module.register_forward_hook(self._hook))
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, module: nn.Module, inputs, output) -> None:
        self.flops[self._slots[-1]] += module_flops_per_sample(module, output)

    @contextmanager
    def slot(self, stage: nn.Module, kind: str, index: int) -> Iterator[None]:
        self._slots.append((id(stage), kind, index))
        try:
            yield
        finally:
            self._slots.pop()

    def add(self, flops: int) -> None:
        """Count ``flops`` per sample of an operation that is no module (e.g. attention matmuls) in the current slot."""
        self.flops[self._slots[-1]] += int(flops)

    def get(self, stage: nn.Module, kind: str, index: int) -> int:
        return self.flops.get((id(stage), kind, index), 0)


def current_profiler() -> Optional[FlopsProfiler]:
    return _ACTIVE[-1] if _ACTIVE else None


def torch_flop_counter_mapping() -> dict:
    """Formulas to pass as ``torch.utils.flop_counter.FlopCounterMode(custom_mapping=...)`` for kernels torch's
    counter misses: the CPU kernel of scaled-dot-product attention (``aten._scaled_dot_product_flash_attention_for_
    cpu`` and its backward; torch counts the CUDA ones), with torch's own SDPA formulas. Nothing global changes."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    pairs = ((getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None), flop_counter.sdpa_flop),
             (getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None),
              flop_counter.sdpa_backward_flop))
    mapping = {}
    for op, formula in pairs:
        if op is not None and op not in flop_counter.flop_registry:
            mapping[op] = functools.partial(formula)  # already shape-wrapped: the counter must not wrap it again
            mapping[op]._get_raw = True
    return mapping
