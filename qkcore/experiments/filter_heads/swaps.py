"""The key-swap intervention of the filter-heads chapter (paper Figure 7), scored with the authors' metrics and the
book's stronger ones. One item of the asked category among 20 others; inside a key subspace, the key coordinates of
that item (orig) and of a random other item (target) are exchanged at one head and that head's attention row is
rebuilt (`qkcore.interventions.swapped_attention`: exact for one edited head, nothing upstream moves). One pass per
model gathers the rows; every condition and every random draw is then nearly free.

Per prompt (`prompt_metrics`): the authors' flip (argmax of the row on orig before and on target after), the
candidate flip (the same among the listed items only, given orig on top among them), Δp (change of the target's share
of attention on {orig, target}), the logit gap q·(k_orig − k_target) and its part inside the subspace, and the
baseline attention on the sink (the prompt's first token).

    rows = gather_rows(model, tokenizer, prompts, heads, orig, target)    # {head: SwapRows}
    per_prompt = condition_metrics(rows[head], basis_or_rank, n_random, generator)
    table = swap_table(per_prompt_by_condition)                           # one row per condition
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import torch

from qkcore.experiments.filter_heads.vectors import encode_filter_prompts
from qkcore.interventions import swapped_attention
from qkcore.lm import KeySwap, edit_attention, iter_batches, run_model
from qkcore.lm.gather import gather_qk
from qkcore.organisms.filter_task import FilterPrompt
from qkcore.subspace import random_orthonormal


def swap_targets(prompts: Sequence[FilterPrompt], generator: torch.Generator) -> tuple[list[int], list[int]]:
    """Per prompt: the item index of the asked category's single item (orig) and of a random other item (target)."""
    orig, target = [], []
    for p in prompts:
        pos = [i for i, flag in enumerate(p.positive) if flag]
        if len(pos) != 1:
            raise ValueError(f"swap prompts need exactly one item of the asked category, got {len(pos)}")
        others = [i for i in range(len(p.items)) if i != pos[0]]
        orig.append(pos[0])
        target.append(others[int(torch.randint(len(others), (), generator=generator))])
    return orig, target


@dataclass
class SwapRows:
    """One head's unedited rows over the swap prompts, one entry per batch: attn (b, S) the last token's attention,
    q (b, d), k_orig and k_target (b, d), orig / target / sink (b,) columns, items (b, I) the listed items' columns,
    scaling (the head's logit scale)."""

    batches: list[dict]


@torch.no_grad()
def gather_rows(net, tokenizer, prompts, heads, orig, target, batch_size: int = 50, answer_prefix: str = ""):
    """One pass of `net` over the swap prompts: {head: SwapRows}."""
    heads = [tuple(h) for h in heads]
    out = {h: SwapRows([]) for h in heads}
    for chunk in iter_batches(len(prompts), batch_size):
        batch, items = encode_filter_prompts(tokenizer, [prompts[i] for i in chunk], answer_prefix)
        cols = torch.arange(batch.input_ids.shape[1]).expand(len(chunk), -1)  # every column (b, S)
        last = torch.tensor([batch.padded(r, -1) for r in range(len(chunk))])
        o = torch.tensor([batch.padded(r, items[r][orig[i]]) for r, i in enumerate(chunk)])
        t = torch.tensor([batch.padded(r, items[r][target[i]]) for r, i in enumerate(chunk)])
        sink = torch.tensor([batch.padded(r, 0) for r in range(len(chunk))])
        item_cols = batch.padded_positions(items)  # (b, I)
        got = gather_qk(net, batch, heads, last, key_cols=None, attn_cols=cols, logits_to_keep=1)
        rr = torch.arange(len(chunk))
        for i, h in enumerate(heads):
            out[h].batches.append(
                {
                    "attn": got.attn[i].double(),
                    "q": got.q[i].double(),
                    "k_orig": got.k[i][rr, o].double(),
                    "k_target": got.k[i][rr, t].double(),
                    "orig": o,
                    "target": t,
                    "sink": sink,
                    "items": item_cols,
                    "scaling": got.scaling[i],
                }
            )
    return out


def prompt_metrics(before, after, q, k_orig, k_target, basis, orig, target, items, sink) -> dict[str, torch.Tensor]:
    """Per-prompt metrics (b,) of one swap; before/after (b, S) attention rows, items (b, I) item columns."""
    rows = torch.arange(len(before))
    b_o, b_t, a_o, a_t = before[rows, orig], before[rows, target], after[rows, orig], after[rows, target]
    on_top = before.argmax(-1) == orig
    among_before, among_after = before.gather(1, items), after.gather(1, items)  # (b, I)
    cand_top = items[rows, among_before.argmax(-1)] == orig
    diff, q = (k_orig - k_target).double(), q.double()
    b = basis.double()
    return {
        "orig_on_top": on_top.double(),
        "authors_flip": (on_top & (after.argmax(-1) == target)).double(),
        "orig_on_top_items": cand_top.double(),
        "candidate_flip": (cand_top & (items[rows, among_after.argmax(-1)] == target)).double(),
        "delta_p": a_t / (a_o + a_t + 1e-12) - b_t / (b_o + b_t + 1e-12),
        "attn_orig_before": b_o,
        "attn_target_after": a_t,
        "gap": (q * diff).sum(-1),
        "gap_in_subspace": (q * (diff @ b @ b.T)).sum(-1),
        "sink_share": before[rows, sink],
    }


def condition_metrics(rows: SwapRows, basis, n_random: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-prompt metrics (n,) of one condition: `basis` (d, r) orthonormal, or an int r (n_random random
    subspaces of rank r, each prompt's metrics averaged over the draws)."""
    d = rows.batches[0]["q"].shape[-1]
    draws = [random_orthonormal(d, basis, generator) for _ in range(n_random)] if isinstance(basis, int) else [basis]
    per_draw = []
    for b in draws:
        parts = []
        for x in rows.batches:
            after = swapped_attention(
                x["attn"], x["q"], x["k_orig"], x["k_target"], b, x["scaling"], x["orig"], x["target"]
            )
            parts.append(
                prompt_metrics(
                    x["attn"],
                    after,
                    x["q"],
                    x["k_orig"],
                    x["k_target"],
                    b,
                    x["orig"],
                    x["target"],
                    x["items"],
                    x["sink"],
                )
            )
        per_draw.append({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
    return {k: torch.stack([m[k] for m in per_draw]).mean(0) for k in per_draw[0]}


def summarise(m: dict[str, torch.Tensor]) -> dict[str, float]:
    """One condition's rates. A flip is undefined (nan) when orig is never on top at baseline (a floor, not 0)."""
    nan = float("nan")
    top, top_items = float(m["orig_on_top"].sum()), float(m["orig_on_top_items"].sum())
    return {
        "orig on top": float(m["orig_on_top"].mean()),
        "authors' flip": float(m["authors_flip"].mean()) if top > 0 else nan,
        "flip | orig on top": float(m["authors_flip"].sum()) / top if top > 0 else nan,
        "candidate flip": float(m["candidate_flip"].sum()) / top_items if top_items > 0 else nan,
        "Δp": float(m["delta_p"].mean()),
        "gap fraction": float(m["gap_in_subspace"].sum() / m["gap"].sum()),
        "sink share": float(m["sink_share"].mean()),
    }


def swap_table(per_prompt: dict[str, dict[str, torch.Tensor]], ranks: dict[str, int]) -> pd.DataFrame:
    """One row per condition (see `summarise`)."""
    return pd.DataFrame.from_dict(
        {name: {"rank": ranks[name], **summarise(m)} for name, m in per_prompt.items()}, orient="index"
    )


@torch.no_grad()
def forward_check(net, tokenizer, prompts, head, basis, orig, target, rows: SwapRows, answer_prefix: str = ""):
    """The recomputed rows against a real edited forward pass (`qkcore.lm.edit_attention`) on the first batch of
    `rows`: (max |Δ attention|, share of those prompts whose next token is then the target item's first token)."""
    x = rows.batches[0]
    n = len(x["orig"])
    batch, items = encode_filter_prompts(tokenizer, list(prompts[:n]), answer_prefix)
    last = [batch.padded(r, -1) for r in range(n)]
    swap = KeySwap(head[0], head[1], basis.float(), orig=x["orig"].tolist(), target=x["target"].tolist(), query=last)
    with edit_attention(net, [swap]) as ed:
        out = run_model(net, batch)
    forward = ed.attention(*head)[torch.arange(n), last].double()
    rebuilt = swapped_attention(
        x["attn"], x["q"], x["k_orig"], x["k_target"], basis, x["scaling"], x["orig"], x["target"]
    )
    predicted = out.logits[:, -1].argmax(-1).tolist()
    hits = 0
    for r, p in enumerate(prompts[:n]):
        w = p.items[target[r]]
        firsts = {ids[0] for ids in (tokenizer(s, add_special_tokens=False)["input_ids"] for s in (w, " " + w)) if ids}
        hits += predicted[r] in firsts
    return float((forward - rebuilt).abs().max()), hits / n
