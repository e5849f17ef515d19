"""Self-contained loaders and base models of the ACM experiments (scripts/acm_experiment.py).

The data is read from the repository's ``data/`` folder: ``pact-zoo data fetch rotten_tomatoes minilm fashion_mnist
--dest data`` writes it (once, with a network).

* Rotten Tomatoes (``data/rotten_tomatoes``, parquet text/label) tokenised with the MiniLM folder's tokenizer to a
  fixed length; the base is ``data/all-MiniLM-L6-v2`` with a fresh 2-way classifier, fine-tuned here.
* Fashion-MNIST (``data/fashion_mnist``, parquet of PNG bytes) as ``[N, 1, 28, 28]`` floats; the base is a small timm
  ``VisionTransformer`` (28 px, patch 4: 49 patch tokens + class token) trained here from scratch.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parent.parent / "data"
MINILM = DATA / "all-MiniLM-L6-v2"
FMNIST_MEAN, FMNIST_STD = 0.286, 0.353
#: The Fashion-MNIST ViT: timm VisionTransformer at 28 px.
VIT_KWARGS = dict(img_size=28, patch_size=4, in_chans=1, num_classes=10, embed_dim=96, depth=4, num_heads=3,
                  mlp_ratio=4.0)


def _parquet(path: Path):
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pydict()


def text_split(split: str, max_length: int, limit: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """``input_ids``/``attention_mask`` ``[N, max_length]`` and ``labels`` ``[N]`` of a Rotten Tomatoes split (a
    seeded random subset of ``limit`` rows when given)."""
    from transformers import AutoTokenizer
    table = _parquet(DATA / "rotten_tomatoes" / f"{split}.parquet")
    order = np.random.default_rng(seed).permutation(len(table["label"]))[:limit]
    texts = [table["text"][i] for i in order]
    tokenizer = AutoTokenizer.from_pretrained(str(MINILM))
    enc = tokenizer(texts, max_length=max_length, truncation=True, padding="max_length", return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "labels": torch.tensor([table["label"][i] for i in order])}


def image_split(split: str, limit: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """``pixel_values`` ``[N, 1, 28, 28]`` (normalised) and ``labels`` ``[N]`` of a Fashion-MNIST split."""
    from PIL import Image
    table = _parquet(DATA / "fashion_mnist" / f"{split}.parquet")
    order = np.random.default_rng(seed).permutation(len(table["label"]))[:limit]
    images = np.stack([np.asarray(Image.open(io.BytesIO(table["image"][i]["bytes"]))) for i in order])
    pixels = (torch.from_numpy(images).float().div(255.0).unsqueeze(1) - FMNIST_MEAN) / FMNIST_STD
    return {"pixel_values": pixels, "labels": torch.tensor([table["label"][i] for i in order])}


def batches(data: dict[str, torch.Tensor], batch_size: int, shuffle: bool, seed: int = 0):
    """Dict batches of ``batch_size`` rows (the last one may be smaller)."""
    n = data["labels"].shape[0]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        rows = order[start:start + batch_size]
        yield {k: v[rows] for k, v in data.items()}


def build_vit():
    from timm.models.vision_transformer import VisionTransformer
    return VisionTransformer(**VIT_KWARGS)


def build_text_model():
    from transformers import AutoModelForSequenceClassification
    return AutoModelForSequenceClassification.from_pretrained(str(MINILM), num_labels=2)


def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of a ViT (``pixel_values``) or a HF classifier (``input_ids``) batch."""
    if "pixel_values" in batch:
        return model(batch["pixel_values"])
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@torch.no_grad()
def accuracy(model, data: dict[str, torch.Tensor], batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    for batch in batches(data, batch_size, shuffle=False):
        correct += int((logits_of(model, batch).argmax(-1) == batch["labels"]).sum())
    return correct / data["labels"].shape[0]
