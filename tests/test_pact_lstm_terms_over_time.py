"""The PACT-LSTM's per-step halting terms over a sequence (``halting_terms_over_time``): the entropy bonus summed over
T frames outweighs the one task loss of a sequence label and keeps q(z_t | x) near uniform, so the eval rule runs
every ponder step; averaged over the frames (the default) the model halts. Generated data, tiny models."""
from __future__ import annotations

import pytest
import torch

from pact_zoo.halting.method import OVER_TIME_TERMS, HaltingRecord
from pact_zoo.hf import PactLSTMConfig, PactLSTMForSequenceClassification


def _record(units: list[int], cost: list[float], entropy: float) -> HaltingRecord:
    return HaltingRecord(units_executed=torch.tensor(units), cost=torch.tensor(cost), num_units=4,
                         terms={"entropy": torch.tensor(entropy)})


def test_over_time_sums_cost_and_sums_or_averages_terms():
    steps = [(None, _record([2, 3], [2.0, 3.0], -1.0)), (torch.tensor([1]), _record([4], [4.0], -3.0))]
    summed = HaltingRecord.over_time(steps, batch_size=2)  # the default keeps the old behaviour
    averaged = HaltingRecord.over_time(steps, batch_size=2, terms="mean")
    for record in (summed, averaged):
        assert record.units_executed.tolist() == [[2, 0], [3, 4]]
        assert record.cost.tolist() == [2.0, 7.0]  # Graves eq. 11: the sequence's cost is the sum of its steps'
    assert float(summed.terms["entropy"]) == pytest.approx(-4.0)
    assert float(averaged.terms["entropy"]) == pytest.approx(-2.0)
    assert OVER_TIME_TERMS == ("sum", "mean")
    with pytest.raises(ValueError, match="terms must be one of"):
        HaltingRecord.over_time(steps, batch_size=2, terms="max")


def _model(terms: str, **overrides) -> PactLSTMForSequenceClassification:
    kwargs = dict(input_size=3, hidden_size=8, max_ponder_steps=4, num_labels=2, method="pact", tau=0.01,
                  entropy_weight=0.1, halting_bias_init=-3.0, halting_terms_over_time=terms)
    kwargs.update(overrides)
    return PactLSTMForSequenceClassification(PactLSTMConfig(**kwargs))


def test_config_default_validation_and_round_trip(tmp_path):
    assert PactLSTMConfig().halting_terms_over_time == "mean"
    with pytest.raises(ValueError, match="halting_terms_over_time"):
        PactLSTMConfig(halting_terms_over_time="max")
    model = _model("sum")
    model.save_pretrained(tmp_path)
    loaded = PactLSTMForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.config.halting_terms_over_time == "sum"
    assert loaded.pact_lstm.layers[0].terms_over_time == "sum"


def test_entropy_term_per_sequence_is_the_frame_average():
    torch.manual_seed(0)
    inputs = torch.randn(4, 6, 3)
    weights = _model("sum").state_dict()
    losses = {}
    for terms in OVER_TIME_TERMS:
        model = _model(terms)
        model.load_state_dict(weights)
        torch.manual_seed(1)  # the same Concrete noise
        model.train()
        model(inputs_embeds=inputs)
        losses[terms] = model.pact_lstm.layers[0].stage.record
    assert torch.equal(losses["sum"].cost, losses["mean"].cost)
    summed, mean = (float(losses[k].terms["entropy"].detach()) for k in ("sum", "mean"))
    assert summed == pytest.approx(6 * mean, rel=1e-5)


def _train_and_measure(terms: str, seed: int = 0, updates: int = 40) -> float:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn(256, 8, 3, generator=generator)
    labels = (inputs[:, :, 0].mean(1) > 0).long()
    model = _model(terms)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(updates):
        index = torch.randint(256, (32,), generator=generator)
        loss = model(inputs_embeds=inputs[index], labels=labels[index]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        return float(model(inputs_embeds=inputs).units_executed.float().mean())


def test_summed_entropy_runs_every_step_and_the_per_sequence_term_halts():
    """The issue's symptom and its fix on a generated 8-frame task: with the bonus summed over the frames the
    trained model runs all 4 ponder steps at every frame; with the per-sequence bonus it halts after ~1-2."""
    assert _train_and_measure("sum") >= 3.9
    assert _train_and_measure("mean") <= 2.5
