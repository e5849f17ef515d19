"""``pact-zoo evaluate``: the speed/accuracy trade-off of a trained model.

Accuracy and mean FLOPs per sample at several thresholds and at full depth, written to JSON, with a plot of
accuracy against FLOPs, a histogram of the units executed and, for image models, a grid of the test images
that used the fewest and the most units.
"""
from __future__ import annotations

import argparse
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..halting import adaptive_stages, full_depth, set_decision, set_threshold
from ..cli import ArgumentParser
from .config import TrainConfig, add_config_arguments, config_from_args
from ..fileio import atomic_path, atomic_write_json
from .io import check_model_folder, folder_model_name, load_model_folder
from .loop import evaluate_model
from .tasks import ImageClassificationTask, TaskData, build_task

__all__ = ["evaluate_image_sample", "evaluate_sample", "evaluate_tradeoff", "has_sampled_stops", "load_image_sample",
           "main", "sample_check", "sampled_stops", "standard_error"]

TRADEOFF_JSON = "tradeoff.json"
TRADEOFF_PLOT = "tradeoff.png"
UNITS_HISTOGRAM = "units_hist.png"
IMAGE_GRID = "fewest_most_units.png"
GRID_IMAGES_PER_ROW = 8


def _halting_methods(model: nn.Module) -> set[str]:
    return {stage.method.name for _, stage in adaptive_stages(model) if stage.adaptive}


def has_sampled_stops(model: nn.Module) -> bool:
    """Whether every adaptive stage's method is stochastic (PACT: stops drawn from q(z | x)), and there is one."""
    stages = [stage for _, stage in adaptive_stages(model) if stage.adaptive]
    return bool(stages) and all(stage.method.stochastic for stage in stages)


@contextmanager
def sampled_stops(model: nn.Module, seed: int = 0) -> Iterator[nn.Module]:
    """Inside the block the stops are sampled (``set_decision(model, "sample")``, after ``torch.manual_seed(seed)``
    so that two evaluations draw the same stops); the deterministic rule again afterwards."""
    set_decision(model, "sample")
    try:
        torch.manual_seed(seed)
        yield model
    finally:
        set_decision(model, "greedy")


def depth_spread(units: torch.Tensor) -> Dict[str, list]:
    """How much the depth varies per input, per stage, from ``[N, S]`` units executed at the model's own rule:
    the standard deviation of the units and the share of samples away from the stage's most common depth (0: every
    input gets the same depth, a static network)."""
    units = units.long()
    modes = [int(torch.bincount(units[:, s]).argmax()) for s in range(units.shape[1])]
    return {"std": [float(units[:, s].double().std(unbiased=False)) for s in range(units.shape[1])],
            "away_from_mode": [float((units[:, s] != modes[s]).double().mean()) for s in range(units.shape[1])]}


def standard_error(accuracy: float, count: int) -> float:
    """Binomial standard error of an accuracy measured on ``count`` samples."""
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / max(count, 1))


def evaluate_tradeoff(model: nn.Module, task, loader: DataLoader, thresholds: Sequence[float]) -> Dict[str, Any]:
    """Trade-off points: one per threshold (methods with a threshold), the model's own rule, the model's own rule
    with sampled instead of deterministic stops (stochastic methods, ``rule`` suffixed ``:sampled``), and full
    depth."""
    methods = _halting_methods(model)
    stages = [stage for _, stage in adaptive_stages(model) if stage.adaptive]
    thresholded = bool(stages) and all(stage.method.has_threshold for stage in stages)
    own_threshold = stages[0].method.threshold if thresholded else None
    points = []
    if thresholded:
        rule = ",".join(sorted(methods))
        for threshold in sorted(set(thresholds) | {own_threshold}):
            set_threshold(model, threshold)
            points.append(dict(evaluate_model(model, loader, task), threshold=threshold, rule=rule))
        set_threshold(model, own_threshold)
        if has_sampled_stops(model):  # PACT's claim: the deterministic rule is no worse
            with sampled_stops(model):
                points.append(dict(evaluate_model(model, loader, task), threshold=own_threshold,
                                   rule=f"{rule}:sampled"))
    elif methods:
        points.append(dict(evaluate_model(model, loader, task), threshold=None, rule=",".join(sorted(methods))))
    with full_depth(model):
        full = dict(evaluate_model(model, loader, task), threshold=None, rule="full_depth")
    default = next((p for p in points if p["threshold"] == own_threshold and not p["rule"].endswith(":sampled")),
                   points[0] if points else full)
    return {"methods": sorted(methods), "threshold": own_threshold, "points": points, "full_depth": full,
            "default": default}


def load_image_sample(path: str) -> tuple[Any, Any]:
    """``images`` ``[N, H, W]`` (grey) or ``[N, H, W, C]`` uint8 and ``labels`` ``[N]`` class ids from a ``.npz``
    file (read without pickle), e.g. the committed test sample ``tests/data/fashion_mnist_test_first300.npz``."""
    import numpy as np

    if not Path(path).is_file():
        raise FileNotFoundError(f"image sample not found: {path} (a .npz with arrays 'images' and 'labels')")
    with np.load(path, allow_pickle=False) as data:
        if not {"images", "labels"} <= set(data.files):
            raise ValueError(f"image sample {path} must hold arrays 'images' and 'labels', got {sorted(data.files)}")
        images, labels = data["images"], data["labels"]
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or labels.shape != images.shape[:1]:
        raise ValueError(f"image sample {path}: 'images' must be uint8 [N, H, W] or [N, H, W, C] and 'labels' [N], "
                         f"got {images.dtype} {images.shape} and {labels.shape}")
    return images, labels


def evaluate_image_sample(model: nn.Module, images: Any, labels: Any) -> Dict[str, Any]:
    """:func:`sample_check` of ``model`` on a small image sample, preprocessed as a user would: timm's
    ``resolve_data_config`` + ``create_transform`` (eval) on each ``PIL`` image converted to the model's channels. One batch, so the result does not depend on a batch size.

    Args:
        images: uint8 ``[N, H, W]`` (grey) or ``[N, H, W, C]`` pixels.
        labels: ``[N]`` class ids.
    """
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from ..data.images import collate_images

    data_config = resolve_data_config(model=model)
    transform = create_transform(**data_config)
    mode = "RGB" if data_config["input_size"][0] == 3 else "L"
    rows = [{"pixel_values": transform(Image.fromarray(image).convert(mode)), "labels": int(label)}
            for image, label in zip(images, labels)]
    return sample_check(model, DataLoader(rows, batch_size=len(rows), collate_fn=collate_images),
                        ImageClassificationTask)


def sample_check(model: nn.Module, loader: DataLoader, task) -> Dict[str, Any]:
    """The numbers a card states for a committed sample: :func:`evaluate_model`'s accuracy, FLOPs and mean units at
    the model's own rule, plus the count of correct rows, the depth spread and the threshold the rule used."""
    result = evaluate_model(model.eval(), loader, task, keep_units=True)
    units = result.pop("units")
    result.pop("is_correct")
    stages = [stage for _, stage in adaptive_stages(model) if stage.adaptive]
    result["correct"] = round(result["accuracy"] * result["num_samples"])
    result["depth_spread"] = depth_spread(units)
    result["threshold"] = stages[0].method.threshold if stages and stages[0].method.has_threshold else None
    return result


#: threshold labels closer than this (fraction of the axes) to an already placed label are left out
LABEL_MIN_DISTANCE = 0.06
#: y-range padding around the adaptive points (fraction of their spread; at least 0.5 accuracy points)
Y_PADDING = 0.15


def _label_positions(xs: Sequence[float], ys: Sequence[float], xlim: tuple, ylim: tuple) -> list[bool]:
    """Which points get a text label: greedily keep points at least :data:`LABEL_MIN_DISTANCE` (in axes
    fractions) away from every labelled point, so labels do not pile up."""
    kept: list[tuple[float, float]] = []
    chosen = []
    for x, y in zip(xs, ys):
        fx = (x - xlim[0]) / ((xlim[1] - xlim[0]) or 1.0)
        fy = (y - ylim[0]) / ((ylim[1] - ylim[0]) or 1.0)
        ok = all(abs(fx - kx) > LABEL_MIN_DISTANCE or abs(fy - ky) > LABEL_MIN_DISTANCE for kx, ky in kept)
        if ok:
            kept.append((fx, fy))
        chosen.append(ok)
    return chosen


def tradeoff_figure(result: Dict[str, Any], title: str):
    """Accuracy against mean MFLOPs: the threshold points (labelled where they do not overlap), the sampled rule,
    and full depth. The y-range follows the adaptive points; full depth outside it is drawn as an arrow at the
    edge with its value, so it cannot squeeze the curve into a corner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    full = result["full_depth"]
    full_xy = (full["mean_flops"] / 1e6, 100 * full["accuracy"])
    points = [p for p in result["points"] if not p["rule"].endswith(":sampled")]
    sampled = [p for p in result["points"] if p["rule"].endswith(":sampled")]
    points = sorted(points, key=lambda p: p["mean_flops"])
    xs = [p["mean_flops"] / 1e6 for p in points]
    ys = [100 * p["accuracy"] for p in points]
    if points:
        ax.plot(xs, ys, "o-", label=f"adaptive ({points[0]['rule']}), labels: threshold")
    for p in sampled:
        ax.plot([p["mean_flops"] / 1e6], [100 * p["accuracy"]], "s", color="tab:orange", label="sampled stops")
    curve_y = ys + [100 * p["accuracy"] for p in sampled]
    if curve_y:
        low, high = min(curve_y), max(curve_y)
        pad = max(Y_PADDING * (high - low), 0.5)
        ylim = (low - pad, min(high + pad, 100.0 + pad))
    else:
        ylim = (full_xy[1] - 1.0, full_xy[1] + 1.0)
    all_x = xs + [p["mean_flops"] / 1e6 for p in sampled] + [full_xy[0]]
    xpad = 0.05 * ((max(all_x) - min(all_x)) or max(all_x) or 1.0)
    xlim = (min(all_x) - xpad, max(all_x) + xpad)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    for p, x, y, label in zip(points, xs, ys, _label_positions(xs, ys, xlim, ylim)):
        if label and p["threshold"] is not None:
            ax.annotate(f"{p['threshold']:g}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    full_label = f"full depth ({full_xy[1]:.2f}%)"
    if ylim[0] <= full_xy[1] <= ylim[1]:
        ax.plot([full_xy[0]], [full_xy[1]], "k*", markersize=10, label=full_label)
    else:  # outside the curve's range: an arrow at the edge instead of stretching the axis
        edge = ylim[1] if full_xy[1] > ylim[1] else ylim[0]
        ax.plot([full_xy[0]], [edge], "k^" if full_xy[1] > ylim[1] else "kv", markersize=8, clip_on=False,
                label=f"{full_label}, off the scale")
    ax.set_xlabel("mean MFLOPs per sample")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _plot_tradeoff(result: Dict[str, Any], path: Path, title: str) -> None:
    _save_figure(tradeoff_figure(result, title), path)


#: inches per stage panel of the units histogram, and the least width that holds its title on one line
HISTOGRAM_PANEL_WIDTH, HISTOGRAM_MIN_WIDTH = 3.0, 5.5


def units_histogram_figure(units: torch.Tensor, num_units: Sequence[int], rule: str):
    """One histogram per stage of the units executed per sample (``units`` ``[N, S]``), as a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = units.shape[1]
    width = max(HISTOGRAM_PANEL_WIDTH * stages, HISTOGRAM_MIN_WIDTH)
    fig, axes = plt.subplots(1, stages, figsize=(width, 3.0), squeeze=False)
    for s in range(stages):
        ax = axes[0, s]
        bins = torch.arange(0.5, max(num_units[s], int(units[:, s].max())) + 1.5)
        ax.hist(units[:, s].numpy(), bins=bins.numpy(), color="tab:blue", edgecolor="white")
        ax.set_title(f"stage {s + 1}", fontsize=9)
        ax.set_xlabel("units executed")
    axes[0, 0].set_ylabel("samples")
    fig.suptitle(f"units executed per test sample at {rule}", fontsize=9)
    fig.tight_layout()
    return fig


def _plot_units_histogram(units: torch.Tensor, num_units: Sequence[int], path: Path, rule: str) -> None:
    _save_figure(units_histogram_figure(units, num_units, rule), path)


def _plot_image_grid(images: Dict[int, Any], labels: Dict[int, str], fewest: list[int], most: list[int],
                     units: torch.Tensor, path: Path, rule: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, GRID_IMAGES_PER_ROW, figsize=(1.3 * GRID_IMAGES_PER_ROW, 3.6), squeeze=False)
    for row, (label, indices) in enumerate((("fewest units", fewest), ("most units", most))):
        for col in range(GRID_IMAGES_PER_ROW):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(indices):
                ax.imshow(images[indices[col]].convert("RGB"))
                ax.set_title(f"units: {int(units[indices[col]].sum())}\ntrue: {labels[indices[col]]}", fontsize=7)
        axes[row, 0].text(-0.1, 0.5, label, transform=axes[row, 0].transAxes, rotation=90, va="center",
                          ha="right", fontsize=8)
    fig.suptitle(f"test images by total units executed at {rule} (true label below the units)", fontsize=9)
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


def model_num_classes(model: nn.Module) -> Optional[int]:
    """Output classes of a timm (``num_classes``) or transformers (``config.num_labels``) classifier."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "num_labels", None) is not None:
        return int(config.num_labels)
    return getattr(model, "num_classes", None)


def check_classes(model: nn.Module, class_names: Sequence[str], dataset: str) -> None:
    """Raise ValueError when the model's number of classes differs from the dataset's."""
    classes = model_num_classes(model)
    if classes is not None and classes != len(class_names):
        raise ValueError(f"the model has {classes} classes but dataset {dataset!r} has {len(class_names)}: evaluate "
                         f"on the data the model was trained on (--dataset, or --config <run>/train_config.json)")


def run_evaluation(model: nn.Module, config: TrainConfig, output_dir: Path,
                   thresholds: Optional[Sequence[float]] = None, task: Any = None,
                   data: Optional[TaskData] = None) -> Dict[str, Any]:
    """Evaluate ``model`` on ``config``'s eval split; write the JSON and plots into ``output_dir``. ``task`` and
    ``data``: the config's task and its data for ``model``, when the caller has them already."""
    task = task if task is not None else build_task(config)
    data = data if data is not None else task.load_data(model)
    check_classes(model, data.class_names, config.dataset)
    output_dir.mkdir(parents=True, exist_ok=True)
    loader = DataLoader(data.eval, batch_size=config.eval_batch_size, shuffle=False, collate_fn=data.collate_fn,
                        num_workers=config.num_workers)
    model.eval()
    result = evaluate_tradeoff(model, task, loader, thresholds or config.eval_thresholds)
    result.update(model=config.model, dataset=config.dataset)
    units = evaluate_model(model, loader, task, keep_units=True)["units"]
    stages = [stage for _, stage in adaptive_stages(model)]
    _plot_tradeoff(result, output_dir / TRADEOFF_PLOT, f"{config.model} on {config.dataset}")
    rule = _rule_name(result)
    _plot_units_histogram(units, [s.num_units for s in stages], output_dir / UNITS_HISTOGRAM, rule)
    plots = [TRADEOFF_PLOT, UNITS_HISTOGRAM]
    if task.kind == "image" and data.raw_eval is not None:
        raw, image_column, label_column = data.raw_eval
        order = torch.argsort(units.sum(1), stable=True).tolist()
        count = min(GRID_IMAGES_PER_ROW, len(order))
        rows = {i: raw[i] for i in order[:count] + order[-count:]}
        images = {i: row[image_column] for i, row in rows.items()}
        labels = {i: data.class_names[int(row[label_column])] for i, row in rows.items()}
        _plot_image_grid(images, labels, order[:count], order[::-1][:count], units, output_dir / IMAGE_GRID, rule)
        plots.append(IMAGE_GRID)
    result["plots"] = plots
    result["units_histogram"] = [torch.bincount(units[:, s], minlength=stages[s].num_units + 1)[1:].tolist()
                                 for s in range(units.shape[1])]  # counts of 1, 2, ... units
    result["depth_spread"] = depth_spread(units)
    atomic_write_json(output_dir / TRADEOFF_JSON, result)
    return result


def evaluate_sample(model: nn.Module, fields: Dict[str, Any]) -> Dict[str, Any]:
    """:func:`sample_check` of ``model`` on the eval split that the config ``fields`` (``model``, ``dataset``, ``data_files``,
    ``eval_split``, ``image_size``, ``dataset_kwargs``, ...) describe: the check a shipped adapter's card states
    for a committed sample of its test set."""
    from .config import load_config

    config = load_config(None, fields)
    task = build_task(config)
    data = task.load_data(model)
    check_classes(model, data.class_names, config.dataset)
    loader = DataLoader(data.eval, batch_size=config.eval_batch_size, shuffle=False, collate_fn=data.collate_fn)
    return sample_check(model, loader, task)


def _rule_name(result: Dict[str, Any]) -> str:
    """The model's own rule, e.g. ``threshold 0.5 (pact)``."""
    methods = ",".join(result["methods"]) or "full depth"
    return f"threshold {result['threshold']:g} ({methods})" if result["threshold"] is not None else methods


def format_table(result: Dict[str, Any]) -> str:
    """A short text table of the trade-off points."""
    rows = [("rule", "threshold", "accuracy", "MFLOPs", "vs full", "units per stage")]
    for p in result["points"] + [result["full_depth"]]:
        rows.append((p["rule"], "-" if p["threshold"] is None else f"{p['threshold']:g}", f"{100 * p['accuracy']:.2f}%",
                     f"{p['mean_flops'] / 1e6:.4g}", f"{p['flops_ratio']:.3f}",
                     " / ".join(f"{u:.2f}" for u in p["mean_units"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)
    spread = result.get("depth_spread")
    if spread:
        table += ("\nper-input depth at the model's rule: share away from the modal depth "
                  + " / ".join(f"{a:.2f}" for a in spread["away_from_mode"]) + ", std "
                  + " / ".join(f"{v:.2f}" for v in spread["std"]))
    return table


#: config fields ``pact-zoo evaluate`` takes (the data and the evaluation; the model comes from --model-dir)
EVALUATE_FIELDS = ("dataset", "data_dir", "data_files", "eval_split", "image_column", "label_column",
                   "dataset_kwargs", "max_eval_samples", "eval_batch_size", "eval_thresholds", "num_workers",
                   "image_size")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo evaluate", description=__doc__)
    parser.add_argument("--model-dir", required=True, help="model folder (e.g. <output_dir>/model of a run)")
    parser.add_argument("--eval-dir", help="where to write tradeoff.json and plots (default: <model-dir>/../eval)")
    add_config_arguments(parser, EVALUATE_FIELDS, title="data and evaluation (default: the run's config)")
    parser.set_defaults(config=None)
    for action in parser._actions:
        if action.dest == "config":
            action.help = ("the run's train_config.json or a recipe, for the data (default: "
                           "<model-dir>/../train_config.json when the folder is inside its run)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    model_dir = check_model_folder(args.model_dir, "--model-dir")
    run_config = model_dir.parent / "train_config.json"
    if args.config is None and run_config.is_file():
        args.config = str(run_config)
    if args.config is None and not hasattr(args, "dataset"):
        raise ValueError(f"--dataset is required: {model_dir} is not inside its run folder (no "
                         f"{run_config.name} beside it), so the evaluation data is unknown; pass --dataset "
                         f"(e.g. digits, parquet:<dir>) or --config <run>/train_config.json")
    config = config_from_args(args, {"model": folder_model_name(model_dir)})
    model = load_model_folder(model_dir)
    eval_dir = Path(args.eval_dir) if args.eval_dir else model_dir.parent / "eval"
    result = run_evaluation(model, config, eval_dir)
    print(format_table(result))
    print(f"wrote {eval_dir / TRADEOFF_JSON} and the plots {', '.join(result.get('plots', []))} in {eval_dir}; "
          f"next: pact-zoo export --model-dir {model_dir} --output-dir {model_dir.parent / 'hub'}")
    return 0
