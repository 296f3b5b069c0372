"""Capture per-head post-rotary queries and keys of a Hugging Face causal LM (paper §3: the q and k whose dot product
each head computes; after q_norm/k_norm for Qwen3/Gemma3).

Works with eager, sdpa and the other AttentionInterface kernels, leaves outputs unchanged (see `intercept.py` for
the mechanism), maps grouped-query attention (query head h reads key head h // group size), and names points after
the module path ("model.layers.3.self_attn.q_rot" / ".k_rot"). GPT-OSS attention sinks enter `attention()` as one
extra softmax column per head; Gemma3n's KV-shared layers give the keys they read (those of an earlier layer).
Positions on padding columns are refused.

    with capture_qk(model, heads=[(1, 0), (1, 3)], query_positions=qpos, key_positions=None) as cap:
        model(**inputs)
    q, k = cap.q(1, 3), cap.k(1, 3)        # (batch, n_qpos, d), (batch, kv_len, d) — k of key head 3 // group
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from qkcore.lm.intercept import AttentionCall, attention_session, check_model, head_logits_to_attention
from qkcore.lm.layout import AttentionLayout, HeadSpec, attention_layout, attention_modules, resolve_point
from qkcore.lm.residency import resident

Positions = torch.Tensor | Sequence[Sequence[int]] | None


def as_positions(positions: Positions, name: str) -> torch.Tensor | None:
    """None (all positions) or a (batch, n) integer tensor of padded-sequence indices."""
    if positions is None:
        return None
    try:
        t = torch.as_tensor(positions)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"{name} must be a (batch, n) integer tensor or list of equal-length lists of token "
            f"positions, got {positions!r} ({e})"
        ) from None
    if t.dim() != 2 or t.dtype in (torch.bool,) or t.is_floating_point() or t.is_complex():
        raise ValueError(
            f"{name} must be a (batch, n) integer tensor or list of equal-length lists of token "
            f"positions, got shape {tuple(t.shape)} dtype {t.dtype}"
        )
    return t.long()


def check_positions(pos: torch.Tensor, batch: int, length: int, name: str) -> None:
    if pos.shape[0] != batch:
        raise ValueError(f"{name} has {pos.shape[0]} rows but the batch has {batch} prompts")
    if pos.numel() and (pos.min() < 0 or pos.max() >= length):
        bad = pos[(pos < 0) | (pos >= length)][0].item()
        raise ValueError(
            f"{name} contains position {bad}, out of range for a sequence of {length} tokens "
            f"(0..{length - 1}); positions index the padded batch"
        )


def check_not_padding(pos: torch.Tensor, padding_mask: torch.Tensor | None, name: str) -> None:
    """Positions must fall on real tokens: a padding column has no token (its q and k are meaningless)."""
    if padding_mask is None or padding_mask.shape[0] != pos.shape[0] or not pos.numel():
        return
    real = torch.gather(padding_mask.to(pos.device).bool(), 1, pos)  # (batch, n)
    if not real.all():
        row, i = (~real).nonzero()[0].tolist()
        cols = padding_mask[row].bool().nonzero().flatten().tolist()
        raise ValueError(
            f"{name}[{row}] contains column {int(pos[row, i])}, a padding column: prompt {row} has its "
            f"tokens in columns {cols[0]}..{cols[-1]}; positions index the padded batch (convert "
            "prompt positions with batch.padded(row, position))"
        )


def gather_positions(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    """x (batch, heads, seq, d), pos (batch, n) → (batch, heads, n, d)."""
    if pos is None:
        return x
    idx = pos.to(x.device)[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3])  # (batch, heads, n, d)
    return torch.gather(x, 2, idx)


class QKCapture:
    """What `capture_qk` recorded in one forward pass. Vectors are detached, in the model's dtype."""

    def __init__(
        self,
        layout: AttentionLayout,
        heads: tuple[tuple[int, int], ...],
        query_positions,
        key_positions,
        keep_masks: bool,
        device: torch.device | str | None,
    ):
        self.layout = layout
        self.heads = heads
        self.query_positions = query_positions  # None or (batch, n_q)
        self.key_positions = key_positions  # None or (batch, n_k)
        self.keep_masks = keep_masks
        self.device = device
        self.q_heads = {layer: [h for (l, h) in heads if l == layer] for layer in sorted({l for l, _ in heads})}
        self.kv_heads = {layer: sorted({layout.kv_head(h) for h in hs}) for layer, hs in self.q_heads.items()}
        self._q: dict[int, torch.Tensor] = {}  # layer -> (batch, len(q_heads[layer]), n_q, d)
        self._k: dict[int, torch.Tensor] = {}  # layer -> (batch, len(kv_heads[layer]), n_k, d)
        self._mask: dict[int, torch.Tensor] = {}
        self._scaling: dict[int, tuple[float, float | None]] = {}
        self._sinks: dict[int, torch.Tensor | None] = {}  # layer -> (n_heads,) attention-sink logits (GPT-OSS)

    # -- recording -------------------------------------------------------------------------------------------
    def _record(self, call: AttentionCall, padding_mask: torch.Tensor | None = None) -> None:
        layer = call.layer
        if layer in self._q:
            raise RuntimeError(
                f"capture_qk saw layer {layer} twice: use one forward pass per capture context "
                "(generate() and cached decoding are not supported)"
            )
        b, _, q_len, _ = call.query.shape
        if call.key.shape[2] != q_len:
            raise RuntimeError(
                f"layer {layer}: {call.key.shape[2]} keys for {q_len} queries (a KV cache is in "
                "use); run the model with use_cache=False and no past_key_values"
            )
        for pos, name in ((self.query_positions, "query_positions"), (self.key_positions, "key_positions")):
            if pos is not None:
                check_positions(pos, b, q_len, name)
                check_not_padding(pos, padding_mask, name)
        qi = torch.tensor(self.q_heads[layer], device=call.query.device)
        ki = torch.tensor(self.kv_heads[layer], device=call.key.device)
        q = gather_positions(call.query.detach().index_select(1, qi), self.query_positions)
        k = gather_positions(call.key.detach().index_select(1, ki), self.key_positions)
        self._q[layer] = q.to(self.device) if self.device is not None else q
        self._k[layer] = k.to(self.device) if self.device is not None else k
        self._scaling[layer] = (call.scaling, call.softcap)
        self._sinks[layer] = call.sinks
        if self.keep_masks:
            self._mask[layer] = call.additive_mask()

    # -- reading ---------------------------------------------------------------------------------------------
    def _check_head(self, layer: int, head: int) -> None:
        self.layout.check_layer(layer)
        self.layout.check_head(head)
        if (layer, head) not in self.heads:
            raise KeyError(
                f"head ({layer}, {head}) was not captured; captured heads: {list(self.heads)[:8]}"
                f"{' …' if len(self.heads) > 8 else ''}"
            )
        if layer not in self._q:
            raise RuntimeError(f"layer {layer} has not run yet: call the model inside the capture context")

    def q(self, layer: int, head: int) -> torch.Tensor:
        """Post-rotary query of (layer, head): (batch, n_query_positions or seq, d)."""
        self._check_head(layer, head)
        return self._q[layer][:, self.q_heads[layer].index(head)]

    def k(self, layer: int, head: int) -> torch.Tensor:
        """Post-rotary key that query head `head` reads (key head head // group size): (batch, n_key_pos, d)."""
        self._check_head(layer, head)
        return self._k[layer][:, self.kv_heads[layer].index(self.layout.kv_head(head))]

    def __getitem__(self, name: str) -> torch.Tensor:
        """By point name: "…self_attn.q_rot" → (batch, captured query heads, n, d) in head order (`q_heads[layer]`);
        "…self_attn.k_rot" → (batch, captured key heads, n, d) in order `kv_heads[layer]`."""
        point = resolve_point(self.layout, name)
        store = self._q if point.kind == "q_rot" else self._k
        if point.layer not in store:
            raise KeyError(f"{name}: no head of layer {point.layer} was captured (or the model has not run)")
        return store[point.layer]

    def _check_layer_run(self, layer: int) -> None:
        self.layout.check_layer(layer)
        if layer not in self.q_heads:
            raise KeyError(f"layer {layer}: no head of it was captured; captured layers: {list(self.q_heads)}")
        if layer not in self._q:
            raise RuntimeError(f"layer {layer} has not run yet: call the model inside the capture context")

    def scaling(self, layer: int) -> float:
        """The logit scale the model used at `layer` (1/√d, or query_pre_attn_scalar^-½ for Gemma)."""
        self._check_layer_run(layer)
        return self._scaling[layer][0]

    def mask(self, layer: int) -> torch.Tensor:
        """The additive mask (float32, 0 or -inf) the model applied at `layer` (needs keep_masks=True)."""
        if not self.keep_masks:
            raise KeyError(f"no mask for layer {layer}: pass keep_masks=True to capture_qk")
        self._check_layer_run(layer)
        return self._mask[layer]

    def attention(self, layer: int, head: int) -> torch.Tensor:
        """softmax(cap(q·kᵀ·scaling) + mask) rebuilt from the captured vectors: (batch, q_len, kv_len), float32.
        Needs all positions (no query/key positions given) and keep_masks=True. Equal to the model's own attention
        in float32; for a bfloat16/float16 model it differs by ~1e-3 (the model computes q·k in half precision,
        this in float32), and a warning says so."""
        if self.query_positions is not None or self.key_positions is not None:
            raise ValueError("attention() needs vectors at every position: capture without query/key positions")
        q, k = self.q(layer, head), self.k(layer, head)
        if q.dtype in (torch.float16, torch.bfloat16):
            warnings.warn(
                f"attention() rebuilds the softmax in float32 from {q.dtype} q and k: it equals the model's own "
                "attention exactly only for float32 models (half precision: differences ~1e-3)",
                stacklevel=2,
            )
        q, k = q.float(), k.float()
        mask = self.mask(layer)
        mask = mask[:, min(head, mask.shape[1] - 1)] if mask.dim() == 4 else mask  # (batch or 1, q_len, kv_len)
        scale, softcap = self._scaling[layer]
        sinks = self._sinks[layer]
        return head_logits_to_attention(
            q @ k.transpose(-1, -2), scale, softcap, mask.to(q.device), None if sinks is None else sinks[head]
        )


@contextlib.contextmanager
def capture_qk(
    model: nn.Module,
    heads: HeadSpec = "all",
    query_positions: Positions = None,
    key_positions: Positions = None,
    keep_masks: bool = False,
    device: torch.device | str | None = None,
) -> Iterator[QKCapture]:
    """Record post-rotary q and k of the chosen heads during one forward pass run inside the context.

    heads: "all" or [(layer, head), ...]; query_positions / key_positions: None (every position) or (batch, n)
    indices into the padded sequence; keep_masks: also keep each layer's additive mask (for `attention()`);
    device: where to move captured vectors (default: where the model made them)."""
    resident(model)  # a model parked in a memory slot (qkcore.lm.residency) gets its weights back before the checks
    check_model(model, "capture_qk")
    if not isinstance(keep_masks, bool):
        raise TypeError(f"keep_masks must be True or False, got {keep_masks!r}")
    layout = attention_layout(model)
    chosen = layout.select(heads)
    cap = QKCapture(
        layout,
        chosen,
        as_positions(query_positions, "query_positions"),
        as_positions(key_positions, "key_positions"),
        keep_masks,
        device,
    )
    mods = {layer: m for layer, (_, m) in enumerate(attention_modules(model)) if layer in cap.q_heads}

    sessions = []

    def on_call(call: AttentionCall) -> None:
        cap._record(call, sessions[0].padding_mask)

    with attention_session(model, mods, on_call) as session:
        sessions.append(session)
        yield cap
