"""The one place where qkcore.lm touches a model's forward pass: a scoped wrapper around the attention function.

Why this route. In transformers ≥ 5 every supported attention module computes q_proj → (q_norm) → rotary, then
calls `ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)(module, query, key,
value, attention_mask, scaling=..., **kwargs)` with query (batch, heads, q_len, d) and key (batch, kv_heads, kv_len, d)
already post-rotary and keys not yet repeated for GQA: exactly the vectors whose dot product the head computes.
We wrap whatever function `get_interface` returns (the model's own eager function with its soft-capping, sdpa,
flash, flex) instead of registering a new attention implementation, because

  * `config._attn_implementation` stays as it is, so the model builds its masks (causal, padding, sliding window)
    exactly as without us; a newly registered implementation would also need a mask function, and without one it
    silently loses the causal mask;
  * the model-specific eager function (the `default` argument of `get_interface`) keeps running unchanged;
  * re-implementing q_proj/q_norm/rotary in a module hook would duplicate model code per family.

The wrapper is installed on the `AttentionInterface` class while at least one session (capture, streaming, edit) is
open, removed in `finally`, and it does nothing for modules no open session asked about. A forward hook on each
watched module checks that the module really went through the wrapper, so an attention class that bypasses the
interface fails loudly instead of yielding nothing. The patch is process-wide while a session is open (a model run
meanwhile in another thread passes through untouched); torch.compile'd models are refused (they do not call the
wrapped function), and so are models in train() mode with dropout active (their q, k change from call to call).

    with attention_session(model, modules, on_call) as session:   # on_call(call) -> replacement output or None
        model(**inputs)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.modeling_utils import AttentionInterface

from qkcore.lm.layout import architecture_name, attention_layout

_LOCK = threading.RLock()
_SESSIONS: list[_Session] = []
_ORIGINAL_GET_INTERFACE = AttentionInterface.get_interface
_WRAPPERS: dict[Callable, Callable] = {}


@dataclass
class AttentionCall:
    """One call of the attention function of one layer (all tensors as the model passed them)."""

    module: nn.Module
    layer: int
    query: torch.Tensor  # (batch, n_heads, q_len, d) post-rotary
    key: torch.Tensor  # (batch, n_kv_heads, kv_len, d) post-rotary, not repeated for GQA
    value: torch.Tensor  # (batch, n_kv_heads, kv_len, d)
    attention_mask: torch.Tensor | None  # float additive, bool (True = attend), or None (sdpa is_causal route)
    kwargs: dict[str, Any]
    output: Any = None  # what the attention function returned: (attn_output (batch, q_len, heads, d), weights)

    @property
    def scaling(self) -> float:
        s = self.kwargs.get("scaling")
        return float(s) if s is not None else float(self.module.head_dim) ** -0.5

    @property
    def softcap(self) -> float | None:
        s = self.kwargs.get("softcap")
        return None if s is None else float(s)

    @property
    def sinks(self) -> torch.Tensor | None:
        """Attention-sink logits (GPT-OSS `s_aux`): (n_heads,), one extra softmax column per head, dropped after."""
        s = self.kwargs.get("s_aux", self.kwargs.get("sinks"))
        return None if s is None else s.detach()

    def additive_mask(self) -> torch.Tensor:
        """The mask as the model applies it: float32 (batch or 1, 1 or heads, q_len, kv_len), 0 = attend, -inf = not."""
        return additive_mask(
            self.attention_mask,
            self.query,
            self.key,
            getattr(self.module, "is_causal", True),
            self.kwargs.get("is_causal"),
        )


def additive_mask(
    mask: torch.Tensor | None,
    query: torch.Tensor,
    key: torch.Tensor,
    module_causal: bool,
    is_causal_kw: bool | None = None,
) -> torch.Tensor:
    """Normalise the three mask forms the attention functions receive into a float32 additive mask."""
    q_len, kv_len = query.shape[2], key.shape[2]
    if mask is None:
        causal = is_causal_kw if is_causal_kw is not None else module_causal
        # sdpa_attention_forward uses is_causal only when q_len > 1 (top-left aligned); otherwise no mask.
        if causal and q_len > 1:
            allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril()  # (q_len, kv_len)
        else:
            allowed = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device)
        allowed = allowed[None, None]
    elif mask.dtype == torch.bool:
        allowed = mask[..., :kv_len]
    else:
        m = mask[..., :kv_len].float()
        # eager masks use finfo(dtype).min for "masked"; map those to -inf so that the result is exact 0 after softmax
        return torch.where(m <= torch.finfo(mask.dtype).min / 2, float("-inf"), m)
    return torch.zeros(allowed.shape, dtype=torch.float32, device=query.device).masked_fill(~allowed, float("-inf"))


def head_logits_to_attention(
    raw: torch.Tensor,
    scaling: float,
    softcap: float | None,
    mask: torch.Tensor,
    sink: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """softmax(cap(q·k · scaling) + mask) in float32, as the models' eager functions compute it.

    raw: (..., q_len, kv_len) raw q·k; mask broadcastable additive. Fully masked rows give 0, not NaN.
    sink: the head's attention-sink logit (GPT-OSS), softmaxed as one extra column that is then dropped."""
    scores = raw.float() * scaling
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores + mask
    if sink is not None:
        column = torch.as_tensor(sink, dtype=torch.float32, device=scores.device).expand(*scores.shape[:-1], 1)
        probs = torch.softmax(torch.cat([scores, column], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(probs, nan=0.0)


def check_model(model: nn.Module, what: str) -> None:
    """Refuse up front what cannot run or cannot be captured: a non-module, a torch.compile'd module, weights or
    buffers on the meta device, an unsupported architecture, a model in train() mode with dropout active."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"{what}: model must be a torch.nn.Module (a Hugging Face causal LM), got {type(model).__name__}"
        )
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        raise TypeError(
            f"{what}: model is a torch.compile'd module; qkcore.lm wraps the attention function at run time, which "
            "compiled graphs do not call. Pass the uncompiled model (model._orig_mod, or the model before "
            "torch.compile)"
        )
    meta = next((n for n, p in model.named_parameters() if p.is_meta), None)
    meta_buffer = next((n for n, b in model.named_buffers() if b.is_meta), None)
    if meta is None and meta_buffer is not None:
        raise ValueError(
            f"{what}: {architecture_name(model)} has its weights but the buffer {meta_buffer} is on the meta device "
            "(e.g. rotary inv_freq left behind by an empty-weights load): it holds no values. Rebuild the model "
            "with its buffers (from_pretrained without init_empty_weights/device_map='meta')"
        )
    if meta is not None:
        raise ValueError(
            f"{what}: {architecture_name(model)} has parameters on the meta device (e.g. {meta}): they "
            "hold no values, so it cannot run. Load the weights first (from_pretrained without "
            "device_map offloading to 'meta', or model.to_empty(...) then load a state dict)"
        )
    attention_layout(model)  # an unsupported architecture is named before anything else about it
    dropout = active_dropout(model)
    if dropout is not None:
        raise RuntimeError(
            f"{what}: {architecture_name(model)} is in train() mode with dropout active ({dropout}), so q, k and "
            "attention change from call to call; call model.eval() first"
        )


def active_dropout(model: nn.Module) -> str | None:
    """What would make a forward pass random: attention dropout (config.attention_dropout > 0) or a
    torch.nn.Dropout with p > 0 in a module that is in training mode; None in eval() mode or with no dropout."""
    if not model.training and not any(m.training for m in model.modules()):
        return None
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    rate = getattr(cfg, "attention_dropout", 0.0)
    if isinstance(rate, (int, float)) and rate > 0:
        return f"attention_dropout={rate}"
    for name, m in model.named_modules():
        if isinstance(m, nn.Dropout) and m.training and m.p > 0:
            return f"{name or type(m).__name__} p={m.p}"
    return None


def column_dependence(model: nn.Module, seq_len: int) -> str | None:
    """Why this model's attention at `seq_len` columns depends on the column index rather than position_ids (so
    padding on the left would change q and k), or None. Known case: Llama 4's attention-temperature tuning, which
    scales the queries of its NoPE layers by log1p(floor((column + 1) / floor_scale))."""
    cfg = getattr(model, "config", None)
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if getattr(cfg, "attn_temperature_tuning", False) and 0 in (getattr(cfg, "no_rope_layers", None) or []):
        floor_scale = int(cfg.floor_scale)
        if seq_len >= floor_scale:  # column c gets a scale != 1 once c + 1 >= floor_scale
            return (
                f"attn_temperature_tuning scales the queries of its NoPE layers by the column index "
                f"(floor_scale={floor_scale}), not by position_ids"
            )
    return None


@dataclass
class _Session:
    modules: dict[int, int]  # id(module) -> layer
    on_call: Callable[[AttentionCall], torch.Tensor | None]
    seen: set[int] = field(default_factory=set)
    padding_mask: torch.Tensor | None = None  # (batch, seq) 1 = real token, of the current forward pass, if given


def _wrap(fn: Callable) -> Callable:
    if fn in _WRAPPERS:
        return _WRAPPERS[fn]

    def qkcore_attention(module, query, key, value, *args, **kwargs):
        sessions = [s for s in list(_SESSIONS) if id(module) in s.modules]
        if not sessions:
            return fn(module, query, key, value, *args, **kwargs)
        mask = args[0] if args else kwargs.get("attention_mask")
        call_kwargs = {k: v for k, v in kwargs.items() if k != "attention_mask"}
        out = fn(module, query, key, value, *args, **kwargs)
        for s in sessions:
            if id(module) in s.seen:
                raise NotImplementedError(
                    f"{type(module).__name__} (layer {s.modules[id(module)]}) called the attention function twice "
                    "in one forward pass; qkcore.lm supports one softmax(q·k) per attention module"
                )
            s.seen.add(id(module))
            call = AttentionCall(module, s.modules[id(module)], query, key, value, mask, call_kwargs)
            call.output = out
            replaced = s.on_call(call)
            if replaced is not None:
                out = replaced
        return out

    qkcore_attention.__wrapped__ = fn
    _WRAPPERS[fn] = qkcore_attention
    return qkcore_attention


def _patched_get_interface(self, attn_implementation, default):
    return _wrap(_ORIGINAL_GET_INTERFACE(self, attn_implementation, default))


@contextlib.contextmanager
def attention_session(
    model: nn.Module, modules: dict[int, nn.Module], on_call: Callable[[AttentionCall], torch.Tensor | None]
) -> Iterator[_Session]:
    """Call `on_call` after the attention function of each watched module (layer -> module) has run.

    on_call may return a replacement for the attention function's return value (`call.output`) or None."""
    session = _Session({id(m): layer for layer, m in modules.items()}, on_call)
    handles = []

    def inputs(_module, args, kwargs):
        """Before each forward pass: keep its padding mask, and refuse padding that would shift positions."""
        session.seen.clear()
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        mask, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
        session.padding_mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        if session.padding_mask is not None and (session.padding_mask.sum(-1) == 0).any():
            row = int((session.padding_mask.sum(-1) == 0).nonzero()[0])
            raise ValueError(
                f"attention_mask row {row} is all zeros: that prompt has no real token, so nothing it gives can be "
                "captured; every row needs at least one token (mask 1)"
            )
        x = ids if isinstance(ids, torch.Tensor) else embeds
        if isinstance(x, torch.Tensor) and x.dim() >= 2 and isinstance(pos, torch.Tensor):
            seq = x.shape[1]
            reason = column_dependence(model, seq)
            columns = torch.arange(seq, device=pos.device).expand_as(pos)
            real = session.padding_mask.bool() if session.padding_mask is not None else torch.ones_like(pos).bool()
            if reason and (pos != columns)[real].any():
                raise NotImplementedError(
                    f"{architecture_name(model)}: {reason}, so a prompt padded on the left gets other q and k than "
                    f"alone ({seq} columns); qkcore.lm cannot keep positions unshifted here. Use "
                    "padding_side='right' (or batch_size=1)"
                )

    def check(module, _inputs, _output):
        if id(module) not in session.seen:
            raise NotImplementedError(
                f"{architecture_name(model)}: {type(module).__name__} ran without calling an attention function "
                "from transformers' AttentionInterface, so its post-rotary queries and keys cannot be captured "
                f"(attn_implementation={getattr(model.config, '_attn_implementation', None)!r})"
            )
        session.seen.discard(id(module))

    with _LOCK:
        if not _SESSIONS:
            AttentionInterface.get_interface = _patched_get_interface
        _SESSIONS.append(session)
    try:
        tops = {id(m): m for m in (model, getattr(model, "base_model", None)) if isinstance(m, nn.Module)}
        for m in tops.values():
            handles.append(m.register_forward_pre_hook(inputs, with_kwargs=True))
        for m in modules.values():
            handles.append(m.register_forward_hook(check))
        yield session
    finally:
        for h in handles:
            h.remove()
        with _LOCK:
            _SESSIONS.remove(session)
            if not _SESSIONS:
                AttentionInterface.get_interface = _ORIGINAL_GET_INTERFACE
