"""ACMize a pretrained model: replace the MLP / FFN blocks (and optionally the attention projections) of a timm
ViT / DeiT or a Hugging Face BERT encoder with :class:`~pact_zoo.acm.AdaptiveWidth` modules (Wójcik et al. 2023).

Learner widths follow the paper's FLOPs rule: K learners of an FFN ``D -> H -> D`` have width ``ceil(H / K)`` (the
K learners together cost what the original block costs; when K does not divide H the last ``K*ceil(H/K) - H`` hidden
units are padding that starts at zero output); a projection ``D_in -> D_out`` becomes K low-rank learners of
width ``D_in*D_out / (K (D_in + D_out))``. ``init="split"`` (default, pact_zoo's choice) starts the learners from the
pretrained weights: an FFN's hidden units, ordered by ``|w1_j| |w2_j|``, are cut into K groups (with an elementwise
activation the K learners then add up to the original block exactly), a projection's learners take consecutive
singular directions (each prefix is the best low-rank approximation of its rank). ``init="random"`` is the paper's
fresh initialisation. Every module remembers in ``source`` which original module(s) it replaces, so that phase 1
(:func:`pact_zoo.acm.distill_modules`) can regress their outputs.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import nn

from ..halting.deprecation import renamed_kwarg
from ..halting.protocols import record_input_shape
from .module import AdaptiveWidth, GATINGS

__all__ = ["acmize", "acmize_structure", "register_acm_converter", "MODEL_CONVERTERS", "acm_modules", "split_ffn", "split_linear", "INITS",
           "learner_parameters", "gate_parameters"]

INITS = ("split", "random")
ACM_INPUT_SHAPE_HOOK = "_acm_input_shape_hook"


def acm_modules(model: nn.Module) -> list[tuple[str, AdaptiveWidth]]:
    """Every :class:`AdaptiveWidth` of ``model`` with its name, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, AdaptiveWidth)]


def _activation(act) -> nn.Module:
    if isinstance(act, nn.Module):
        return act
    if callable(act):
        return _Lambda(act)
    raise TypeError(f"unsupported activation {act!r}")


class _Lambda(nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@torch.no_grad()
def split_ffn(module: AdaptiveWidth, w_fc1: torch.Tensor, b_fc1: Optional[torch.Tensor], w_fc2: torch.Tensor,
              b_fc2: Optional[torch.Tensor]) -> None:
    """Learners from the pretrained hidden units (``w_fc1`` ``[H, D_in]``, ``w_fc2`` ``[D_out, H]``), most important
    first (``|w1_j| |w2_j|``). Hidden units beyond H (K*h > H when K does not divide H) keep their random ``w1`` and
    get zero ``w2`` rows: they add nothing until trained, so K learners of the full width give the original block
    exactly."""
    width = module.num_learners * module.hidden_features
    score = w_fc1.float().norm(dim=1) * w_fc2.float().norm(dim=0)
    order = torch.argsort(score, descending=True)[:width]
    n = order.shape[0]
    module.w1[:n].copy_(w_fc1[order])
    module.w2[:n].copy_(w_fc2[:, order].t())
    module.w2[n:].zero_()
    if module.b1 is not None:
        module.b1[:n].copy_(b_fc1[order] if b_fc1 is not None else torch.zeros(n))
        module.b1[n:].zero_()
    if b_fc2 is not None:
        module.b2.copy_(b_fc2)


@torch.no_grad()
def split_linear(module: AdaptiveWidth, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> None:
    """Low-rank learners from the SVD of a pretrained ``[D_out, D_in]`` weight: learner i holds singular directions
    i*h..(i+1)*h, so every prefix is the best approximation of its rank."""
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=False)
    rank = min(module.num_learners * module.hidden_features, s.shape[0])
    root = s[:rank].sqrt()
    module.w1[:rank].copy_((root[:, None] * vh[:rank]).to(module.w1.dtype))
    module.w2[:rank].copy_((u[:, :rank] * root).t().to(module.w2.dtype))
    if module.b1 is not None:
        module.b1.zero_()
    if bias is not None:
        module.b2.copy_(bias)


def _ffn_module(fc1: nn.Linear, fc2: nn.Linear, act, num_learners: int, width_factor: float, init: str,
                source: tuple[str, str], **kwargs) -> AdaptiveWidth:
    # ceil: K learners cover every hidden unit even when K does not divide H (split_ffn zeroes the padding)
    hidden = max(1, math.ceil(width_factor * fc1.out_features / num_learners - 1e-9))
    with torch.device(fc1.weight.device):  # on the weights' device (meta included: timm's device="meta")
        module = AdaptiveWidth(fc1.in_features, hidden, num_learners, fc2.out_features, act_layer=_activation(act),
                               bias=fc1.bias is not None, **kwargs)
    if init == "split":
        split_ffn(module, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
    elif fc2.bias is not None:
        with torch.no_grad():
            module.b2.copy_(fc2.bias)
    module.source = source
    return module.to(fc1.weight.device, fc1.weight.dtype)


def _linear_module(linear: nn.Linear, num_learners: int, width_factor: float, init: str, min_learners: int,
                   source: tuple[str, str], **kwargs) -> AdaptiveWidth:
    d_in, d_out = linear.in_features, linear.out_features
    hidden = max(1, round(width_factor * d_in * d_out / (num_learners * (d_in + d_out))))
    with torch.device(linear.weight.device):
        module = AdaptiveWidth(d_in, hidden, num_learners, d_out, act_layer=None, bias=False,
                               min_learners=min_learners, **kwargs)
    if init == "split":
        split_linear(module, linear.weight, linear.bias)
    elif linear.bias is not None:
        with torch.no_grad():
            module.b2.copy_(linear.bias)
    module.source = source
    return module.to(linear.weight.device, linear.weight.dtype)


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at ``path``; the new module takes the train/eval mode of the one it replaces."""
    parent, _, name = path.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    module.train(getattr(owner, name).training)
    setattr(owner, name, module)


def _is_timm_mlp(m: nn.Module) -> bool:
    return (isinstance(getattr(m, "fc1", None), nn.Linear) and isinstance(getattr(m, "fc2", None), nn.Linear)
            and hasattr(m, "act") and isinstance(getattr(m, "norm", nn.Identity()), nn.Identity))


def _is_bert_layer(m: nn.Module) -> bool:
    return (isinstance(getattr(getattr(m, "intermediate", None), "dense", None), nn.Linear)
            and isinstance(getattr(getattr(m, "output", None), "dense", None), nn.Linear)
            and hasattr(m, "attention"))


def acmize_structure(model: nn.Module, num_learners: int = 4, method: str = "acm", attention: bool = False,
                     width_factor: float = 1.0, init: str = "split", attention_min_learners: int = 1,
                     **kwargs) -> nn.Module:
    """In-place replacement of the FFN blocks (and attention projections) of a timm ViT/DeiT or HF BERT model;
    see :func:`acmize`. Returns ``model``."""
    if not (isinstance(num_learners, int) and not isinstance(num_learners, bool) and num_learners >= 1):
        raise ValueError(f"num_learners must be an int >= 1, got {num_learners!r}")
    method = renamed_kwarg(kwargs, "gating", "method", method, "acm", "acmize")
    if method not in GATINGS:
        raise ValueError(f"method must be one of {GATINGS}, got {method!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if not (isinstance(width_factor, (int, float)) and width_factor > 0):
        raise ValueError(f"width_factor must be a number > 0, got {width_factor!r}")
    existing = acm_modules(model)
    if existing:
        raise ValueError(f"model is already ACMized ({type(model).__name__} holds {len(existing)} AdaptiveWidth "
                         f"modules, e.g. {existing[0][0]!r}): acmize a copy of the original model instead")
    common = dict(kwargs, method=method)
    replaced = 0
    timm_mlps = [name for name, m in model.named_modules() if _is_timm_mlp(m) and name.endswith("mlp")]
    bert_layers = [name for name, m in model.named_modules() if _is_bert_layer(m)]
    for name in timm_mlps:
        mlp = model.get_submodule(name)
        _set(model, name, _ffn_module(mlp.fc1, mlp.fc2, mlp.act, num_learners, width_factor, init, (name, name),
                                      **common))
        replaced += 1
        if attention:
            attn_path = name.rpartition(".")[0] + ".attn" if "." in name else "attn"
            attn = model.get_submodule(attn_path)
            for proj in ("qkv", "proj"):
                path = f"{attn_path}.{proj}"
                linear = getattr(attn, proj)
                _set(model, path, _linear_module(linear, num_learners, width_factor, init, attention_min_learners,
                                                 (path, path), **common))
    for name in bert_layers:
        prefix = f"{name}." if name else ""
        layer = model.get_submodule(name)
        intermediate, output = layer.intermediate, layer.output
        module = _ffn_module(intermediate.dense, output.dense, intermediate.intermediate_act_fn, num_learners,
                             width_factor, init, (f"{prefix}intermediate", f"{prefix}output.dense"), **common)
        module.train(intermediate.training)
        layer.intermediate = module  # the FFN now runs whole in ``intermediate``; BertOutput keeps dropout + norm
        output.dense = nn.Identity()
        replaced += 1
        if attention:
            for path in ("attention.self.query", "attention.self.key", "attention.self.value",
                         "attention.output.dense"):
                linear = layer.get_submodule(path)
                _set(layer, path, _linear_module(linear, num_learners, width_factor, init, attention_min_learners,
                                                 (prefix + path, prefix + path), **common))
    if replaced == 0:
        raise ValueError(f"model has no MLP blocks to ACMize ({type(model).__name__}): acmize supports timm "
                         "ViT/DeiT blocks (an ``mlp`` with fc1/act/fc2) and Hugging Face BERT layers "
                         "(intermediate.dense / output.dense)")
    return model


#: ``(matches(model), converter(model, **acmize_kwargs))`` pairs: models that :func:`acmize` turns into an ACM model
#: class of their own (e.g. transformers BERT -> ``AcmBert*``, registered by :mod:`pact_zoo.hf`) instead of in place
MODEL_CONVERTERS: list[tuple[Callable[[nn.Module], bool], Callable[..., nn.Module]]] = []


def register_acm_converter(matches: Callable[[nn.Module], bool], converter: Callable[..., nn.Module]) -> None:
    """Let :func:`acmize` hand models for which ``matches(model)`` is true to ``converter(model, **acmize_kwargs)``."""
    MODEL_CONVERTERS.append((matches, converter))


def _record_input_shape(module: nn.Module, args: tuple) -> None:
    if args and isinstance(args[0], torch.Tensor):
        record_input_shape(module, args[0])


def acmize(model: nn.Module, num_learners: int = 4, method: str = "acm", attention: bool = False,
           width_factor: float = 1.0, init: str = "split", attention_min_learners: int = 1,
           **kwargs) -> nn.Module:
    """Turn a pretrained timm ViT/DeiT or Hugging Face BERT model into an ACMized one.

    Args:
        model: a timm ``VisionTransformer`` (or any model whose blocks hold an ``mlp`` with fc1/act/fc2) or a
            transformers BERT (``BertModel``, ``BertForSequenceClassification``, or any model with BERT layers).
        num_learners: K >= 1 learners per module.
        method: ``"acm"`` (ACM gating) or ``"condnet"`` (Bengio et al. 2016 block gating); ``gating=``, the former
            name, still works with a DeprecationWarning.
        attention: also replace the attention projections (timm ``qkv``/``proj``; BERT query/key/value/output)
            with low-rank learners, as the paper does.
        width_factor: total learner width relative to the original block (1.0: same FLOPs at full width).
        init: ``"split"`` (from the pretrained weights) or ``"random"`` (fresh, as the paper).
        attention_min_learners: learners every token runs in a projection (the paper uses 1).
        **kwargs: :class:`AdaptiveWidth` options (``gate_hidden``, ``gate_depth``) and the method's knobs.

    Returns:
        the ACMized model: the same object for timm models (its forward records its input shape for
        :func:`pact_zoo.halting_report`); for a transformers BERT model an ``AcmBert*`` model (saves and loads with
        ``from_pretrained`` / the Auto classes) holding the converted weights.
    """
    method = renamed_kwarg(kwargs, "gating", "method", method, "acm", "acmize")
    for matches, converter in MODEL_CONVERTERS:  # model classes of their own (pact_zoo.hf registers ACM-BERT)
        if matches(model):
            return converter(model, num_learners=num_learners, method=method, attention=attention,
                             width_factor=width_factor, init=init, attention_min_learners=attention_min_learners,
                             **kwargs)
    acmize_structure(model, num_learners, method, attention, width_factor, init, attention_min_learners, **kwargs)
    if getattr(model, ACM_INPUT_SHAPE_HOOK, None) is None:
        model.__dict__[ACM_INPUT_SHAPE_HOOK] = model.register_forward_pre_hook(_record_input_shape)
    return model


def learner_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Learner weights of every ACM module (phase 1 trains these only)."""
    return [p for _, m in acm_modules(model) for p in (m.w1, m.b1, m.w2, m.b2) if p is not None]


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Gate weights of every ACM module (phase 2 trains these only)."""
    return [p for _, m in acm_modules(model) for p in m.gate.parameters()]

