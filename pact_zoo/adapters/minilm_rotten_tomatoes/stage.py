"""AdaptiveStage: L units whose depth each sample chooses, under any registered halting method.

The stage has two loops and no method-specific branch; it asks its :class:`~pact_zoo.halting.HaltingMethod`:

* the **dense** loop runs every unit and head for every row and mixes the unit outputs with the method's weights
  (training of dense methods such as PACT's Concrete mixture and ACT; the ``"masked"`` eval reference, the way SACT
  and its peers evaluate; FLOPs profiling, meta tensors and tracing);
* the **compact** loop decides after every unit which rows stop; stopped rows leave the batch, so a halted sample
  costs nothing (evaluation of every method, and sampled-path training of methods such as policy gradient). It lives
  in :mod:`.compact`; its bucketed, CUDA-graph unit runs in :mod:`.bucketing`.

Every forward leaves one :class:`~pact_zoo.halting.HaltingRecord` in :attr:`AdaptiveStage.record`.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional, Sequence, Union

import torch
import torch.utils.checkpoint
from torch import nn

from .adaptive_module import AdaptiveModule, register_notrace_module
from .bucketing import DEFAULT_BUCKETS, BucketedUnits, set_bucketing
from .compact import forward_compact, row_weights, with_touch, zero_touch
from .compaction import CompactionCost, measure_compaction_cost
from .compiled import CompiledUnits
from .config import HaltingConfig
from .flops import current_profiler
from .method import HaltingMethod, HaltingRecord, StopDecision, get_halting_method

__all__ = ["AdaptiveStage", "EXECUTION_MODES", "DECISION_MODES", "DEFAULT_BUCKETS", "measure_compaction_cost",
           "set_bucketing", "zero_touch"]

#: ``"compact"``: halted rows leave the batch in eval; ``"masked"``: every unit runs, results are masked.
EXECUTION_MODES = ("compact", "masked")
#: Eval stop decisions: ``"greedy"`` (the method's deterministic rule) or ``"sample"`` (sampled stops).
DECISION_MODES = ("greedy", "sample")


def _build_method(method: Union[str, HaltingMethod, HaltingConfig], knobs: dict[str, Any]) -> HaltingMethod:
    # duck-typed: remote-code checkpoints may load the config and the stage from two copies of the core files
    if isinstance(method, HaltingConfig) or (hasattr(method, "build") and hasattr(method, "method_cls")):
        if knobs:
            raise ValueError(f"pass halting knobs inside the HaltingConfig, not as keyword arguments: {sorted(knobs)}")
        return method.build()
    if isinstance(method, HaltingMethod) or hasattr(method, "mixture"):
        if knobs:
            raise ValueError(f"pass halting knobs to the HaltingMethod, not as keyword arguments: {sorted(knobs)}")
        return method
    return get_halting_method(method)(**knobs)


class _UniformDepth(HaltingMethod):
    """Anytime training's stop rule (not registered): each row runs d ~ U{1..L} units, chosen up front; no heads."""

    name = "uniform_depth"
    uses_heads = False

    def __init__(self, num_units: int) -> None:
        super().__init__()
        self.num_units = num_units

    def start(self, batch_size: int, device: torch.device, mode: str) -> dict:
        return {"depth": torch.randint(1, self.num_units + 1, (batch_size,), device=device)}

    def decide(self, index: int, logits: Optional[torch.Tensor], carry: dict, mode: str, log: dict):
        return StopDecision(stop=carry["depth"] == index + 1)

    def finish(self, units: int, carry: dict, rows: torch.Tensor) -> dict:
        return {}  # no cost: no halting decision was made


@register_notrace_module
class AdaptiveStage(BucketedUnits, CompiledUnits, AdaptiveModule):
    """A sequence of units whose depth each sample chooses.

    Args:
        units: L modules ``[B, ...] -> [B, ...]`` applied in order (a ResNet stage, the ponder steps of one
            recurrent time step, ...). If ``context`` is given to :meth:`forward`, units are called
            ``unit(x, context)``.
        heads: L - 1 halting heads ``[B, ...] -> [B]`` logits, one after every unit but the last; ``None`` for
            methods without heads (``"none"``).
        method: a registered method name, a :class:`~pact_zoo.halting.HaltingConfig` (handed down whole by the
            model) or a :class:`~pact_zoo.halting.HaltingMethod` instance.
        execution: eval strategy, ``"compact"`` (default) or ``"masked"``.
        exits: optional L exit modules, one after every unit, ``[B, ...] -> [B, C]``; the last is the model's own
            head. With them the stage's output is a row's exit output after the unit where it stopped (the
            early-exit layout of BranchyNet, Teerapittayanon et al. 2016): the units may change the state's shape
            (whole stages of a CNN). Methods that read exits (``reads_exits``) decide from exits ``0..L-2`` and need
            no ``heads``; accumulating methods (ACT) mix the exits' outputs, so every exit up to the stop runs.
        **knobs: the method's knobs when ``method`` is a name (e.g. ``tau``, ``threshold``).

    Attributes:
        record: the :class:`~pact_zoo.halting.HaltingRecord` of the last forward (None before the first).
        full_depth: run every unit and no head (:func:`~pact_zoo.halting.full_depth`).
        truncate: run exactly this many units and no head (:func:`~pact_zoo.halting.truncated_depth`), or None.
        anytime: training forwards run a uniformly sampled number of units per row and no head (always so for a
            method with ``anytime_training``)
            (:func:`~pact_zoo.halting.anytime_depth`).
        decision: eval stop decisions, ``"greedy"`` or ``"sample"`` (methods with ``stochastic = True``).
        buckets: ascending sub-batch sizes, or None (default). Gradient-free compact forwards then run every unit on
            the running rows padded up to the next bucket (:func:`set_bucketing`): a GPU sees a few shapes only.
        cuda_graphs: with ``buckets``, replay one captured CUDA graph per (unit, bucket) on a CUDA state.
        compaction_cost: a :class:`~pact_zoo.halting.compaction.CompactionCost`, or None (default: compact at every
            unit where a row halts). With it, greedy eval of a method that takes the state at the stop keeps halted
            rows in the batch (dead, their outputs already taken) until dropping them pays
            (:func:`measure_compaction_cost`); outputs and depths are those of immediate compaction.
        trim_padding: the state is a padded sequence batch ``[B, T, ...]`` and ``context`` its ``[B, T]`` attention
            mask (1 = real token): compact forwards cut every sub-batch to the positions its own rows use, at the start
            and after every compaction (:class:`~pact_zoo.halting.compaction.PaddingTrim`), and pad the finished rows
            back to T with zeros (padding positions: no pooling reads them). Real positions get the states of the
            untrimmed batch; the units must treat masked positions as absent (attention under the mask). Off by
            default; set by sequence models (the encoder family).
        rollout: training-mode forward under the deterministic rule, no record of log-probabilities
            (:func:`~pact_zoo.halting.self_critical_baseline`).
        keep_unit_outputs: the dense path also keeps every unit's output and the method's weights in the record
            (``record.unit_outputs``, ``record.weights``), for models that mix per-unit *outputs* (per-layer exit
            classifiers) instead of states.
    """

    # class-level defaults: a stage unpickled from before these options existed still runs
    keep_unit_outputs: bool = False
    exits_are_heads: bool = False
    compaction_cost: Optional[CompactionCost] = None
    trim_padding: bool = False

    def __init__(
            self,
            units: Sequence[nn.Module],
            heads: Optional[Sequence[nn.Module]] = None,
            method: Union[str, HaltingMethod, HaltingConfig] = "pact",
            execution: str = "compact",
            exits: Optional[Sequence[nn.Module]] = None,
            **knobs: Any,
    ) -> None:
        super().__init__()
        if len(units) < 1:
            raise ValueError("units must hold at least one module")
        if execution not in EXECUTION_MODES:
            raise ValueError(f"execution must be one of {EXECUTION_MODES}, got {execution!r}")
        self.method = _build_method(method, knobs).for_stage(len(units))
        self.units = nn.ModuleList(units)
        heads = list(heads) if heads is not None else []
        exits = list(exits) if exits is not None else None
        reads_exits = getattr(self.method, "reads_exits", False)
        if exits is not None and len(exits) != len(units):
            raise ValueError(f"exits must hold len(units) = {len(units)} modules (one after every unit, the last "
                             f"being the model's own head), got {len(exits)}")
        self.exits_are_heads = bool(exits is not None and reads_exits and not heads)
        if self.exits_are_heads:  # the rule decides from exits 0..L-2: checked as its heads below
            heads = exits[:-1]
        if self.method.uses_heads and len(heads) != len(units) - 1:
            raise ValueError(f"heads must hold len(units) - 1 = {len(units) - 1} modules for method "
                             f"{self.method.name!r}, got {len(heads)}")
        if heads and reads_exits != all(getattr(head, "is_exit", False) for head in heads):
            if reads_exits:
                raise ValueError(f"method {self.method.name!r} decides from exit classifiers: this model family "
                                 f"builds halting heads, not exits (exit rules work on families with exit "
                                 f"classifiers: pact_encoder, the ViTs, the mobile CNNs with "
                                 f"halting_scope='network')")
            raise ValueError(f"method {self.method.name!r} needs halting heads, got exit classifiers")
        if not self.method.uses_heads and heads:
            raise ValueError(f"method {self.method.name!r} uses no halting heads, got {len(heads)}")
        self.heads = nn.ModuleList(heads) if heads and not self.exits_are_heads else None
        self.exits = nn.ModuleList(exits) if exits is not None else None
        self.method_state = self.method.make_state()
        self.execution = execution
        self.grad_checkpointing = False
        self.buckets = None
        self.cuda_graphs = False
        self.compaction_cost = None
        self.trim_padding = False
        self._graphs: dict[tuple, tuple] = {}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if "exits" not in self._modules and "exits" not in self.__dict__:  # pickled before stages had exits
            self.exits = None

    @property
    def num_units(self) -> int:
        return len(self.units)

    @property
    def decision_heads(self) -> Optional[Sequence[nn.Module]]:
        """The L - 1 modules the method decides from: the halting heads, or exits ``0..L-2`` for exit rules."""
        if self.exits_are_heads:
            return self.exits[:-1]
        return self.heads

    @property
    def adaptive(self) -> bool:
        """True when the stage has halting heads or exits to decide from (its method halts)."""
        return self.method.uses_heads and self.decision_heads is not None

    def extra_repr(self) -> str:
        knobs = "".join(f", {k}={v!r}" for k, v in self.method.knob_values().items())
        return f"method={self.method.name!r}, num_units={self.num_units}{knobs}"

    # ----------------------------------------------------------------------------------------------------------------
    def _run_unit(self, n: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        unit = self.units[n]
        profiler = current_profiler()
        with profiler.slot(self, "unit", n) if profiler is not None else nullcontext():
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                if context is None:
                    return torch.utils.checkpoint.checkpoint(unit, x, use_reentrant=False)
                return torch.utils.checkpoint.checkpoint(unit, x, context, use_reentrant=False)
            return unit(x) if context is None else unit(x, context)

    def _halting_logit(self, n: int, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Head ``n`` on the state ``x``: ``[B]`` halting logits (or ``[B, C]`` exit logits). Heads with
        ``uses_context = True`` are called ``head(x, context)`` (e.g. pooling under an attention mask)."""
        head = self.decision_heads[n]
        profiler = current_profiler()
        with profiler.slot(self, "head", n) if profiler is not None else nullcontext():
            if context is not None and getattr(head, "uses_context", False):
                return head(x, context).float()
            return head(x).float()

    def _exit_output(self, n: int, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Exit ``n`` on the state after unit ``n``: the ``[A, C]`` output of the rows that stop there."""
        exit_module = self.exits[n]
        profiler = current_profiler()
        with profiler.slot(self, "exit", n) if profiler is not None else nullcontext():
            if context is not None and getattr(exit_module, "uses_context", False):
                return exit_module(x, context)
            return exit_module(x)

    def _stop_output(self, n: int, state: torch.Tensor, context: Optional[torch.Tensor],
                     logits: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The output of rows stopping after unit ``n`` with ``state``: the state itself, or with exits the exit's
        output (for exit rules the decision ``logits`` already are it, for n < L - 1)."""
        if self.exits is None:
            return state
        if logits is not None and self.exits_are_heads and n < self.num_units - 1:
            return logits
        return self._exit_output(n, state, context)

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args:
            x: ``[B, ...]`` stage input.
            context: optional ``[B, ...]`` per-row tensor passed to every unit (e.g. an RNN input).

        Returns:
            ``[B, ...]`` stage output (the shape the units produce).
        """
        if isinstance(x, torch.fx.Proxy):  # FX tracing with any tracer: the stage is one leaf node, it halts at run time
            return self._fx_leaf(x) if context is None else self._fx_leaf(x, context)
        if self.truncate is not None:
            return self._forward_all(x, context, self.truncate)
        if self._anytime_forward:
            return self._forward_compact(x, context, "uniform", _UniformDepth(self.num_units))
        if not self.halting:
            return self._forward_all(x, context)
        training = self.training and not self.rollout
        if (torch.compiler.is_compiling() and self.unit_compile is not None and not self.training and not self.rollout
                and self.execution == "compact" and current_profiler() is None and x.device.type != "meta"):
            return self._forward_compiled_units(x, context, self.decision)  # compiled units, eager halting
        dense = (current_profiler() is not None or x.device.type == "meta" or torch.jit.is_scripting()
                 or torch.compiler.is_compiling()
                 or (training and self.method.dense_training)
                 or (not training and not self.rollout and self.execution == "masked"))
        if dense:
            return self._forward_dense(x, context, training)
        mode = "sample" if training else ("greedy" if self.rollout else self.decision)
        return self._forward_compact(x, context, mode)

    # ----------------------------------------------------------------------------------------------------------------
    def _forward_all(self, x: torch.Tensor, context: Optional[torch.Tensor],
                     num_units: Optional[int] = None) -> torch.Tensor:
        """The first ``num_units`` units (default: every unit), no head: the plain network (method without heads,
        full depth) or a truncated one."""
        num_units = self.num_units if num_units is None else num_units
        for n in range(num_units):
            x = self._run_unit(n, x, context)
        units = torch.full((x.shape[0],), num_units, dtype=torch.long, device=x.device)
        self._keep(HaltingRecord(units_executed=units, cost=None, num_units=self.num_units, method=self.method))
        out = self._stop_output(num_units - 1, x, context)
        if self.exits is not None and self.training and torch.is_grad_enabled():  # exits that did not run (DDP)
            out = with_touch(out, zero_touch(self.exits))
        return out

    def _forward_dense(self, x: torch.Tensor, context: Optional[torch.Tensor], training: bool) -> torch.Tensor:
        """Every unit and head runs for every row; the output is the method's weighted sum of the unit outputs."""
        states, logits = [], []
        for n in range(self.num_units):
            x = self._run_unit(n, x, context)
            if n < self.num_units - 1:
                logits.append(self._halting_logit(n, x, context))
            states.append(self._stop_output(n, x, context, logits[n] if n < self.num_units - 1 else None))
        halting_logits = (torch.stack(logits, dim=1) if logits
                          else x.new_zeros(x.shape[0], 0, dtype=torch.float32))
        mix = self.method.mixture(halting_logits, training)
        out = states[0] * row_weights(mix.weights[:, 0], states[0])
        for n in range(1, self.num_units):  # addcmul: one operator and one temporary per unit, not two
            out = torch.addcmul(out, states[n], row_weights(mix.weights[:, n], states[n]))
        self._keep(HaltingRecord(units_executed=mix.units_executed, cost=mix.cost, num_units=self.num_units,
                                 method=self.method, log_prob=mix.log_prob, terms=mix.terms, heads_ran=True,
                                 weights=mix.weights, unit_outputs=states if self.keep_unit_outputs else None))
        return out

    def _forward_compact(self, x: torch.Tensor, context: Optional[torch.Tensor], mode: str,
                         method: Optional[HaltingMethod] = None) -> torch.Tensor:
        """The compact loop (:func:`~pact_zoo.halting.compact.forward_compact`): decide after every unit; stopped
        rows leave the batch."""
        return forward_compact(self, x, context, mode, method)
