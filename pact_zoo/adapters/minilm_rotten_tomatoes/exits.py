"""Early-exit rules that learn no halting head: they read the model's exit classifiers.

A stage whose method has ``reads_exits = True`` gets the model's exit classifiers as its heads: after unit n each
running row's exit gives ``[C]`` class logits, and the rule decides from them. These are the baselines every
early-exit paper compares with, on the same exits and the same compact batched execution as the learned methods:

* ``confidence``: stop when the exit's largest softmax probability reaches the threshold (BranchyNet, Teerapittayanon
  et al. 2016; the "max-prob" rule of the early-exit literature).
* ``entropy``: stop when the exit is certain enough, ``1 - H(p) / log C >= threshold`` (DeeBERT, Xin et al. 2020,
  stops when ``H(p) < S``; here ``S = (1 - threshold) log C``, so that a larger threshold runs more layers, as for
  every method with a threshold).
* ``patience``: stop once ``k`` consecutive exits agree on the class (PABEE, Zhou et al. 2020), with
  ``k = ceil(threshold * (L - 1))``: threshold 1.0 needs L - 1 agreements after the first exit, which only the
  last unit can give (full depth).

Training (``anytime_training``): every training forward is the stage's anytime path, every row runs
``d ~ Uniform{1..L}`` units and its output is that of exit d, so each batch trains every exit; there is no halting
cost. Threshold 1.0 never stops early.
"""
from __future__ import annotations

import math
import torch

from .method import HaltingMethod, Knob, Mixture, StopDecision, check_threshold, register_halting_method

__all__ = ["ExitRule", "ConfidenceExit", "EntropyExit", "PatienceExit", "exit_certainty", "exit_certainty_features",
           "NUM_CERTAINTY_FEATURES"]

#: The thresholds' defaults: stop at a 0.9 softmax peak (confidence), at normalised entropy <= 0.5 (entropy); a
#: patience of half the exits (patience).
DEFAULT_CONFIDENCE_THRESHOLD, DEFAULT_ENTROPY_THRESHOLD, DEFAULT_PATIENCE_THRESHOLD = 0.9, 0.5, 0.5


def exit_certainty(logits: torch.Tensor) -> torch.Tensor:
    """``1 - H(softmax(logits)) / log C`` of ``[A, C]`` exit logits: ``[A]`` in [0, 1] (1: one class certain)."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return 1.0 - entropy / math.log(max(logits.shape[-1], 2))


#: Features of :func:`exit_certainty_features`: the largest softmax probability and ``1 - H / log C``.
NUM_CERTAINTY_FEATURES = 2


def exit_certainty_features(logits: torch.Tensor) -> torch.Tensor:
    """``[A, C]`` exit logits -> ``[A, 2]`` (detached, float): largest softmax probability and ``1 - H / log C``, what
    a halting head that reads its exit sees."""
    logits = logits.detach().float()
    return torch.stack([torch.softmax(logits, dim=-1).amax(-1), exit_certainty(logits)], dim=-1)


class ExitRule(HaltingMethod):
    """Base of the exit rules: trained on the stage's anytime path, the rule of :meth:`stop` at eval."""

    knobs = {"threshold": Knob(0.5, check_threshold, "stop rule threshold in (0, 1]; 1.0 runs every unit")}
    reads_exits = True
    anytime_training = True
    cost_knob = None  # no cost term: the rules learn nothing

    def decide(self, index: int, logits: torch.Tensor, carry: dict, mode: str, log: dict) -> StopDecision:
        stop = self.stop(index, logits, carry)  # also keeps the carry of stateful rules in step
        return StopDecision(stop=stop if self.threshold < 1.0 else torch.zeros_like(stop))

    def mixture(self, halting_logits: torch.Tensor, training: bool) -> Mixture:
        return self.rule_mixture(halting_logits)  # eval only: training takes the anytime path

    # -- the rule (a stateful rule keeps its per-row carry from :meth:`start`) --------------------------------------
    def stop(self, index: int, logits: torch.Tensor, carry: dict) -> torch.Tensor:
        """``[A]`` bool: rows whose exit after unit ``index`` satisfies the rule, from ``[A, C]`` exit logits."""
        raise NotImplementedError


@register_halting_method
class ConfidenceExit(ExitRule):
    """Stop when the exit's largest softmax probability reaches ``threshold``."""

    name = "confidence"
    paper = "Teerapittayanon, McDanel, Kung 2016, BranchyNet, arXiv:1709.01686"
    knobs = {"threshold": Knob(DEFAULT_CONFIDENCE_THRESHOLD, check_threshold,
                               "stop when max softmax >= threshold, in (0, 1]; 1.0 runs every unit")}

    def stop(self, index: int, logits: torch.Tensor, carry: dict) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=-1).amax(-1) >= self.threshold


@register_halting_method
class EntropyExit(ExitRule):
    """Stop when ``1 - H(p) / log C >= threshold`` (DeeBERT's entropy rule with ``S = (1 - threshold) log C``)."""

    name = "entropy"
    paper = "Xin, Tang, Lee, Yu, Lin 2020, DeeBERT, arXiv:2004.12993"
    knobs = {"threshold": Knob(DEFAULT_ENTROPY_THRESHOLD, check_threshold,
                               "stop when 1 - entropy / log(C) >= threshold, in (0, 1]; 1.0 runs every unit")}

    def stop(self, index: int, logits: torch.Tensor, carry: dict) -> torch.Tensor:
        return exit_certainty(logits) >= self.threshold


@register_halting_method
class PatienceExit(ExitRule):
    """Stop once ``k = ceil(threshold * (L - 1))`` consecutive exits agree with the previous one (PABEE)."""

    name = "patience"
    paper = "Zhou, Xu, Ge, McAuley, Xu, Wei 2020, BERT Loses Patience (PABEE), arXiv:2006.04152"
    knobs = {"threshold": Knob(DEFAULT_PATIENCE_THRESHOLD, check_threshold,
                               "patience k = ceil(threshold * (L - 1)) agreeing exits, in (0, 1]; 1.0 runs every unit")}

    num_units = 0  # the stage's L, bound by :meth:`for_stage`

    def for_stage(self, num_units: int) -> "PatienceExit":
        if self.num_units == num_units:
            return self
        bound = type(self)(**self.knob_values())
        bound.num_units = num_units
        return bound

    @property
    def patience(self) -> int:
        """k, the consecutive agreements that stop a row (at least 1)."""
        return max(1, math.ceil(self.threshold * (self.num_units - 1) - 1e-9))

    def start(self, batch_size: int, device: torch.device, mode: str) -> dict[str, torch.Tensor]:
        return {"prediction": torch.full((batch_size,), -1, dtype=torch.long, device=device),
                "agreements": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def stop(self, index: int, logits: torch.Tensor, carry: dict) -> torch.Tensor:
        prediction = logits.argmax(-1)
        agree = prediction == carry["prediction"]
        carry["agreements"] = torch.where(agree, carry["agreements"] + 1, torch.zeros_like(carry["agreements"]))
        carry["prediction"] = prediction
        return carry["agreements"] >= self.patience

