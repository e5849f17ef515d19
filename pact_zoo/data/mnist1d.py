"""MNIST-1D (Greydanus 2020, "Scaling down deep learning", arXiv:2011.14439), generated offline and seeded.

Ten hand-designed 12-point templates, one per digit, are padded, dilated, scaled, translated, given correlated
and i.i.d. noise, sheared and resampled to 40 points; the whole set is then centred and scaled to unit variance.
This is an independent implementation of the procedure and default arguments of the reference generator
(github.com/greydanus/mnist1d, ``mnist1d/data.py`` and ``transform.py``) with numpy's ``default_rng``: same
distribution, not the same random draws as the published ``mnist1d_data.pkl``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from datasets import Array2D, ClassLabel, Dataset, DatasetDict, Features

__all__ = ["MNIST1DConfig", "mnist1d_dataset", "mnist1d_splits", "mnist1d_templates"]

NUM_CLASSES = 10

# The reference templates (12 points each, digits 0..9), before whitening.
_TEMPLATES = np.array([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
], dtype=np.float64)


@dataclass
class MNIST1DConfig:
    """Generator arguments; the defaults are those of the reference ``get_dataset_args``.

    Attributes:
        num_samples: examples in total (split by ``train_split``); a multiple of 10 keeps classes balanced.
        train_split: fraction of examples in the train split.
        template_len: points per template.
        padding: (low, high) zeros appended before dilation.
        scale_coeff: amplitude scaled by 1 + scale_coeff * U(-0.5, 0.5).
        max_translation: circular shift by U{0..max_translation-1}.
        corr_noise_scale: std of the smoothed noise written where the signal is zero.
        corr_noise_sigma: Gaussian smoothing width (points) of that noise.
        iid_noise_scale: std of the i.i.d. noise added everywhere.
        shear_scale: linear trend with slope shear_scale * U(-0.5, 0.5).
        final_seq_length: points per example after resampling.
        seed: numpy seed.
    """

    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: tuple[int, int] = field(default=(36, 60))
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    corr_noise_sigma: float = 2.0
    iid_noise_scale: float = 2e-2
    shear_scale: float = 0.75
    final_seq_length: int = 40
    seed: int = 42

    def __post_init__(self) -> None:
        for name in ("num_samples", "template_len", "max_translation", "final_seq_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.num_samples < NUM_CLASSES:
            raise ValueError(f"num_samples must be >= {NUM_CLASSES} (one per class), got {self.num_samples}")
        if not 0.0 < self.train_split < 1.0:
            raise ValueError(f"train_split must be in (0, 1), got {self.train_split!r}")
        low, high = self.padding
        if not (isinstance(low, int) and isinstance(high, int) and 0 <= low <= high):
            raise ValueError(f"padding must be (low, high) ints with 0 <= low <= high, got {self.padding!r}")
        for name in ("scale_coeff", "corr_noise_scale", "iid_noise_scale", "shear_scale"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.corr_noise_sigma <= 0:
            raise ValueError(f"corr_noise_sigma must be > 0, got {self.corr_noise_sigma!r}")


def mnist1d_templates() -> np.ndarray:
    """``[10, 12]`` templates: whitened per digit, shifted to start at 0, divided by 6 (as the reference)."""
    x = _TEMPLATES - _TEMPLATES.mean(axis=1, keepdims=True)
    x = x / x.std(axis=1, keepdims=True)
    x = x - x[:, :1]
    return x / 6.0


def _resample(x: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation of ``x`` onto ``length`` evenly spaced points of the same [0, 1] span."""
    return np.interp(np.linspace(0.0, 1.0, length), np.linspace(0.0, 1.0, len(x)), x)


def _gaussian_smooth(x: np.ndarray, sigma: float, truncate: float = 4.0) -> np.ndarray:
    """1-D Gaussian filter with half-sample symmetric borders (``scipy.ndimage.gaussian_filter`` defaults)."""
    radius = int(truncate * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, radius, mode="symmetric")
    return np.convolve(padded, kernel, mode="valid")


def _transform(template: np.ndarray, config: MNIST1DConfig, rng: np.random.Generator, eps: float = 1e-8) -> np.ndarray:
    """One example from one template: pad, dilate, scale, translate, noise, shear, resample."""
    low, high = config.padding
    x = np.concatenate([template + eps, np.zeros(low + int(rng.random() * (high - low + 1)))])
    x = _resample(x, config.template_len + high)
    x = x * (1 + config.scale_coeff * (rng.random() - 0.5))
    shift = int(rng.integers(config.max_translation))
    x = np.roll(x, shift)
    signal = x != 0
    corr_noise = _gaussian_smooth(config.corr_noise_scale * rng.standard_normal(len(x)), config.corr_noise_sigma)
    x = np.where(signal, x, corr_noise)
    x = x + config.iid_noise_scale * rng.standard_normal(len(x))
    x = x - config.shear_scale * (rng.random() - 0.5) * np.linspace(-0.5, 0.5, len(x))
    return _resample(x, config.final_seq_length)


def _generate(config: MNIST1DConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    templates = mnist1d_templates()
    per_class = config.num_samples // NUM_CLASSES
    labels = np.repeat(np.arange(NUM_CLASSES), per_class)
    signals = np.stack([_transform(templates[label], config, rng) for label in labels])
    order = rng.permutation(len(labels))
    signals, labels = signals[order], labels[order]
    signals = (signals - signals.mean()) / signals.std()  # centre the dataset, unit standard deviation
    return signals.astype(np.float32), labels.astype(np.int64)


def _to_dataset(signals: np.ndarray, labels: np.ndarray) -> Dataset:
    features = Features({"inputs_embeds": Array2D(shape=(signals.shape[1], 1), dtype="float32"),
                         "labels": ClassLabel(names=[str(d) for d in range(NUM_CLASSES)])})
    return Dataset.from_dict({"inputs_embeds": signals[:, :, None], "labels": labels}, features=features)


def mnist1d_dataset(config: MNIST1DConfig | None = None, **overrides) -> Dataset:
    """All ``num_samples`` MNIST-1D examples, shuffled (split them with :func:`mnist1d_splits`).

    Args:
        config: generator arguments (defaults of the reference); ``overrides`` replace single fields, e.g.
            ``mnist1d_dataset(num_samples=1000, seed=0)``.

    Returns:
        Dataset with ``inputs_embeds`` ``[40, 1]`` (one value per time step) and ``labels`` (digit 0..9).
    """
    config = MNIST1DConfig(**{**asdict(config or MNIST1DConfig()), **overrides})
    return _to_dataset(*_generate(config))


def mnist1d_splits(config: MNIST1DConfig | None = None, **overrides) -> DatasetDict:
    """MNIST-1D split as the reference does: the first ``train_split`` of the shuffled examples for ``train``, the
    rest for ``test`` (4000 / 1000 by default)."""
    config = MNIST1DConfig(**{**asdict(config or MNIST1DConfig()), **overrides})
    signals, labels = _generate(config)
    split = int(len(labels) * config.train_split)
    return DatasetDict(train=_to_dataset(signals[:split], labels[:split]),
                       test=_to_dataset(signals[split:], labels[split:]))
