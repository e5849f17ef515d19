"""docs/extending.md: every Python block runs, in order, in one namespace (a method and a family written against the
public API only)."""
import json
import os
import re
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def test_extending_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 3
    namespace = {"__name__": "extending_example"}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["report"].units_executed.shape == (8, 1)


PLUGIN = '''
import torch
from pact_zoo.halting import HaltingMethod, Knob, StopDecision, check_number, register_halting_method


@register_halting_method
class PluginStop(HaltingMethod):
    name = "plugin_stop"
    knobs = {"tau": Knob(0.01, check_number(0.0), "cost per executed unit"),
             "margin": Knob(0.0, check_number(), "stop at the first logit >= margin")}
    stochastic = False

    def mixture(self, halting_logits, training):
        return self.rule_mixture(halting_logits)

    def decide(self, index, logits, carry, mode, log):
        return StopDecision(stop=logits >= self.margin)
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A user's module that registers a method, in the working folder; unregistered afterwards."""
    from pact_zoo.cli import IMPORT_ENV
    from pact_zoo.halting import HALTING_METHODS

    (tmp_path / "pz_user_methods.py").write_text(PLUGIN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(IMPORT_ENV, "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield "pz_user_methods"
    HALTING_METHODS._methods.pop("plugin_stop", None)
    sys.modules.pop("pz_user_methods", None)


def test_import_flag_registers_a_users_method_for_any_command(plugin_module, reset_accelerate, capsys):
    from pact_zoo.cli import IMPORT_ENV, main

    argv = ["train", "--model", "pact_resnet32", "--dataset", "digits", "--max-train-samples", "32",
            "--max-eval-samples", "16", "--epochs", "1", "--batch-size", "16", "--eval-batch-size", "16",
            "--model-kwargs", "{method: plugin_stop, margin: 0.5, layers: [1, 1, 1], channels: [4, 8, 8]}",
            "--output-dir", "run"]
    assert main(argv) == 2  # without the flag the method is unknown
    assert "plugin_stop" in capsys.readouterr().err
    assert main(["--import", plugin_module] + argv) == 0
    config = json.loads(Path("run/model/config.json").read_text())
    assert config["model_args"]["method"] == "plugin_stop" and config["model_args"]["margin"] == 0.5
    assert os.environ[IMPORT_ENV] == plugin_module  # what subprocesses (benchmark probes, launched ranks) import
    assert main(["evaluate", "--model-dir", "run/model", f"--import={plugin_module}", "--eval-thresholds", "[0.5]"]) == 0


def test_import_flag_errors_are_one_line(plugin_module, capsys):
    from pact_zoo.cli import main

    assert main(["train", "--import", "no_such_module_here", "--config", "x.yaml"]) == 2
    assert "--import no_such_module_here: no module named 'no_such_module_here'" in capsys.readouterr().err
    assert main(["train", "--import"]) == 2
    assert "--import needs a module name" in capsys.readouterr().err


def test_method_instances_and_classes_save_by_name(tmp_path):
    import timm

    from pact_zoo.halting import get_halting_method
    from pact_zoo.training.io import load_model_folder, save_model_folder

    pact = get_halting_method("pact")
    small = dict(num_classes=3, layers=(1, 1, 1), channels=(4, 8, 8))
    model = timm.create_model("pact_resnet32", method=pact(tau=0.02, threshold=0.3), **small)
    save_model_folder(model, tmp_path / "m")
    assert load_model_folder(tmp_path / "m").halting_cfg == model.halting_cfg
    assert timm.create_model("pact_resnet32", method=get_halting_method("act"), **small).halting_cfg.method == "act"
    with pytest.raises(ValueError, match="tau=0.02, and tau=0.5 was given too"):
        timm.create_model("pact_resnet32", method=pact(tau=0.02), tau=0.5, **small)

    class Unregistered(pact):
        name = "unregistered_pact"

    with pytest.raises(ValueError, match="Unregistered is not registered"):
        timm.create_model("pact_resnet32", method=Unregistered(), **small)


def test_a_family_registers_its_own_training_task():
    from pact_zoo.training import load_config
    from pact_zoo.training.tasks import TASKS, ImageClassificationTask, build_task, register_task

    @register_task
    class SpeechTask:
        def __init__(self, config):
            self.config = config

        @classmethod
        def handles(cls, config) -> bool:
            return config.model == "my_speech_family"

    try:
        assert isinstance(build_task(load_config(None, {"model": "my_speech_family"})), SpeechTask)
        assert isinstance(build_task(load_config(None, {"model": "pact_resnet32"})), ImageClassificationTask)
    finally:
        TASKS.remove(SpeechTask)
    with pytest.raises(TypeError, match="needs a classmethod handles"):
        register_task(object)
