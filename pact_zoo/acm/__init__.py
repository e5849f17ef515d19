"""Per-token adaptive width: Adaptive Computation Modules (Wójcik et al. 2023, arXiv:2312.10193) and Bengio et al.
2016's block-gated layers ("condnet", arXiv:1511.06297).

* :class:`AdaptiveWidth` - K learners whose outputs add up and a per-token gate (``method="acm"`` or ``"condnet"``).
* :func:`acmize` - replace the MLP/FFN blocks (and optionally attention projections) of a pretrained timm ViT/DeiT
  or Hugging Face BERT model.
* :func:`distill_modules`, :func:`pretrain_gates`, :func:`finetune` - the paper's three phases;
  :func:`convert` runs them in sequence.

ACM modules are adaptive modules of the halting core (``AdaptiveModule``, as the depth stages are):
``pact_zoo.halting_report`` (FLOPs per sample and per token), ``set_threshold`` / ``calibrate_threshold`` (the budget
knob), ``set_execution``, ``full_depth`` work on them.
"""
from .module import ACMGating, AdaptiveWidth, CondnetGating, EVAL_RULES, GATINGS
from .convert import INITS, acm_modules, acmize, acmize_structure, gate_parameters, learner_parameters
from .phases import (
    DEFAULT_BUDGET_WEIGHT, DEFAULT_ERROR_FACTOR, budget_loss, default_forward, distill_modules, finetune,
    gate_labels, prefix_errors, pretrain_gates,
)
from .pipeline import convert

__all__ = [
    "ACMGating", "AdaptiveWidth", "CondnetGating", "DEFAULT_BUDGET_WEIGHT", "DEFAULT_ERROR_FACTOR", "EVAL_RULES",
    "GATINGS", "INITS", "acm_modules", "acmize", "acmize_structure", "budget_loss", "convert", "default_forward",
    "distill_modules", "finetune", "gate_labels", "gate_parameters", "learner_parameters", "prefix_errors",
    "pretrain_gates",
]
