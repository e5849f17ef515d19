#!/usr/bin/env python
"""The bad-input tally: try a broad set of bad inputs (CLI flags, configs, model kwargs, tensors, files) and classify
each outcome.

* ``clear``: the CLI prints one line ``error: ...`` (exit status 2, no traceback), or the API raises / warns with a
  one-line message; in both cases the message names the case's keyword (the argument, and what was expected).
* ``unclear``: it fails, but with a traceback, several lines, or a message that does not name the keyword.
* ``silent``: it runs on without a word.
* ``works`` / ``broken``: inputs that look bad but must work (batch size 1, pandas parquet): did they?

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python scripts/bad_inputs.py [--json out/bad_inputs.json] [-v]

Offline (HF_HUB_OFFLINE=1); about a minute on one thread.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TINY_KWARGS = "{layers: [2, 2, 2], channels: [4, 8, 8]}"
TRAIN_BASE = ["--model", "pact_resnet32", "--model-kwargs", TINY_KWARGS, "--dataset", "digits", "--epochs", "1",
              "--batch-size", "16", "--max-train-samples", "32", "--max-eval-samples", "16", "--eval-batch-size", "16"]


class Case:
    def __init__(self, group: str, name: str, keyword, run: Callable[[], Any], expect: str = "error") -> None:
        self.group, self.name, self.run, self.expect = group, name, run, expect
        self.keywords = [keyword] if isinstance(keyword, str) else list(keyword)


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def cli(*argv: str):
    """Run ``pact-zoo <argv>`` in this process; returns (status, stdout, stderr)."""
    from pact_zoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # a real bug escapes run_command with its traceback
            traceback.print_exc()
            status = 1
    _reset_accelerate()
    return status, out.getvalue(), err.getvalue()


def classify(case: Case) -> tuple[str, str]:
    """(outcome, message) of one case."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = case.run()
        except Exception as exc:  # API case raised
            text = f"{type(exc).__name__}: {exc}"
            if case.expect == "works":
                return "broken", text.splitlines()[0][:300]
            lines = str(exc).strip().splitlines()
            ok = len(lines) == 1 and all(k.lower() in lines[0].lower() for k in case.keywords)
            return ("clear" if ok else "unclear"), text[:300].replace("\n", " | ")
    if isinstance(result, tuple) and len(result) == 3 and isinstance(result[0], int):  # a CLI case
        status, _, err = result
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        if case.expect == "works":
            return ("works" if status == 0 else "broken"), (errors[0] if errors else err[-300:])
        if status == 0:
            return "silent", "exit status 0"
        ok = (status == 2 and len(errors) == 1 and "Traceback" not in err
              and all(k.lower() in errors[0].lower() for k in case.keywords))
        return ("clear" if ok else "unclear"), (errors[0] if errors else err.strip()[-300:]).replace("\n", " | ")
    user_warnings = [str(w.message) for w in caught if issubclass(w.category, UserWarning)
                     and all(k.lower() in str(w.message).lower() for k in case.keywords)]
    if case.expect == "works":
        return "works", "ok"
    if user_warnings:
        return "clear", "warning: " + user_warnings[0][:300]
    return "silent", f"returned {str(result)[:100]}"


# -------------------------------------------------------------------------------------------------- fixtures
def make_fixtures(root: Path) -> dict:
    """Small files the cases point at: a finished tiny run, model folders, broken files, recipes, parquet."""
    import pandas as pd
    import timm
    from PIL import Image

    import pact_zoo  # noqa: F401
    from pact_zoo.training import save_model_folder

    f = {}
    status, _, err = cli("train", *TRAIN_BASE, "--output-dir", str(root / "run"))
    assert status == 0, err
    f["run"] = root / "run"
    status, _, err = cli("evaluate", "--model-dir", str(root / "run" / "model"))
    assert status == 0, err
    tiny = dict(layers=[2, 2, 2], channels=[4, 8, 8])
    save_model_folder(timm.create_model("pact_resnet32", num_classes=3, **tiny), root / "three_classes")
    f["three"] = root / "three_classes"
    save_model_folder(timm.create_model("pact_resnet32", num_classes=10, **tiny), root / "corrupt")
    weights = root / "corrupt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])
    f["corrupt"] = root / "corrupt"
    (root / "noconfig").mkdir()
    (root / "noconfig" / "model.safetensors").write_bytes(b"")
    f["noconfig"] = root / "noconfig"
    f["list_yaml"] = root / "list.yaml"
    f["list_yaml"].write_text("- 1\n- 2\n")
    f["bad_yaml"] = root / "bad.yaml"
    f["bad_yaml"].write_text("model: [pact_resnet32\nlr: 0.1\n")
    f["unknown_yaml"] = root / "unknown.yaml"
    f["unknown_yaml"].write_text("model: pact_resnet32\nlearning_rate: 0.1\n")
    f["junk_weights"] = root / "junk.safetensors"
    f["junk_weights"].write_bytes(b"not a safetensors file")
    plain = timm.create_model("resnet110_cifar", num_classes=10)
    from safetensors.torch import save_file

    save_file(plain.state_dict(), str(root / "resnet110.safetensors"))
    f["other_weights"] = root / "resnet110.safetensors"
    f["a_file"] = root / "a_file"
    f["a_file"].write_text("x")
    ckpt_only = root / "ckpt_only" / "checkpoints" / "epoch_0001"
    ckpt_only.mkdir(parents=True)
    (ckpt_only / "trainer_state.json").write_text('{"epoch": 1, "global_step": 2}')
    f["ckpt_only"] = root / "ckpt_only"

    def png(value):
        buffer = io.BytesIO()
        Image.new("L", (8, 8), value).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    (root / "pandas").mkdir()
    (root / "strlabels").mkdir()
    (root / "corrupt_parquet").mkdir()
    for split in ("train", "test"):
        pd.DataFrame({"image": [png(10), png(200)], "label": [0, 1]}).to_parquet(root / "pandas" / f"{split}.parquet")
        pd.DataFrame({"image": [png(10), png(200)], "label": ["cat", "dog"]}).to_parquet(
            root / "strlabels" / f"{split}.parquet")
        (root / "corrupt_parquet" / f"{split}.parquet").write_bytes(b"PAR1 garbage")
    f["pandas"], f["strlabels"], f["corrupt_parquet"] = root / "pandas", root / "strlabels", root / "corrupt_parquet"
    f["card_list"] = root / "card.yaml"
    f["card_list"].write_text("- a\n")
    return f


# -------------------------------------------------------------------------------------------------- cases
def cases(f: dict, root: Path) -> List[Case]:
    import timm

    import pact_zoo
    from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification

    out = lambda name: str(root / "out" / name)  # noqa: E731
    C: List[Case] = []

    def train(name, keyword, *argv, base=True, expect="error"):
        args = (list(TRAIN_BASE) if base else []) + list(argv)
        if "--output-dir" not in args:
            args += ["--output-dir", out(name)]
        C.append(Case("train", name, keyword, lambda: cli("train", *args), expect))

    # ---- train flags and values
    train("epochs=three", ["epochs", "int"], "--epochs", "three")
    train("epochs=0", ["epochs", ">= 1"], "--epochs", "0")
    train("epochs=-1", ["epochs", ">= 1"], "--epochs", "-1")
    train("batch_size=0", ["batch_size", ">= 1"], "--batch-size", "0")
    train("batch_size=1.5", ["batch_size", "int"], "--batch-size", "1.5")
    train("batch_size>split", ["batch_size", "larger than the training split"], "--batch-size", "64")
    train("eval_batch_size=0", ["eval_batch_size", ">= 1"], "--eval-batch-size", "0")
    train("lr=0", ["lr", "> 0"], "--lr", "0")
    train("lr=-0.1", ["lr", "> 0"], "--lr", "-0.1")
    train("lr=abc", ["lr", "float"], "--lr", "abc")
    train("optimizer=lamb", ["optimizer", "sgd"], "--optimizer", "lamb")
    train("schedule=linear", ["schedule", "cosine"], "--schedule", "linear")
    train("mixed_precision=fp8", ["mixed_precision", "bf16"], "--mixed-precision", "fp8")
    train("model=unknown", ["unknown model", "pact_resnet32"], "--model", "pact_resnet9000")
    train("model_kwargs malformed YAML", ["--model-kwargs", "YAML"], "--model-kwargs", "{tau: [")
    train("model_kwargs not a mapping", ["model_kwargs", "Dict"], "--model-kwargs", "[1, 2]")
    train("model_kwargs unknown key", ["model_kwargs", "nonsense_knob"], "--model-kwargs", "{nonsense_knob: 1}")
    train("model_kwargs tau=-1", ["tau"], "--model-kwargs", "{tau: -1}")
    train("model_kwargs threshold=2", ["threshold", "(0, 1]"], "--model-kwargs", "{threshold: 2}")
    train("model_kwargs method=magic", ["method", "magic"], "--model-kwargs", "{method: magic}")
    train("model_kwargs temperature=0", ["temperature"], "--model-kwargs", "{temperature: 0}")
    train("model_kwargs layers=[0,1,1]", ["layers"], "--model-kwargs", "{layers: [0, 1, 1]}")
    train("model_kwargs threshold on ACT", ["threshold", "act"], "--model", "act_resnet32", "--model-kwargs",
          "{threshold: 0.5}")
    train("dataset=cifar11", ["cifar11", "digits"], "--dataset", "cifar11")
    train("dataset imagefolder missing", ["imagefolder", "/no/such/dir"], "--dataset", "imagefolder:/no/such/dir")
    train("dataset parquet missing", ["parquet", "/no/such/dir"], "--dataset", "parquet:/no/such/dir")
    train("dataset hub offline", ["nobody/no-such-dataset", "imagefolder:"], "--dataset", "nobody/no-such-dataset")
    train("dataset parquet corrupt", ["parquet", "corrupt_parquet"], "--dataset", f"parquet:{f['corrupt_parquet']}")
    train("dataset parquet string labels", ["label_column", "integer"], "--dataset", f"parquet:{f['strlabels']}")
    train("data_files missing file", ["/no/file.parquet"], "--dataset", "parquet:", "--data-files",
          "{train: /no/file.parquet, test: /no/file.parquet}")
    train("pretrained_file missing", ["pretrained_file", "/no/w.safetensors"], "--pretrained-file",
          "/no/w.safetensors")
    train("pretrained_file junk", ["pretrained_file", "junk.safetensors"], "--pretrained-file",
          str(f["junk_weights"]))
    train("pretrained_file other model", ["pretrained_file", "keys"], "--pretrained-file", str(f["other_weights"]))
    train("eval_thresholds [0, 2]", ["eval_thresholds", "(0, 1]"], "--eval-thresholds", "[0, 2]")
    train("eval_thresholds scalar", ["eval_thresholds", "List"], "--eval-thresholds", "0.5")
    train("lr_milestones scalar", ["lr_milestones", "List"], "--lr-milestones", "0.5")
    train("lr_milestones [1.5]", ["lr_milestones", "(0, 1)"], "--lr-milestones", "[1.5]")
    train("lr_gamma=0", ["lr_gamma"], "--lr-gamma", "0")
    train("anytime_prob=1.5", ["anytime_prob", "(0, 1]"], "--anytime", "true", "--anytime-prob", "1.5")
    train("anytime=maybe", ["anytime", "bool"], "--anytime", "maybe")
    train("max_train_samples=0", ["max_train_samples", ">= 1"], "--max-train-samples", "0")
    train("max_eval_samples=-3", ["max_eval_samples", ">= 1"], "--max-eval-samples", "-3")
    train("augment=flip", ["augment", "crop"], "--augment", "flip")
    train("momentum=2", ["momentum", "[0, 1)"], "--momentum", "2")
    train("weight_decay=-1", ["weight_decay", ">= 0"], "--weight-decay", "-1")
    train("warmup_epochs=-1", ["warmup_epochs", ">= 0"], "--warmup-epochs", "-1")
    train("tau_warmup_epochs=-1", ["tau_warmup_epochs", ">= 0"], "--tau-warmup-epochs", "-1")
    train("grad_accum_steps=0", ["grad_accum_steps", ">= 1"], "--grad-accum-steps", "0")
    train("keep_checkpoints=0", ["keep_checkpoints", ">= 1"], "--keep-checkpoints", "0")
    train("num_workers=-1", ["num_workers", ">= 0"], "--num-workers", "-1")
    train("max_grad_norm=0", ["max_grad_norm", "> 0"], "--max-grad-norm", "0")
    train("seed=abc", ["seed", "int"], "--seed", "abc")
    train("image_column missing", ["image_column", "nope"], "--image-column", "nope")
    train("label_column missing", ["label_column", "nope"], "--label-column", "nope")
    train("train_split missing", ["train_split", "nope"], "--train-split", "nope")
    train("eval_split missing", ["eval_split", "nope"], "--eval-split", "nope")
    train("config file missing", ["config", "/no/recipe.yaml"], "--config", "/no/recipe.yaml", base=False)
    train("config file is a list", ["list.yaml", "mapping"], "--config", str(f["list_yaml"]), base=False)
    train("config file malformed YAML", ["bad.yaml", "YAML"], "--config", str(f["bad_yaml"]), base=False)
    train("config file unknown key", ["learning_rate", "valid keys"], "--config", str(f["unknown_yaml"]), base=False)
    train("unknown flag", ["--learning-rate"], "--learning-rate", "0.1")
    train("output_dir holds a run", ["already holds a run", "--overwrite"], "--output-dir", str(f["run"]))
    train("output_dir is a file", ["output_dir", "not a folder"], "--output-dir", str(f["a_file"]))
    train("resume with another model", ["--resume", "pact_resnet110"], "--resume", "--output-dir", str(f["run"]),
          "--model", "pact_resnet110")
    train("resume with other tau", ["--resume", "tau"], "--resume", "--output-dir", str(f["run"]),
          "--model-kwargs", "{tau: 0.5}")
    train("resume without train_config", ["--resume", "train_config.json"], "--resume", "--output-dir",
          str(f["ckpt_only"]))
    train("resume and overwrite", ["--resume", "--overwrite"], "--resume", "--overwrite")
    train("pact_lstm on digits", ["digits", "parity"], "--model", "pact_lstm", "--model-kwargs", "{}")
    train("dataset_kwargs unknown", ["dataset_kwargs", "bogus"], "--model", "pact_lstm", "--model-kwargs",
          "{hidden_size: 8}", "--dataset", "parity", "--dataset-kwargs", "{bogus: 1}")
    train("mixed_precision=fp16 on CPU (refused: accelerate would train in fp32)", ["fp16", "GPU"], "--mixed-precision",
          "fp16")

    # ---- evaluate
    def evaluate(name, keyword, *argv):
        C.append(Case("evaluate", name, keyword, lambda: cli("evaluate", *argv)))

    evaluate("model_dir missing", ["--model-dir", "/no/model"], "--model-dir", "/no/model")
    evaluate("no --model-dir", ["--model-dir"])
    evaluate("model_dir without config.json", ["config.json"], "--model-dir", str(f["noconfig"]))
    evaluate("corrupt safetensors", ["model.safetensors", "corrupt"], "--model-dir", str(f["corrupt"]),
             "--dataset", "digits")
    evaluate("moved folder, no dataset", ["--dataset"], "--model-dir", str(f["three"]))
    evaluate("classes differ from the data", ["3 classes", "10"], "--model-dir", str(f["three"]), "--dataset",
             "digits")
    evaluate("eval_thresholds [2]", ["eval_thresholds"], "--model-dir", str(f["run"] / "model"),
             "--eval-thresholds", "[2]")
    evaluate("dataset unknown", ["cifar11"], "--model-dir", str(f["run"] / "model"), "--dataset", "cifar11")
    evaluate("eval_batch_size=0", ["eval_batch_size"], "--model-dir", str(f["run"] / "model"),
             "--eval-batch-size", "0")
    evaluate("training flag", ["--lr"], "--model-dir", str(f["run"] / "model"), "--lr", "0.1")

    # ---- export
    def export(name, keyword, *argv):
        C.append(Case("export", name, keyword, lambda: cli("export", *argv)))

    export("model_dir missing", ["--model-dir", "not found"], "--model-dir", "/no/model", "--output-dir", out("e1"))
    export("no evaluation", ["evaluate"], "--model-dir", str(f["three"]), "--output-dir", out("e2"))
    export("card missing", ["card", "/no/card.yaml"], "--model-dir", str(f["run"] / "model"), "--output-dir",
           out("e3"), "--card", "/no/card.yaml")
    export("push-to-hub pasted literally", ["--push-to-hub", "repo id"], "--model-dir", str(f["run"] / "model"),
           "--output-dir", out("e4"), "--push-to-hub", "[user/repo]")
    export("no --output-dir", ["--output-dir"], "--model-dir", str(f["run"] / "model"))

    # ---- quickstart, benchmark, top level
    C.append(Case("quickstart", "epochs=0", ["--epochs", ">= 1"], lambda: cli("quickstart", "--epochs", "0")))
    C.append(Case("quickstart", "recipe_dir missing", ["recipe", "/no/recipe"],
                  lambda: cli("quickstart", "--recipe-dir", "/no/recipe")))
    C.append(Case("cli", "unknown command", ["unknown command", "train"], lambda: cli("fly")))

    def bench(name, keyword, *argv):
        args = ["--model", "pact_resnet32", "--model-kwargs", TINY_KWARGS, "--input-size", "3,8,8", "--no-memory",
                "--no-training", "--repeats", "1", "--warmup", "0", "--batch-sizes", "2", "--output", out("b.json")]
        C.append(Case("benchmark", name, keyword, lambda: cli("benchmark", *(args + list(argv)))))

    bench("model_kwargs malformed", ["--model-kwargs", "YAML"], "--model-kwargs", "{a: [")
    bench("model_kwargs list", ["--model-kwargs", "mapping"], "--model-kwargs", "[1]")
    bench("modes unknown", ["--modes", "adaptive"], "--modes", "fast")
    bench("batch_sizes 0", ["--batch-sizes"], "--batch-sizes", "0")
    bench("threshold 1.5", ["--threshold"], "--threshold", "1.5")
    bench("device cuda without CUDA", ["--device", "cuda"], "--device", "cuda")
    bench("model without halting", ["--model", "halting"], "--model", "resnet32_cifar")
    bench("model unknown", ["--model", "pact_resnet9000"], "--model", "pact_resnet9000")
    bench("threshold on ACT", ["--threshold", "act"], "--model", "act_resnet32", "--threshold", "0.5")
    bench("input_size 3,4", ["--input-size"], "--input-size", "3,4")
    bench("memory_networks gpu", ["--memory-networks"], "--memory-networks", "gpu")

    # ---- models (API)
    def api(group, name, keyword, fn, expect="error"):
        C.append(Case(group, name, keyword, fn, expect))

    tiny = dict(layers=[2, 2, 2], channels=[4, 8, 8])

    def model(name="pact_resnet32", **kwargs):
        return timm.create_model(name, **{**tiny, **kwargs}).eval()

    x = torch.randn(2, 3, 32, 32)
    api("tensor", "uint8 image", ["uint8", "float"], lambda: model()(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)))
    api("tensor", "float64 image", ["float64", "float32"], lambda: model()(x.double()))
    api("tensor", "rank-3 image", ["rank", "[B, 3, H, W]"], lambda: model()(x[0]))
    api("tensor", "1 channel", ["channels", "[B, 3, H, W]"], lambda: model()(x[:, :1]))
    api("tensor", "2x2 image (3 stride-2 stages need 4x4)", ["spatial size"],
        lambda: model()(torch.randn(2, 3, 2, 2)))
    api("tensor", "NaN image in eval", ["NaN"], lambda: model()(torch.full((2, 3, 32, 32), float("nan"))))
    api("tensor", "list input", ["torch.Tensor"], lambda: model()([[1.0]]))
    api("tensor", "batch size 1 training step", [], lambda: pact_zoo.training_loss(
        model().train(), lambda: None, lambda o: o), expect="error")  # replaced below by a real run
    C.pop()

    def batch_one():
        m = model().train()
        xb = torch.randn(1, 3, 32, 32)
        step = pact_zoo.training_loss(m, lambda: m(xb), lambda o: torch.nn.functional.cross_entropy(
            o, torch.tensor([1]), reduction="none"))
        step.loss.backward()

    api("tensor", "batch size 1 training step", [], batch_one, expect="works")

    def nan_head():
        m = model()
        with torch.no_grad():
            m.stages[0].heads[0].fc.weight.fill_(float("nan"))
            m(x)

    api("tensor", "NaN head weight in eval", ["NaN", "halting"], nan_head)

    def nan_conv():
        m = model()
        with torch.no_grad():
            m.stem.weight.fill_(float("nan"))
            m(x)

    api("tensor", "NaN conv weight in eval", ["NaN"], nan_conv)
    api("knob", "set_threshold None", ["threshold", "(0, 1]"], lambda: pact_zoo.set_threshold(model(), None))
    api("knob", "set_threshold 1.5", ["threshold", "(0, 1]"], lambda: pact_zoo.set_threshold(model(), 1.5))
    api("knob", "set_threshold 0", ["threshold", "(0, 1]"], lambda: pact_zoo.set_threshold(model(), 0))
    api("knob", "set_threshold 'a'", ["threshold"], lambda: pact_zoo.set_threshold(model(), "a"))
    api("knob", "set_threshold NaN", ["threshold"], lambda: pact_zoo.set_threshold(model(), float("nan")))
    api("knob", "set_threshold on ACT", ["threshold", "act"],
        lambda: pact_zoo.set_threshold(model("act_resnet32"), 0.5))
    api("knob", "set_threshold on a plain model", ["threshold", "none"],
        lambda: pact_zoo.set_threshold(model("resnet32_cifar"), 0.5))
    api("knob", "threshold= on ACT", ["threshold", "act"], lambda: model("act_resnet32", threshold=0.5))
    api("knob", "threshold= on a plain model", ["threshold"], lambda: model("resnet32_cifar", threshold=0.5))
    api("knob", "tau=-1", ["tau"], lambda: model(tau=-1))
    api("knob", "tau='x'", ["tau"], lambda: model(tau="x"))
    api("knob", "method='magic'", ["method", "magic"], lambda: model(method="magic"))
    api("knob", "temperature=0", ["temperature"], lambda: model(temperature=0))
    api("knob", "halting_bias_init=NaN", ["halting_bias_init"], lambda: model(halting_bias_init=float("nan")))
    api("knob", "layers=[0, 1, 1]", ["layers"], lambda: model(layers=[0, 1, 1]))
    api("knob", "set_execution 'fast'", ["execution", "compact"], lambda: pact_zoo.set_execution(model(), "fast"))
    api("knob", "set_decision 'sample' on ACT", ["decision", "stochastic"],
        lambda: pact_zoo.set_decision(model("act_resnet32"), "sample"))
    api("knob", "truncated_depth wrong length", ["depths", "stages"],
        lambda: pact_zoo.halting.truncated_depth(model(), [1]).__enter__())
    api("report", "halting_report before a forward", ["forward"], lambda: pact_zoo.halting_report(model()))
    api("report", "halting_report of a non-module", ["torch.nn.Module"], lambda: pact_zoo.halting_report("m"))
    api("report", "halting_report of a plain timm model", ["AdaptiveStage"],
        lambda: pact_zoo.halting_report(timm.create_model("resnet10t")))

    def loss_shape():
        m = model("pg_resnet32").train()
        m(x)
        return pact_zoo.halting_loss(m, torch.zeros(3))

    api("report", "policy-gradient halting_loss with a [3] task loss for a batch of 2", ["task_loss", "B=2"],
        loss_shape)
    loader = [torch.randn(4, 3, 32, 32)]
    api("calibrate", "budget out of reach (0.01)", ["out of reach"],
        lambda: pact_zoo.calibrate_threshold(model(), loader, 0.01))
    api("calibrate", "target 0", ["target_flops_ratio"], lambda: pact_zoo.calibrate_threshold(model(), loader, 0))
    api("calibrate", "target 1.5", ["target_flops_ratio"], lambda: pact_zoo.calibrate_threshold(model(), loader, 1.5))
    api("calibrate", "empty loader", ["no batch"], lambda: pact_zoo.calibrate_threshold(model(), [], 0.5))
    api("calibrate", "ACT model", ["threshold", "act"],
        lambda: pact_zoo.calibrate_threshold(model("act_resnet32"), loader, 0.5))
    api("calibrate", "loader of strings", ["dataloader"], lambda: pact_zoo.calibrate_threshold(model(), ["a"], 0.5))
    api("calibrate", "tolerance -1", ["tolerance"],
        lambda: pact_zoo.calibrate_threshold(model(), loader, 0.5, tolerance=-1))

    # ---- PACT-LSTM (API)
    def lstm(**kwargs):
        return PactLSTMForSequenceClassification(PactLSTMConfig(input_size=4, **kwargs)).eval()

    api("lstm", "NaN inputs_embeds in eval", ["inputs_embeds", "NaN"],
        lambda: lstm()(inputs_embeds=torch.full((2, 3, 4), float("nan"))))
    api("lstm", "input_ids and inputs_embeds", ["input_ids", "inputs_embeds"],
        lambda: lstm()(input_ids=torch.zeros(2, 3, dtype=torch.long), inputs_embeds=torch.zeros(2, 3, 4)))
    api("lstm", "inputs_embeds of the wrong size", ["inputs_embeds", "input_size=4"],
        lambda: lstm()(inputs_embeds=torch.zeros(2, 3, 5)))
    api("lstm", "integer inputs_embeds", ["inputs_embeds", "floating point"],
        lambda: lstm()(inputs_embeds=torch.zeros(2, 3, 4, dtype=torch.long)))
    api("lstm", "input_ids without a vocabulary", ["input_ids", "vocab_size"],
        lambda: lstm()(input_ids=torch.zeros(2, 3, dtype=torch.long)))
    api("lstm", "attention_mask of the wrong shape", ["attention_mask"],
        lambda: lstm()(inputs_embeds=torch.zeros(2, 3, 4), attention_mask=torch.ones(2, 4)))
    api("lstm", "attention_mask not 0/1", ["attention_mask", "0"],
        lambda: lstm()(inputs_embeds=torch.zeros(2, 3, 4), attention_mask=torch.full((2, 3), 2)))
    api("lstm", "method='magic'", ["method", "magic"], lambda: PactLSTMConfig(input_size=4, method="magic"))
    api("lstm", "max_ponder_steps=0", ["max_ponder_steps"], lambda: PactLSTMConfig(input_size=4, max_ponder_steps=0))
    api("lstm", "input_size=0", ["input_size"], lambda: PactLSTMConfig(input_size=0))

    # ---- files and data (API)
    from pact_zoo.data import load_image_dataset
    from pact_zoo.training import load_config, load_model_folder

    api("files", "load_model_folder: folder missing", ["/no/model", "not found"], lambda: load_model_folder("/no/model"))
    api("files", "load_model_folder: no config.json", ["config.json"], lambda: load_model_folder(f["noconfig"]))
    api("files", "load_model_folder: corrupt safetensors", ["model.safetensors", "corrupt"],
        lambda: load_model_folder(f["corrupt"]))
    api("files", "load_config: missing file", ["/no/recipe.yaml"], lambda: load_config("/no/recipe.yaml"))
    api("files", "load_config: malformed YAML", ["bad.yaml"], lambda: load_config(str(f["bad_yaml"])))
    api("files", "export_folder: card is a list", ["card", "mapping"], lambda: __import__(
        "pact_zoo.hub", fromlist=["x"]).export_folder(str(f["run"] / "model"), out("e5"), card_path=str(f["card_list"])))

    def offline_push():
        from pact_zoo.hub import push_to_hub

        return push_to_hub(f["run"] / "model", "someone/some-model")

    api("files", "push_to_hub offline", ["--push-to-hub", "hub"], offline_push)
    api("data", "pandas parquet ({bytes, path} images)", [], lambda: load_image_dataset(f"parquet:{f['pandas']}"),
        expect="works")
    api("data", "parquet with string labels", ["label_column", "integer"],
        lambda: load_image_dataset(f"parquet:{f['strlabels']}"))
    api("data", "corrupt parquet", ["parquet"], lambda: load_image_dataset(f"parquet:{f['corrupt_parquet']}"))
    api("data", "hub dataset offline", ["imagefolder:", "parquet:"], lambda: load_image_dataset("nobody/nothing"))
    api("data", "imagefolder missing", ["imagefolder", "/no/dir"], lambda: load_image_dataset("imagefolder:/no/dir"))
    api("data", "unknown dataset name", ["cifar11", "digits"], lambda: load_image_dataset("cifar11"))
    api("data", "image_column missing", ["image_column", "nope"],
        lambda: load_image_dataset("digits", image_column="nope"))
    train("batch size 1 training run", [], "--batch-size", "1", "--max-train-samples", "3", expect="works")
    return C


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write every case and its outcome here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case, not only the misses")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fixtures = make_fixtures(root)
        rows = []
        for case in cases(fixtures, root):
            outcome, message = classify(case)
            rows.append(dict(group=case.group, case=case.name, expect=case.expect, outcome=outcome, message=message))
            if args.verbose or outcome in ("unclear", "silent", "broken"):
                print(f"[{outcome:7}] {case.group}: {case.name}: {message}")
    counts = {k: sum(r["outcome"] == k for r in rows) for k in ("clear", "unclear", "silent", "works", "broken")}
    print(f"\n{len(rows)} bad inputs tried: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f" ({time.perf_counter() - start:.0f} s, {torch.get_num_threads()} thread)")
    if args.json:
        from pact_zoo.fileio import atomic_write_json

        atomic_write_json(args.json, dict(counts=counts, cases=rows))
    return 0 if counts["unclear"] == counts["silent"] == counts["broken"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
