# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""PACT-LSTM: an LSTM that ponders a data-dependent number of cell steps at every time step.

Graves 2016 (ACT for RNNs, arXiv:1603.08983) runs the cell s_t^n = S(s_t^{n-1}, [x_t, delta_{n,1}]) for
n = 1..N(t) inner steps per input step, with s_t^0 = s_{t-1} and a binary flag that is 1 on the first inner step
only; a halting unit h_t^n = sigmoid(W_h h_t^n + b_h) decides N(t). PACT (Figurnov, Sobolev, Vetrov 2018,
arXiv:1712.00386) treats N(t) as a latent variable: in training the state carried to t+1 is the Concrete-relaxed
mixture sum_n w_{t,n} s_t^n (hidden *and* cell state), in evaluation it is s_t^{N(t)} with N(t) the first n whose
h_t^n >= threshold, and sequences that halted leave the batch for the rest of the time step. ACT uses its mean-field
weights p_t^n instead. The halting math is :class:`~pact_zoo.halting.AdaptiveStage` (one stage per layer, reused at
every time step): this file only wires the LSTM cell into it.

Loss (Graves eq. 11; PACT's truncated-geometric prior gives the same term with rho_t = E_q[z_t]):
``task_loss + tau * mean_batch(sum_layers sum_t rho_t)``, plus the method's per-step terms (PACT's entropy bonus
``-entropy_weight * H(q(z_t | x))``) averaged over the time steps by default (``halting_terms_over_time="mean"``):
summed, a sequence of T frames gets T bonuses against one task loss, q(z_t) stays near uniform and the eval rule
runs almost every ponder step.

Remote code: :meth:`PactLSTMPreTrainedModel.save_pretrained` writes this file, ``configuration_pact_lstm.py`` and
the halting-core modules they import next to the weights, with an ``auto_map``; such a folder loads with
``trust_remote_code=True`` where pact_zoo is not installed (needs torch, transformers and timm).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

try:  # the one halting core (pact_zoo/halting)
    from pact_zoo.halting.config import HaltingConfig
    from pact_zoo.halting.flops import current_profiler
    from pact_zoo.halting.heads import VectorHaltingHead
    from pact_zoo.halting.method import HaltingRecord
    from pact_zoo.halting.report import halting_loss
    from pact_zoo.halting.stage import AdaptiveStage, zero_touch
except ModuleNotFoundError as error:  # remote code without pact_zoo: the core files are saved next to this file
    if error.name is None or not error.name.startswith("pact_zoo"):
        raise
    from .config import HaltingConfig
    from .flops import current_profiler
    from .heads import VectorHaltingHead
    from .method import HaltingRecord
    from .report import halting_loss
    from .stage import AdaptiveStage, zero_touch
from .configuration_pact_lstm import PactLSTMConfig
from .halting_model import HaltingModelMixin, UnitsExecutedOutput
from .losses import sequence_loss, token_loss
from .remote_code import remote_code_files as shared_remote_code_files

logger = logging.get_logger(__name__)

#: Value of Graves's first-step input flag on the first / later ponder steps of a time step.
FIRST_STEP_FLAG, LATER_STEP_FLAG = 1.0, 0.0
#: Auto classes written to ``config.json`` (``auto_map``) by :meth:`PactLSTMPreTrainedModel.save_pretrained`.
AUTO_MAP_CLASSES = {
    "AutoModel": "PactLSTMModel",
    "AutoModelForSequenceClassification": "PactLSTMForSequenceClassification",
    "AutoModelForTokenClassification": "PactLSTMForTokenClassification",
}


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class PactLSTMModelOutput(UnitsExecutedOutput, ModelOutput):
    """Output of :class:`PactLSTMModel`.

    Args:
        last_hidden_state: ``[B, T, H]`` hidden state of the top layer after each time step (zero at padding).
        ponder_cost: ``[B]`` per-sequence ponder cost sum_layers sum_t rho_t (PACT: relaxed sum_n n w_n or E_q[z] in
            training, N in eval; ACT: N + R; ``"none"``: executed steps, not part of the loss).
        units_executed: ``[B, T]`` long, cell applications at each time step summed over layers (0 at padding;
            the halting core's name, as in ``HaltingRecord`` / ``HaltingReport``; ``ponder_steps``, its former name,
            still reads it with a DeprecationWarning).
        hidden_states: with ``output_hidden_states``: the input features ``[B, T, input_size]`` and every layer's
            output ``[B, T, H]``.
    """

    former_units_field = "ponder_steps"

    last_hidden_state: Optional[torch.FloatTensor] = None
    ponder_cost: Optional[torch.FloatTensor] = None
    units_executed: Optional[torch.LongTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None


@dataclass
class PactLSTMSequenceClassifierOutput(UnitsExecutedOutput, ModelOutput):
    """Output of :class:`PactLSTMForSequenceClassification`.

    Args:
        loss: scalar, task loss + tau * mean(ponder_cost) (adaptive methods), when ``labels`` are given.
        logits: ``[B, num_labels]`` read from the top layer's state at each sequence's last real step.
        ponder_cost, units_executed, hidden_states: as in :class:`PactLSTMModelOutput`.
    """

    former_units_field = "ponder_steps"

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    ponder_cost: Optional[torch.FloatTensor] = None
    units_executed: Optional[torch.LongTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None


@dataclass
class PactLSTMTokenClassifierOutput(UnitsExecutedOutput, ModelOutput):
    """Output of :class:`PactLSTMForTokenClassification`.

    Args:
        loss: scalar, task loss over the real steps + tau * mean(ponder_cost), when ``labels`` are given.
        logits: ``[B, T, num_labels]``, one prediction per time step.
        ponder_cost, units_executed, hidden_states: as in :class:`PactLSTMModelOutput`.
    """

    former_units_field = "ponder_steps"

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    ponder_cost: Optional[torch.FloatTensor] = None
    units_executed: Optional[torch.LongTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None


# --------------------------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------------------------
class PactLSTMPonderStep(nn.Module):
    """One application of a layer's LSTM cell to the packed state: a unit of the layer's :class:`AdaptiveStage`.

    The cell is *referenced*, not registered: the layer owns it, so the state dict holds its weights once although
    every ponder step uses them.

    Args:
        cell: the layer's ``nn.LSTMCell(input_size + 1, H)``.
        flag: Graves's first-step input flag appended to the input (1 on the first ponder step, 0 after).

    Shapes: ``state`` ``[B, 2H]`` = cat(h, c), ``inputs`` ``[B, input_size]`` -> ``[B, 2H]``.
    """

    def __init__(self, cell: nn.LSTMCell, flag: float) -> None:
        super().__init__()
        self.__dict__["cell"] = cell
        self.flag = flag

    def forward(self, state: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        hidden, memory = state.chunk(2, dim=-1)
        flag = inputs.new_full((inputs.shape[0], 1), self.flag)
        hidden, memory = self.cell(torch.cat([inputs, flag], dim=-1), (hidden, memory))
        return torch.cat([hidden, memory], dim=-1)

    def extra_repr(self) -> str:
        return f"flag={self.flag}"


class PactLSTMHaltingView(nn.Module):
    """The layer's halting unit read on the packed state: h_t^n = sigmoid(W_h h_t^n + b_h) (Graves eq. 6).

    The head is referenced, not registered (the layer owns it). Shape: ``[B, 2H]`` -> ``[B]`` halting logits.
    """

    def __init__(self, head: VectorHaltingHead, hidden_size: int) -> None:
        super().__init__()
        self.__dict__["head"] = head
        self.hidden_size = hidden_size

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.head(state[:, :self.hidden_size])


class PactLSTMLayer(nn.Module):
    """One LSTM layer that ponders 1..M cell steps per time step under the configured halting method.

    Args:
        config: the model config (``hidden_size``, ``max_ponder_steps``, halting knobs).
        input_size: features per time step of this layer's input.
    """

    def __init__(self, config: PactLSTMConfig, input_size: int) -> None:
        super().__init__()
        halting: HaltingConfig = config.halting_config
        self.hidden_size = config.hidden_size
        self.terms_over_time = getattr(config, "halting_terms_over_time", "mean")
        self.cell = nn.LSTMCell(input_size + 1, config.hidden_size)  # +1: first-step flag
        num_steps = config.max_ponder_steps
        units = [PactLSTMPonderStep(self.cell, FIRST_STEP_FLAG)]
        if num_steps > 1:
            units += [PactLSTMPonderStep(self.cell, LATER_STEP_FLAG)] * (num_steps - 1)  # one module, M - 1 times
        if halting.adaptive and num_steps > 1:
            self.halting_head = VectorHaltingHead(config.hidden_size, bias_init=halting.halting_bias_init)
            heads = [PactLSTMHaltingView(self.halting_head, config.hidden_size)] * (num_steps - 1)
        else:
            self.halting_head, heads = None, None
        self.stage = AdaptiveStage(units, heads, method=halting if heads is not None else "none")

    def forward(self, inputs: torch.Tensor, step_rows: list[Optional[torch.Tensor]]
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the sequence.

        Args:
            inputs: ``[B, T, F]``.
            step_rows: per time step, ``None`` when every row is real, else the ``[B_t]`` indices of the real rows
                (padding rows keep their state and execute nothing).

        Returns:
            outputs ``[B, T, H]`` (zero at padding), ponder steps ``[B, T]`` long, ponder cost ``[B]`` float (the
            method's cost summed over the sequence; executed steps for a non-halting layer). The stage's record is
            the sequence's (:meth:`HaltingRecord.over_time`), read by ``pact_zoo.halting_loss`` / ``halting_report``.
        """
        batch_size, seq_len, _ = inputs.shape
        state = inputs.new_zeros(batch_size, 2 * self.hidden_size)
        outputs, records = [], []
        profiling = current_profiler() is not None  # a profiling run leaves the records alone
        for t in range(seq_len):
            rows = step_rows[t]
            if rows is None:
                state = self.stage(state, inputs[:, t])
                outputs.append(state[:, :self.hidden_size])
            else:
                output = inputs.new_zeros(batch_size, self.hidden_size)
                if rows.numel():
                    new_state = self.stage(state[rows], inputs[rows, t])
                    state = state.index_copy(0, rows, new_state)
                    output = output.index_copy(0, rows, new_state[:, :self.hidden_size])
                outputs.append(output)
                if not rows.numel():
                    continue
            if not profiling:
                records.append((rows, self.stage.record))
        if profiling:
            steps = torch.full((batch_size, seq_len), self.stage.num_units, dtype=torch.long, device=inputs.device)
            return torch.stack(outputs, dim=1), steps, steps.sum(1).float()
        record = HaltingRecord.over_time(records, batch_size, terms=self.terms_over_time)
        if len(records) < seq_len:  # steps where every row was padding: expand to [B, T]
            times = [t for t, rows in enumerate(step_rows) if rows is None or rows.numel()]
            units = record.units_executed.new_zeros(batch_size, seq_len)
            units[:, times] = record.units_executed
            record.units_executed = units
        if record.touch is not None or (self.stage.anytime and self.training and torch.is_grad_enabled()):
            record.touch = zero_touch(self)  # the cell and head are the layer's (the stage only references them)
        self.stage.record = record
        cost = record.cost if record.cost is not None else record.units_executed.sum(1).float()
        return torch.stack(outputs, dim=1), record.units_executed, cost


# --------------------------------------------------------------------------------------------------------------------
# Pretrained base
# --------------------------------------------------------------------------------------------------------------------
def remote_code_files() -> list[Path]:
    """Source files a PACT-LSTM checkpoint needs to load with ``trust_remote_code=True`` without pact_zoo: the
    configuration and modeling files, the shared helpers beside them and the halting-core modules they import."""
    return shared_remote_code_files(
        anchors=(PactLSTMConfig, PactLSTMModel),
        core=(HaltingConfig, current_profiler, VectorHaltingHead, HaltingRecord, halting_loss, AdaptiveStage))


class PactLSTMPreTrainedModel(HaltingModelMixin, PreTrainedModel):
    """Weight init shared by the PACT-LSTM models; halting knobs, losses and remote-code saving come from
    :class:`HaltingModelMixin`."""

    config: PactLSTMConfig
    config_class = PactLSTMConfig
    base_model_prefix = "pact_lstm"
    main_input_name = "inputs_embeds"
    input_modalities = ("text",)
    _no_split_modules = ["PactLSTMLayer"]
    supports_gradient_checkpointing = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Linear/Embedding: transformers' default; LSTMCell: U(-1/sqrt(H), 1/sqrt(H)) (PyTorch's LSTM init, not
        covered by the default); halting unit: bias = ``halting_bias_init``.

        The halting bias is set on the head's ``nn.Linear`` itself: transformers skips custom-code modules without
        parameters of their own (such as :class:`VectorHaltingHead`), so an init keyed on the head would not run.
        """
        super()._init_weights(module)
        if isinstance(module, nn.LSTMCell):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for param in module.parameters():
                init.uniform_(param, -bound, bound)
        elif isinstance(module, nn.Linear) and any(
                module is head.fc for head in self.modules() if isinstance(head, VectorHaltingHead)):
            init.constant_(module.bias, self.config.halting_bias_init)

    auto_map_classes = AUTO_MAP_CLASSES

    @classmethod
    def remote_code_files(cls) -> list[Path]:
        return remote_code_files()

    def halting_profile_inputs(self) -> tuple[tuple, dict]:
        """A one-sample, one-step forward for ``pact_zoo.halting_report`` to profile the FLOPs per ponder step."""
        param = next(self.parameters())
        if self.config.vocab_size is not None:
            return (), {"input_ids": torch.zeros(1, 1, dtype=torch.long, device=param.device)}
        return (), {"inputs_embeds": torch.zeros(1, 1, self.config.input_size, dtype=param.dtype,
                                                 device=param.device)}


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------
class PactLSTMModel(PactLSTMPreTrainedModel):
    """Stacked pondering LSTM layers; returns the top layer's hidden state at every time step.

    Inputs: ``input_ids`` ``[B, T]`` (needs ``config.vocab_size``) or ``inputs_embeds`` ``[B, T, input_size]``;
    optional ``attention_mask`` ``[B, T]`` (1 = real step, 0 = padding; padding may sit anywhere, it neither
    updates the state nor counts as ponder steps).
    """

    def __init__(self, config: PactLSTMConfig) -> None:
        super().__init__(config)
        self.embeddings = (nn.Embedding(config.vocab_size, config.input_size, padding_idx=config.pad_token_id)
                           if config.vocab_size is not None else None)
        self.layers = nn.ModuleList([
            PactLSTMLayer(config, config.input_size if index == 0 else config.hidden_size)
            for index in range(config.num_hidden_layers)])
        self.post_init()

    def get_input_embeddings(self) -> Optional[nn.Embedding]:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    # -- input checks -------------------------------------------------------------------------------------------------
    def _embed(self, input_ids: Optional[torch.Tensor], inputs_embeds: Optional[torch.Tensor]) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            if self.embeddings is None:
                raise ValueError("input_ids need config.vocab_size (an embedding); pass inputs_embeds instead")
            if input_ids.dim() != 2 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
                raise ValueError(f"input_ids must be an integer tensor [batch, seq_len], got {input_ids.dtype} "
                                 f"{tuple(input_ids.shape)}")
            if input_ids.device.type != "meta" and input_ids.numel() and (
                    int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
                raise ValueError(f"input_ids must lie in [0, vocab_size={self.config.vocab_size})")
            return self.embeddings(input_ids)
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.input_size:
            raise ValueError(f"inputs_embeds must be [batch, seq_len, input_size={self.config.input_size}], "
                             f"got {tuple(inputs_embeds.shape)}")
        if not inputs_embeds.dtype.is_floating_point:
            raise ValueError(f"inputs_embeds must be floating point, got {inputs_embeds.dtype}")
        if not self.training and inputs_embeds.device.type != "meta" and not bool(torch.isfinite(inputs_embeds).all()):
            raise ValueError("inputs_embeds contains NaN or inf: an eval forward needs finite input for the halting "
                             "rule")  # as the image models' input check
        return inputs_embeds

    @staticmethod
    def _step_rows(attention_mask: Optional[torch.Tensor], inputs: torch.Tensor) -> list[Optional[torch.Tensor]]:
        """Per time step: ``None`` (all rows real) or the indices of the real rows (one host sync in total)."""
        batch_size, seq_len = inputs.shape[:2]
        if attention_mask is None or inputs.device.type == "meta":
            return [None] * seq_len
        if tuple(attention_mask.shape) != (batch_size, seq_len):
            raise ValueError(f"attention_mask must be [batch, seq_len] = {(batch_size, seq_len)}, "
                             f"got {tuple(attention_mask.shape)}")
        mask = attention_mask.detach().cpu()
        if not ((mask == 0) | (mask == 1)).all():
            raise ValueError("attention_mask must hold 0 (padding) and 1 (real step) only")
        mask = mask.bool()
        rows: list[Optional[torch.Tensor]] = []
        for t in range(seq_len):
            column = mask[:, t]
            rows.append(None if bool(column.all()) else column.nonzero().squeeze(1).to(inputs.device))
        return rows

    def forward(
            self,
            input_ids: Optional[torch.LongTensor] = None,
            inputs_embeds: Optional[torch.FloatTensor] = None,
            attention_mask: Optional[torch.Tensor] = None,
            output_hidden_states: Optional[bool] = None,
            return_dict: Optional[bool] = None,
    ) -> Union[PactLSTMModelOutput, tuple]:
        """Returns :class:`PactLSTMModelOutput` (``last_hidden_state`` ``[B, T, H]``, ``ponder_cost`` ``[B]``,
        ``units_executed`` ``[B, T]``, ``hidden_states``), or its tuple with ``return_dict=False``."""
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self._embed(input_ids, inputs_embeds)
        if hidden.shape[1] < 1:
            raise ValueError("input sequences must have at least one time step")
        step_rows = self._step_rows(attention_mask, hidden)
        all_hidden = (hidden,) if output_hidden_states else None
        units, ponder_cost = None, None
        for layer in self.layers:
            hidden, steps, cost = layer(hidden, step_rows)
            units = steps if units is None else units + steps
            ponder_cost = cost if ponder_cost is None else ponder_cost + cost
            if output_hidden_states:
                all_hidden = all_hidden + (hidden,)
        output = PactLSTMModelOutput(last_hidden_state=hidden, ponder_cost=ponder_cost, units_executed=units,
                                     hidden_states=all_hidden)
        return output if return_dict else output.to_tuple()

class PactLSTMForSequenceClassification(PactLSTMPreTrainedModel):
    """PACT-LSTM with a linear classifier on the top layer's state at each sequence's last real step
    (Graves's parity: one-step sequences)."""

    def __init__(self, config: PactLSTMConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pact_lstm = PactLSTMModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
            self,
            input_ids: Optional[torch.LongTensor] = None,
            inputs_embeds: Optional[torch.FloatTensor] = None,
            attention_mask: Optional[torch.Tensor] = None,
            labels: Optional[torch.Tensor] = None,
            output_hidden_states: Optional[bool] = None,
            return_dict: Optional[bool] = None,
    ) -> Union[PactLSTMSequenceClassifierOutput, tuple]:
        r"""
        labels: ``[B]`` class ids (single-label), ``[B, num_labels]`` (multi-label / regression) or ``[B]``
            (regression with ``num_labels == 1``).

        Returns :class:`PactLSTMSequenceClassifierOutput` (``logits`` ``[B, num_labels]``).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        baseline = self._rollout_baseline(labels, lambda: self._task_loss(
            self(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits, labels,
            rows=True))
        outputs = self.pact_lstm(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 output_hidden_states=output_hidden_states, return_dict=True)
        sequence = outputs.last_hidden_state  # [B, T, H]
        batch_size, seq_len = sequence.shape[:2]
        if attention_mask is None or sequence.device.type == "meta":
            last = sequence[:, -1]
        else:  # last real step of every row
            mask = attention_mask.to(sequence.device).bool()
            if not bool(mask.any(dim=1).all()):
                raise ValueError("attention_mask must mark at least one real step in every sequence")
            positions = torch.arange(seq_len, device=sequence.device).expand(batch_size, seq_len)
            last_index = torch.where(mask, positions, -1).amax(dim=1)
            last = sequence[torch.arange(batch_size, device=sequence.device), last_index]
        logits = self.classifier(self.dropout(last))

        loss = None
        if labels is not None:
            loss = self._total_loss(partial(self._task_loss, logits, labels), baseline)
        output = PactLSTMSequenceClassifierOutput(loss=loss, logits=logits, ponder_cost=outputs.ponder_cost,
                                                  units_executed=outputs.units_executed,
                                                  hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor, rows: bool = False) -> torch.Tensor:
        return sequence_loss(self.config, logits, labels, rows)


class PactLSTMForTokenClassification(PactLSTMPreTrainedModel):
    """PACT-LSTM with a linear classifier at every time step (Graves's logic, addition and sort tasks)."""

    def __init__(self, config: PactLSTMConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pact_lstm = PactLSTMModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
            self,
            input_ids: Optional[torch.LongTensor] = None,
            inputs_embeds: Optional[torch.FloatTensor] = None,
            attention_mask: Optional[torch.Tensor] = None,
            labels: Optional[torch.Tensor] = None,
            output_hidden_states: Optional[bool] = None,
            return_dict: Optional[bool] = None,
    ) -> Union[PactLSTMTokenClassifierOutput, tuple]:
        r"""
        labels: ``[B, T]`` class ids (single-label, ``-100`` ignored) or ``[B, T, num_labels]`` (multi-label /
            regression). Padding steps never count.

        Returns :class:`PactLSTMTokenClassifierOutput` (``logits`` ``[B, T, num_labels]``).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        baseline = self._rollout_baseline(labels, lambda: self._task_loss(
            self(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask).logits, labels,
            attention_mask, rows=True))
        outputs = self.pact_lstm(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 output_hidden_states=output_hidden_states, return_dict=True)
        sequence = outputs.last_hidden_state
        logits = self.classifier(self.dropout(sequence))  # [B, T, num_labels]

        loss = None
        if labels is not None:
            loss = self._total_loss(partial(self._task_loss, logits, labels, attention_mask), baseline)
        output = PactLSTMTokenClassifierOutput(loss=loss, logits=logits, ponder_cost=outputs.ponder_cost,
                                               units_executed=outputs.units_executed,
                                               hidden_states=outputs.hidden_states)
        return output if return_dict else output.to_tuple()

    def _task_loss(self, logits: torch.Tensor, labels: torch.Tensor, attention_mask: Optional[torch.Tensor],
                   rows: bool = False) -> torch.Tensor:
        return token_loss(self.config, logits, labels, attention_mask, rows)


__all__ = [
    "PactLSTMForSequenceClassification", "PactLSTMForTokenClassification", "PactLSTMModel", "PactLSTMModelOutput",
    "PactLSTMPreTrainedModel", "PactLSTMSequenceClassifierOutput", "PactLSTMTokenClassifierOutput",
    "remote_code_files",
]
