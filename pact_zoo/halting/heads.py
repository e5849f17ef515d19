"""Halting heads: the amortised inference network that outputs one halting logit per sample."""
from __future__ import annotations

from typing import Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

from .config import DEFAULT_HALTING_BIAS_INIT

__all__ = ["HaltingHead", "VectorHaltingHead"]


def _check_finite(logits: torch.Tensor, training: bool) -> torch.Tensor:
    """In eval, NaN / inf halting logits (from non-finite weights) raise: the threshold rule would silently run
    every unit (NaN never reaches a threshold)."""
    if not training and logits.device.type != "meta" and not torch.jit.is_scripting() \
            and not bool(torch.isfinite(logits).all()):
        raise ValueError("halting head produced NaN or inf halting logits in eval: the model's weights (or the "
                         "features from its units) are not finite; check the checkpoint")
    return logits


class HaltingHead(nn.Module):
    """Halting head for NCHW features (SACT ``get_halting_proba``): global pool -> BN -> act -> Linear(C -> 1).

    Args:
        num_chs: channels C of the unit output.
        act_layer: activation after the BN (SACT CIFAR: leaky ReLU 0.1; ImageNet: identity).
        bias_init: initial bias of the linear layer (SACT: -3, so that every unit runs at the start).

    Shape: ``[B, C, H, W]`` -> ``[B]`` halting logits. A training batch of one row (sampled-path training can
    leave one row running) is normalised with the running statistics.
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
        if self.training and pooled.shape[0] == 1:  # one row has no batch statistics: use the running ones
            normed = F.batch_norm(pooled, self.norm.running_mean, self.norm.running_var, self.norm.weight,
                                  self.norm.bias, training=False, eps=self.norm.eps)
        else:
            normed = self.norm(pooled)
        return _check_finite(self.fc(self.act(normed)).squeeze(-1), self.training)


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
        return _check_finite(self.fc(x).squeeze(-1), self.training)
