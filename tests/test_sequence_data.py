"""Generators of Graves's tasks and MNIST-1D: shapes, targets recomputed from the inputs, seeding, bad arguments."""
from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from pact_zoo.data.mnist1d import MNIST1DConfig, mnist1d_dataset, mnist1d_splits, mnist1d_templates
from pact_zoo.data.sequences import (
    LOGIC_GATES, addition_dataset, collate_sequences, logic_dataset, parity_dataset, sort_dataset,
)


def rows(dataset: Dataset, column: str) -> list[np.ndarray]:
    return [np.asarray(value) for value in dataset[column]]


# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ("first", "random"))
def test_parity_targets_and_layout(placement):
    data = parity_dataset(400, vector_size=64, seed=3, placement=placement)
    assert isinstance(data, Dataset) and len(data) == 400
    vectors = np.stack(rows(data, "inputs_embeds"))
    assert vectors.shape == (400, 1, 64)
    vectors = vectors[:, 0]
    k = np.asarray(data["num_nonzero"])
    assert set(np.unique(vectors)) <= {-1.0, 0.0, 1.0}
    assert np.array_equal((vectors != 0).sum(1), k) and k.min() >= 1 and k.max() <= 64
    assert np.array_equal(np.asarray(data["labels"]), (vectors == 1).sum(1) % 2)
    first_k = np.array([np.all(row[:n] != 0) for row, n in zip(vectors, k)])
    assert first_k.all() if placement == "first" else not first_k.all()


def test_parity_is_seeded_and_ranges():
    a, b = parity_dataset(50, vector_size=16, seed=1), parity_dataset(50, vector_size=16, seed=1)
    assert a["inputs_embeds"] == b["inputs_embeds"]
    assert a["inputs_embeds"] != parity_dataset(50, vector_size=16, seed=2)["inputs_embeds"]
    k = np.asarray(parity_dataset(200, vector_size=16, min_nonzero=9, max_nonzero=12)["num_nonzero"])
    assert k.min() >= 9 and k.max() <= 12


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=0), "num_samples"), (dict(num_samples=10, vector_size=0), "vector_size"),
    (dict(num_samples=10, placement="middle"), "placement"),
    (dict(num_samples=10, vector_size=8, max_nonzero=9), "max_nonzero"),
    (dict(num_samples=10, min_nonzero=5, max_nonzero=3), "min_nonzero"),
])
def test_parity_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        parity_dataset(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
def test_logic_targets_follow_the_gates():
    data = logic_dataset(60, seed=0)
    tables = list(LOGIC_GATES.values())
    for x, y in zip(rows(data, "inputs_embeds"), rows(data, "labels")):
        assert x.shape[1] == 102 and 1 <= len(x) <= 10 and len(y) == len(x)
        previous = None
        for t, step in enumerate(x):
            p, q = (int(step[0]), int(step[1])) if previous is None else (previous, int(step[0]))
            slots = step[2:].reshape(10, 10)
            gates = [int(slot.argmax()) for slot in slots if slot.any()]
            assert 1 <= len(gates) <= 10 and slots[len(gates):].sum() == 0  # gates fill the first slots
            for gate in gates:
                p, q = q, tables[gate][p][q]
            assert y[t] == q
            previous = q


def test_addition_targets_are_running_sums():
    data = addition_dataset(40, seed=0)
    for x, digits, labels in zip(rows(data, "inputs_embeds"), rows(data, "target_digits"), rows(data, "labels")):
        assert x.shape[1] == 50 and digits.shape[1] == 6 and labels.shape == (len(x), 66)
        total = 0
        for t, step in enumerate(x):
            blocks = step.reshape(5, 10)
            number_digits = [int(block.argmax()) for block in blocks if block.any()]
            total += sum(d * 10 ** i for i, d in enumerate(number_digits))
            target = [d for d in digits[t] if d != 10]
            assert sum(d * 10 ** i for i, d in enumerate(target)) == total
            assert np.array_equal(labels[t].reshape(6, 11).argmax(1), digits[t])


def test_sort_targets_are_sorted_indices():
    data = sort_dataset(40, seed=0)
    for x, y in zip(rows(data, "inputs_embeds"), rows(data, "labels")):
        count = len(x) // 2
        assert 2 <= count <= 15 and x[count - 1, 1] == 1 and x[:, 1].sum() == 1
        assert (y[:count] == -100).all()
        assert np.array_equal(y[count:], np.argsort(x[:count, 0], kind="stable"))


@pytest.mark.parametrize("make, kwargs, match", [
    (logic_dataset, dict(num_samples=5, min_length=3, max_length=2), "min_length"),
    (logic_dataset, dict(num_samples=5, max_gates=0), "max_gates"),
    (addition_dataset, dict(num_samples=5, max_digits=0), "max_digits"),
    (sort_dataset, dict(num_samples=5, min_numbers=1), "min_numbers"),
    (sort_dataset, dict(num_samples=-1), "num_samples"),
])
def test_sequence_tasks_reject_bad_arguments(make, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


def test_collate_pads_and_masks():
    data = logic_dataset(6, seed=1)
    batch = collate_sequences([data[i] for i in range(6)])
    lengths = np.asarray(data["length"])
    assert batch["inputs_embeds"].shape == (6, lengths.max(), 102)
    assert batch["attention_mask"].sum(1).tolist() == lengths.tolist()
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["inputs_embeds"][batch["attention_mask"] == 0] == 0).all()
    parity = collate_sequences([parity_dataset(3, vector_size=8)[i] for i in range(3)])
    assert parity["labels"].shape == (3,) and parity["inputs_embeds"].shape == (3, 1, 8)
    with pytest.raises(ValueError, match="examples"):
        collate_sequences([])


# ---------------------------------------------------------------------------------------------------------------------
def test_mnist1d_templates_start_at_zero():
    templates = mnist1d_templates()
    assert templates.shape == (10, 12) and np.allclose(templates[:, 0], 0.0)


def test_mnist1d_shapes_balance_and_seeding():
    data = mnist1d_dataset(num_samples=200, seed=0)
    signals = np.stack(rows(data, "inputs_embeds"))
    labels = np.asarray(data["labels"])
    assert signals.shape == (200, 40, 1) and data.features["inputs_embeds"].dtype == "float32"
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    assert abs(signals.mean()) < 1e-4 and abs(signals.std() - 1.0) < 1e-3  # dataset-wide centring and scaling
    assert data["inputs_embeds"] == mnist1d_dataset(num_samples=200, seed=0)["inputs_embeds"]
    assert data["inputs_embeds"] != mnist1d_dataset(num_samples=200, seed=1)["inputs_embeds"]


def test_mnist1d_splits_and_classes_are_separable():
    splits = mnist1d_splits(num_samples=500, seed=0)
    assert isinstance(splits, DatasetDict) and (len(splits["train"]), len(splits["test"])) == (400, 100)
    # the class templates survive the transformations: per-class mean signals differ clearly
    x = np.stack(rows(splits["train"], "inputs_embeds"))[..., 0]
    y = np.asarray(splits["train"]["labels"])
    means = np.stack([x[y == c].mean(0) for c in range(10)])
    distances = np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(10, dtype=bool)]
    assert distances.min() > 0.3


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_samples=5), "num_samples"), (dict(train_split=1.0), "train_split"),
    (dict(padding=(60, 36)), "padding"), (dict(final_seq_length=0), "final_seq_length"),
    (dict(corr_noise_sigma=0.0), "corr_noise_sigma"),
])
def test_mnist1d_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MNIST1DConfig(**kwargs)
