# Copyright 2026 The pact_zoo authors. Licensed under the Apache License, Version 2.0.
"""PACT-LSTM configuration.

An LSTM that ponders at every time step (Graves 2016, "Adaptive Computation Time for Recurrent Neural Networks",
arXiv:1603.08983): the cell is applied 1..``max_ponder_steps`` times per input step, and a halting method decides
how many - PACT (Figurnov, Sobolev, Vetrov 2018, arXiv:1712.00386), ACT (Graves 2016) or ``"none"`` (a fixed
number of steps; ``max_ponder_steps=1`` is a plain LSTM).

This file travels with checkpoints as remote code (``trust_remote_code=True``), so it imports the halting core
from ``pact_zoo.halting`` when pact_zoo is installed and from the copy saved next to it otherwise.
"""
from __future__ import annotations

from transformers import PreTrainedConfig

try:  # the one halting core (pact_zoo/halting)
    from pact_zoo.halting.config import HaltingConfig
    from pact_zoo.halting.deprecation import deprecated_alias
    from pact_zoo.halting.method import OVER_TIME_TERMS
except ModuleNotFoundError as error:  # remote code without pact_zoo: the core files are saved next to this file
    if error.name is None or not error.name.startswith("pact_zoo"):
        raise
    from .config import HaltingConfig
    from .deprecation import deprecated_alias
    from .method import OVER_TIME_TERMS

_HALTING_DEFAULTS = HaltingConfig()


def _check_int(name: str, value: object, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        expected = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {expected}, got {value!r}")


class PactLSTMConfig(PreTrainedConfig):
    r"""Configuration of :class:`PactLSTMModel` and its heads.

    Args:
        input_size (`int`, defaults to 64):
            Features per time step fed to the first LSTM layer (``inputs_embeds`` is ``[B, T, input_size]``). With
            ``vocab_size`` set, ``input_ids`` are embedded to this size.
        vocab_size (`int`, *optional*):
            Vocabulary of ``input_ids``; ``None`` means the model takes ``inputs_embeds`` only.
        hidden_size (`int`, defaults to 128):
            LSTM cells per layer (Graves's parity net: 128).
        num_hidden_layers (`int`, defaults to 1):
            Stacked LSTM layers; every layer ponders on its own.
        max_ponder_steps (`int`, defaults to 20):
            M, the most cell applications per time step (PonderNet's parity cap: 20). With ``"none"`` every step
            applies the cell exactly M times.
        method (`str`, defaults to ``"pact"``):
            A registered halting method (``pact_zoo.halting.HALTING_METHODS``: ``"pact"``, ``"act"``,
            ``"policy_gradient"``, ``"none"``).
            The name timm models use too (``method=``); ``halting_method``, its former name, is still accepted
            (and read from old ``config.json`` files) with a DeprecationWarning.
        halting_bias_init (`float`, defaults to -3.0):
            Initial bias of the halting unit (negative: ponder long at first).
        halting_knobs (`dict`, *optional*):
            The method's knobs (PACT: ``tau``, ``temperature``, ``threshold``, ``cost_estimator``; ACT: ``tau``,
            ``act_eps``; policy gradient: ``tau``, ``threshold``, ``baseline``, ...); missing ones take the method's
            defaults. Knobs may also be passed flat (``PactLSTMConfig(tau=0.01)``); a knob of another method raises.
            ``tau`` weighs the ponder cost: the loss adds ``tau * mean_batch(sum_layers sum_t rho_t)`` (Graves 2016
            eq. 11; PACT's truncated-geometric prior contributes the same term with rho_t = E_q[z_t]).
        halting_terms_over_time (`str`, defaults to ``"mean"``):
            How a layer combines the per-time-step loss terms of its halting method (PACT's entropy bonus
            ``-entropy_weight * H(q(z_t | x))``, policy gradient's regularisers) over a sequence: ``"mean"`` (one term
            per sequence, like the task loss of a sequence label) or ``"sum"`` (``entropy_weight`` per time step,
            like ``tau``). With ``"sum"`` a sequence of T frames gets T times the bonus: on real sequences
            (T ~ 15-30) it outweighs the one task loss, q(z_t) stays near uniform and the eval rule runs nearly every
            ponder step (docs/lstm_results.md). The ponder cost is summed over time either way (Graves eq. 11).
        classifier_dropout (`float`, defaults to 0.0):
            Dropout before the classification head.
        initializer_range (`float`, defaults to 0.02):
            Std of the normal init of linear and embedding weights (LSTM cells use PyTorch's U(-1/sqrt(H), 1/sqrt(H))).
        pad_token_id (`int`, *optional*):
            Padding id of ``input_ids`` (its embedding row is zero).
    """

    model_type = "pact_lstm"

    input_size: int = 64
    vocab_size: int | None = None
    hidden_size: int = 128
    num_hidden_layers: int = 1
    max_ponder_steps: int = 20
    method: str = _HALTING_DEFAULTS.method
    halting_bias_init: float = _HALTING_DEFAULTS.halting_bias_init
    halting_knobs: dict | None = None
    halting_terms_over_time: str = "mean"
    classifier_dropout: float = 0.0
    initializer_range: float = 0.02
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs) -> None:
        _check_int("input_size", self.input_size, 1)
        _check_int("vocab_size", self.vocab_size, 1, optional=True)
        _check_int("hidden_size", self.hidden_size, 1)
        _check_int("num_hidden_layers", self.num_hidden_layers, 1)
        _check_int("max_ponder_steps", self.max_ponder_steps, 1)
        _check_int("pad_token_id", self.pad_token_id, 0, optional=True)
        if self.pad_token_id is not None and (self.vocab_size is None or self.pad_token_id >= self.vocab_size):
            raise ValueError(f"pad_token_id must index the vocabulary (vocab_size={self.vocab_size}), "
                             f"got {self.pad_token_id}")
        if not (isinstance(self.classifier_dropout, (int, float)) and 0.0 <= self.classifier_dropout < 1.0):
            raise ValueError(f"classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        if not (isinstance(self.initializer_range, (int, float)) and self.initializer_range > 0):
            raise ValueError(f"initializer_range must be > 0, got {self.initializer_range!r}")
        # ``halting_method``, the former name of ``method``, still read (old config.json files hold it)
        self.method, self.halting_knobs = HaltingConfig.read_method(self.method, self.halting_knobs, kwargs,
                                                                    "PactLSTMConfig")
        if self.halting_terms_over_time not in OVER_TIME_TERMS:
            raise ValueError(f"halting_terms_over_time must be one of {OVER_TIME_TERMS}, "
                             f"got {self.halting_terms_over_time!r}")
        if self.halting_knobs is not None and not isinstance(self.halting_knobs, dict):
            raise ValueError(f"halting_knobs must be a dict or None, got {type(self.halting_knobs).__name__}")
        flat = HaltingConfig.pop_knob_kwargs(kwargs)  # knobs passed flat, such as tau=...
        halting = HaltingConfig(self.method, self.halting_bias_init,
                                **dict(self.halting_knobs or {}, **flat))  # validates (ValueError names the knob)
        self.halting_knobs, self.halting_bias_init = halting.knobs, halting.halting_bias_init
        super().__post_init__(**kwargs)

    #: deprecated name of :attr:`method` (reads and writes ``method``, with a DeprecationWarning)
    halting_method = deprecated_alias("method", "halting_method", "PactLSTMConfig")

    @property
    def halting_config(self) -> HaltingConfig:
        """The halting method and knobs as the halting core's validated :class:`HaltingConfig`."""
        return HaltingConfig(self.method, self.halting_bias_init, **(self.halting_knobs or {}))

    def set_halting_knob(self, key: str, value) -> None:
        """Change one halting knob (validated); saved with the config."""
        self.halting_knobs = HaltingConfig(self.method, self.halting_bias_init,
                                           **dict(self.halting_knobs or {}, **{key: value})).knobs


__all__ = ["PactLSTMConfig"]
