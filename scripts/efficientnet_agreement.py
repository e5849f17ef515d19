"""Full-depth agreement of pact_efficientnet_lite0 with timm's tf_efficientnet_lite0 on real photos.

Both models load the same ImageNet checkpoint (timm key layout) through ``pretrained_cfg_overlay=dict(file=...)``;
the photos ship with installed packages (matplotlib's ``grace_hopper.jpg``, scikit-learn's ``china.jpg`` and
``flower.jpg``) and go through ``resolve_data_config`` + ``create_transform`` of each model. Prints, per photo, both
top-5 predictions and the max abs logit difference at full depth, as a markdown table.

    PYTHONPATH=$PWD python scripts/efficientnet_agreement.py --weights data/tf_efficientnet_lite0/model.safetensors
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

import pact_zoo


def photos() -> dict[str, Image.Image]:
    """The sample photos installed with matplotlib and scikit-learn."""
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    images = {"grace_hopper.jpg": Image.open(hopper).convert("RGB")}
    for name in ("china.jpg", "flower.jpg"):
        images[name] = Image.fromarray(load_sample_image(name))
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="data/tf_efficientnet_lite0/model.safetensors",
                        help="timm checkpoint (pact-zoo data fetch efficientnet_lite0 --dest data writes the default)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overlay = dict(file=str(Path(args.weights).resolve()))
    plain = timm.create_model("tf_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    model = timm.create_model("pact_efficientnet_lite0", pretrained=True, pretrained_cfg_overlay=overlay).eval()
    info = ImageNetInfo()
    transforms = [create_transform(**resolve_data_config(model=m)) for m in (plain, model)]
    print("| photo | timm top-5 | pact_efficientnet_lite0 (full depth) top-5 | same top-5 | max abs logit diff |")
    print("|---|---|---|---|---|")
    for name, image in photos().items():
        x_plain, x_pact = (t(image).unsqueeze(0) for t in transforms)
        assert torch.equal(x_plain, x_pact), "the two data configs differ"
        with torch.no_grad():
            expected = plain(x_plain)
            with pact_zoo.full_depth(model):
                logits = model(x_pact)
        top_plain, top_pact = expected.topk(5).indices[0].tolist(), logits.topk(5).indices[0].tolist()
        label = lambda idx: f"{info.index_to_description(idx).split(',')[0]} ({100 * p[idx]:.1f} %)"  # noqa: E731
        p = expected.softmax(-1)[0]
        names_plain = ", ".join(label(i) for i in top_plain)
        p = logits.softmax(-1)[0]
        names_pact = ", ".join(label(i) for i in top_pact)
        diff = (logits - expected).abs().max().item()
        print(f"| {name} | {names_plain} | {names_pact} | {top_plain == top_pact} | {diff:.2e} |")


if __name__ == "__main__":
    main()
