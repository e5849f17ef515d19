"""Halting heads: the amortised inference network that outputs one halting logit per sample."""
from __future__ import annotations

import math
from typing import Optional, Type

import torch
import torch.nn.functional as F
from torch import nn

from .config import DEFAULT_HALTING_BIAS_INIT
from .flops import current_profiler

__all__ = ["HaltingHead", "VectorHaltingHead"]


def _all_finite(logits: torch.Tensor) -> bool:
    """Whether every entry is finite, with one host read: a lone value directly, else the sum in float64 (NaN and
    inf propagate through it; float32 values cannot overflow it), which is fewer operators than ``isfinite().all()``
    (a composite of four)."""
    if logits.numel() == 1:
        return math.isfinite(logits.item())
    return math.isfinite(logits.sum(dtype=torch.float64).item())


def _check_finite(logits: torch.Tensor, training: bool) -> torch.Tensor:
    """In eval, NaN / inf halting logits (from non-finite weights) raise: the threshold rule would silently run
    every unit (NaN never reaches a threshold)."""
    if (not training and logits.device.type != "meta" and not torch.jit.is_scripting()
            and not torch.compiler.is_compiling() and not torch.compiler.is_exporting()
            and not _all_finite(logits)):
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

    Without gradients in eval mode the head runs *folded* (:meth:`folded`): the pooling's 1/(HW) and the eval
    BatchNorm become one affine map, and with an identity activation the whole head is one matrix-vector product
    over the flattened feature map (~10x fewer operator calls; the logits agree to float rounding). The folded
    weights are cached with a copy of the values they were built from (the BN's weight, bias, running statistics and
    ``eps``, the linear layer's weight and bias, the activation module); every call compares the current values with
    that copy (one concatenation and one comparison) and rebuilds on any difference, so an edit of any kind (optimiser
    steps, ``load_state_dict``, ``torch.no_grad()`` edits, edits through ``.data``, replaced parameters) is seen by
    the next call. ``train()`` / ``eval()`` and ``.to()`` drop the cache.
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

    def _fold_sources(self) -> torch.Tensor:
        """``[4C + 2]``: the current values the folded head is built from (BN weight, bias, running mean, running
        variance, linear weight, linear bias), read from the live tensors, so that no edit (``.data`` included,
        which bypasses ``Tensor._version``) goes unseen."""
        norm, fc = self._modules["norm"], self._modules["fc"]
        return torch.cat((norm._parameters["weight"], norm._parameters["bias"], norm._buffers["running_mean"],
                          norm._buffers["running_var"], fc._parameters["weight"].reshape(-1), fc._parameters["bias"]))

    def _can_fold(self, x: torch.Tensor) -> bool:
        if self.training or torch.is_grad_enabled() or x.dim() != 4 or x.shape[0] == 0:  # no rows: nothing to fold
            return False
        modules = self._modules
        norm, fc, act = modules["norm"], modules["fc"], modules["act"]
        return (norm._buffers["running_mean"] is not None and norm._parameters["weight"] is not None
                and norm._parameters["bias"] is not None and x.dtype == fc._parameters["weight"].dtype
                and current_profiler() is None and not torch.is_autocast_enabled(x.device.type)
                and not (norm._forward_hooks or norm._forward_pre_hooks or fc._forward_hooks
                         or fc._forward_pre_hooks or act._forward_hooks or act._forward_pre_hooks)
                and not (torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()))

    def train(self, mode: bool = True) -> "HaltingHead":
        self.__dict__.pop("_folded", None)
        return super().train(mode)

    def _apply(self, fn, recurse: bool = True):  # .to(), .cuda(), .half(): parameters get new storage
        self.__dict__.pop("_folded", None)
        return super()._apply(fn, recurse)

    def folded(self, height: int, width: int, channels_last: bool) -> dict[str, torch.Tensor]:
        """Eval-mode head as ``{"scale", "shift", "weight", "bias"}`` for an ``H x W`` input: ``act(sum_hw(x) *
        scale + shift) . weight + bias``; with an identity activation also ``"flat"`` ``[C*H*W]`` (NCHW order, or
        NHWC for ``channels_last``) and ``"flat_bias"`` with ``logit = x.flatten(1) . flat + flat_bias``. Cached
        (a hit runs no gradient-mode switch: this is called once per executed unit); the cache is used only while the
        values it was built from are unchanged (:meth:`_fold_sources`, compared exactly: NaN weights rebuild it)."""
        sources = self._fold_sources() if not torch.is_grad_enabled() else self._fold_sources().detach()
        act, eps = self._modules["act"], self._modules["norm"].eps
        cache = self.__dict__.get("_folded")
        if (cache is None or cache[1] is not act or cache[2] != eps or cache[0].dtype != sources.dtype
                or not torch.equal(cache[0], sources)):
            cache = (sources, act, eps, {})
            self.__dict__["_folded"] = cache
        entry = cache[3].get((height, width, channels_last))
        if entry is None:
            with torch.no_grad():
                entry = self._fold(height, width, channels_last)
            cache[3][(height, width, channels_last)] = entry
        return entry

    def _fold(self, height: int, width: int, channels_last: bool) -> dict[str, torch.Tensor]:
        """The folded head for an ``H x W`` input (uncached; :meth:`folded` caches it)."""
        norm, fc = self.norm, self.fc
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        shift = norm.bias - norm.running_mean * scale
        entry = {"scale": scale / (height * width), "shift": shift, "weight": fc.weight[0].clone(),
                 "bias": fc.bias.clone()}
        if isinstance(self.act, nn.Identity):  # Linear(BN(mean(x))) = <x, w * scale / HW> + b + <w, shift>
            per_channel = fc.weight[0] * entry["scale"]
            flat = per_channel.repeat(height * width) if channels_last else per_channel.repeat_interleave(
                height * width)
            entry["flat"] = flat.contiguous()
            entry["flat_bias"] = fc.bias + (fc.weight[0] * shift).sum()
        return entry

    def _forward_folded(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        batch, channels, height, width = x.shape
        if x.is_contiguous():
            channels_last = False
        elif x.is_contiguous(memory_format=torch.channels_last):
            channels_last = True
        else:
            return None
        fold = self.folded(height, width, channels_last)
        if "flat" in fold:
            view = x.permute(0, 2, 3, 1).reshape(batch, -1) if channels_last else x.view(batch, -1)
            return torch.addmv(fold["flat_bias"], view, fold["flat"])
        if channels_last:
            pooled = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels).sum(1)
        else:
            pooled = x.sum((2, 3))
        normed = torch.addcmul(fold["shift"], pooled, fold["scale"])
        act = self._modules["act"]
        # the leaky ReLU of the CIFAR heads without its module call (hooks on it disable folding)
        activated = F.leaky_relu(normed, act.negative_slope) if type(act) is nn.LeakyReLU else act(normed)
        return torch.addmv(fold["bias"], activated, fold["weight"])

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, C]``: global pool -> BN -> act, what the linear layer reads (unfolded path)."""
        pooled = x.mean(dim=(2, 3))
        if self.training and pooled.shape[0] == 1:  # one row has no batch statistics: use the running ones
            normed = F.batch_norm(pooled, self.norm.running_mean, self.norm.running_var, self.norm.weight,
                                  self.norm.bias, training=False, eps=self.norm.eps)
        else:
            normed = self.norm(pooled)
        return self.act(normed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._can_fold(x):
            logits = self._forward_folded(x)
            if logits is not None:
                return _check_finite(logits, self.training)
        return _check_finite(self.fc(self.pooled_features(x)).squeeze(-1), self.training)


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
