"""The report's hooks as types: AdaptiveModule (the base of depth stages and per-token width modules), the profiling
protocols, and the deprecated string hooks that still work."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import pact_zoo
from pact_zoo.acm import AdaptiveWidth
from pact_zoo.halting import (
    AdaptiveModule, AdaptiveStage, FlopsAccountedModule, LengthProfiledModel, ProfiledModel, VectorHaltingHead,
    adaptive_stages, halting_report, record_input_shape,
)
from pact_zoo.halting import protocols
from pact_zoo.hf import PactEncoderModel, PactLSTMModel
from pact_zoo.hf.modeling_acm_bert import AcmBertModel

WIDTH, DEPTH = 8, 3


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(protocols, "_WARNED", set())


def _stage() -> AdaptiveStage:
    units = [nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)]
    return AdaptiveStage(units, [VectorHaltingHead(WIDTH) for _ in range(DEPTH - 1)], method="pact")


class _Model(nn.Module):
    """``[B, WIDTH]`` -> ``[B, WIDTH]``; profiled through :func:`record_input_shape` or the deprecated attribute."""

    def __init__(self, legacy: bool = False) -> None:
        super().__init__()
        self.stage, self.legacy = _stage(), legacy

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.legacy:
            self.halting_input_shape = tuple(x.shape[1:])
        else:
            record_input_shape(self, x)
        return self.stage(x)


def test_stage_and_width_share_one_base_with_the_switches():
    width = AdaptiveWidth(WIDTH, 4, num_learners=3)
    for module in (_stage(), width):
        assert isinstance(module, AdaptiveModule)
        assert (module.record, module.execution, module.decision, module.full_depth, module.truncate,
                module.anytime, module.rollout) == (None, "compact", "greedy", False, None, False, False)
        assert module.halting
        module.full_depth = True
        assert not module.halting
    width.full_depth, width.anytime = False, True
    assert width.training and not width.halting  # training: a uniform width per token, no gate
    width.eval()
    assert not width.halting  # anytime: no gate in eval either (full width), as before
    stage = _stage().eval()
    stage.anytime = True
    assert stage.halting  # a stage under anytime halts in eval


def test_models_implement_the_profiling_protocols():
    assert issubclass(PactEncoderModel, ProfiledModel) and issubclass(PactEncoderModel, LengthProfiledModel)
    assert issubclass(PactLSTMModel, ProfiledModel) and not issubclass(PactLSTMModel, LengthProfiledModel)
    assert issubclass(AcmBertModel, ProfiledModel)
    assert issubclass(AdaptiveWidth, FlopsAccountedModule) and not issubclass(AdaptiveStage, FlopsAccountedModule)


def test_recorded_shape_and_deprecated_attribute_give_the_same_report():
    torch.manual_seed(0)
    model, legacy = _Model().eval(), _Model(legacy=True).eval()
    legacy.load_state_dict(model.state_dict())
    x = torch.randn(5, WIDTH)
    with torch.no_grad():
        model(x)
        legacy(x)
    report = halting_report(model)
    assert "halting_input_shape" not in model.__dict__  # kept privately, not as a public attribute
    with pytest.warns(DeprecationWarning, match="halting_input_shape is deprecated"):
        legacy_report = halting_report(legacy)
    assert torch.equal(report.flops, legacy_report.flops) and report.full_flops == legacy_report.full_flops


def test_deprecated_stage_attribute_still_joins_the_api():
    class LegacyWidth(nn.Module):
        adaptive_stage_protocol = True

    model = nn.Sequential(LegacyWidth(), _stage())
    with pytest.warns(DeprecationWarning, match="adaptive_stage_protocol is deprecated"):
        names = [name for name, _ in adaptive_stages(model)]
    assert names == ["0", "1"]


@pytest.mark.parametrize("name, value", [("INPUT_SHAPE_ATTR", "halting_input_shape"),
                                         ("PROFILE_INPUTS_METHOD", "halting_profile_inputs"),
                                         ("SAMPLE_LENGTHS_METHOD", "halting_sample_lengths"),
                                         ("STAGE_PROTOCOL_ATTR", "adaptive_stage_protocol")])
def test_deprecated_hook_names_still_import_and_warn_once(name, value):
    import warnings

    with pytest.warns(DeprecationWarning, match=name):
        assert getattr(pact_zoo.halting, name) == value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(pact_zoo.halting.report, name) == value  # once per process
    with pytest.raises(AttributeError):
        pact_zoo.halting.no_such_name


def test_model_outputs_give_depth_under_the_core_name():
    """``units_executed`` is the outputs' depth field under the halting core's name (HaltingRecord, HaltingReport),
    in the place the family's former field held, so tuples keep their order."""
    from pact_zoo.hf import (
        PactEncoderModelOutput, PactEncoderSequenceClassifierOutput, PactEncoderTokenClassifierOutput,
        PactLSTMModelOutput, PactLSTMSequenceClassifierOutput, PactLSTMTokenClassifierOutput,
    )

    layers, steps = torch.tensor([2, 3]), torch.tensor([[1, 2], [3, 0]])
    for cls in (PactEncoderModelOutput, PactEncoderSequenceClassifierOutput, PactEncoderTokenClassifierOutput):
        output = cls(ponder_cost=layers.float(), units_executed=layers)
        assert output.units_executed is layers and list(output.keys()) == ["ponder_cost", "units_executed"]
        assert output.to_tuple() == (output.ponder_cost, layers)
    for cls in (PactLSTMModelOutput, PactLSTMSequenceClassifierOutput, PactLSTMTokenClassifierOutput):
        output = cls(units_executed=steps)
        assert output.units_executed is steps and list(output.keys()) == ["units_executed"]
    assert PactEncoderModelOutput().units_executed is None
