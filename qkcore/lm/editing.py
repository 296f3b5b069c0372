"""Edit one head's attention logits during a forward pass and read its attention pattern back (the interventions of
the paper's Figures 7 and 9: swap two keys' coordinates inside a feature's key subspace, overwrite the raw logits q·k
of that head, and see where its attention goes).

The model's attention function runs unchanged; then, for each edited or read head, the head's raw logits q·k are
recomputed from the same post-rotary q and k (float32), edited, passed through the model's own scaling, soft-capping
and mask, and — on the edited query rows only — the head's output softmax(…)·v replaces the model's. Other rows,
heads and layers keep the model's own values bit for bit, so downstream layers see exactly the edit. Positions here
are batch columns (see EncodedBatch.padded).

    swap = KeySwap(layer=16, head=1, basis=V, orig=orig_cols, target=target_cols, query=last_cols)
    with edit_attention(model, [swap], read=[(16, 1)]) as ed:
        out = run_model(model, batch)
    ed.attention(16, 1)   # (batch, q_len, kv_len) after the edit; ed.logits(16, 1) raw q·k after the edit
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qkcore.interventions import swap_in_subspace
from qkcore.lm.intercept import AttentionCall, attention_session, check_model, head_logits_to_attention
from qkcore.lm.layout import AttentionLayout, attention_layout, attention_modules

EDITABLE_IMPLEMENTATIONS = ("eager", "sdpa")
_UNSUPPORTED_KWARGS = ("position_bias",)


def _int_tuple(x, name: str) -> tuple[int, ...] | None:
    if x is None:
        return None
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a 1-D list of integer batch columns, got {x!r}") from None
    if t.dim() != 1 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D list of integer batch columns, got {x!r}")
    return tuple(int(v) for v in t.tolist())


@dataclass(frozen=True)
class LogitEdit:
    """Set the raw logit q·k (before scaling, soft-capping and mask) of head (layer, head) at cells
    (row, query column, key column) to the given values."""

    layer: int
    head: int
    cells: tuple[tuple[int, int, int], ...]
    values: torch.Tensor  # (n_cells,) float32

    def __post_init__(self):
        try:
            cells = tuple(_int_tuple(c, "each cell") for c in self.cells)
        except (TypeError, ValueError):
            raise ValueError(
                f"cells must be a non-empty list of (row, query_column, key_column), got {self.cells!r}"
            ) from None
        if not cells or any(c is None or len(c) != 3 for c in cells):
            raise ValueError(f"cells must be a non-empty list of (row, query_column, key_column), got {self.cells!r}")
        if len(set(cells)) != len(cells):
            twice = next(c for i, c in enumerate(cells) if c in cells[:i])
            raise ValueError(f"cells names {twice} more than once: give each (row, query_column, key_column) one value")
        try:
            values = torch.as_tensor(self.values)
        except (TypeError, ValueError, RuntimeError):
            values = None
        if values is None or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(f"values must be real numbers (raw q·k logits, one per cell), got {self.values!r}")
        values = values.to(torch.float32).reshape(-1)
        if values.numel() != len(cells):
            raise ValueError(f"{values.numel()} values for {len(cells)} cells: give one value per cell")
        if not torch.isfinite(values).all():
            raise ValueError("logit values must be finite (mask a cell through the attention mask instead)")
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "values", values)


@dataclass(frozen=True)
class KeySwap:
    """For each batch row r, exchange the span(basis) coordinates of the keys at columns orig[r] and target[r], as
    head (layer, head) sees them (`qkcore.interventions.swap_in_subspace`). query[r] = the one query column whose
    logits use the swapped keys (the paper's last token); query=None swaps them for every query row."""

    layer: int
    head: int
    basis: torch.Tensor  # (d_head, r) orthonormal
    orig: tuple[int, ...]
    target: tuple[int, ...]
    query: tuple[int, ...] | None = None

    def __post_init__(self):
        if not isinstance(self.basis, torch.Tensor) or not self.basis.is_floating_point() or self.basis.dim() != 2:
            raise TypeError(
                f"basis must be a real (d_head, r) torch.Tensor with orthonormal columns, got "
                f"{type(self.basis).__name__} {tuple(getattr(self.basis, 'shape', ()))}"
            )
        if not torch.isfinite(self.basis).all():
            raise ValueError("basis must be finite: found NaN or inf")
        object.__setattr__(self, "orig", _int_tuple(self.orig, "orig"))
        object.__setattr__(self, "target", _int_tuple(self.target, "target"))
        object.__setattr__(self, "query", _int_tuple(self.query, "query"))
        if len(self.orig) != len(self.target) or (self.query is not None and len(self.query) != len(self.orig)):
            raise ValueError("orig, target (and query) need one column per batch row")


Edit = LogitEdit | KeySwap


def _check_cols(cols, length: int, what: str, head: tuple[int, int]) -> None:
    for c in cols:
        if not 0 <= c < length:
            raise ValueError(
                f"edit of head {head}: {what} {c} is out of range for {length} positions "
                f"(0..{length - 1}); positions are batch columns"
            )


def _check_visible(allowed: torch.Tensor, rows, qcols, kcols, what: str, head: tuple[int, int]) -> None:
    """Each (row, query column, key column) must be a cell the head attends to: allowed (batch, q_len, kv_len)."""
    for r, qc, kc in zip(rows, qcols, kcols):
        if not allowed[r, qc, kc]:
            raise ValueError(
                f"edit of head {head}: {what} (row {r}, query column {qc}, key column {kc}) is masked "
                "for this head (a future key, a padding column or outside the sliding window), so the "
                "edit would change nothing; edit only cells the query can attend to"
            )


def _apply(
    raw: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    edit: Edit,
    touched: torch.Tensor,
    allowed: torch.Tensor | None = None,
) -> None:
    """Apply one edit in place to raw (batch, q_len, kv_len) logits of a head with q (batch, q_len, d), k (batch,
    kv_len, d), all float32; mark the edited query rows in touched (batch, q_len) bool. allowed (batch, q_len,
    kv_len) bool: the cells the head's mask lets through; edits of masked cells are refused."""
    b, q_len, kv_len = raw.shape
    head = (edit.layer, edit.head)
    if allowed is None:
        allowed = torch.ones(raw.shape, dtype=torch.bool)
    allowed = allowed.expand(b, q_len, kv_len).cpu()
    if isinstance(edit, LogitEdit):
        rows, qc, kc = (torch.tensor(c) for c in zip(*edit.cells))
        _check_cols(rows.tolist(), b, "row", head), _check_cols(qc.tolist(), q_len, "query column", head)
        _check_cols(kc.tolist(), kv_len, "key column", head)
        _check_visible(allowed, rows.tolist(), qc.tolist(), kc.tolist(), "LogitEdit cell", head)
        raw[rows, qc, kc] = edit.values.to(raw.device)
        touched[rows, qc] = True
        return
    if len(edit.orig) != b:
        raise ValueError(f"KeySwap of head {head} has {len(edit.orig)} swaps for a batch of {b} prompts")
    _check_cols(edit.orig, kv_len, "orig column", head), _check_cols(edit.target, kv_len, "target column", head)
    if edit.query is not None:
        _check_cols(edit.query, q_len, "query column", head)
        for cols, what in ((edit.orig, "KeySwap orig key"), (edit.target, "KeySwap target key")):
            _check_visible(allowed, range(b), edit.query, cols, what, head)
    else:
        for cols, what in ((edit.orig, "orig"), (edit.target, "target")):
            for r_, c in enumerate(cols):
                if not allowed[r_, :, c].any():
                    raise ValueError(
                        f"KeySwap of head {head}: {what} column {c} of row {r_} is masked for every "
                        "query (a padding column), so the swap would change nothing"
                    )
    r = torch.arange(b, device=raw.device)
    o, t = torch.tensor(edit.orig, device=raw.device), torch.tensor(edit.target, device=raw.device)
    new_o, new_t = swap_in_subspace(k[r, o], k[r, t], edit.basis.to(k.device, torch.float32))  # (batch, d) each
    if edit.query is None:
        raw[r, :, o] = torch.einsum("bqd,bd->bq", q, new_o)
        raw[r, :, t] = torch.einsum("bqd,bd->bq", q, new_t)
        touched[:] = True
    else:
        qc = torch.tensor(edit.query, device=raw.device)
        qv = q[r, qc]  # (batch, d)
        raw[r, qc, o] = (qv * new_o).sum(-1)
        raw[r, qc, t] = (qv * new_t).sum(-1)
        touched[r, qc] = True


class AttentionEdits:
    """What `edit_attention` read back: per read head, raw logits and attention after the edits (float32)."""

    def __init__(self, layout: AttentionLayout, read: tuple[tuple[int, int], ...]):
        self.layout = layout
        self.read = read
        self._logits: dict[tuple[int, int], torch.Tensor] = {}
        self._attention: dict[tuple[int, int], torch.Tensor] = {}

    def _get(self, store, layer: int, head: int) -> torch.Tensor:
        self.layout.check_layer(layer), self.layout.check_head(head)
        if (layer, head) not in self.read:
            raise KeyError(f"head ({layer}, {head}) was neither edited nor read; pass read=[({layer}, {head})]")
        if (layer, head) not in store:
            raise RuntimeError(f"layer {layer} has not run yet: call the model inside the edit context")
        return store[(layer, head)]

    def logits(self, layer: int, head: int) -> torch.Tensor:
        """Raw q·k (before scaling, soft-cap and mask) after the edits: (batch, q_len, kv_len)."""
        return self._get(self._logits, layer, head)

    def attention(self, layer: int, head: int) -> torch.Tensor:
        """The head's attention pattern after the edits: (batch, q_len, kv_len), rows sum to 1 (0 where masked)."""
        return self._get(self._attention, layer, head)


@contextlib.contextmanager
def edit_attention(
    model: nn.Module, edits: Sequence[Edit] = (), read: Sequence[tuple[int, int]] = ()
) -> Iterator[AttentionEdits]:
    """Apply `edits` (LogitEdit / KeySwap) during forward passes inside the context; read back the attention of the
    edited heads and of the heads in `read`. Needs attn_implementation "eager" or "sdpa" and model.eval()."""
    check_model(model, "edit_attention")
    layout = attention_layout(model)
    impl = getattr(model.config, "_attn_implementation", None)
    if impl not in EDITABLE_IMPLEMENTATIONS:
        raise NotImplementedError(
            f"edit_attention needs attn_implementation in {EDITABLE_IMPLEMENTATIONS} (the "
            f"masks of {impl!r} are not materialised); reload the model with sdpa or eager"
        )
    for e in edits:
        if not isinstance(e, (LogitEdit, KeySwap)):
            raise TypeError(f"edits must be LogitEdit or KeySwap, got {type(e).__name__}")
        layout.check_layer(e.layer), layout.check_head(e.head)
        if isinstance(e, KeySwap) and (e.basis.dim() != 2 or e.basis.shape[0] != layout.head_dim):
            raise ValueError(f"KeySwap basis must be (head_dim={layout.head_dim}, r), got {tuple(e.basis.shape)}")
    edited = {(e.layer, e.head) for e in edits}
    heads = tuple(sorted(edited | set(layout.select(read) if read else ())))
    result = AttentionEdits(layout, heads)
    mods = attention_modules(model)
    watched = {layer: mods[layer][1] for layer in sorted({l for l, _ in heads})}

    def on_call(call: AttentionCall):
        if call.module.training and call.kwargs.get("dropout", 0.0):
            raise RuntimeError("edit_attention needs model.eval(): attention dropout is active")
        bad = [k for k in _UNSUPPORTED_KWARGS if call.kwargs.get(k) is not None]
        if bad:
            raise NotImplementedError(
                f"{layout.architecture}: attention uses {bad}; qkcore.lm edits cannot rebuild it exactly"
            )
        mask = call.additive_mask()  # (batch or 1, 1 or heads, q_len, kv_len)
        attn_out, *rest = call.output
        new_out = None
        for layer, h in heads:
            if layer != call.layer:
                continue
            kvh = layout.kv_head(h)
            q = call.query[:, h].detach().float()  # (batch, q_len, d)
            k = call.key[:, kvh].detach().float()  # (batch, kv_len, d)
            raw = q @ k.transpose(-1, -2)  # (batch, q_len, kv_len)
            touched = torch.zeros(raw.shape[:2], dtype=torch.bool, device=raw.device)  # (batch, q_len)
            m = mask[:, min(h, mask.shape[1] - 1)]  # (batch or 1, q_len, kv_len)
            allowed = m > float("-inf")
            pad = sessions[0].padding_mask
            if pad is not None and pad.shape == raw.shape[:2] and raw.shape[1] == raw.shape[2]:
                real = pad.to(raw.device).bool()  # (batch, seq): neither a padding query nor a padding key
                allowed = allowed & real[:, :, None] & real[:, None, :]
            for e in edits:
                if (e.layer, e.head) == (layer, h):
                    _apply(raw, q, k, e, touched, allowed)
            sinks = call.sinks
            probs = head_logits_to_attention(
                raw, call.scaling, call.softcap, m, None if sinks is None else sinks[h]
            )  # (batch, q_len, kv_len)
            result._logits[(layer, h)] = raw
            result._attention[(layer, h)] = probs
            if touched.any():  # replace the head's output on the edited query rows only
                if new_out is None:
                    new_out = attn_out.clone()
                v = call.value[:, kvh]  # (batch, kv_len, d)
                head_out = (probs.to(v.dtype) @ v).to(new_out.dtype)  # (batch, q_len, d)
                new_out[:, :, h] = torch.where(touched[..., None], head_out, new_out[:, :, h])
                if rest and rest[0] is not None:
                    rest[0] = rest[0].clone()
                    rest[0][:, h] = torch.where(touched[..., None], probs.to(rest[0].dtype), rest[0][:, h])
        return None if new_out is None else (new_out, *rest)

    sessions = []
    with attention_session(model, watched, on_call) as session:
        sessions.append(session)
        yield result
