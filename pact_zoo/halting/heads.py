"""Halting heads: the amortised inference network that outputs one halting logit per sample."""
from __future__ import annotations

from typing import Optional, Type

import torch
from torch import nn

from .config import DEFAULT_HALTING_BIAS_INIT

__all__ = ["HaltingHead", "VectorHaltingHead"]


class HaltingHead(nn.Module):
    """Halting head for NCHW features (SACT ``get_halting_proba``): global pool -> BN -> act -> Linear(C -> 1).

    Args:
        num_chs: channels C of the unit output.
        act_layer: activation after the BN (SACT CIFAR: leaky ReLU 0.1; ImageNet: identity).
        bias_init: initial bias of the linear layer (SACT: -3, so that every unit runs at the start).

    Shape: ``[B, C, H, W]`` -> ``[B]`` halting logits.
    """

    def __init__(
            self,
            num_chs: int,
            act_layer: Optional[Type[nn.Module]] = None,
            bias_init: float = DEFAULT_HALTING_BIAS_INIT,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.bias_init = bias_init
        self.norm = nn.BatchNorm1d(num_chs, **dd)
        self.act = act_layer() if act_layer is not None else nn.Identity()
        self.fc = nn.Linear(num_chs, 1, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.norm.reset_parameters()
        self.fc.reset_parameters()
        nn.init.constant_(self.fc.bias, self.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3))
        return self.fc(self.act(self.norm(pooled))).squeeze(-1)


class VectorHaltingHead(nn.Module):
    """Halting head for vector states (Graves 2016 h = sigmoid(W s + b)): Linear(H -> 1).

    Shape: ``[B, H]`` -> ``[B]`` halting logits.
    """

    def __init__(
            self,
            hidden_size: int,
            bias_init: float = DEFAULT_HALTING_BIAS_INIT,
            device: Optional[torch.device] = None,
            dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.bias_init = bias_init
        self.fc = nn.Linear(hidden_size, 1, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc.reset_parameters()
        nn.init.constant_(self.fc.bias, self.bias_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).squeeze(-1)
