"""``pact-zoo export``: a hub-ready folder — ``model.safetensors``, ``config.json``, a ``README.md`` model card
filled from the evaluation JSON and the variant's card (``hub_configs/<variant>/card.yaml``), and the plots.

timm folders load with ``timm.create_model("local-dir:<folder>", pretrained=True)`` and with transformers'
``AutoModelForImageClassification.from_pretrained(<folder>)``; Hugging Face folders with ``from_pretrained``.

With ``--adapter-only`` (a model converted with its backbone frozen) the folder holds a halting adapter instead of
``model.safetensors``: the new weights, the backbone's id and the hash of its weights (``pact_zoo.adapters``); it
loads with ``pact_zoo.load_adapter(<folder>)``, which fetches the backbone.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from .cli import ArgumentParser, one_line
from .training.config import RETIRED_KEYS
from .training.evaluate import evaluate_image_sample, format_table, load_image_sample
from .fileio import atomic_directory
from .training.io import check_model_folder, is_timm_folder, load_model_folder, save_model_folder

__all__ = ["export_folder", "build_model_card", "main", "CARD_TAGS"]

CARD_TAGS = ["adaptive-computation", "pact"]
#: card.yaml keys that fill the model card
CARD_KEYS = ("model_name", "description", "dataset", "task", "tags", "license", "recipe", "base_model",
             "sample_check", "pretrained_tag", "sample", "usage")
#: card.yaml keys kept as the variant's notes (architecture, results, ...) and not written into the card
CARD_NOTE_KEYS = ("architecture", "backbone", "data_config", "halting", "library_name", "results", "status")
#: files an export writes besides the model's own (weights, config) and the plots
EXPORT_MARKERS = ("README.md", "tradeoff.json")
#: the card's ``sample`` result: accuracy and FLOPs ratio on a small committed test sample
SAMPLE_EVAL_JSON = "sample_eval.json"


def _load_card(path: Optional[str]) -> Dict[str, Any]:
    if path is None:
        return {}
    if not Path(path).is_file():
        raise FileNotFoundError(f"card file not found: {path}")
    from .training.config import YamlLoader

    card = yaml.load(Path(path).read_text(), Loader=YamlLoader) or {}
    if not isinstance(card, dict):
        raise ValueError(f"card file {path} must hold a mapping, got {type(card).__name__}")
    unknown = sorted(set(card) - set(CARD_KEYS) - set(CARD_NOTE_KEYS))
    if unknown:
        raise ValueError(f"--card {path}: unknown key(s) {unknown}; the card reads {', '.join(CARD_KEYS)} "
                         f"(and keeps {', '.join(CARD_NOTE_KEYS)} as notes)")
    return card


def _check_output_dir(output: Path) -> None:
    """Refuse an ``--output-dir`` that is a file, or a non-empty folder that is not a previous export (an export
    replaces the whole folder)."""
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output-dir {output} is a file, not a folder")
    if output.is_dir() and any(output.iterdir()) and not all((output / name).is_file() for name in EXPORT_MARKERS):
        raise FileExistsError(f"--output-dir {output} is not empty and holds no previous export (no "
                              f"{' / '.join(EXPORT_MARKERS)}); an export replaces the whole folder, so give a new or "
                              f"empty folder")


def is_hub_dataset(name: str) -> bool:
    """Whether ``name`` is a hub dataset id (``org/name``), not a local source or a bundled / generated set."""
    return "/" in name and ":" not in name and not name.startswith((".", "/"))


def _usage(timm_model: bool, folder_name: str, repo_id: Optional[str], threshold: Optional[float],
           model_name: str, adapter: Optional[Dict[str, Any]] = None, pretrained_tag: Optional[str] = None) -> str:
    knob = f"\npact_zoo.set_threshold(model, {threshold})  # speed/accuracy knob" if threshold is not None else ""
    if adapter is not None:
        backbone = adapter["backbone"]["id"] or adapter["backbone"]["path"]
        hub = (f'model = pact_zoo.load_adapter(snapshot_download("{repo_id}"))  # from the hub' if repo_id else
               f'# after uploading (pact-zoo export ... --adapter-only --push-to-hub <user>/{model_name}):\n'
               f'# model = pact_zoo.load_adapter(snapshot_download("<user>/{model_name}"))')
        return (f'import pact_zoo\nfrom huggingface_hub import snapshot_download\n'
                f'model = pact_zoo.load_adapter("{folder_name}")  # this folder; fetches the backbone {backbone} '
                f'(or pass backbone=<local folder>) and checks its hash\n{hub}{knob}')
    if timm_model and pretrained_tag:
        return (f'import pact_zoo, timm\nmodel = timm.create_model("{pretrained_tag}", pretrained=True)  '
                f'# shipped with pact_zoo: offline{knob}{TIMM_PREDICT}')
    if timm_model:
        hub = (f'model = timm.create_model("hf-hub:{repo_id}", pretrained=True)  # from the hub' if repo_id else
               f'# after uploading (pact-zoo export ... --push-to-hub <user>/{model_name}):\n'
               f'# model = timm.create_model("hf-hub:<user>/{model_name}", pretrained=True)')
        return (f'import pact_zoo, timm\nmodel = timm.create_model("local-dir:{folder_name}", pretrained=True)  '
                f'# this folder (its path from where you run, or an absolute path)\n{hub}{knob}{TIMM_PREDICT}')
    source = repo_id or folder_name
    return ('import pact_zoo\nfrom transformers import AutoModelForSequenceClassification, AutoTokenizer\n'
            f'model = AutoModelForSequenceClassification.from_pretrained("{source}")  '
            f'# {"the hub repo" if repo_id else "this folder (its path from where you run), or its hub repo"}'
            f'{knob}\ntokenizer = AutoTokenizer.from_pretrained("{source}")  # saved with the model\n'
            'logits = model(**tokenizer(["an unexpectedly moving film"], return_tensors="pt")).logits\n'
            'print(model.config.id2label[int(logits.argmax())])  # the class names of the training data')


#: what a timm card's usage adds after the load: the preprocessing the model was trained with, and the class names
TIMM_PREDICT = (
    "\n\nfrom PIL import Image\n"
    "config = timm.data.resolve_data_config(model=model)  # input size, mean / std the model was trained with\n"
    "transform = timm.data.create_transform(**config)\n"
    'logits = model.eval()(transform(Image.open("image.png").convert("RGB")).unsqueeze(0))\n'
    'names = model.pretrained_cfg.get("label_names")  # the class names of the training data, when it had them\n'
    "print(names[int(logits.argmax())] if names else int(logits.argmax()))")


def _image_sample_section(card: Dict[str, Any], sample_eval: Optional[Dict[str, Any]]) -> list[str]:
    """The card's lines on the committed image sample the export evaluated (none without one)."""
    if sample_eval is None:
        return []
    sample = card["sample"]
    rule = "full depth" if sample_eval["threshold"] is None else f"threshold {sample_eval['threshold']:g}"
    return [
        "## Accuracy on the committed test sample", "",
        f"On {sample.get('description', 'the sample')} (`{sample['path']}`), at the model's own rule ({rule}): "
        f"**{sample_eval['correct']} / {sample_eval['num_samples']} correct = {100 * sample_eval['accuracy']:.2f} %**, "
        f"FLOPs ratio {sample_eval['flops_ratio']:.4f} of full depth, units per stage "
        + " / ".join(f"{u:.2f}" for u in sample_eval["mean_units"]) + ". Preprocessing: timm's "
        "`resolve_data_config(model=model)` + `create_transform(...)` on each image converted to RGB, one batch. "
        f"The numbers are in `{SAMPLE_EVAL_JSON}`; pact_zoo's tests reload this model and reproduce them.", "",
    ]


def build_model_card(card: Dict[str, Any], evaluation: Dict[str, Any], timm_model: bool, model_name: str,
                     training_config: Optional[Dict[str, Any]] = None, repo_id: Optional[str] = None,
                     folder_name: Optional[str] = None, adapter: Optional[Dict[str, Any]] = None,
                     base_model: Optional[str] = None, sample_eval: Optional[Dict[str, Any]] = None):
    """A ``huggingface_hub.ModelCard`` with metadata (library, tags, datasets, base model, pipeline tag, metrics)
    and the trade-off table.

    ``datasets`` metadata is only set for hub dataset ids; ``base_model`` is the card's, else the given one (the
    source's or backbone's hub id). The usage names the card's ``pretrained_tag`` (a tag shipped with pact_zoo) when
    given, else ``repo_id`` when given, and the folder (``folder_name``) for local loading; ``adapter`` (a halting
    adapter's ``halting_adapter.json``) gives the adapter's usage. A card's ``sample_check`` (the model's accuracy and
    FLOPs ratio on a committed sample of the test set, measured beforehand) is written to the metadata as
    ``pact_zoo_sample_check`` and stated in the text; ``sample_eval`` (:func:`~pact_zoo.training.evaluate.
    evaluate_image_sample` on the card's ``sample``, measured by the export) adds the same for an image sample. A
    card's ``usage`` (Python source) replaces the generated usage, for models whose inputs are not a tokenizer's or
    timm's (e.g. the PACT-LSTM on feature frames)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    default = evaluation["default"]
    full = evaluation["full_depth"]
    dataset = card.get("dataset", evaluation.get("dataset", "unknown"))
    task_type = card.get("task", "image-classification" if timm_model else "text-classification")
    metrics = [("accuracy", default["accuracy"]), ("mean_flops", default["mean_flops"]),
               ("flops_ratio", default["mean_flops"] / full["mean_flops"])]
    tags = list(dict.fromkeys(CARD_TAGS + list(card.get("tags", [])) + (["timm"] if timm_model else [])))
    data = ModelCardData(
        model_name=model_name,
        library_name="timm" if timm_model else "transformers",
        license=card.get("license", "apache-2.0"),
        tags=tags,
        datasets=[dataset] if is_hub_dataset(dataset) else None,
        metrics=["accuracy"],
        pipeline_tag=task_type,
        eval_results=[EvalResult(task_type=task_type, dataset_type=dataset, dataset_name=dataset,
                                 metric_type=name, metric_value=float(value)) for name, value in metrics],
        base_model=card.get("base_model", base_model),
        threshold=evaluation.get("threshold"),
        halting_methods=evaluation.get("methods"),
        full_depth_flops=float(full["mean_flops"]),
        pact_zoo_sample_check=card.get("sample_check"),
    )
    usage = card.get("usage") or _usage(timm_model, folder_name or model_name, repo_id, evaluation.get("threshold"),
                                        model_name, adapter, card.get("pretrained_tag"))
    plots = "\n".join(f"![{p}]({p})" for p in evaluation.get("plots", []))
    body = "\n".join([
        "---", data.to_yaml(), "---", "", f"# {model_name}", "",
        card.get("description", "An adaptive-computation model trained with pact_zoo."), "",
        "## Speed / accuracy trade-off", "",
        f"Mean FLOPs per sample at the default rule: {default['mean_flops'] / 1e6:.2f} M "
        f"({default['mean_flops'] / full['mean_flops']:.3f} of full depth, {full['mean_flops'] / 1e6:.2f} M); "
        f"accuracy {100 * default['accuracy']:.2f} % (full depth {100 * full['accuracy']:.2f} %).", "",
        "Full depth is the same trained weights with every unit run and no halting head (`pact_zoo.full_depth`): "
        "the top of the budget range, not a separately trained network. "
        + (f"Evaluated on the {dataset!r} test split" if is_hub_dataset(dataset) else
           f"Evaluated on the test split of `{dataset}` (a pact_zoo dataset source, not a hub dataset)")
        + (f", {full['num_samples']:,} {'images' if timm_model else 'examples'}." if "num_samples" in full else "."),
        "",
        "```", format_table(evaluation), "```", "", plots, "",
        *(_adapter_section(adapter) if adapter is not None else []),
        *(_sample_section(card["sample_check"]) if card.get("sample_check") else []),
        *_image_sample_section(card, sample_eval),
        "## Training recipe", "", "```yaml",
        yaml.safe_dump(training_config or card.get("recipe", {}), sort_keys=False).strip(), "```",
        "", "## Usage", "", "```python", usage, "```", "",
        "## Citation", "", "```bibtex",
        "@article{figurnov2018pact,\n  title={Probabilistic Adaptive Computation Time},\n"
        "  author={Figurnov, Michael and Sobolev, Artem and Vetrov, Dmitry},\n"
        "  journal={Bulletin of the Polish Academy of Sciences: Technical Sciences},\n"
        "  volume={66}, number={6}, pages={811--820}, year={2018}\n}", "```", "",
    ])
    return ModelCard(body)


def _adapter_section(adapter: Dict[str, Any]) -> list[str]:
    backbone = adapter["backbone"]
    return ["## Halting adapter", "",
            f"Only the weights this model adds ({len(adapter['weights'])} tensors: halting heads, exits, classifier) "
            f"are in this folder; the backbone `{backbone['id'] or backbone['path']}` is fetched when the model loads "
            f"and must hash to `{backbone['sha256']}` (its tensors' names, dtypes, shapes and bytes), else loading "
            f"stops with an error naming it.", ""]


def _sample_section(check: Dict[str, Any]) -> list[str]:
    return ["## Check on a committed test sample", "",
            f"On `{check['sample']}` ({check['rows']} test rows, {check['indices']}): accuracy "
            f"{100 * check['correct'] / check['rows']:.2f} % ({check['correct']} / {check['rows']}), FLOPs ratio "
            f"{check['flops_ratio']:.4f} of full depth at threshold {check['threshold']:g}; the repository's tests "
            f"reproduce both.", ""]


def export_folder(model_dir: str, output_dir: str, eval_dir: Optional[str] = None, card_path: Optional[str] = None,
                  model_name: Optional[str] = None, repo_id: Optional[str] = None, adapter_only: bool = False,
                  backbone: Optional[str] = None, backbone_id: Optional[str] = None) -> Path:
    """Write the hub-ready folder atomically (folders 0755, files 0644 under the usual umask) and return its path.

    ``repo_id`` (the upload target, if any) fills the card's usage. With ``adapter_only`` the weights are a halting
    adapter (``pact_zoo.save_adapter``): ``backbone`` is the backbone's local folder or file (needed for timm
    models, checked against the model's backbone), ``backbone_id`` its hub id or timm ``name.tag``."""
    if not adapter_only and (backbone is not None or backbone_id is not None):
        raise ValueError("--backbone / --backbone-id are only read with --adapter-only")
    model_dir_path = check_model_folder(model_dir, "--model-dir")
    eval_path = Path(eval_dir) if eval_dir else model_dir_path.parent / "eval"
    if not (eval_path / "tradeoff.json").is_file():
        raise FileNotFoundError(f"no evaluation at {eval_path / 'tradeoff.json'}: run 'pact-zoo evaluate "
                                f"--model-dir {model_dir_path}' first, or pass --eval-dir")
    evaluation = json.loads((eval_path / "tradeoff.json").read_text())
    card = _load_card(card_path)
    _check_output_dir(Path(output_dir))
    model = load_model_folder(model_dir_path)
    timm_model = is_timm_folder(model_dir_path)
    sample_eval = None
    if card.get("sample") is not None:
        if not (isinstance(card["sample"], dict) and "path" in card["sample"]):
            raise ValueError(f"--card {card_path}: 'sample' must be a mapping with 'path' (a .npz of 'images' and "
                             f"'labels') and an optional 'description', got {card['sample']!r}")
        sample_eval = evaluate_image_sample(model, *load_image_sample(card["sample"]["path"]))
    name = model_name or card.get("model_name") or Path(output_dir).name
    output = Path(output_dir)
    adapter, base_model = None, _base_model(model)
    with atomic_directory(output) as tmp:
        weights = tmp / "weights"
        if adapter_only:
            from .adapters import save_adapter
            from .hf.halting_adapter import ADAPTER_CONFIG

            save_adapter(model, weights, backbone=backbone, backbone_id=backbone_id)
            adapter = json.loads((weights / ADAPTER_CONFIG).read_text())
            base_model = _hub_model_id(adapter["backbone"]["id"], timm_model) or base_model
        else:
            save_model_folder(model, weights)
        for item in weights.iterdir():
            shutil.move(str(item), tmp / item.name)
        weights.rmdir()
        for plot in evaluation.get("plots", []):
            if (eval_path / plot).is_file():
                shutil.copy2(eval_path / plot, tmp / plot)
        shutil.copy2(eval_path / "tradeoff.json", tmp / "tradeoff.json")
        train_config_path = model_dir_path.parent / "train_config.json"
        training_config = json.loads(train_config_path.read_text()) if train_config_path.is_file() else None
        if training_config is not None:  # older runs recorded test-only fields
            training_config = {k: v for k, v in training_config.items() if k not in RETIRED_KEYS}
        if sample_eval is not None:
            (tmp / SAMPLE_EVAL_JSON).write_text(json.dumps(dict(sample_eval, sample=card["sample"]["path"]),
                                                           indent=2) + "\n")
        build_model_card(card, evaluation, timm_model, name, training_config, repo_id=repo_id,
                         folder_name=output.name, adapter=adapter, base_model=base_model,
                         sample_eval=sample_eval).save(tmp / "README.md")
    return output


def _hub_model_id(name: Optional[str], timm_model: bool) -> Optional[str]:
    """A backbone's hub id: Hugging Face ids as they are, timm ``name.tag`` as ``timm/name.tag``; None for a local
    path or no name."""
    if not name or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return f"timm/{name}" if timm_model and "/" not in name else name


def _base_model(model) -> Optional[str]:
    """The hub id of the model a pact_zoo model was built from: the recorded backbone of a Hugging Face model,
    timm's ``hf_hub_id`` of the pretrained cfg (for the adaptive timm families, their backbone's weights)."""
    config = getattr(model, "config", None)
    if config is not None:
        return _hub_model_id(getattr(config, "backbone_source", None), timm_model=False)
    hub_id = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    return hub_id.rstrip("/") if hub_id else None


def check_repo_id(repo_id: str) -> str:
    """Raise ValueError unless ``repo_id`` is a hub repo id ``<user or org>/<name>``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ValueError(f"--push-to-hub must be a hub repo id '<user or org>/<name>', got {repo_id!r} ({exc})") \
            from None
    if "/" not in repo_id:
        raise ValueError(f"--push-to-hub must be a hub repo id '<user or org>/<name>', got {repo_id!r}")
    return repo_id


def push_to_hub(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload the folder with huggingface_hub (needs the network and a token); a failed upload raises a one-line
    ``ConnectionError`` that names the hub, the repo and the folder left on disk."""
    from huggingface_hub import HfApi
    from huggingface_hub.constants import HF_HUB_OFFLINE

    hint = f"the exported folder {folder} is complete; upload it later with --push-to-hub {repo_id}"
    if HF_HUB_OFFLINE:
        raise ConnectionError(f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded to the "
                              f"Hugging Face hub; {hint}")
    api = HfApi()
    try:
        api.create_repo(repo_id, exist_ok=True, private=private)
        return api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                                 commit_message="Upload pact_zoo model").commit_url
    except Exception as exc:  # network, authentication and permission errors of huggingface_hub / requests
        raise ConnectionError(f"--push-to-hub {repo_id}: upload to the Hugging Face hub failed "
                              f"({type(exc).__name__}: {one_line(exc)[:300]}); check the network and your token "
                              f"(huggingface-cli login); {hint}") from exc


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="pact-zoo export", description=__doc__)
    parser.add_argument("--model-dir", required=True, help="trained model folder (<output_dir>/model)")
    parser.add_argument("--eval-dir", help="folder with tradeoff.json and plots (default: <model-dir>/../eval)")
    parser.add_argument("--card", help="card metadata YAML, e.g. hub_configs/pact_resnet32.digits/card.yaml")
    parser.add_argument("--output-dir", required=True,
                        help="hub-ready folder to write: new, empty, or a previous export (replaced as a whole)")
    parser.add_argument("--model-name", help="name in the card (default: from the card, else the folder name)")
    parser.add_argument("--adapter-only", action="store_true",
                        help="write a halting adapter (the new weights, the backbone's id and hash) instead of the "
                             "full weights: for a model converted with its backbone frozen")
    parser.add_argument("--backbone", help="with --adapter-only: the backbone's local folder or .safetensors file")
    parser.add_argument("--backbone-id",
                        help="with --adapter-only: the backbone's hub id (org/name) or timm name.tag")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this hub repo")
    parser.add_argument("--private", action="store_true", help="create the hub repo as private")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.push_to_hub:
        check_repo_id(args.push_to_hub)
    folder = export_folder(args.model_dir, args.output_dir, args.eval_dir, args.card, args.model_name,
                           repo_id=args.push_to_hub, adapter_only=args.adapter_only, backbone=args.backbone,
                           backbone_id=args.backbone_id)
    print(f"exported {folder}")
    if args.push_to_hub:
        print(f"pushed: {push_to_hub(folder, args.push_to_hub, args.private)}")
    return 0
