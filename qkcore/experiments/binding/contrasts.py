"""The two binding contrasts of the paper's Figures 8–10, streamed at every head, each with its null grouping.

Order ID: the queried object is the same word at a random clause. Positive pair = (q at the last token, key at the
answer box's letter); negatives = (q, each other box letter of the same prompt). Null grouping: the "answer" label is
drawn uniformly from all clauses, independently of the prompt (so E[ΔC_null] = 0: only sampling noise is left). A
null that never picks the true answer would not be null: its negatives would hold the answer, and its ΔC would be
−1/(n−1) times the real one.

Lexical ID: positive = (q, answer-letter key) in a prompt; negative = the same in its counterfactual, where the
queried object (in its clause and in the question) is an unused object. Null grouping: a fair coin per pair decides
which of the two prompts is called positive.

    order, scan = order_contrast(model, tok, prompts, chat=False, heads="all", batch_size=50, generator=g)
    lexical = lexical_contrast(model, tok, pairs, chat=False, heads="all", batch_size=50, generator=g)
    order.delta (H, d, d), order.null_delta, order.logit_gap(), order.ranks(0.99); scan.attn_answer (H,)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qkcore.covariance import ContrastiveCovariance, Weighting
from qkcore.experiments.binding.prompts import CLAUSE_OFFSETS, capture_binding, encode_binding_prompts
from qkcore.lm import attention_layout, iter_batches
from qkcore.organisms.binding_task import BindingPrompt
from qkcore.progress import gathers
from qkcore.subspace import Decomposition, decompose, ranks_at_energy


@dataclass(frozen=True)
class Contrast:
    """ΔC of one contrast at heads[i]: delta[i] (d, d) float64, null_delta[i] the same with shuffled labels.
    query_concentration[i] = |E q|² / E|q|² over the positive queries (near 1: the query barely varies, so ΔC is
    close to rank 1 whatever the keys hold); mean_share[i] = how much of ΔC the outer products of the class means
    alone give (both from qkcore.covariance.ContrastiveCovariance). accuracy: how often the model's top letter
    was the answer, per set."""

    name: str
    heads: tuple[tuple[int, int], ...]
    delta: torch.Tensor
    null_delta: torch.Tensor
    query_concentration: torch.Tensor
    mean_share: torch.Tensor
    accuracy: dict[str, float]
    n_prompts: int

    def index(self, head: tuple[int, int]) -> int:
        head = tuple(head)
        if head not in self.heads:
            raise KeyError(f"head {head} was not streamed for the {self.name} contrast")
        return self.heads.index(head)

    def logit_gap(self, null: bool = False) -> torch.Tensor:
        """E[q·k | +] − E[q·k | −] = trace ΔC per head: (H,)."""
        d = self.null_delta if null else self.delta
        return torch.diagonal(d, dim1=-2, dim2=-1).sum(-1)

    def ranks(self, energy: float, null: bool = False) -> torch.Tensor:
        return ranks_at_energy(self.null_delta if null else self.delta, energy)

    def decompose(self, head: tuple[int, int], energy: float, null: bool = False) -> Decomposition:
        i = self.index(head)
        return decompose((self.null_delta if null else self.delta)[i], energy)


@dataclass(frozen=True)
class ScanStats:
    """Mean attention from the last token on the answer box's key and on one other box's key (averaged over the
    other boxes), per head (H,); clause_attn (H, 6): on the answer clause's tokens at letter offsets CLAUSE_OFFSETS.
    Over the order prompts. Per prompt, the evidence of the gates (qkcore.experiments.binding.gates): correct (n,)
    whether the model's top letter is the answer; top_is_answer (H, n) whether the answer's key is the
    most-attended box key; gap (H, n) the raw logit q·k at the answer's key minus the mean at the other boxes'."""

    attn_answer: torch.Tensor
    attn_other: torch.Tensor
    clause_attn: torch.Tensor
    correct: torch.Tensor
    top_is_answer: torch.Tensor
    gap: torch.Tensor


class _Pair:
    """The real grouping's accumulator and its null grouping's, side by side (one ContrastiveCovariance each)."""

    def __init__(self, n_heads: int, d: int, weighting: Weighting):
        self.real = ContrastiveCovariance(d, head_shape=(n_heads,), weighting=weighting)
        self.null = ContrastiveCovariance(d, head_shape=(n_heads,), weighting=weighting)

    def contrast(self, name, heads, accuracy, n) -> Contrast:
        return Contrast(
            name,
            heads,
            self.real.delta(),
            self.null.delta(),
            self.real.query_concentration(),
            self.real.mean_share(),
            accuracy,
            n,
        )


def _heads(model: nn.Module, heads) -> tuple[tuple[int, int], ...]:
    layout = attention_layout(model)
    return layout.all_heads() if heads == "all" else tuple(tuple(h) for h in heads)


def _others(answer: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """(b, n_pairs − 1) indices of the non-answer clauses, in clause order."""
    idx = torch.arange(n_pairs).expand(answer.shape[0], n_pairs)  # (b, P)
    return idx[idx != answer[:, None]].reshape(answer.shape[0], n_pairs - 1)


def _add_split(acc, q: torch.Tensor, k: torch.Tensor, positive: torch.Tensor) -> None:
    """q (H, b, d), k (H, b, P, d), positive (b,) clause index: the positive letter vs the other letters."""
    H, b, P, d = k.shape
    rows = torch.arange(b)
    others = _others(positive, P)  # (b, P-1)
    acc.add(q, k[:, rows, positive], positive=True, prompts=b)
    k_neg = k[:, rows[:, None], others].reshape(H, b * (P - 1), d)  # (H, b(P-1), d)
    q_neg = q[:, :, None].expand(H, b, P - 1, d).reshape(H, b * (P - 1), d)
    acc.add(q_neg, k_neg, positive=False, prompts=b)


@torch.no_grad()
def order_contrast(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[BindingPrompt],
    chat: bool,
    heads="all",
    batch_size: int = 50,
    weighting: Weighting = "pair_mean",
    generator: torch.Generator | None = None,
    key_offset: int = 0,
    answer_prefix: str = "",
) -> tuple[Contrast, ScanStats]:
    """Order-ID ΔC (and its null) at `heads` over order-ID prompts, plus the attention scan statistics."""
    heads = _heads(model, heads)
    n_pairs = prompts[0].n_pairs
    if n_pairs < 2:
        raise ValueError("the order contrast needs at least 2 pairs per prompt (an answer box and another box)")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    acc = None
    attn_answer = torch.zeros(len(heads), dtype=torch.float64)
    attn_other = torch.zeros(len(heads), dtype=torch.float64)
    clause = torch.zeros(len(heads), len(CLAUSE_OFFSETS), dtype=torch.float64)
    correct, top, gaps = [], [], []
    for idx in gathers(list(iter_batches(len(prompts), batch_size)), "order contrast: gather q,k"):
        enc = encode_binding_prompts(tokenizer, [prompts[i] for i in idx], chat, key_offset, answer_prefix)
        vec = capture_binding(model, enc, heads, attention=True)
        if acc is None:
            acc = _Pair(len(heads), vec.q.shape[-1], weighting)
        b = enc.size
        rows = torch.arange(b)
        _add_split(acc.real, vec.q, vec.k, enc.answer)
        fake = torch.randint(n_pairs, (b,), generator=g)  # (b,) labels independent of the prompts
        _add_split(acc.null, vec.q, vec.k, fake)
        on_answer = vec.attn[:, rows, enc.answer]  # (H, b)
        attn_answer += on_answer.double().sum(1)
        attn_other += ((vec.attn.sum(-1) - on_answer) / (n_pairs - 1)).double().sum(1)
        clause += vec.clause_attn.double().sum(1)
        correct.append(vec.choice == enc.answer)
        top.append(vec.attn.argmax(-1) == enc.answer)  # (H, b)
        logits = torch.einsum("hbd,hbpd->hbp", vec.q.float(), vec.k.float())  # (H, b, P) raw q·k at the boxes
        at = logits[:, rows, enc.answer]  # (H, b)
        gaps.append(at - (logits.sum(-1) - at) / (n_pairs - 1))
    n = len(prompts)
    correct = torch.cat(correct)
    contrast = acc.contrast("order", heads, {"order prompts": float(correct.double().mean())}, n)
    stats = ScanStats(attn_answer / n, attn_other / n, clause / n, correct, torch.cat(top, 1), torch.cat(gaps, 1))
    return contrast, stats


@torch.no_grad()
def lexical_contrast(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[tuple[BindingPrompt, BindingPrompt]],
    chat: bool,
    heads="all",
    batch_size: int = 50,
    weighting: Weighting = "pair_mean",
    generator: torch.Generator | None = None,
    key_offset: int = 0,
    answer_prefix: str = "",
) -> Contrast:
    """Lexical-ID ΔC (and its null) at `heads` over (prompt, counterfactual) pairs."""
    heads = _heads(model, heads)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    acc = None
    correct = {"prompts": 0, "counterfactuals": 0}
    for idx in gathers(list(iter_batches(len(pairs), batch_size)), "lexical contrast: gather q,k"):
        enc_p = encode_binding_prompts(tokenizer, [pairs[i][0] for i in idx], chat, key_offset, answer_prefix)
        enc_c = encode_binding_prompts(tokenizer, [pairs[i][1] for i in idx], chat, key_offset, answer_prefix)
        vp = capture_binding(model, enc_p, heads)
        vc = capture_binding(model, enc_c, heads)
        if acc is None:
            acc = _Pair(len(heads), vp.q.shape[-1], weighting)
        b = enc_p.size
        rows = torch.arange(b)
        kp, kc = vp.k[:, rows, enc_p.answer], vc.k[:, rows, enc_c.answer]  # (H, b, d) each
        acc.real.add(vp.q, kp, positive=True, prompts=b)
        acc.real.add(vc.q, kc, positive=False, prompts=b)
        flip = torch.rand(b, generator=g) < 0.5  # (b,) True: the counterfactual is called positive
        f = flip[None, :, None]
        acc.null.add(torch.where(f, vc.q, vp.q), torch.where(f, kc, kp), positive=True, prompts=b)
        acc.null.add(torch.where(f, vp.q, vc.q), torch.where(f, kp, kc), positive=False, prompts=b)
        correct["prompts"] += int((vp.choice == enc_p.answer).sum())
        correct["counterfactuals"] += int((vc.choice == enc_c.answer).sum())
    n = len(pairs)
    return acc.contrast("lexical", heads, {k: v / n for k, v in correct.items()}, n)
