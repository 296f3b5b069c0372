"""Filter prompts through a language model: encoding (with or without a chat template), the head scan (ΔC of every
head for every category, streamed, and each head's measured attention on the asked category's items), and the
stored query/key vectors of a few heads (paper Figures 6–7; PAPER.md "Filter heads").

The query is the last prompt token (the last token of the chat template's generation prompt for real models); the
keys are each item's last token.

    scan = head_scan(model, tokenizer, prompts, categories, weighting="pair_mean", batch_size=50)
    scan.logit_gap  # (C, n_layers, n_heads): E[q·k|+] − E[q·k|−] = trace ΔC per category
    vecs = collect_vectors(model, tokenizer, prompts, categories, heads=[(2, 1)], batch_size=50)
    vecs.q[0], vecs.k[0]   # (n_prompts, d), (n_prompts, n_items, d) at head (2, 1)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.experiments.swap_engine import EncodedTask
from qkcore.lm import attention_layout, encode_batch, iter_batches
from qkcore.lm.batching import EncodedBatch
from qkcore.lm.chat import model_text, uses_chat_template
from qkcore.lm.gather import gather_qk, last_columns
from qkcore.lm.positions import TokenIndex, char_span_to_tokens
from qkcore.organisms.filter_task import PLURALS, FilterPrompt
from qkcore.progress import gathers


def encode_filter_prompts(
    tokenizer, prompts: Sequence[FilterPrompt], answer_prefix: str = ""
) -> tuple[EncodedBatch, list[list[int]]]:
    """Left-padded batch of the prompts and, per prompt, the prompt position of each item's last token.
    answer_prefix (chat models): the assistant's answer begun after the generation prompt, "{plural}" standing for the
    asked category (e.g. "The {plural} in the list are:"); the query is then its last token."""
    chat = uses_chat_template(tokenizer)
    texts, shifts = zip(
        *(model_text(tokenizer, p.text, chat, answer_prefix.format(plural=PLURALS[p.asked])) for p in prompts)
    )
    # a chat template writes its own BOS; plain prompts get the tokenizer's
    batch = encode_batch(tokenizer, list(texts), padding_side="left", add_special_tokens=not chat)
    items = []
    for r, p in enumerate(prompts):
        offsets = batch.offset_mapping[r]
        index = TokenIndex(offsets)  # one index for the prompt's items
        items.append(
            [
                char_span_to_tokens(texts[r], offsets, s + shifts[r], e + shifts[r], index=index).last
                for s, e in p.item_spans
            ]
        )
    return batch, items


def _labels(prompts: Sequence[FilterPrompt], categories: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    index = {c: i for i, c in enumerate(categories)}
    missing = sorted({c for p in prompts for c in (p.asked, *p.item_categories)} - set(index))
    if missing:
        raise ValueError(f"prompts use categories {missing} that are not in categories={list(categories)}")
    n_items = {len(p.items) for p in prompts}
    if len(n_items) != 1:
        raise ValueError(f"all prompts must list the same number of items, got {sorted(n_items)}")
    asked = torch.tensor([index[p.asked] for p in prompts])  # (n,)
    items = torch.tensor([[index[c] for c in p.item_categories] for p in prompts])  # (n, n_items)
    return asked, items


@dataclass
class HeadScan:
    """ΔC and attention statistics of every head, per category.

    deltas (C, L, H, d, d) float64; logit_gap (C, L, H) = trace ΔC; delta_norm (C, L, H) = ‖ΔC‖_F;
    attn_pos / attn_neg (L, H): mean over prompts of the last token's total attention on the asked category's
    items / on the other items; next_token (n,): the model's top next token after each prompt (its first answer
    token), in prompt order; items_per_prompt (positives, negatives); categories, weighting."""

    categories: tuple[str, ...]
    weighting: str
    deltas: torch.Tensor
    logit_gap: torch.Tensor
    delta_norm: torch.Tensor
    attn_pos: torch.Tensor
    attn_neg: torch.Tensor
    next_token: torch.Tensor | None = None
    items_per_prompt: tuple[int, int] = (5, 20)
    stored: dict | None = None  # keep_vectors=True: q (H, n, d), k (H, n, I, d), attn (H, n, I), asked, item_cat

    def vectors(self, heads: Sequence[tuple[int, int]]) -> Vectors:
        """The scan's own vectors at a few heads (head_scan(..., keep_vectors=True)): no second pass."""
        if self.stored is None:
            raise ValueError("this scan kept no vectors: run head_scan(..., keep_vectors=True)")
        n_heads = self.logit_gap.shape[2]
        idx = [layer * n_heads + head for layer, head in heads]
        st = self.stored
        return Vectors(
            tuple(tuple(h) for h in heads),
            self.categories,
            st["q"][idx],
            st["k"][idx],
            st["attn"][idx],
            st["asked"],
            st["item_cat"],
        )

    def score(self, by: str = "logit_gap") -> torch.Tensor:
        """(L, H): "logit_gap", the mean over categories of E[q·k|+] − E[q·k|−]; or "attention", the last token's
        attention per asked item minus per other item (selectivity of the attention itself, 0 for a head that
        spreads its attention evenly over the list)."""
        if by == "logit_gap":
            return self.logit_gap.mean(0)
        if by == "attention":
            n_pos, n_neg = self.items_per_prompt
            return self.attn_pos / n_pos - self.attn_neg / n_neg
        raise ValueError(f'scan_by must be "logit_gap" or "attention", got {by!r}')

    def ranking(self, by: str = "logit_gap") -> list[tuple[int, int]]:
        """All heads, from the highest score (see `score`) to the lowest."""
        score = self.score(by)
        order = torch.argsort(score.flatten(), descending=True, stable=True)
        n_heads = score.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads) for i in order]


def _last_logits(model) -> dict:
    """Forward kwargs that keep only the last position's logits (a real vocabulary is 49k+ wide)."""
    takes = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if takes else {}


def _split_pairs(q: torch.Tensor, k: torch.Tensor, positive: torch.Tensor, acc: ContrastiveCovariance) -> None:
    """q (H, b, d) at the last token, k (H, b, I, d) at the items, positive (b, I): add each prompt's pairs (its
    query with every item key) to `acc`, the asked category's items as positives and the others as negatives."""
    b = q.shape[1]
    for sign, mask in ((True, positive), (False, ~positive)):
        rows, items = mask.nonzero(as_tuple=True)  # pairs in prompt order, then item order
        acc.add(q[:, rows], k[:, rows, items], positive=sign, prompts=b)


def head_scan(
    model,
    tokenizer,
    prompts: Sequence[FilterPrompt],
    categories: Sequence[str],
    weighting: str = "pair_mean",
    batch_size: int = 50,
    answer_prefix: str = "",
    keep_vectors: bool = False,
) -> HeadScan:
    """One ΔC per category at every head (prompts grouped by asked category, one ContrastiveCovariance per category
    over all heads), and each head's attention from the last token on positive vs negative items, from the same
    forward pass (qkcore.lm.gather_qk). keep_vectors: also keep every head's q, k and attention (float32, in
    prompt order) so that `HeadScan.vectors` needs no second pass."""
    categories = tuple(categories)
    asked, item_cat = _labels(prompts, categories)
    layout = attention_layout(model)
    n_heads = layout.n_layers * layout.n_heads
    accs = [ContrastiveCovariance(layout.head_dim, head_shape=(n_heads,), weighting=weighting) for _ in categories]
    attn_pos = torch.zeros(n_heads, dtype=torch.float64)
    attn_neg = torch.zeros_like(attn_pos)
    next_token = torch.zeros(len(prompts), dtype=torch.long)
    kept = {"q": [None] * len(prompts), "k": [None] * len(prompts), "attn": [None] * len(prompts)}
    batches = []  # (category, prompt indices): each category's prompts in batches
    for c in range(len(categories)):
        rows = (asked == c).nonzero().flatten().tolist()
        if not rows:
            raise ValueError(f"no prompt asks for {categories[c]!r}: give more prompts")
        batches += [(c, [rows[i] for i in chunk]) for chunk in iter_batches(len(rows), batch_size)]
    for c, idx in gathers(batches, "scan heads: gather q,k"):
        batch, items = encode_filter_prompts(tokenizer, [prompts[i] for i in idx], answer_prefix)
        cols = batch.padded_positions(items)  # (b, I) batch columns of the items
        got = gather_qk(model, batch, "all", last_columns(batch), cols, attn_cols=cols, **_last_logits(model))
        pos = item_cat[idx] == c  # (b, I)
        _split_pairs(got.q, got.k, pos, accs[c])
        next_token[idx] = got.output.logits[:, -1].argmax(-1).cpu()  # left padding: -1 is the last token
        if keep_vectors:
            for j, i in enumerate(idx):
                kept["q"][i], kept["k"][i], kept["attn"][i] = got.q[:, j], got.k[:, j], got.attn[:, j]
        attn = got.attn.double()  # (H, b, I)
        attn_pos += (attn * pos).sum((1, 2))
        attn_neg += (attn * ~pos).sum((1, 2))
    grid = (len(categories), layout.n_layers, layout.n_heads)
    deltas = torch.stack([acc.delta() for acc in accs]).reshape(*grid, layout.head_dim, layout.head_dim)
    n = len(prompts)
    n_pos = int((item_cat[0] == asked[0]).sum())
    return HeadScan(
        categories,
        weighting,
        deltas,
        torch.diagonal(deltas, dim1=-2, dim2=-1).sum(-1),
        deltas.flatten(-2).norm(dim=-1),
        attn_pos.reshape(grid[1:]) / n,
        attn_neg.reshape(grid[1:]) / n,
        next_token,
        (n_pos, item_cat.shape[1] - n_pos),
        {**{k: torch.stack(v, 1).float() for k, v in kept.items()}, "asked": asked, "item_cat": item_cat}
        if keep_vectors
        else None,
    )


@dataclass
class Vectors:
    """Stored vectors at a few heads. q (n_heads, n, d) at the last token; k (n_heads, n, n_items, d) at the items;
    attn (n_heads, n, n_items) the last token's attention on each item; asked (n,) and item_cat (n, n_items)
    category indices into `categories`."""

    heads: tuple[tuple[int, int], ...]
    categories: tuple[str, ...]
    q: torch.Tensor
    k: torch.Tensor
    attn: torch.Tensor
    asked: torch.Tensor
    item_cat: torch.Tensor

    def at(self, head: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.heads.index(tuple(head))
        return self.q[i], self.k[i]


def collect_vectors(
    model,
    tokenizer,
    prompts: Sequence[FilterPrompt],
    categories: Sequence[str],
    heads: Sequence[tuple[int, int]],
    batch_size: int = 50,
    answer_prefix: str = "",
) -> Vectors:
    """Post-rotary q (last token) and k (items) of the chosen heads, float32 on the CPU."""
    categories = tuple(categories)
    asked, item_cat = _labels(prompts, categories)
    heads = attention_layout(model).select(heads)
    qs, ks, attns = [], [], []
    for chunk in gathers(list(iter_batches(len(prompts), batch_size)), "vectors: gather q,k"):
        batch, items = encode_filter_prompts(tokenizer, [prompts[i] for i in chunk], answer_prefix)
        cols = batch.padded_positions(items)  # (b, I)
        got = gather_qk(model, batch, heads, last_columns(batch), cols, attn_cols=cols, logits=False)  # early exit
        qs.append(got.q), ks.append(got.k), attns.append(got.attn)  # (H, b, d), (H, b, I, d), (H, b, I)
    return Vectors(heads, categories, torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(attns, 1), asked, item_cat)


def filter_tasks(
    tokenizer, prompts: Sequence[FilterPrompt], categories: Sequence[str], batch_size: int, answer_prefix: str = ""
) -> list[EncodedTask]:
    """The prompts as the swap engine takes them, one EncodedTask per batch: the query at the last column, the
    candidates at the items' last tokens, labelled with their category's index in `categories`."""
    index = {c: i for i, c in enumerate(categories)}
    tasks = []
    for chunk in iter_batches(len(prompts), batch_size):
        batch, items = encode_filter_prompts(tokenizer, [prompts[i] for i in chunk], answer_prefix)
        labels = torch.tensor([[index[c] for c in prompts[i].item_categories] for i in chunk])
        tasks.append(EncodedTask(batch, last_columns(batch), batch.padded_positions(items), labels))
    return tasks
