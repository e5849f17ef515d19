"""What the benchmark feeds a model: an :class:`InputSpec` (images or token sequences), batches drawn from it, and
the one adapter that runs a model on a batch of any kind (:func:`~pact_zoo.halting.run_model`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from ..halting.calibrate import run_model

__all__ = ["InputSpec", "INPUT_KINDS", "DEFAULT_SEQ_LEN", "resolve_inputs", "input_shape_of", "as_spec",
           "make_batches", "run_model", "run_all", "main_output"]

INPUT_KINDS = ("auto", "image", "tokens")
#: Sequence length of token inputs (the encoder setting of docs/benchmarks.md).
DEFAULT_SEQ_LEN = 64


@dataclass(frozen=True)
class InputSpec:
    """What one benchmark sample is: an image ``[C, H, W]`` (``kind="image"``, ``shape=(C, H, W)``) or a token
    sequence (``kind="tokens"``, ``shape=(T,)``, ids below ``vocab_size``, all-ones attention mask)."""

    kind: str
    shape: tuple[int, ...]
    vocab_size: Optional[int] = None
    channels_last: bool = False

    def batch(self, batch_size: int, generator: torch.Generator, device: Union[str, torch.device] = "cpu"
              ) -> Union[torch.Tensor, dict[str, torch.Tensor]]:
        """A random batch: ``[B, C, H, W]`` N(0, 1) images, or ``{"input_ids": [B, T], "attention_mask": [B, T]}``."""
        if self.kind == "tokens":
            ids = torch.randint(0, self.vocab_size, (batch_size,) + self.shape, generator=generator)
            return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
        batch = torch.randn((batch_size,) + self.shape, generator=generator).to(device)
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def zeros(self, device: Union[str, torch.device], dtype: torch.dtype) -> Union[torch.Tensor, dict]:
        """One all-zero sample (FLOPs profiling)."""
        if self.kind == "tokens":
            ids = torch.zeros((1,) + self.shape, dtype=torch.long, device=device)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return torch.zeros((1,) + self.shape, dtype=dtype, device=device)


def _takes_tokens(model: nn.Module) -> bool:
    """True when the model's ``halting_profile_inputs()`` (:class:`~pact_zoo.halting.ProfiledModel`) feeds
    ``input_ids`` (a token model)."""
    from ..halting.protocols import ProfiledModel

    if not isinstance(model, ProfiledModel):
        return False
    _, kwargs = model.halting_profile_inputs()
    return "input_ids" in kwargs


def resolve_inputs(model: nn.Module, kind: str = "auto", input_size: Optional[Sequence[int]] = None,
                   seq_len: int = DEFAULT_SEQ_LEN, channels_last: bool = False) -> InputSpec:
    """The :class:`InputSpec` of ``model``: ``kind`` ``"image"`` (``input_size`` or the model's pretrained_cfg),
    ``"tokens"`` (``seq_len`` tokens, the config's ``vocab_size``) or ``"auto"`` (tokens for models whose
    ``halting_profile_inputs()`` takes ``input_ids``, images otherwise)."""
    if kind not in INPUT_KINDS:
        raise ValueError(f"--inputs must be one of {INPUT_KINDS}, got {kind!r}")
    if kind == "auto":
        kind = "tokens" if _takes_tokens(model) else "image"
    if kind == "tokens":
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if not vocab:
            raise ValueError("--inputs tokens needs a model whose config has a vocab_size")
        if seq_len < 1:
            raise ValueError(f"--seq-len must be >= 1, got {seq_len}")
        return InputSpec("tokens", (int(seq_len),), vocab_size=int(vocab))
    return InputSpec("image", input_shape_of(model, input_size), channels_last=channels_last)


def input_shape_of(model: nn.Module, override: Optional[Sequence[int]] = None) -> tuple[int, ...]:
    """Per-sample input shape: ``override``, else the model's ``pretrained_cfg['input_size']``."""
    if override:
        return tuple(int(v) for v in override)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" not in cfg:
        raise ValueError("the model has no pretrained_cfg['input_size']: pass --input-size C,H,W")
    return tuple(cfg["input_size"])


def as_spec(inputs: Union[InputSpec, Sequence[int]], channels_last: bool = False) -> InputSpec:
    """An :class:`InputSpec` (a bare ``C, H, W`` shape is an image)."""
    if isinstance(inputs, InputSpec):
        return inputs
    return InputSpec("image", tuple(int(v) for v in inputs), channels_last=channels_last)


def make_batches(inputs: Union[InputSpec, Sequence[int]], batch_size: int, min_samples: int, seed: int,
                 channels_last: bool, device: str = "cpu") -> list:
    """Enough random batches of ``batch_size`` for ``min_samples`` samples, drawn with seed ``seed + batch_size``."""
    spec = as_spec(inputs, channels_last)
    generator = torch.Generator().manual_seed(seed + batch_size)
    num_batches = max(1, -(-min_samples // batch_size))
    return [spec.batch(batch_size, generator, device) for _ in range(num_batches)]


def run_all(model: nn.Module, batches: list) -> None:
    for batch in batches:
        run_model(model, batch)


def main_output(output: Any) -> torch.Tensor:
    """The tensor to compare of a model output: itself, ``.logits`` (Hugging Face ModelOutput) or the first item."""
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    return output[0]
