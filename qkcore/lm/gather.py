"""One forward pass → each row's query vector at one column and its key vectors at chosen columns, for chosen heads
(paper §3: the (q, k) pairs every contrast is built from). Every chapter gathers its vectors here: the filter scan,
the binding contrasts, their views and the attribution.

    got = gather_qk(model, batch, heads=[(2, 1)], query_cols=last, key_cols=items, attn_cols=items)
    got.q (H, b, d) at last;  got.k (H, b, n, d) at items;  got.attn (H, b, n) last's attention on items
    got.output.logits      (the model's own output of the same pass; logits=False: None, and the pass stops after
                            the deepest head's layer: qkcore.lm.early_exit)

Inside `with qkcore.lm.gather_cache.gather_cache():` a call identical to an earlier one reads its result from disk.
Columns index the padded batch (`EncodedBatch.padded`). Without `attn_cols` only the asked positions are kept; with
them every position is captured so that the softmax can be rebuilt, which costs memory, not another pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from qkcore.lm import gather_cache
from qkcore.lm.batching import EncodedBatch, run_model
from qkcore.lm.capture import capture_qk, check_not_padding
from qkcore.lm.early_exit import run_until
from qkcore.lm.layout import HeadSpec, attention_layout
from qkcore.lm.residency import resident


@dataclass(frozen=True)
class GatheredQK:
    """heads[i]'s vectors: q[i] (b, d) at each row's query column; k[i] (b, n, d) at its key columns (every column
    when key_cols was None); attn[i] (b, m) the query's attention on attn_cols (None unless asked); output: the
    model's output of the pass (logits of the positions run_model kept); scaling[i]: the logit scale heads[i] used
    (q·k × scaling is its raw logit)."""

    heads: tuple[tuple[int, int], ...]
    q: torch.Tensor
    k: torch.Tensor
    attn: torch.Tensor | None
    output: Any
    scaling: tuple[float, ...] = ()


def _columns(cols, batch: EncodedBatch, name: str, dims: int) -> torch.Tensor:
    t = torch.as_tensor(cols)
    if t.dim() != dims or t.is_floating_point() or t.dtype == torch.bool or t.shape[0] != batch.size:
        want = "(batch,)" if dims == 1 else "(batch, n)"
        raise ValueError(
            f"{name} must be an integer tensor of shape {want} for a batch of {batch.size}, "
            f"got shape {tuple(t.shape)} dtype {t.dtype}"
        )
    return t.long()


@torch.no_grad()
def gather_qk(
    model: nn.Module,
    batch: EncodedBatch,
    heads: HeadSpec,
    query_cols,
    key_cols=None,
    attn_cols=None,
    dtype: torch.dtype = torch.float32,
    logits: bool = True,
    **forward_kwargs,
) -> GatheredQK:
    """Post-rotary q of `heads` at query_cols (b,) and k at key_cols (b, n) (None: every column), on the CPU in
    `dtype`; with attn_cols (b, m), also the query's attention on those columns. `heads` keeps its order ("all":
    layer-major). logits=False: the model's output is not wanted (got.output is None), so the pass stops after the
    deepest head's attention layer (qkcore.lm.early_exit.run_until; the same vectors, bit for bit)."""
    if not isinstance(batch, EncodedBatch):
        raise TypeError(f"batch must be an EncodedBatch (from encode_batch or pad_batch), got {type(batch).__name__}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype (torch.float32, torch.float64), got {dtype!r}")
    if isinstance(heads, torch.Tensor):
        raise TypeError('heads must be "all" or a list of (layer, head) pairs, not a tensor: pass heads.tolist()')
    layout = attention_layout(model)
    layout.select(heads)  # validates: known layers and heads, no repeats
    heads = layout.all_heads() if isinstance(heads, str) else tuple(tuple(h) for h in heads)
    qcol = _columns(query_cols, batch, "query_cols", 1)
    kcol = None if key_cols is None else _columns(key_cols, batch, "key_cols", 2)
    acol = None if attn_cols is None else _columns(attn_cols, batch, "attn_cols", 2)
    full = acol is not None
    if full:  # with attn_cols every column is captured, so check here what capture_qk checks for positions
        check_not_padding(qcol[:, None], batch.attention_mask, "query_cols")
        if kcol is not None:
            check_not_padding(kcol, batch.attention_mask, "key_cols")
    key = None
    if gather_cache.active_directory() is not None:  # inside `with gather_cache():` — read it, or write it below
        keys = gather_cache.cache_keys(model, batch, heads, qcol, kcol, acol, dtype, forward_kwargs, logits)
        cached = gather_cache.load(keys.read)
        if cached is not None:
            return cached
        key = keys.write
        resident(model)  # a parked model whose file vanished after cache_keys looked
    rows = torch.arange(batch.size)
    with capture_qk(
        model,
        list(heads),
        query_positions=None if full else qcol[:, None],
        key_positions=None if full else kcol,
        keep_masks=full,
    ) as cap:
        if logits:
            out = run_model(model, batch, **forward_kwargs)
        else:
            forward_kwargs.pop("logits_to_keep", None)  # no LM head runs
            out = run_until(model, batch, max(layer for layer, _ in heads), **forward_kwargs)
    qs, ks, attns = [], [], []
    for h in heads:
        if full:
            q = cap.q(*h)[rows, qcol]  # (b, d)
            k = cap.k(*h) if kcol is None else cap.k(*h)[rows[:, None], kcol]  # (b, n, d)
            attns.append(cap.attention(*h)[rows, qcol].float().cpu().gather(1, acol).to(dtype))  # (b, m)
        else:
            q, k = cap.q(*h)[:, 0], cap.k(*h)
        qs.append(q.to(dtype).cpu()), ks.append(k.to(dtype).cpu())
    scaling = tuple(float(cap.scaling(h[0])) for h in heads)
    got = GatheredQK(heads, torch.stack(qs), torch.stack(ks), torch.stack(attns) if full else None, out, scaling)
    gather_cache.store(key, got)
    return got


def last_columns(batch: EncodedBatch) -> torch.Tensor:
    """(b,) the batch column of each row's last prompt token (the query of every chapter)."""
    return torch.tensor([batch.padded(r, -1) for r in range(batch.size)])


def prompt_columns(batch: EncodedBatch, positions: Sequence[Sequence[int]]) -> torch.Tensor:
    """(b, n) batch columns of per-row prompt positions (lists of equal length)."""
    return batch.padded_positions(positions)
