"""The two binding contrasts of the paper's Figures 8–10, streamed at every head.

Order ID: the queried object is the same word at a random clause. Positive pair = (q at the last token, key at the
answer box's letter); negatives = (q, each other box letter of the same prompt).

Lexical ID: positive = (q, answer-letter key) in a prompt; negative = the same in its counterfactual, where the
queried object (in its clause and in the question) is an unused object.

Their null groupings (≥ 50 relabellings per family) are drawn at the studied heads only, from the per-prompt vectors
kept here (`keep=`): qkcore.experiments.binding.nulls.

    order, scan, kept = order_contrast(model, tok, prompts, chat=False, heads="all", batch_size=50, keep="all")
    lexical, kept_lex = lexical_contrast(model, tok, pairs, chat=False, heads="all", batch_size=50)
    order.delta (H, d, d), order.logit_gap(), order.ranks(0.99); scan.attn_answer (H,); kept[head] (OrderVectors)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qkcore.covariance import ContrastiveCovariance, Weighting
from qkcore.experiments.binding.nulls import LexicalVectors, OrderVectors
from qkcore.experiments.binding.prompts import CLAUSE_OFFSETS, capture_binding, encode_binding_prompts
from qkcore.lm import attention_layout, iter_batches
from qkcore.organisms.binding_task import BindingPrompt
from qkcore.progress import gathers
from qkcore.subspace import Decomposition, decompose, ranks_at_energy


@dataclass(frozen=True)
class Contrast:
    """ΔC of one contrast at heads[i]: delta[i] (d, d) float64.
    query_concentration[i] = |E q|² / E|q|² over the positive queries (near 1: the query barely varies, so ΔC is
    close to rank 1 whatever the keys hold); mean_share[i] = how much of ΔC the outer products of the class means
    alone give (both from qkcore.covariance.ContrastiveCovariance). accuracy: how often the model's top letter
    was the answer, per set."""

    name: str
    heads: tuple[tuple[int, int], ...]
    delta: torch.Tensor
    query_concentration: torch.Tensor
    mean_share: torch.Tensor
    accuracy: dict[str, float]
    n_prompts: int

    def index(self, head: tuple[int, int]) -> int:
        head = tuple(head)
        if head not in self.heads:
            raise KeyError(f"head {head} was not streamed for the {self.name} contrast")
        return self.heads.index(head)

    def logit_gap(self) -> torch.Tensor:
        """E[q·k | +] − E[q·k | −] = trace ΔC per head: (H,)."""
        return torch.diagonal(self.delta, dim1=-2, dim2=-1).sum(-1)

    def ranks(self, energy: float) -> torch.Tensor:
        return ranks_at_energy(self.delta, energy)

    def decompose(self, head: tuple[int, int], energy: float) -> Decomposition:
        return decompose(self.delta[self.index(head)], energy)


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


def _contrast(acc: ContrastiveCovariance, name, heads, accuracy, n) -> Contrast:
    return Contrast(name, heads, acc.delta(), acc.query_concentration(), acc.mean_share(), accuracy, n)


def _heads(model: nn.Module, heads) -> tuple[tuple[int, int], ...]:
    layout = attention_layout(model)
    return layout.all_heads() if heads == "all" else tuple(tuple(h) for h in heads)


def _kept(heads, keep) -> list[int]:
    """Indices into `heads` whose per-prompt vectors are kept: none (None), every head ("all") or the listed ones.
    Memory: n_prompts · (n_pairs + 1) · d floats per kept head (order), 4 · n_prompts · d (lexical)."""
    if keep is None:
        return []
    if keep == "all":
        return list(range(len(heads)))
    missing = [tuple(h) for h in keep if tuple(h) not in heads]
    if missing:
        raise ValueError(f"keep: heads {missing} are not streamed")
    return [heads.index(tuple(h)) for h in keep]


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
    key_offset: int = 0,
    answer_prefix: str = "",
    keep=None,
) -> tuple[Contrast, ScanStats, dict]:
    """Order-ID ΔC at `heads` over order-ID prompts, the attention scan statistics, and head → OrderVectors for
    the heads in `keep` (None, "all" or a list): what the null draws relabel."""
    heads = _heads(model, heads)
    n_pairs = prompts[0].n_pairs
    if n_pairs < 2:
        raise ValueError("the order contrast needs at least 2 pairs per prompt (an answer box and another box)")
    kept = _kept(heads, keep)
    qs, ks, answers = [], [], []
    acc = None
    attn_answer = torch.zeros(len(heads), dtype=torch.float64)
    attn_other = torch.zeros(len(heads), dtype=torch.float64)
    clause = torch.zeros(len(heads), len(CLAUSE_OFFSETS), dtype=torch.float64)
    correct, top, gaps = [], [], []
    for idx in gathers(list(iter_batches(len(prompts), batch_size)), "order contrast: gather q,k"):
        enc = encode_binding_prompts(tokenizer, [prompts[i] for i in idx], chat, key_offset, answer_prefix)
        vec = capture_binding(model, enc, heads, attention=True)
        if acc is None:
            acc = ContrastiveCovariance(vec.q.shape[-1], head_shape=(len(heads),), weighting=weighting)
        b = enc.size
        rows = torch.arange(b)
        _add_split(acc, vec.q, vec.k, enc.answer)
        if kept:
            qs.append(vec.q[kept]), ks.append(vec.k[kept]), answers.append(enc.answer)  # (K, b, d), (K, b, P, d)
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
    contrast = _contrast(acc, "order", heads, {"order prompts": float(correct.double().mean())}, n)
    stats = ScanStats(attn_answer / n, attn_other / n, clause / n, correct, torch.cat(top, 1), torch.cat(gaps, 1))
    vectors = {}
    if kept:
        q, k, answer = torch.cat(qs, 1), torch.cat(ks, 1), torch.cat(answers)
        vectors = {heads[i]: OrderVectors(q[j], k[j], answer) for j, i in enumerate(kept)}
    return contrast, stats, vectors


@torch.no_grad()
def lexical_contrast(
    model: nn.Module,
    tokenizer,
    pairs: Sequence[tuple[BindingPrompt, BindingPrompt]],
    chat: bool,
    heads="all",
    batch_size: int = 50,
    weighting: Weighting = "pair_mean",
    key_offset: int = 0,
    answer_prefix: str = "",
    keep=None,
) -> tuple[Contrast, dict]:
    """Lexical-ID ΔC at `heads` over (prompt, counterfactual) pairs, and head → LexicalVectors for `keep`."""
    heads = _heads(model, heads)
    kept = _kept(heads, keep)
    stored = []
    acc = None
    correct = {"prompts": 0, "counterfactuals": 0}
    for idx in gathers(list(iter_batches(len(pairs), batch_size)), "lexical contrast: gather q,k"):
        enc_p = encode_binding_prompts(tokenizer, [pairs[i][0] for i in idx], chat, key_offset, answer_prefix)
        enc_c = encode_binding_prompts(tokenizer, [pairs[i][1] for i in idx], chat, key_offset, answer_prefix)
        vp = capture_binding(model, enc_p, heads)
        vc = capture_binding(model, enc_c, heads)
        if acc is None:
            acc = ContrastiveCovariance(vp.q.shape[-1], head_shape=(len(heads),), weighting=weighting)
        b = enc_p.size
        rows = torch.arange(b)
        kp, kc = vp.k[:, rows, enc_p.answer], vc.k[:, rows, enc_c.answer]  # (H, b, d) each
        acc.add(vp.q, kp, positive=True, prompts=b)
        acc.add(vc.q, kc, positive=False, prompts=b)
        if kept:
            stored.append(torch.stack([vp.q[kept], kp[kept], vc.q[kept], kc[kept]]))  # (4, K, b, d)
        correct["prompts"] += int((vp.choice == enc_p.answer).sum())
        correct["counterfactuals"] += int((vc.choice == enc_c.answer).sum())
    n = len(pairs)
    vectors = {}
    if kept:
        qp, kp, qc, kc = torch.cat(stored, 2)  # (K, n, d) each
        vectors = {heads[i]: LexicalVectors(qp[j], kp[j], qc[j], kc[j]) for j, i in enumerate(kept)}
    return _contrast(acc, "lexical", heads, {k: v / n for k, v in correct.items()}, n), vectors
