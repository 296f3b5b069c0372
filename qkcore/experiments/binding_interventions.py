"""Binding interventions (paper Figure 9): at a head, swap the answer box letter's key with another box letter's
key inside the order-ID subspace, the lexical-ID subspace, both, or random subspaces of the same ranks; overwrite
the head's logits at the last token (qkcore.lm.edit_attention with a KeySwap) and read where its attention goes.

Controls: the same swaps inside the shuffled-label subspaces (at the trained ranks) on the trained model, and
inside the randomly initialised copy's own subspaces (at the trained ranks) on that copy.

    P = InterventionParams()
    result = run_interventions(P)             # result.table: one row per (head, condition)
    result.table.loc[("L2H1", "order"), "flip_rate"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from qkcore.experiments.binding_data import chunks, encode_prompts
from qkcore.experiments.binding_subspaces import (BindingAnalysis, BindingParams, analyse_binding,
                                                  control_decompositions)
from qkcore.experiments.lm_common import LoadedLM, head_name
from qkcore.interventions import swap_metrics
from qkcore.lm import KeySwap, edit_attention, run_model
from qkcore.organisms.binding_task import EXTRA_OBJECTS, BindingPrompt, counterfactual, sample_prompt
from qkcore.params import require
from qkcore.subspace import combine_bases, random_orthonormal

METRICS = ("attn_orig_before", "attn_target_before", "attn_orig_after", "attn_target_after", "target_shift",
           "flip_rate", "share_shift", "flip_from_orig", "answer_to_target")


@dataclass(frozen=True)
class InterventionParams(BindingParams):
    """BindingParams, plus: n_swap_prompts fresh prompts (paper: 1,000); n_random random subspaces per rank (their
    metrics are averaged); swap_prompts: "plain" (the paper's objects) or "unused query" (the queried object is an
    unused one, as in the authors' intervention set)."""

    n_swap_prompts: int = 500
    n_random: int = 5
    swap_prompts: Literal["plain", "unused query"] = "plain"

    def __post_init__(self):
        super().__post_init__()
        require(self.n_swap_prompts >= 1, f"n_swap_prompts must be ≥ 1, got {self.n_swap_prompts}")
        require(self.n_random >= 1, f"n_random must be ≥ 1, got {self.n_random}")


def swap_prompt_set(params: InterventionParams) -> tuple[list[BindingPrompt], torch.Tensor]:
    """Fresh prompts and, for each, the target clause: a uniformly random clause other than the answer."""
    g = torch.Generator().manual_seed(params.seed + 3)
    prompts = []
    for _ in range(params.n_swap_prompts):
        p = sample_prompt(params.n_pairs, g)
        if params.swap_prompts == "unused query":
            free = [o for o in EXTRA_OBJECTS if o not in p.objects]
            p = counterfactual(p, free[int(torch.randint(len(free), (1,), generator=g))])
        prompts.append(p)
    answer = torch.tensor([p.query for p in prompts])
    shift = torch.randint(1, params.n_pairs, (len(prompts),), generator=g)
    return prompts, (answer + shift) % params.n_pairs  # (n,) never the answer


class _Batches:
    """Encoded swap prompts, their orig/target/last columns, and the unedited attention of the heads."""

    def __init__(self, model, tokenizer, chat, prompts, targets, heads, batch_size, key_offset=0):
        self.items = []
        self.correct = 0  # prompts whose top letter (among the prompt's letters) is the answer
        for idx in chunks(len(prompts), batch_size):
            enc = encode_prompts(tokenizer, [prompts[i] for i in idx], chat, key_offset)
            rows = torch.arange(enc.size)
            orig, target = enc.keys[rows, enc.answer], enc.keys[rows, targets[list(idx)]]  # (b,) columns
            with edit_attention(model, [], read=list(heads)) as ed:
                out = run_model(model, enc.batch)
            before = {h: ed.attention(*h)[rows, enc.last].float().cpu() for h in heads}  # (b, kv_len)
            letters = out.logits[rows, enc.last].float().cpu().gather(1, enc.letter_ids)  # (b, n_pairs)
            self.correct += int((letters.argmax(-1) == enc.answer).sum())
            self.items.append((enc, orig, target, before, targets[list(idx)]))


@torch.no_grad()
def _swap(model, batches: _Batches, head: tuple[int, int], basis: torch.Tensor) -> dict[str, float]:
    """Metrics of one swap over all prompts (means weighted by batch size)."""
    totals, n = dict.fromkeys(METRICS, 0.0), 0
    for enc, orig, target, before, target_clause in batches.items:
        rows = torch.arange(enc.size)
        swap = KeySwap(head[0], head[1], basis.float(), orig.tolist(), target.tolist(), enc.last.tolist())
        with edit_attention(model, [swap]) as ed:
            out = run_model(model, enc.batch)
        after = ed.attention(*head)[rows, enc.last].float().cpu()  # (b, kv_len)
        m = swap_metrics(before[head], after, orig, target)
        a0, a1 = before[head], after
        p0 = a0[rows, target] / (a0[rows, target] + a0[rows, orig]).clamp_min(1e-12)
        p1 = a1[rows, target] / (a1[rows, target] + a1[rows, orig]).clamp_min(1e-12)
        m["share_shift"] = (p1 - p0).mean().item()  # the authors' Δp: target's share of {orig, target}
        m["flip_from_orig"] = ((a0.argmax(-1) == orig) & (a1.argmax(-1) == target)).double().mean().item()
        letters = out.logits[rows, enc.last].float().cpu().gather(1, enc.letter_ids)  # (b, n_pairs)
        m["answer_to_target"] = (letters.argmax(-1) == target_clause).double().mean().item()
        for k in METRICS:
            totals[k] += m[k] * enc.size
        n += enc.size
    return {k: v / n for k, v in totals.items()}


def _row(head, condition: str, model_name: str, basis: torch.Tensor | None, model, batches) -> dict:
    row = {"head": head_name(head), "condition": condition, "model": model_name,
           "rank": 0 if basis is None else basis.shape[1]}
    if basis is None or basis.shape[1] == 0:
        return {**row, **dict.fromkeys(METRICS, float("nan"))}
    return {**row, **_swap(model, batches, head, basis)}


@dataclass
class InterventionResult:
    """analysis (subspaces, controls), table (one row per head and condition), baseline (unedited attention on
    the answer and the target letters, per head)."""

    analysis: BindingAnalysis
    table: pd.DataFrame
    baseline: pd.DataFrame


def head_swaps(analysis: BindingAnalysis, head, trained: _Batches, control: _Batches, n_random: int,
               generator: torch.Generator) -> list[dict]:
    """Rows of one head: order / lexical / both, random subspaces of the three ranks, and the controls."""
    model, rnd = analysis.lm.model, analysis.random_model
    decs = {w: control_decompositions(analysis, head, w) for w in ("order", "lexical")}

    def bases(cond):
        o, l = decs["order"][cond].key_basis.float(), decs["lexical"][cond].key_basis.float()
        both = combine_bases([o, l]) if o.shape[1] + l.shape[1] > 0 else o
        return {"order": o, "lexical": l, "order+lexical": both}

    rows = []
    real = bases("trained")
    for name, b in real.items():
        rows.append(_row(head, name, "trained", b, model, trained))
    d = real["order"].shape[0]
    for name, b in real.items():
        r = b.shape[1]
        draws = [_row(head, f"random ({name} rank)", "trained",
                      random_orthonormal(d, r, generator).float() if r else None, model, trained)
                 for _ in range(n_random)]
        mean = {k: sum(x[k] for x in draws) / n_random for k in METRICS}
        rows.append({**draws[0], **mean})
    for name, b in bases("shuffled labels").items():
        rows.append(_row(head, f"shuffled labels: {name}", "trained", b, model, trained))
    for name, b in bases("random init").items():
        rows.append(_row(head, f"random init: {name}", "random init", b, rnd, control))
    return rows


def run_interventions(params: InterventionParams, lm: LoadedLM | None = None,
                      analysis: BindingAnalysis | None = None) -> InterventionResult:
    """The Figure 9 chapter: subspaces (with controls), then every swap at every studied head."""
    analysis = analysis if analysis is not None else analyse_binding(params, lm)
    prompts, targets = swap_prompt_set(params)
    tok, chat, bs = analysis.lm.tokenizer, analysis.lm.chat, params.batch_size
    trained = _Batches(analysis.lm.model, tok, chat, prompts, targets, analysis.heads, bs, params.key_offset)
    control = _Batches(analysis.random_model, tok, chat, prompts, targets, analysis.heads, bs, params.key_offset)
    g = torch.Generator().manual_seed(params.seed + 4)
    rows = [r for head in analysis.heads for r in head_swaps(analysis, head, trained, control, params.n_random, g)]
    table = pd.DataFrame(rows).set_index(["head", "condition"])
    return InterventionResult(analysis, table, baseline_table(analysis.heads, {"trained": trained,
                                                                             "random init": control}))


def baseline_table(heads: Sequence[tuple[int, int]], batches: dict[str, _Batches]) -> pd.DataFrame:
    """Unedited attention from the last token on the answer box's key and on the target's, how often the answer's
    key is the head's argmax, and the model's letter accuracy on the swap prompts."""
    rows = []
    for name, b in batches.items():
        for head in heads:
            on_o, on_t, top, n = 0.0, 0.0, 0.0, 0
            for enc, orig, target, before, _ in b.items:
                rows_ = torch.arange(enc.size)
                a = before[head]
                on_o += a[rows_, orig].sum().item()
                on_t += a[rows_, target].sum().item()
                top += (a.argmax(-1) == orig).sum().item()
                n += enc.size
            rows.append({"head": head_name(head), "model": name, "attn on answer": on_o / n,
                         "attn on target": on_t / n, "answer is argmax": top / n, "model accuracy": b.correct / n})
    return pd.DataFrame(rows).set_index(["head", "model"])

