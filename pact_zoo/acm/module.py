"""Per-token adaptive width: a layer made of K learners whose outputs add up, and a gate that decides per token
which learners run.

Two gatings (``method=``):

* ``"acm"`` - Adaptive Computation Modules (Wójcik et al. 2023, arXiv:2312.10193): the gate is a small per-token MLP
  over the choices k in ``min_learners..K``; the output is ``b2 + sum_{i<k} learner_i(x)``, a nested refinement.
  Training draws k with the straight-through Gumbel-softmax (so the task loss reaches the gate); evaluation takes
  the smallest k whose cumulative gate probability reaches ``threshold`` (``rule="cdf"``, the budget knob; at 0.5 it
  is the gate's median choice) or the gate's argmax (``rule="argmax"``, the paper's rule).
* ``"condnet"`` - Bengio et al. 2016 (arXiv:1511.06297): an independent Bernoulli per learner ("block"), with
  probabilities ``sigmoid(gate(x))`` clipped to [0.01, 0.99]. Training samples the blocks and learns the gate with
  the core's REINFORCE machinery (:class:`~pact_zoo.halting.PolicyGradientMethod`: loss, baselines and the L_b / L_e
  / L_v regularisers are reused); evaluation runs block i when ``p_i >= 1 - threshold``.

Evaluation runs each learner only on the tokens that use it, on the flattened ``[N, D]`` tokens with the core's
compaction primitives (``"compact"``), or computes every learner and masks (``"masked"``, the reference). A token's
output and its learner count depend on that token alone. The module is an
:class:`~pact_zoo.halting.adaptive_module.AdaptiveModule`, as the depth stages are, so ``halting_report``,
``set_threshold``, ``calibrate_threshold``, ``halting_loss``, ``full_depth``, ``truncated_depth`` and
``set_execution`` work on ACMized models unchanged.

Weight layout (packed): learner i owns rows ``i*h:(i+1)*h`` of ``w1`` ``[K*h, D_in]``, ``b1`` ``[K*h]`` and
``w2`` ``[K*h, D_out]``; ``b2`` ``[D_out]`` is shared (it is the output of k = 0, as in the paper's code). The first k
learners are a contiguous slice, so k learners run as one pair of GEMMs of width ``k*h``.
"""
from __future__ import annotations

import itertools
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..halting.compaction import count_true, split_rows, take_rows
from ..halting.flops import current_profiler
from ..halting.method import HaltingMethod, HaltingRecord, Knob, check_choice, check_number, check_threshold, \
    logit_threshold
from ..halting.pact import sampled_stop
from ..halting.policy_gradient import BASELINES, PolicyGradientMethod
from ..halting.adaptive_module import AdaptiveModule, register_notrace_module
from ..halting.compact import zero_touch
from ..halting.deprecation import deprecated_alias, renamed_kwarg

__all__ = ["AdaptiveWidth", "ACMGating", "CondnetGating", "GATINGS", "EVAL_RULES", "build_gating"]

GATINGS = ("acm", "condnet")
#: ACM eval rules: smallest k with cumulative gate probability >= threshold, or the gate's argmax.
EVAL_RULES = ("cdf", "argmax")
#: Gumbel-softmax temperature of the released ACM config (``acm_deep_gumbel``).
DEFAULT_TEMPERATURE = 0.8
#: Bengio et al. 2016 clip the block probabilities to [0.01, 0.99].
CONDNET_PROB_CLIP = 0.01
DEFAULT_GATE_HIDDEN, DEFAULT_GATE_DEPTH = 16, 2


class ACMGating(HaltingMethod):
    """ACM gating (Wójcik et al. 2023): a per-token choice of k = min_learners..K learners. Owns the gate's train
    and eval computation for :class:`AdaptiveWidth`; not a registered stage method. The budget term is model-level
    (:func:`pact_zoo.acm.budget_loss`); this loss adds the record's terms only."""

    name = "acm"
    knobs = {
        "threshold": Knob(0.5, check_threshold, "eval rule: smallest k with cumulative gate probability >= threshold"),
        "temperature": Knob(DEFAULT_TEMPERATURE, check_number(0.0, min_open=True),
                            "Gumbel-softmax temperature in training, > 0"),
        "rule": Knob("cdf", check_choice(*EVAL_RULES), f"eval rule, one of {EVAL_RULES}"),
    }
    dense_training = True
    #: the model-level budget loss (:func:`pact_zoo.acm.budget_loss`, eq. 5) is what trains this gating to a budget
    budget_loss = True

    def gate_outputs(self, num_learners: int, min_learners: int) -> int:
        """Gate logits per token: one per choice k = min_learners..K."""
        return num_learners + 1 - min_learners

    def set_budget(self, beta: float) -> None:
        """ACM reaches its budget through the budget loss, not a knob: nothing to set."""

    def label_loss(self, module: "AdaptiveWidth", logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Phase 2: cross-entropy of the ``[N, C]`` gate logits towards the ``[N]`` learner counts."""
        return F.cross_entropy(logits, labels - module.min_learners)

    def train_forward(self, module: "AdaptiveWidth", flat: torch.Tensor):
        """Straight-through Gumbel-softmax over k (Jang et al. 2017), every prefix computed (dense). Returns the
        ``[N, D_out]`` output, ``[N]`` learner counts, ``[N]`` differentiable executed fraction and no extras."""
        logits = module.gate_logits(flat)
        sample = F.gumbel_softmax(logits, tau=self.temperature, hard=True)  # [N, C] one-hot, ST gradient
        prefixes = module.all_prefixes(flat)[:, module.min_learners:]
        out = torch.einsum("nc,nco->no", sample.to(prefixes.dtype), prefixes)
        counts = torch.arange(module.min_learners, module.num_learners + 1, device=flat.device, dtype=sample.dtype)
        cost = (sample * counts).sum(-1) / module.num_learners  # differentiable executed fraction (paper's budget)
        units = sample.detach().argmax(-1) + module.min_learners
        if module.keep_prefixes:
            module.prefixes = prefixes
        return out, units, cost, {}

    def eval_forward(self, module: "AdaptiveWidth", flat: torch.Tensor, logits: torch.Tensor, masked: bool):
        """The deterministic rule per token; ``masked``: every prefix computed and one picked (the reference)."""
        k = self.choice(module, logits)
        if masked:
            prefixes = module.all_prefixes(flat)
            out = prefixes.gather(1, k.view(-1, 1, 1).expand(-1, 1, prefixes.shape[-1])).squeeze(1)
        else:
            out = self.run_compact(module, flat, k)
        return out, k, k.float() / module.num_learners, {}

    def choice(self, module: "AdaptiveWidth", logits: torch.Tensor) -> torch.Tensor:
        """``[N]`` learner counts by the deterministic rule (each token on its own)."""
        if self.rule == "argmax":
            choice = logits.argmax(-1)
        elif self.threshold >= 1.0:  # every learner (a saturated float cdf reaches 1.0 early)
            choice = torch.full(logits.shape[:1], logits.shape[-1] - 1, dtype=torch.long, device=logits.device)
        else:  # smallest k with cumulative probability >= threshold
            cdf = torch.softmax(logits, -1).cumsum(-1)
            choice = (cdf < self.threshold).sum(-1).clamp(max=logits.shape[-1] - 1)
        return choice + module.min_learners

    @staticmethod
    def run_compact(module: "AdaptiveWidth", flat: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``[N, D_out]`` output of ``[N, D_in]`` tokens where token n runs its first ``k[n]`` learners.

        The tokens are sorted by k once (one host synchronisation for the group sizes, one gather); each width's
        tokens are then a contiguous slice of the sorted rows and run the first k learners as one pair of GEMMs of
        width k*h, written in place into the sorted output (concatenated while gradients are recorded), which one scatter
        puts back in token order. When every token has the same k there is no sort at all."""
        num_tokens = flat.shape[0]
        if num_tokens == 0:  # an empty batch: no group to run
            return module.prefix(flat, 0)
        counts = torch.bincount(k, minlength=module.num_learners + 1).tolist()
        if max(counts) == num_tokens:  # one width for every token
            return module.prefix(flat, counts.index(num_tokens))
        order = torch.argsort(k)
        sorted_tokens = flat.index_select(0, order)
        ends = itertools.accumulate(counts)
        groups = [(width, slice(end - count, end)) for width, (count, end) in enumerate(zip(counts, ends)) if count]
        if torch.is_grad_enabled():  # differentiable: the groups' outputs concatenated, then put back in order
            out = torch.cat([module.prefix(sorted_tokens[rows], width) for width, rows in groups])
            return out.index_select(0, torch.argsort(order))
        sorted_out = flat.new_empty(num_tokens, module.out_features)
        for width, rows in groups:
            module.prefix(sorted_tokens[rows], width, out=sorted_out[rows])
        return torch.empty_like(sorted_out).index_copy_(0, order, sorted_out)


class CondnetGating(PolicyGradientMethod):
    """Bengio et al. 2016 block gating: REINFORCE with the core's baselines and L_b / L_e / L_v regularisers
    (:class:`~pact_zoo.halting.PolicyGradientMethod`, reused as is); ``target_rate`` is the target fraction of
    blocks on (the budget). Owns the gate's train and eval computation for :class:`AdaptiveWidth`."""

    name = "condnet"
    knobs = dict(PolicyGradientMethod.knobs,
                 baseline=Knob("batch_mean", check_choice(*BASELINES), f"REINFORCE baseline, one of {BASELINES}"),
                 tau=Knob(0.0, check_number(0.0), "path-loss weight of the executed learner fraction, >= 0"),
                 lambda_b=Knob(1.0, check_number(0.0), "weight of L_b (per-block batch activation rate), >= 0"),
                 lambda_e=Knob(0.1, check_number(0.0), "weight of L_e (per-token activation rate), >= 0"),
                 lambda_v=Knob(0.1, check_number(0.0), "weight of L_v (variance bonus), >= 0"))
    #: the budget is the REINFORCE target rate (:meth:`set_budget`), not the model-level budget loss
    budget_loss = False

    def gate_outputs(self, num_learners: int, min_learners: int) -> int:
        """Gate logits per token: the on-logit of each of the K blocks."""
        return num_learners

    def set_budget(self, beta: float) -> None:
        """The budget beta is L_b's target rate of blocks on."""
        self.set_knob("target_rate", beta)

    def label_loss(self, module: "AdaptiveWidth", logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Phase 2: binary cross-entropy of "block i on" = i < label, for ``[N, K]`` logits and ``[N]`` labels."""
        blocks = torch.arange(module.num_learners, device=labels.device)
        return F.binary_cross_entropy_with_logits(logits, (blocks < labels.unsqueeze(1)).to(logits.dtype))

    def train_forward(self, module: "AdaptiveWidth", flat: torch.Tensor):
        """Bernoulli blocks sampled per token; only the sampled (token, learner) pairs run (compact), the gate learns
        by REINFORCE through the core's policy-gradient loss."""
        logits = module.gate_logits(flat)
        bound = logit_threshold(1.0 - CONDNET_PROB_CLIP)  # Bengio et al.: p in [0.01, 0.99]
        logits = logits.clamp(-bound, bound)
        run, log_prob = sampled_stop(logits)
        run = self.force_min(module, run)
        if module.min_learners:
            log_prob = log_prob.clone()
            log_prob[:, :module.min_learners] = 0.0
        out = self.run_masked(module, flat, run) if flat.device.type == "meta" else self.run_compact(module, flat, run)
        go = torch.sigmoid(logits)
        # the core's regularisers, one "head" per block: L_b per block over tokens, L_e per token over blocks
        terms = self.terms({"go": list(go.unbind(1))}, {"go_mean": go.mean(1)})
        units = run.sum(1)
        extra = {"terms": terms, "touch": zero_touch(module), "log_prob": log_prob.sum(1)}
        return out, units, units.float() / module.num_learners, extra

    def eval_forward(self, module: "AdaptiveWidth", flat: torch.Tensor, logits: torch.Tensor, masked: bool):
        """Block i runs when p_i >= 1 - threshold (or, with ``decision="sample"``, Bengio's test-time sampling)."""
        if module.decision == "sample":
            bound = logit_threshold(1.0 - CONDNET_PROB_CLIP)
            run = self.force_min(module, sampled_stop(logits.clamp(-bound, bound))[0])
        else:  # p_i >= 1 - threshold, i.e. off-logit <= logit(threshold)
            run = self.force_min(module, -logits <= logit_threshold(self.threshold))
        out = self.run_masked(module, flat, run) if masked else self.run_compact(module, flat, run)
        units = run.sum(1)
        return out, units, units.float() / module.num_learners, {}

    @staticmethod
    def force_min(module: "AdaptiveWidth", run: torch.Tensor) -> torch.Tensor:
        """``[N, K]`` blocks to run, with the first ``min_learners`` always on."""
        if module.min_learners:
            run = run.clone()
            run[:, :module.min_learners] = True
        return run

    @staticmethod
    def run_masked(module: "AdaptiveWidth", flat: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        """Reference: every learner on every token, ``[N, K]`` ``run`` masks their ``[N, K, D_out]`` outputs."""
        return torch.einsum("nk,nko->no", run.to(flat.dtype), module.learner_outputs(flat)) + module.b2

    @staticmethod
    def run_compact(module: "AdaptiveWidth", flat: torch.Tensor, run: torch.Tensor) -> torch.Tensor:
        """Learner i runs on the gathered tokens that switched it on; its output is scattered (added) into ``b2``.
        Differentiable (sampled training) and in place otherwise."""
        h = module.hidden_features
        grad = torch.is_grad_enabled()
        out = module.b2.expand(flat.shape[0], -1)
        out = out if grad else out.clone(memory_format=torch.contiguous_format)  # never b2 itself
        for i in range(module.num_learners):
            mask = run[:, i]
            num = count_true(mask)
            if num == 0:
                continue
            index = None if num == flat.shape[0] else split_rows(mask, num)[1]  # the rows that run learner i
            rows = flat if index is None else take_rows(flat, index)
            part = slice(i * h, (i + 1) * h)
            hidden = module.act(F.linear(rows, module.w1[part], None if module.b1 is None else module.b1[part]))
            y = hidden @ module.w2[part]
            if index is None:
                out = out + y if grad else out.add_(y)
            else:
                out = out.index_add(0, index, y) if grad else out.index_add_(0, index, y)
        return out


#: gating name -> the class that owns its computation
GATING_CLASSES: dict[str, type[HaltingMethod]] = {"acm": ACMGating, "condnet": CondnetGating}


def build_gating(method: str, **knobs) -> HaltingMethod:
    """The gating object of ``method`` (a name in :data:`GATINGS`) with its knobs."""
    if method not in GATING_CLASSES:
        raise ValueError(f"method must be one of {GATINGS}, got {method!r}")
    return GATING_CLASSES[method](**knobs)


def _gate_mlp(in_features: int, out_features: int, hidden: int, depth: int) -> nn.Sequential:
    """Per-token gate: ``depth`` hidden layers of ``hidden`` units (GELU), or one linear layer when depth = 0."""
    layers: list[nn.Module] = []
    width = in_features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def _check_int(name: str, value, minimum: int) -> int:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


@register_notrace_module  # timm's FX tracing keeps the module whole: its per-token gating runs at run time
class AdaptiveWidth(AdaptiveModule):
    """K learners ``D_in -> h -> D_out`` whose outputs add up, with a per-token gate.

    Args:
        in_features: D_in.
        hidden_features: h, the width of one learner.
        num_learners: K >= 1.
        out_features: D_out (default D_in).
        act_layer: activation module between the two linear maps of a learner (``None``: identity, a low-rank
            learner as the paper uses for attention projections).
        method: ``"acm"`` or ``"condnet"`` (``self.method`` is then its gating object; ``gating=``, the former
            name, still works with a DeprecationWarning).
        min_learners: learners every token runs (the paper uses 1 for attention projections), in [0, K].
        bias: learners have a hidden bias; the output bias ``b2`` is always present.
        gate_hidden, gate_depth: size of the gate MLP (``gate_depth=0``: linear, as in Bengio et al.).
        **knobs: the gating's knobs (``threshold``, ``temperature``, ``rule`` for ACM; the policy-gradient knobs
            ``baseline``, ``target_rate``, ``lambda_b``, ``lambda_e``, ``lambda_v``, ``tau``, ``threshold`` for
            condnet).

    Shapes: ``forward(x)`` with ``x`` ``[..., D_in]`` returns ``[..., D_out]``; the record holds ``[B, T]`` learner
    counts for ``[B, T, D]`` inputs (``[N, 1]`` for 2-d inputs).
    """

    def __init__(self, in_features: int, hidden_features: int, num_learners: int = 4,
                 out_features: Optional[int] = None, act_layer: Optional[nn.Module] = None, method: str = "acm",
                 min_learners: int = 0, bias: bool = True, gate_hidden: int = DEFAULT_GATE_HIDDEN,
                 gate_depth: int = DEFAULT_GATE_DEPTH, **knobs) -> None:
        super().__init__()
        _check_int("num_learners", num_learners, 1)
        _check_int("in_features", in_features, 1)
        _check_int("hidden_features", hidden_features, 1)
        out_features = _check_int("out_features", out_features if out_features is not None else in_features, 1)
        _check_int("min_learners", min_learners, 0)
        if min_learners > num_learners:
            raise ValueError(f"min_learners must be in [0, num_learners={num_learners}], got {min_learners}")
        _check_int("gate_hidden", gate_hidden, 1)
        _check_int("gate_depth", gate_depth, 0)
        method = renamed_kwarg(knobs, "gating", "method", method, "acm", "AdaptiveWidth")
        self.method = build_gating(method, **knobs)
        self.in_features, self.hidden_features, self.out_features = in_features, hidden_features, out_features
        self.num_learners, self.min_learners = num_learners, min_learners
        width = num_learners * hidden_features
        self.w1 = nn.Parameter(torch.empty(width, in_features))
        self.b1 = nn.Parameter(torch.zeros(width)) if bias else None
        self.w2 = nn.Parameter(torch.empty(width, out_features))
        self.b2 = nn.Parameter(torch.zeros(out_features))
        self.act = act_layer if act_layer is not None else nn.Identity()
        self.gate = _gate_mlp(in_features, self.method.gate_outputs(num_learners, min_learners), gate_hidden,
                              gate_depth)
        self.reset_parameters()
        self.keep_prefixes = False  # phase 1/2: keep every prefix output of the last forward in ``self.prefixes``
        self.prefixes: Optional[torch.Tensor] = None
        #: ``[B, T]`` 1 for the tokens of the next forward that the FLOPs report counts, 0 for padding (set by models
        #: whose inputs are padded sequences); None: every token counts
        self.counted_tokens: Optional[torch.Tensor] = None

    def reset_parameters(self) -> None:
        """Fresh learners (Kaiming-uniform, as the paper's code); the gate keeps PyTorch's default init."""
        for weight, fan_in in ((self.w1, self.in_features), (self.w2, self.hidden_features)):
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(weight, -bound, bound)
        if self.b1 is not None:
            nn.init.zeros_(self.b1)
        nn.init.zeros_(self.b2)

    # -- AdaptiveModule ------------------------------------------------------------------------------------------------
    @property
    def num_units(self) -> int:
        return self.num_learners

    @property
    def _anytime_forward(self) -> bool:
        """Under ``anytime`` (in any mode) no gate runs: training draws a uniform width per token, eval runs full
        width (:meth:`_forward_static`)."""
        return self.anytime

    def extra_repr(self) -> str:
        return (f"{self.in_features} -> {self.num_learners} x {self.hidden_features} -> {self.out_features}, "
                f"method={self.method.name!r}, min_learners={self.min_learners}, {self.method!r}")

    #: deprecated: the method's name (``self.method.name``), with a DeprecationWarning
    gating = deprecated_alias("method.name", "gating", "AdaptiveWidth", settable=False)

    @property
    def learner_flops(self) -> int:
        """FLOPs of one learner on one token (2 per multiply-add)."""
        return 2 * self.hidden_features * (self.in_features + self.out_features)

    @property
    def gate_flops(self) -> int:
        """FLOPs of the gate on one token."""
        return sum(2 * m.in_features * m.out_features for m in self.gate.modules() if isinstance(m, nn.Linear))

    def report_flops(self) -> tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]:
        """FLOPs of the last forward: per sample ``[B]``, per-sample at full width ``[B]``, one sample at full width,
        and per token ``[B, T]`` (gate where it ran + executed learners; zero for the tokens ``counted_tokens``
        marks as padding, and the per-sample full width counts the real tokens only)."""
        record = self.record
        units = record.units_executed.cpu()
        gate = self.gate_flops if record.cost is not None else 0
        tokens = units * self.learner_flops + gate
        token_full = self.num_learners * self.learner_flops
        full = units.shape[1] * token_full
        sample_full = torch.full((units.shape[0],), full, dtype=torch.long)
        counted = self.counted_tokens
        if counted is not None and tuple(counted.shape) == tuple(units.shape):
            counted = counted.detach().cpu().long()
            tokens = tokens * counted
            sample_full = counted.sum(1) * token_full
        return tokens.sum(1), sample_full, full, tokens

    # -- learners ------------------------------------------------------------------------------------------------------
    def learner_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, K, D_out]`` output of every learner (no ``b2``)."""
        k, h = self.num_learners, self.hidden_features
        hidden = self.act(F.linear(x, self.w1, self.b1)).view(x.shape[0], k, h)
        return torch.einsum("nkh,kho->nko", hidden, self.w2.view(k, h, self.out_features))

    def prefix(self, x: torch.Tensor, k: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[n, D_out]`` output of the first ``k`` learners on ``[n, D_in]`` rows: one pair of GEMMs of width
        ``k*h``; written into ``out`` (a contiguous ``[n, D_out]`` tensor, no gradient) when given."""
        if k == 0:
            bias = self.b2.expand(x.shape[0], -1)
            return bias if out is None else out.copy_(bias)
        width = k * self.hidden_features
        hidden = self.act(F.linear(x, self.w1[:width], None if self.b1 is None else self.b1[:width]))
        if out is None:
            return torch.addmm(self.b2, hidden, self.w2[:width])
        return torch.addmm(self.b2, hidden, self.w2[:width], out=out)

    def all_prefixes(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """``[N, K+1, D_out]`` outputs of the first k learners, k = 0..K. ``detach``: each learner's gradient flows
        only through its own term (the paper's default phase-1 mode, a boosting-like greedy fit)."""
        outputs = self.learner_outputs(x)
        if detach:
            cumulative = outputs.detach().cumsum(1) - outputs.detach() + outputs
        else:
            cumulative = outputs.cumsum(1)
        zero = torch.zeros_like(outputs[:, :1])
        return torch.cat([zero, cumulative], 1) + self.b2

    # -- gate ----------------------------------------------------------------------------------------------------------
    def gate_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C]``: ACM: logits over k = min_learners..K; condnet: on-logits of the K blocks."""
        return self.gate(x).float()

    # -- forward -------------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):  # FX tracing with any tracer: one leaf node, gated at run time
            return self._fx_leaf(x)
        shape = x.shape
        rows_shape = (shape[0], shape[1]) if x.dim() >= 3 else (shape[0], 1)
        flat = x.reshape(-1, shape[-1])
        profiler = current_profiler()
        if profiler is not None:  # FLOPs profiling: analytic (report_flops); keep the gate out of the base slot
            with profiler.slot(self, "unit", 0):
                self.gate(flat)
                out = self.prefix(flat, self.num_learners)
            return out.reshape(shape[:-1] + (self.out_features,))
        if not self.halting:
            out, units, cost, extra = self._forward_static(flat)
        elif self.training and not self.rollout:
            out, units, cost, extra = self.method.train_forward(self, flat)
        else:
            # meta tensors (timm's device="meta" construction and shape checks) have no values to group tokens by
            # (bincount, row counts): the masked path gives the same shapes
            masked = self.execution == "masked" or flat.device.type == "meta"
            out, units, cost, extra = self.method.eval_forward(self, flat, self.gate_logits(flat), masked)
        if "log_prob" in extra:  # per token -> per sample (the decisions of all its tokens)
            extra["log_prob"] = extra["log_prob"].view(rows_shape).sum(1)
        record = HaltingRecord(units_executed=units.view(rows_shape), cost=None if cost is None else
                               cost.view(rows_shape).mean(1), num_units=self.num_learners, method=self.method, **extra)
        self._keep(record)
        return out.reshape(shape[:-1] + (self.out_features,))

    def _forward_static(self, flat: torch.Tensor):
        """Full width, a truncated width, or (anytime) a uniform k per token; no gate."""
        n = flat.shape[0]
        if self.anytime and self.training:
            low = max(self.min_learners, 1)
            k = torch.randint(low, self.num_learners + 1, (n,), device=flat.device)
            prefixes = self.all_prefixes(flat)
            out = prefixes.gather(1, k.view(-1, 1, 1).expand(-1, 1, prefixes.shape[-1])).squeeze(1)
            return out, k, None, {}
        width = self.truncate if self.truncate is not None and not self.full_depth else self.num_learners
        out = self.prefix(flat, width)
        return out, torch.full((n,), width, dtype=torch.long, device=flat.device), None, {}
