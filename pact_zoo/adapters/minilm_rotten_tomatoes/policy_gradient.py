"""Policy-gradient halting: Bengio, Bacon, Pineau, Precup 2016, "Conditional Computation in Neural Networks for
faster models" (arXiv:1511.06297), in the per-sample depth form of BlockDrop (Wu et al., CVPR 2018) and SkipNet
(Wang et al., ECCV 2018).

After every unit but the last, the halting head gives a Bernoulli stop probability h_n = sigmoid(a_n). Training
*samples* each row's stops and runs only the sampled units (the compact loop: training saves compute too). The
heads learn by REINFORCE (Williams 1992): with the per-sample path loss ``l_i + sum_stages tau * U_i`` (task loss
plus the units used; reward = its negative) and a baseline b_i,

    loss_pg = mean_i (pathloss_i - b_i) * log pi(stops_i)      (gradient of the sampled decisions only)

Baselines: ``"greedy"`` (self-critical, BlockDrop's choice: the path loss of the deterministic rule on the same
batch, :func:`~pact_zoo.halting.self_critical_baseline`), ``"learned"`` (a per-stage scalar trained by least
squares on the path loss), ``"batch_mean"`` (the batch's mean path loss). The units get the ordinary task-loss
gradient along the sampled path. Bengio's regularisers on the continue probabilities s_n = 1 - h_n of the heads a
row reaches (target activation rate ``target_rate``): L_b = sum_n (mean_i s_in - target)^2, L_e = mean_i
(mean_n s_in - target)^2, L_v = -sum_n var_i s_in, weighted by ``lambda_b``, ``lambda_e``, ``lambda_v``.
Evaluation is the deterministic rule "stop at the first n with h_n >= threshold" through the same compact loop as
PACT.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .method import (
    HaltingMethod, HaltingRecord, Knob, Mixture, StopDecision, check_choice, check_number, check_threshold,
    float32, logit_threshold, register_halting_method,
)
from .pact import greedy_stop, one_hot_steps, sampled_stop
from .distributions import StoppingDistribution

__all__ = ["PolicyGradientMethod", "BASELINES", "LearnedBaseline"]

#: Variance-reducing baselines of the REINFORCE estimator.
BASELINES = ("greedy", "learned", "batch_mean")
DEFAULT_TAU, DEFAULT_THRESHOLD, DEFAULT_TARGET_RATE = 0.01, 0.5, 0.5


class LearnedBaseline(nn.Module):
    """A per-stage scalar b, trained by least squares towards the path loss."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(()))


@register_halting_method
class PolicyGradientMethod(HaltingMethod):
    """REINFORCE-trained Bernoulli halting on a sampled, compacted path; deterministic threshold rule in eval."""

    name = "policy_gradient"
    paper = ("Bengio, Bacon, Pineau, Precup 2016, Conditional Computation in Neural Networks for faster models, "
             "arXiv:1511.06297")
    knobs = {
        "tau": Knob(DEFAULT_TAU, check_number(0.0), "path-loss weight of each executed unit, >= 0"),
        "threshold": Knob(DEFAULT_THRESHOLD, check_threshold, "eval rule: stop at the first h_n >= threshold"),
        "baseline": Knob("greedy", check_choice(*BASELINES), f"REINFORCE baseline, one of {BASELINES}"),
        "target_rate": Knob(DEFAULT_TARGET_RATE, check_number(0.0, 1.0),
                            "target continue rate of Bengio's L_b / L_e, in [0, 1]"),
        "lambda_b": Knob(0.0, check_number(0.0), "weight of L_b (batch activation-rate target), >= 0"),
        "lambda_e": Knob(0.0, check_number(0.0), "weight of L_e (per-example activation-rate target), >= 0"),
        "lambda_v": Knob(0.0, check_number(0.0), "weight of L_v (variance bonus across examples), >= 0"),
    }
    dense_training = False
    needs_task_loss = True
    stochastic = True

    def make_state(self) -> Optional[nn.Module]:
        self._learned = LearnedBaseline() if self.baseline == "learned" else None
        return self._learned

    @property
    def needs_rollout(self) -> bool:
        """True when the baseline is the deterministic rule's path loss (a second, gradient-free forward)."""
        return self.baseline == "greedy"

    @property
    def _regularised(self) -> bool:
        return self.lambda_b > 0 or self.lambda_e > 0 or self.lambda_v > 0

    # -- dense path: masked evaluation, and training only where the compact loop cannot run (meta / tracing) -----------
    def mixture(self, halting_logits: torch.Tensor, training: bool) -> Mixture:
        dist = StoppingDistribution(halting_logits, validate_args=False)
        num_units = halting_logits.shape[1] + 1
        if training:  # expected output under the policy
            weights = dist.probs
            units = torch.full((weights.shape[0],), num_units, dtype=torch.long, device=weights.device)
            return Mixture(weights=weights, units_executed=units, cost=dist.mean)
        steps = dist.greedy_steps(self.threshold)
        return Mixture(weights=one_hot_steps(steps, num_units, dist.halting_logits.dtype), units_executed=steps,
                       cost=steps.to(torch.float32))

    # -- compact path ------------------------------------------------------------------------------------------------
    def start(self, batch_size: int, device: torch.device, mode: str) -> dict:
        if mode != "sample":
            return {}
        carry = {"log_prob": torch.zeros(batch_size, device=device)}
        if self.lambda_e > 0:
            carry["go_sum"] = torch.zeros(batch_size, device=device)
            carry["go_count"] = torch.zeros(batch_size, device=device)
        return carry

    def lone_row_threshold(self, mode: str) -> Optional[float]:
        return None if mode == "sample" else float32(logit_threshold(self.threshold))  # the rule of greedy_stop

    def decide(self, index: int, logits: torch.Tensor, carry: dict, mode: str, log: dict) -> StopDecision:
        if mode != "sample":
            return StopDecision(stop=greedy_stop(logits, self.threshold))
        stop, log_prob = sampled_stop(logits)
        carry["log_prob"] = carry["log_prob"] + log_prob
        if self._regularised:
            go = torch.sigmoid(-logits.float())  # s_n = 1 - h_n, the probability of running the next unit
            log["go"].append(go)
            if self.lambda_e > 0:
                carry["go_sum"] = carry["go_sum"] + go
                carry["go_count"] = carry["go_count"] + 1
        return StopDecision(stop=stop)

    def finish(self, units: int, carry: dict, rows: torch.Tensor) -> dict:
        values = super().finish(units, carry, rows)  # cost: the units run
        if "log_prob" in carry:
            values["log_prob"] = carry["log_prob"][rows]
        if "go_sum" in carry:
            values["go_mean"] = carry["go_sum"][rows] / carry["go_count"][rows].clamp_min(1)
        return values

    def terms(self, log: dict, rows: dict) -> dict:
        terms = {}
        go = log.get("go", [])
        if self.lambda_b > 0 and go:  # Bengio 2016 L_b
            terms["L_b"] = self.lambda_b * sum((g.mean() - self.target_rate) ** 2 for g in go)
        if self.lambda_e > 0 and "go_mean" in rows:  # L_e
            terms["L_e"] = self.lambda_e * ((rows["go_mean"] - self.target_rate) ** 2).mean()
        if self.lambda_v > 0 and go:  # L_v: reward policies that differ across examples
            terms["L_v"] = -self.lambda_v * sum(g.var(unbiased=False) for g in go if g.numel() > 1)
        return terms

    # -- loss --------------------------------------------------------------------------------------------------------
    def loss(self, record: HaltingRecord, task_loss: Optional[torch.Tensor] = None,
             baseline_loss: Optional[torch.Tensor] = None, cost_scale: float = 1.0) -> torch.Tensor:
        """REINFORCE term + baseline fit + Bengio regularisers; ``task_loss`` here is the per-sample *path* loss
        (task loss + tau-weighted units over every stage), as :func:`~pact_zoo.halting_loss` passes it."""
        if record.log_prob is None:
            raise RuntimeError("halting method 'policy_gradient': the last forward was not a training forward "
                               "(no sampled decisions); call halting_loss after model.train() forwards only")
        if task_loss is None:
            raise ValueError("halting method 'policy_gradient' needs task_loss: pass the per-sample task loss [B] "
                             "(reduction='none') to pact_zoo.halting_loss(model, task_loss=...)")
        path_loss = task_loss.detach().float()
        if self.baseline == "greedy":
            if baseline_loss is None:
                raise ValueError("halting method 'policy_gradient' with baseline='greedy' needs baseline_loss: "
                                 "run pact_zoo.halting.self_critical_baseline(model, ...) before the forward "
                                 "(the training loop does), or choose baseline='learned' / 'batch_mean'")
            baseline = baseline_loss.detach().float()
            fit = None
        elif self.baseline == "learned":
            baseline = self._learned.value
            fit = ((baseline - path_loss) ** 2).mean()
            baseline = baseline.detach()
        else:
            baseline, fit = path_loss.mean(), None
        total = ((path_loss - baseline) * record.log_prob).mean()  # REINFORCE (Williams 1992)
        if fit is not None:
            total = total + fit
        for term in record.terms.values():
            total = total + term
        if record.touch is not None:
            total = total + record.touch
        return total
