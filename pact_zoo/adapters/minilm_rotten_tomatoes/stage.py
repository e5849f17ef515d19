"""AdaptiveStage: L units whose depth each sample chooses, under any registered halting method.

The stage has two loops and no method-specific branch; it asks its :class:`~pact_zoo.halting.HaltingMethod`:

* the **dense** loop runs every unit and head for every row and mixes the unit outputs with the method's weights
  (training of dense methods such as PACT's Concrete mixture and ACT; the ``"masked"`` eval reference, the way SACT
  and its peers evaluate; FLOPs profiling, meta tensors and tracing);
* the **compact** loop decides after every unit which rows stop; stopped rows leave the batch, so a halted sample
  costs nothing (evaluation of every method, and sampled-path training of methods such as policy gradient).

Every forward leaves one :class:`~pact_zoo.halting.HaltingRecord` in :attr:`AdaptiveStage.record`.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from typing import Any, Optional, Sequence, Union

import torch
import torch.utils.checkpoint
from torch import nn

try:  # timm's FX tracing treats the stage as a leaf; the core itself does not need timm (remote-code checkpoints)
    from timm.layers import register_notrace_module
except ImportError:  # pragma: no cover - exercised only where timm is absent
    def register_notrace_module(module: type) -> type:
        return module

from .compaction import (
    ActiveRows, CompactionCost, PaddingTrim, RowCollector, bucket_size, count_true, pad_rows, split_rows, take_rows,
)
from .config import HaltingConfig
from .flops import current_profiler
from .method import HaltingMethod, HaltingRecord, StopDecision, get_halting_method

__all__ = ["AdaptiveStage", "EXECUTION_MODES", "DECISION_MODES", "DEFAULT_BUCKETS", "measure_compaction_cost",
           "set_bucketing", "zero_touch"]

#: ``"compact"``: halted rows leave the batch in eval; ``"masked"``: every unit runs, results are masked.
EXECUTION_MODES = ("compact", "masked")
#: Eval stop decisions: ``"greedy"`` (the method's deterministic rule) or ``"sample"`` (sampled stops).
DECISION_MODES = ("greedy", "sample")
#: Sub-batch sizes of bucketed eval (:func:`set_bucketing`): powers of two up to 64, then multiples of 64.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64) + tuple(range(128, 4097, 64))


def _split_live(stop: torch.Tensor, live: torch.Tensor, num_keep: int, num_stop: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Local positions of the live rows that go on and of those that stop (``stop`` is within ``live``), in order;
    one stable sort, no host synchronisation."""
    key = stop.to(torch.int8) + 2 * (~live).to(torch.int8)  # going on 0, stopping 1, dead 2
    order = torch.argsort(key, stable=True)
    return order[:num_keep], order[num_keep:num_keep + num_stop]


def _rows(weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """View ``[B]`` weights so they broadcast against a ``[B, ...]`` state, in the state's dtype."""
    return weights.to(like.dtype).view((-1,) + (1,) * (like.dim() - 1))


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


def zero_touch(module: nn.Module) -> Optional[torch.Tensor]:
    """A zero-valued scalar that depends on every trainable parameter of ``module`` (None if it has none), including
    those its submodules use without registering them (``referenced_parameters()``, e.g. an exit that is the model's
    own head)."""
    params = list(module.parameters())
    for sub in module.modules():
        referenced = getattr(sub, "referenced_parameters", None)
        if callable(referenced):
            params.extend(referenced())
    params = [p.reshape(-1)[0] for p in params if p.requires_grad]
    return torch.stack(params).sum() * 0.0 if params else None


def _with_touch(out: torch.Tensor, touch: Optional[torch.Tensor]) -> torch.Tensor:
    """``out`` made to depend on the parameters behind a :func:`zero_touch` (value unchanged)."""
    return out if touch is None else out + touch.to(out.dtype)


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
class AdaptiveStage(nn.Module):
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
    buckets: Optional[tuple[int, ...]] = None
    keep_unit_outputs: bool = False
    exits_are_heads: bool = False
    cuda_graphs: bool = False
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
        self.decision = "greedy"
        self.full_depth = False
        self.truncate: Optional[int] = None
        self.anytime = False
        self.rollout = False
        self.grad_checkpointing = False
        self.buckets = None
        self.cuda_graphs = False
        self.compaction_cost = None
        self.trim_padding = False
        self.record: Optional[HaltingRecord] = None
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

    @property
    def halting(self) -> bool:
        """True when the next forward's depth comes from the halting heads (adaptive, and not switched to full,
        truncated or anytime depth)."""
        return (self.adaptive and not self.full_depth and self.truncate is None and not self._anytime_forward)

    @property
    def _anytime_forward(self) -> bool:
        """True when the next forward runs a uniform depth per row and no head: training under ``anytime`` or under
        a method that trains that way (``anytime_training``)."""
        return self.training and (self.anytime or self.method.anytime_training)

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

    def _run_unit_compact(self, n: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`_run_unit` of the compact loop: padded to a bucket (and replayed as a CUDA graph) when asked."""
        if self.buckets is None or self.training or torch.is_grad_enabled() or current_profiler() is not None:
            return self._run_unit(n, x, context)
        rows = x.shape[0]
        size = bucket_size(rows, self.buckets)
        if self.cuda_graphs and x.is_cuda:
            return self._replay_graph(n, size, x, context)
        if size == rows:
            return self._run_unit(n, x, context)
        out = self._run_unit(n, pad_rows(x, size), None if context is None else pad_rows(context, size))
        return out[:rows]

    def _replay_graph(self, n: int, size: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
        """Unit ``n`` on ``x`` (``[A, ...]``, A <= size) through the CUDA graph captured for (n, size)."""
        key = (n, size, tuple(x.shape[1:]), x.dtype, None if context is None else tuple(context.shape[1:]))
        graphs = self.__dict__.setdefault("_graphs", {})
        entry = graphs.get(key)
        if entry is None:
            entry = self._capture_graph(n, size, x, context)
            graphs[key] = entry
        graph, static_x, static_context, static_out = entry
        rows = x.shape[0]
        static_x[:rows].copy_(x)  # rows past A keep earlier valid inputs: their outputs are never read
        if context is not None:
            static_context[:rows].copy_(context)
        graph.replay()
        return static_out[:rows].clone()  # the next replay overwrites the static output

    def _capture_graph(self, n: int, size: int, x: torch.Tensor, context: Optional[torch.Tensor]) -> tuple:
        static_x = pad_rows(x, size).clone()
        static_context = None if context is None else pad_rows(context, size).clone()
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the capture (cuDNN autotuning, lazy initialisation)
                self._run_unit(n, static_x, static_context)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        pool = self.__dict__.get("_graph_pool")
        if pool is None:
            pool = self.__dict__["_graph_pool"] = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=pool):
            static_out = self._run_unit(n, static_x, static_context)
        return graph, static_x, static_context, static_out

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

    def _keep(self, record: HaltingRecord) -> None:
        if current_profiler() is None:  # a profiling run leaves the user's record alone
            self.record = record

    def forward(self, x: torch.Tensor, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Args:
            x: ``[B, ...]`` stage input.
            context: optional ``[B, ...]`` per-row tensor passed to every unit (e.g. an RNN input).

        Returns:
            ``[B, ...]`` stage output (the shape the units produce).
        """
        if isinstance(x, torch.fx.Proxy):  # FX tracing with any tracer: the stage is one leaf node, it halts at run time
            args = (x,) if context is None else (x, context)
            return x.tracer.create_proxy("call_module", x.tracer.path_of_module(self), args, {})
        if self.truncate is not None:
            return self._forward_all(x, context, self.truncate)
        if self._anytime_forward:
            return self._forward_compact(x, context, "uniform", _UniformDepth(self.num_units))
        if not self.halting:
            return self._forward_all(x, context)
        training = self.training and not self.rollout
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
            out = _with_touch(out, zero_touch(self.exits))
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
        out = states[0] * _rows(mix.weights[:, 0], states[0])
        for n in range(1, self.num_units):  # addcmul: one operator and one temporary per unit, not two
            out = torch.addcmul(out, states[n], _rows(mix.weights[:, n], states[n]))
        self._keep(HaltingRecord(units_executed=mix.units_executed, cost=mix.cost, num_units=self.num_units,
                                 method=self.method, log_prob=mix.log_prob, terms=mix.terms, heads_ran=True,
                                 weights=mix.weights, unit_outputs=states if self.keep_unit_outputs else None))
        return out

    def _forward_compact(self, x: torch.Tensor, context: Optional[torch.Tensor], mode: str,
                         method: Optional[HaltingMethod] = None) -> torch.Tensor:
        """Decide after every unit; stopped rows leave the batch. One host synchronisation per unit.

        Methods that take the state at the stop (PACT, policy gradient) keep each stopped row's final state as it
        is (one piece per unit) and assemble the output once: memory is one stage state of B rows, with no
        accumulator (PACT's memory claim). Accumulating methods (ACT) add w_n x_n of the running rows to the output.

        A lone running row (a batch of one, or the last row left of a batch) takes a lean loop: no split, gather or
        count, one host read per unit (for a rule that is a threshold on the logit,
        :meth:`~pact_zoo.halting.HaltingMethod.lone_row_threshold`, one Python comparison instead of tensor
        operators), and the loop ends when the row stops. With
        :attr:`trim_padding` the sub-batch is cut to its own longest row at the start and after every compaction.
        """
        method = self.method if method is None else method
        num_units, last_unit = len(self.units), len(self.units) - 1
        profiler = current_profiler()
        trim: Optional[PaddingTrim] = None
        if self.trim_padding and context is not None and self.exits is None:
            trim = PaddingTrim(x.shape[1])
            x, context = trim.trim(x, context)
        units = list(self.units)
        direct = (self.buckets is None and profiler is None
                  and not (self.grad_checkpointing and self.training and torch.is_grad_enabled()))

        def run(n: int, state: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
            if not direct:
                return self._run_unit_compact(n, state, context)
            return units[n](state) if context is None else units[n](state, context)

        heads = list(self.decision_heads) if method.uses_heads else []
        with_context = [context is not None and getattr(head, "uses_context", False) for head in heads]

        def head_logits(n: int, state: torch.Tensor, context: Optional[torch.Tensor]) -> torch.Tensor:
            if profiler is not None:
                return self._halting_logit(n, state, context)
            return (heads[n](state, context) if with_context[n] else heads[n](state)).float()

        state = run(0, x, context)
        batch_size, device = state.shape[0], state.device
        active = ActiveRows(batch_size, device)
        steps = torch.full((batch_size,), num_units, dtype=torch.long, device=device)
        carry = method.start(batch_size, device, mode)
        log: dict[str, list] = defaultdict(list)
        pieces = RowCollector(batch_size)
        values: dict[str, RowCollector] = {}
        out: Optional[torch.Tensor] = None
        limit = method.lone_row_threshold(mode) if method.uses_heads else None

        def accumulate(n: int, state: torch.Tensor, context: Optional[torch.Tensor], logits: Optional[torch.Tensor],
                       weight: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
            """ACT: adds w_n times this unit's output (its exit's, with exits) of the running rows to ``out``."""
            unit_out = self._stop_output(n, state, context, logits)
            contribution = unit_out * _rows(weight, unit_out)
            if trim is not None:
                contribution = trim.restore(contribution)
            return contribution if out is None else active.add_into(out, contribution)

        # deferred compaction (compaction_cost set): halted rows may stay in the state as dead rows (their output is
        # taken when they halt, their decisions are ignored) until a gather pays; greedy, non-accumulating only
        cost_model = self.compaction_cost
        defer = (cost_model is not None and not method.accumulates and mode == "greedy"
                 and not torch.is_grad_enabled())
        live: Optional[torch.Tensor] = None  # [A] bool: rows of the state still running; None: every row
        num_live = batch_size
        last, logits = last_unit, None  # the unit whose state the loop ends with, its decision logits
        n = 0
        while n < num_units:
            num_rows = state.shape[0]
            logits = None
            if num_rows == 1 and live is None:  # a lone row: run on until it stops, one host read per unit
                stops = False
                while n < last_unit:
                    logits = head_logits(n, state, context) if method.uses_heads else None
                    if limit is not None:
                        stops, weight = logits.item() >= limit, None
                    else:
                        decision = method.decide(n, logits, carry, mode, log)
                        stops, weight = bool(decision.stop.item()), decision.weight
                    if method.accumulates:
                        out = accumulate(n, state, context, logits, weight, out)
                    if stops:
                        break
                    n += 1
                    state = run(n, state, context)
                if not stops:  # the last unit
                    logits = None
                    if method.accumulates:
                        out = accumulate(n, state, context, None, method.last_weight(carry), out)
                stop, num_stop = None, 1
            else:
                if n < last_unit:
                    logits = head_logits(n, state, context) if method.uses_heads else None
                    decision = method.decide(n, logits, carry, mode, log)
                    stop, weight = decision.stop, decision.weight
                    if live is not None:
                        stop = stop & live
                    num_stop = count_true(stop)
                else:
                    stop, weight, num_stop = None, method.last_weight(carry), num_live
                if method.accumulates:
                    out = accumulate(n, state, context, logits, weight, out)
                if num_stop == 0 and n < last_unit:  # (at the last unit every live row stops, also of none)
                    n += 1
                    state = run(n, state, context)
                    continue
            if num_stop == num_live:
                keep = None
                halted = (torch.arange(num_rows, device=device) if live is None
                          else torch.nonzero(live if stop is None else stop).view(-1))
            elif live is None:
                keep, halted = split_rows(stop, num_stop)
            else:
                keep, halted = _split_live(stop, live, num_live - num_stop, num_stop)
            halted_rows = active.original(halted)
            if keep is None and active.index is None and live is None:
                steps.fill_(n + 1)
            else:
                steps.index_fill_(0, halted_rows, n + 1)
            for key, value in method.finish(n + 1, carry, halted).items():
                values.setdefault(key, RowCollector(batch_size)).add(halted_rows, value)
            if keep is None:
                last = n
                break
            if not method.accumulates:
                piece = self._stop_output(
                    n, take_rows(state, halted), None if context is None else take_rows(context, halted),
                    None if logits is None else take_rows(logits, halted))
                pieces.add(halted_rows, piece if trim is None else trim.restore(piece))
            num_live -= num_stop
            if defer and not cost_model.pays(n + 1, num_rows - num_live, num_live):
                live = ~stop if live is None else live & ~stop  # the halted rows stay, dead
            else:
                state = take_rows(state, keep)
                carry = {key: value.index_select(0, keep) for key, value in carry.items()}
                if context is not None:
                    context = take_rows(context, keep)
                    if trim is not None:
                        state, context = trim.trim(state, context)
                active.keep(keep)
                live = None
            n += 1
            state = run(n, state, context)
        if not method.accumulates:
            if live is not None:
                rows = torch.nonzero(live).view(-1)
                state = take_rows(state, rows)
                context = None if context is None else take_rows(context, rows)
                logits = None if logits is None else take_rows(logits, rows)
            final = self._stop_output(last, state, context, logits)
            if trim is not None:
                final = trim.restore(final)
            if pieces:
                pieces.add(active.all() if live is None else active.original(rows), final)
                out = pieces.assemble()
            else:  # no row left early: the final output is the output, in order
                out = final
        del state
        row_values = {key: collector.assemble() for key, collector in values.items()}
        record = HaltingRecord(units_executed=steps, cost=row_values.pop("cost", None), num_units=num_units,
                               method=method, log_prob=row_values.pop("log_prob", None),
                               heads_ran=method.uses_heads)
        if mode in ("sample", "uniform") and self.training and torch.is_grad_enabled():
            record.terms = method.terms(log, row_values)
            # units no row reached get no gradient; a zero-valued touch keeps every parameter in the graph (DDP)
            record.touch = zero_touch(self)
            out = _with_touch(out, record.touch)  # the output itself depends on every parameter (DDP)
        self._keep(record)
        return out


def _median_seconds(fn, device: torch.device, repeats: int) -> float:
    import statistics
    import time

    times = []
    for _ in range(repeats + 1):  # the first call warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


@torch.inference_mode()
def measure_compaction_cost(stage: AdaptiveStage, x: torch.Tensor, context: Optional[torch.Tensor] = None,
                            repeats: int = 5) -> CompactionCost:
    """Measure on ``x``'s device what compaction costs and saves in ``stage`` (eval mode, full depth).

    Args:
        stage: the stage.
        x: ``[B, ...]`` stage input, B >= 2 (the batch size the cost model is for).
        context: optional ``[B, ...]`` per-row context of the units.
        repeats: timed calls per measurement (median).

    Returns:
        per unit, the marginal time of a row, ``(t(B rows) - t(1 row)) / (B - 1)``; the fixed and per-row time of
        gathering the running rows (state and index), from gathers of 1 and B - 1 rows of every unit's input.
    """
    batch = x.shape[0]
    if batch < 2:
        raise ValueError(f"x must hold at least 2 rows to measure a per-row cost, got {batch}")
    device = x.device
    row_seconds, gather_one, gather_many = [], [], []
    one, many = torch.zeros(1, dtype=torch.long, device=device), torch.arange(batch - 1, device=device)
    state = x
    for n in range(stage.num_units):
        ctx_one = None if context is None else context[:1]
        full = _median_seconds(lambda: stage._run_unit(n, state, context), device, repeats)
        single = _median_seconds(lambda: stage._run_unit(n, state[:1], ctx_one), device, repeats)
        row_seconds.append(max(full - single, 0.0) / (batch - 1))
        gather_one.append(_median_seconds(lambda: (take_rows(state, one), many.index_select(0, one)), device, repeats))
        gather_many.append(_median_seconds(lambda: (take_rows(state, many), many.index_select(0, many)), device,
                                           repeats))
        state = stage._run_unit(n, state, context)
    one_s, many_s = sum(gather_one) / len(gather_one), sum(gather_many) / len(gather_many)
    per_row = max(many_s - one_s, 0.0) / max(batch - 2, 1)
    return CompactionCost(row_seconds=tuple(row_seconds), gather_seconds=max(one_s - per_row, 0.0),
                          gather_row_seconds=per_row)


def set_bucketing(model: nn.Module, buckets: Optional[Sequence[int]] = DEFAULT_BUCKETS,
                  cuda_graphs: bool = False) -> None:
    """Bucketed compact eval for every :class:`AdaptiveStage` of ``model``: each unit runs on the running rows padded
    up to the next of ``buckets`` (ascending sizes; None switches bucketing off), so that a GPU sees a few shapes
    (cuDNN autotuning, compiled graphs); with ``cuda_graphs`` one CUDA graph per (unit, bucket) is captured on first
    use and replayed. Outputs and depths are those of unbucketed compaction (a padded row is never read; eval
    normalisation is per row). Only gradient-free eval forwards are bucketed."""
    if buckets is not None:
        buckets = tuple(int(b) for b in buckets)
        if not buckets or any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"buckets must be ascending distinct integers >= 1, got {buckets!r}")
    if cuda_graphs and buckets is None:
        raise ValueError("cuda_graphs needs buckets (one graph per (unit, bucket))")
    for module in model.modules():
        if isinstance(module, AdaptiveStage) or (hasattr(module, "buckets") and hasattr(module, "_graphs")):
            module.buckets = buckets
            module.cuda_graphs = cuda_graphs
            module._graphs = {}
