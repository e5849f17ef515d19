"""Graves's synthetic sequence tasks (ACT for RNNs, arXiv:1603.08983 §3) as seeded ``datasets.Dataset`` generators.

Every example has ``inputs_embeds`` (``[T, F]`` float32 features, one row per time step) and ``labels``; sequence
lengths vary for logic, addition and sort, and :func:`collate_sequences` pads a batch and builds the
``attention_mask`` the PACT-LSTM expects.

What is verified and what is reconstructed (Graves 2016 §3; PonderNet, Banino et al. 2021, §4):

* **parity** [verified, PonderNet App. B.1]: a vector of ``vector_size`` (64) entries, k in 1..64 of them set to
  +1 or -1 at random, the rest 0; the target is the parity of the number of +1 entries. One time step. Where the
  non-zeros go is ambiguous: the first k positions by default (as common reimplementations do), random positions
  as an option.
* **logic, addition, sort** [reconstructed from third-party reimplementations; Graves §3.2-3.4 were not retrievable]:
  see each function's docstring for the exact encoding used here.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from datasets import Array2D, ClassLabel, Dataset, Features, Value
from datasets import Sequence as SequenceFeature

__all__ = [
    "LOGIC_GATES", "LengthBucketSampler", "PARITY_PLACEMENTS", "SEQUENCE_CLASSIFICATION_DATASETS", "addition_dataset",
    "collate_sequences", "load_sequence_splits", "logic_dataset", "parity_dataset", "sort_dataset",
]

PARITY_PLACEMENTS = ("first", "random")
#: The 10 binary gates of Graves's logic task, as truth tables ``table[p][q]``.
LOGIC_GATES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "NOR": ((1, 0), (0, 0)),       # not (p or q)
    "Xq": ((0, 1), (0, 0)),        # q and not p
    "ABJ": ((0, 0), (1, 0)),       # p and not q (abjunction)
    "XOR": ((0, 1), (1, 0)),
    "NAND": ((1, 1), (1, 0)),
    "AND": ((0, 0), (0, 1)),
    "XNOR": ((1, 0), (0, 1)),
    "if/then": ((1, 1), (0, 1)),   # p -> q
    "then/if": ((1, 0), (1, 1)),   # q -> p
    "OR": ((0, 1), (1, 1)),
}
_GATE_TABLE = np.array(list(LOGIC_GATES.values()), dtype=np.int64)  # [10, 2, 2]
LABEL_PAD = -100  # transformers' ignore index
DIGITS = 10


def _check_count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_range(low_name: str, low: int, high_name: str, high: int, minimum: int = 1) -> None:
    _check_count(low_name, low, minimum)
    _check_count(high_name, high, minimum)
    if low > high:
        raise ValueError(f"{low_name} must be <= {high_name}, got {low} > {high}")


def _features(num_features: int, labels: Any, **extra: Any) -> Features:
    return Features({"inputs_embeds": Array2D(shape=(None, num_features), dtype="float32"), "labels": labels,
                     **extra})


# ---------------------------------------------------------------------------------------------------------------------
def parity_dataset(num_samples: int, vector_size: int = 64, seed: int = 0, placement: str = "first",
                   min_nonzero: int = 1, max_nonzero: Optional[int] = None) -> Dataset:
    """Graves's parity task (one-step sequences).

    Args:
        num_samples: examples to generate.
        vector_size: entries per vector (Graves / PonderNet: 64).
        seed: numpy seed; the same arguments give the same dataset.
        placement: ``"first"`` (non-zeros fill the first k positions) or ``"random"`` (k random positions).
        min_nonzero, max_nonzero: k is uniform on ``min_nonzero..max_nonzero`` (default ``1..vector_size``); e.g.
            train on 1..48 and test on 49..64 for PonderNet's extrapolation split.

    Returns:
        Dataset with ``inputs_embeds`` ``[1, vector_size]`` (values in {-1, 0, +1}), ``labels`` (1 if the count of
        +1 entries is odd) and ``num_nonzero`` (k).
    """
    num_samples = _check_count("num_samples", num_samples)
    vector_size = _check_count("vector_size", vector_size)
    max_nonzero = vector_size if max_nonzero is None else max_nonzero
    _check_range("min_nonzero", min_nonzero, "max_nonzero", max_nonzero)
    if max_nonzero > vector_size:
        raise ValueError(f"max_nonzero must be <= vector_size={vector_size}, got {max_nonzero}")
    if placement not in PARITY_PLACEMENTS:
        raise ValueError(f"placement must be one of {PARITY_PLACEMENTS}, got {placement!r}")
    rng = np.random.default_rng(seed)
    num_nonzero = rng.integers(min_nonzero, max_nonzero + 1, size=num_samples)
    signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(num_samples, vector_size))
    if placement == "first":
        rank = np.broadcast_to(np.arange(vector_size), (num_samples, vector_size))
    else:  # the rank of a uniform key is a uniformly random permutation
        rank = rng.random((num_samples, vector_size)).argsort(axis=1).argsort(axis=1)
    vectors = np.where(rank < num_nonzero[:, None], signs, np.float32(0.0)).astype(np.float32)
    labels = ((vectors == 1.0).sum(axis=1) % 2).astype(np.int64)
    features = Features({"inputs_embeds": Array2D(shape=(1, vector_size), dtype="float32"),
                         "labels": ClassLabel(names=["even", "odd"]), "num_nonzero": Value("int64")})
    return Dataset.from_dict({"inputs_embeds": vectors[:, None, :], "labels": labels, "num_nonzero": num_nonzero},
                             features=features)


# ---------------------------------------------------------------------------------------------------------------------
def _apply_gates(p: int, q: int, gates: Sequence[int]) -> int:
    """Apply gates in order: (p, q) -> (q, gate(p, q)); the result is the last gate's output."""
    for gate in gates:
        p, q = q, int(_GATE_TABLE[gate, p, q])
    return q


def logic_dataset(num_samples: int, seed: int = 0, min_length: int = 1, max_length: int = 10,
                  min_gates: int = 1, max_gates: int = 10) -> Dataset:
    """Graves's logic task (reconstruction after the zphang/adaptive-computation-time-pytorch encoding).

    Each time step carries 2 operand bits and ``max_gates`` gate slots, each a one-hot over the 10
    :data:`LOGIC_GATES` (unused slots zero): ``2 + 10 * max_gates`` = 102 features. At the first step both bits
    are given; later steps give a fresh bit in slot 0 (slot 1 is 0) and the other operand is the previous step's
    target, which the network must remember. The step's gates are applied in order, each to the previous two values
    ((p, q) -> (q, gate(p, q))); the target is the last output.

    Returns:
        Dataset with ``inputs_embeds`` ``[T, 102]``, ``labels`` ``[T]`` (0/1) and ``length`` (T in
        ``min_length..max_length``).
    """
    num_samples = _check_count("num_samples", num_samples)
    _check_range("min_length", min_length, "max_length", max_length)
    _check_range("min_gates", min_gates, "max_gates", max_gates)
    rng = np.random.default_rng(seed)
    num_gate_types = len(LOGIC_GATES)
    num_features = 2 + num_gate_types * max_gates
    inputs, labels, lengths = [], [], []
    for _ in range(num_samples):
        length = int(rng.integers(min_length, max_length + 1))
        x = np.zeros((length, num_features), dtype=np.float32)
        y = np.zeros(length, dtype=np.int64)
        previous = None
        for t in range(length):
            if previous is None:
                p, q = (int(b) for b in rng.integers(0, 2, size=2))
                x[t, 0], x[t, 1] = p, q
            else:
                p, q = previous, int(rng.integers(0, 2))
                x[t, 0] = q
            gates = rng.integers(0, num_gate_types, size=int(rng.integers(min_gates, max_gates + 1)))
            x[t, 2 + np.arange(len(gates)) * num_gate_types + gates] = 1.0
            y[t] = previous = _apply_gates(p, q, gates)
        inputs.append(x)
        labels.append(y)
        lengths.append(length)
    features = _features(num_features, SequenceFeature(Value("int64")), length=Value("int64"))
    return Dataset.from_dict({"inputs_embeds": inputs, "labels": labels, "length": lengths}, features=features)


# ---------------------------------------------------------------------------------------------------------------------
def addition_dataset(num_samples: int, seed: int = 0, min_length: int = 1, max_length: int = 5,
                     max_digits: int = 5) -> Dataset:
    """Graves's addition task (reconstruction): add a sequence of integers, emitting the running sum.

    Each step presents one number of 1..``max_digits`` random decimal digits, least significant first, as
    ``max_digits`` one-hot blocks of 10 (unused blocks zero): 50 features for 5 digits. The target at every step
    is the cumulative sum, written with as many output digits as the largest possible sum has (6 for 5 x 5 digits),
    least significant first; positions past the sum's most significant digit take the extra class 10 ("blank").

    Returns:
        Dataset with ``inputs_embeds`` ``[T, 10 * max_digits]``, ``target_digits`` ``[T, D]`` (class ids
        0..10, D = 6 by default), ``labels`` ``[T, 11 * D]`` (the same targets one-hot and flattened, for a
        ``multi_label_classification`` token head) and ``length``.
    """
    num_samples = _check_count("num_samples", num_samples)
    _check_range("min_length", min_length, "max_length", max_length)
    max_digits = _check_count("max_digits", max_digits)
    output_digits = len(str(max_length * (DIGITS ** max_digits - 1)))  # digits of the largest possible sum
    blank = DIGITS
    num_classes = DIGITS + 1
    rng = np.random.default_rng(seed)
    inputs, digit_targets, labels, lengths = [], [], [], []
    for _ in range(num_samples):
        length = int(rng.integers(min_length, max_length + 1))
        x = np.zeros((length, DIGITS * max_digits), dtype=np.float32)
        targets = np.full((length, output_digits), blank, dtype=np.int64)
        total = 0
        for t in range(length):
            digits = rng.integers(0, DIGITS, size=int(rng.integers(1, max_digits + 1)))  # least significant first
            x[t, np.arange(len(digits)) * DIGITS + digits] = 1.0
            total += int(sum(int(d) * DIGITS ** i for i, d in enumerate(digits)))
            sum_digits = [int(c) for c in reversed(str(total))]
            targets[t, :len(sum_digits)] = sum_digits
        one_hot = np.eye(num_classes, dtype=np.float32)[targets].reshape(length, output_digits * num_classes)
        inputs.append(x)
        digit_targets.append(targets)
        labels.append(one_hot)
        lengths.append(length)
    features = Features({
        "inputs_embeds": Array2D(shape=(None, DIGITS * max_digits), dtype="float32"),
        "target_digits": Array2D(shape=(None, output_digits), dtype="int64"),
        "labels": Array2D(shape=(None, output_digits * num_classes), dtype="float32"),
        "length": Value("int64")})
    return Dataset.from_dict({"inputs_embeds": inputs, "target_digits": digit_targets, "labels": labels,
                              "length": lengths}, features=features)


# ---------------------------------------------------------------------------------------------------------------------
def sort_dataset(num_samples: int, seed: int = 0, min_numbers: int = 2, max_numbers: int = 15) -> Dataset:
    """Graves's sort task (reconstruction): read N numbers, then emit their indices in ascending order.

    N in ``min_numbers..max_numbers``, values ~ N(0, 1). The sequence has 2N steps with 2 features
    (value, end-of-input flag): steps 0..N-1 present the numbers (the flag is 1 on the last one), steps N..2N-1
    are blank and their targets are the indices of the 1st, 2nd, ... smallest number.

    Returns:
        Dataset with ``inputs_embeds`` ``[2N, 2]``, ``labels`` ``[2N]`` (``-100`` while reading, then indices in
        ``0..max_numbers-1``) and ``length`` (2N).
    """
    num_samples = _check_count("num_samples", num_samples)
    _check_range("min_numbers", min_numbers, "max_numbers", max_numbers, minimum=2)
    rng = np.random.default_rng(seed)
    inputs, labels, lengths = [], [], []
    for _ in range(num_samples):
        count = int(rng.integers(min_numbers, max_numbers + 1))
        values = rng.standard_normal(count).astype(np.float32)
        x = np.zeros((2 * count, 2), dtype=np.float32)
        x[:count, 0] = values
        x[count - 1, 1] = 1.0
        y = np.full(2 * count, LABEL_PAD, dtype=np.int64)
        y[count:] = np.argsort(values, kind="stable")
        inputs.append(x)
        labels.append(y)
        lengths.append(2 * count)
    features = _features(2, SequenceFeature(Value("int64")), length=Value("int64"))
    return Dataset.from_dict({"inputs_embeds": inputs, "labels": labels, "length": lengths}, features=features)


# ---------------------------------------------------------------------------------------------------------------------
def collate_sequences(examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Pad a list of examples (rows of the datasets above, or token-id rows of :mod:`pact_zoo.data.tokens`) into a
    batch, right-padded.

    Returns:
        ``inputs_embeds`` ``[B, T_max, F]`` (zeros at padding) or, for token rows, ``input_ids`` ``[B, T_max]``
        (long, :data:`~pact_zoo.data.tokens.PAD_ID` at padding), ``attention_mask`` ``[B, T_max]`` (long, 1 =
        real), ``labels`` (``[B]`` for one label per sequence; per-step labels padded to ``T_max`` with ``-100`` for
        class ids and 0 for float targets, which the mask excludes), and any other per-example scalar columns.
    """
    if not examples:
        raise ValueError("examples must hold at least one example")
    input_key = "input_ids" if "input_ids" in examples[0] else "inputs_embeds"
    if input_key == "input_ids":
        inputs = [torch.as_tensor(np.asarray(e["input_ids"], dtype=np.int64)) for e in examples]
        if any(x.dim() != 1 for x in inputs):
            raise ValueError("every example's input_ids must be [T] token ids")
    else:
        inputs = [torch.as_tensor(np.asarray(e["inputs_embeds"], dtype=np.float32)) for e in examples]
        if any(x.dim() != 2 for x in inputs) or len({x.shape[1] for x in inputs}) != 1:
            raise ValueError("every example's inputs_embeds must be [T, F] with the same F")
    lengths = [x.shape[0] for x in inputs]
    seq_len, batch_size = max(lengths), len(inputs)
    batch: dict[str, torch.Tensor] = {
        input_key: inputs[0].new_zeros((batch_size, seq_len) + tuple(inputs[0].shape[1:])),  # PAD_ID is 0
        "attention_mask": torch.zeros(batch_size, seq_len, dtype=torch.long),
    }
    for row, (x, length) in enumerate(zip(inputs, lengths)):
        batch[input_key][row, :length] = x
        batch["attention_mask"][row, :length] = 1
    for key in examples[0]:
        if key == input_key:
            continue
        values = [torch.as_tensor(np.asarray(e[key])) for e in examples]
        if values[0].dtype == torch.float64:  # python floats from the arrow rows
            values = [value.float() for value in values]
        if values[0].dim() == 0:
            batch[key] = torch.stack(values)
            continue
        pad = LABEL_PAD if not values[0].dtype.is_floating_point else 0.0
        padded = values[0].new_full((batch_size, seq_len) + tuple(values[0].shape[1:]), pad)
        for row, value in enumerate(values):
            padded[row, :value.shape[0]] = value
        batch[key] = padded
    return batch


class LengthBucketSampler:
    """Batches of similar lengths (less padding): every epoch the rows are shuffled, each chunk of
    ``bucket_batches * batch_size`` rows is sorted by length and cut into batches, and the batches are shuffled
    again; a last partial batch is dropped (as the training loop's loader does). The order depends on ``seed`` and
    the epoch: :meth:`set_epoch` (which the training loop calls, so a resumed run repeats it), else one more than the
    last iteration's (accelerate's sharded sampler of a multi-process run does not pass the epoch on).

    Args:
        lengths: ``[N]`` length of every row (a ``length`` column).
        batch_size: rows per batch.
        bucket_batches: batches per length-sorted chunk (1: plain shuffled batches).
        seed: seed of the shuffles.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, bucket_batches: int, seed: int = 0) -> None:
        self.lengths = [int(n) for n in lengths]
        self.batch_size = _check_count("batch_size", batch_size)
        self.bucket_batches = _check_count("bucket_batches", bucket_batches)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths) // self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])  # a stream of its own per (seed, epoch)
        self.epoch += 1
        order = rng.permutation(len(self.lengths)).tolist()
        chunk = self.batch_size * self.bucket_batches
        order = [i for start in range(0, len(order), chunk)
                 for i in sorted(order[start:start + chunk], key=self.lengths.__getitem__)]
        batches = [order[i:i + self.batch_size] for i in range(0, len(self) * self.batch_size, self.batch_size)]
        for index in rng.permutation(len(batches)).tolist():
            yield batches[index]


# ---------------------------------------------------------------------------------------------------------------------
#: Sequence-classification tasks the shared training loop can use (one label per sequence).
SEQUENCE_CLASSIFICATION_DATASETS = ("parity", "mnist1d")


def load_sequence_splits(name: str, seed: int = 0, **kwargs: Any) -> tuple[Dataset, Dataset, list[str]]:
    """Train and test splits of a generated sequence-classification task, and its class names.

    Args:
        name: ``"parity"`` (kwargs: ``train_samples``, ``test_samples`` and :func:`parity_dataset` arguments; the
            test split uses ``seed + 1``) or ``"mnist1d"`` (kwargs: :class:`~pact_zoo.data.mnist1d.MNIST1DConfig`
            fields).
        seed: generator seed.
    """
    if name == "parity":
        options = dict(kwargs)
        train_samples = options.pop("train_samples", 100_000)
        test_samples = options.pop("test_samples", 10_000)
        train = parity_dataset(train_samples, seed=seed, **options)
        test = parity_dataset(test_samples, seed=seed + 1, **options)
    elif name == "mnist1d":
        from .mnist1d import mnist1d_splits

        splits = mnist1d_splits(**{"seed": seed, **kwargs})
        train, test = splits["train"], splits["test"]
    else:
        raise ValueError(f"unknown sequence dataset {name!r}; choose from {SEQUENCE_CLASSIFICATION_DATASETS}")
    return train, test, list(train.features["labels"].names)
