"""Binding interventions (paper Figure 9): at a head, swap the answer box letter's key with another box letter's
key inside the order-ID subspace, the lexical-ID subspace, both, or random subspaces of the same ranks; overwrite
the head's logits at the last token (qkcore.lm.edit_attention with a KeySwap) and read where its attention goes.

Controls: the same swaps inside random subspaces and inside the span of the keys' top principal directions (the
label-free top-variance subspace), both of the same ranks; inside the shuffled-label subspaces (at the trained ranks)
on the trained model, and inside the randomly initialised copy's own subspaces (at the trained ranks) on that copy.
Every flip rate comes with its 95% bootstrap interval over prompts (flip_lo, flip_hi).

swap_method="forward" edits the head in a forward pass per condition (and reads the model's answer);
"recompute" gathers each prompt's query, keys and unedited attention row once per model and rebuilds the edited row
with qkcore.interventions.swapped_attention (exact for one edited head, nothing upstream of it moves; no answer is
read, and there is no "all studied" row): what makes a 135M-parameter model affordable on a CPU.

    P = InterventionParams()                  # swap_method="forward"; "recompute" for a real model on a CPU
    result = run_interventions(P)             # result.table: one row per (head, condition)
    result.table.loc[("L2H1", "order"), "flip_rate"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import pandas as pd
import torch

from qkcore.experiments.binding.analysis import BindingAnalysis, BindingParams, analyse_binding, control_decompositions
from qkcore.experiments.binding.prompts import capture_binding, encode_binding_prompts
from qkcore.experiments.models import LoadedLM
from qkcore.experiments.tables import r3
from qkcore.interventions import bootstrap_interval, swap_metrics, swapped_attention
from qkcore.lm import KeySwap, edit_attention, iter_batches, run_model
from qkcore.lm.gather import gather_qk
from qkcore.lm.layout import head_name
from qkcore.organisms.binding_task import EXTRA_OBJECTS, BindingPrompt, counterfactual, sample_prompt
from qkcore.params import require
from qkcore.subspace import combine_bases, random_orthonormal

METRICS = (
    "attn_orig_before",
    "attn_target_before",
    "attn_orig_after",
    "attn_target_after",
    "target_shift",
    "flip_rate",
    "share_shift",
    "flip_from_orig",
    "answer_to_target",
)
BOOTSTRAP_SEED = 0  # the bootstrap's own generator: intervals never shift the conditions' random draws


@dataclass(frozen=True)
class InterventionParams(BindingParams):
    """BindingParams, plus: n_swap_prompts fresh prompts (paper: 1,000); n_random random subspaces per rank (their
    metrics are averaged); swap_prompts: "plain" (the paper's objects) or "unused query" (the queried object is an
    unused one, as in the authors' intervention set); swap_method: "forward" (an edited forward pass per condition)
    or "recompute" (rows rebuilt from one gathered pass per model; one head at a time). preset="quick": QUICK."""

    n_swap_prompts: int = 300
    n_random: int = 3
    swap_prompts: Literal["plain", "unused query"] = "plain"
    swap_method: Literal["forward", "recompute"] = "forward"
    QUICK: ClassVar[dict] = {"n_order_prompts": 200, "n_lexical_prompts": 200, "n_swap_prompts": 100}

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
    """Encoded swap prompts, their orig/target/last columns, the unedited attention of the heads (items), the keys
    of every box letter per head (letter_keys[h]: (n, n_pairs, d), for the top-variance control) and, when
    `recompute`, per batch and head the query, the orig and target keys and the logit scale (qk)."""

    def __init__(
        self, model, tokenizer, chat, prompts, targets, heads, batch_size, key_offset=0, recompute: bool = False
    ):
        self.items, self.qk = [], []
        self.correct = 0  # prompts whose top letter (among the prompt's letters) is the answer
        keys = {h: [] for h in heads}
        for idx in iter_batches(len(prompts), batch_size):
            enc = encode_binding_prompts(tokenizer, [prompts[i] for i in idx], chat, key_offset)
            rows = torch.arange(enc.size)
            orig, target = enc.keys[rows, enc.answer], enc.keys[rows, targets[list(idx)]]  # (b,) columns
            if recompute:
                cols = torch.arange(enc.batch.input_ids.shape[1]).expand(enc.size, -1)  # (b, S) every column
                got = gather_qk(
                    model, enc.batch, list(heads), enc.last, key_cols=None, attn_cols=cols, logits_to_keep=1
                )
                before = {h: got.attn[i] for i, h in enumerate(heads)}  # (b, S)
                self.qk.append(
                    {
                        h: (got.q[i], got.k[i][rows, orig], got.k[i][rows, target], got.scaling[i])
                        for i, h in enumerate(heads)
                    }
                )
                for i, h in enumerate(heads):
                    keys[h].append(got.k[i][rows[:, None], enc.keys])  # (b, n_pairs, d)
                logits = got.output.logits[:, -1].float().cpu()  # left padding: the last column is the query
            else:
                with edit_attention(model, [], read=list(heads)) as ed:
                    out = run_model(model, enc.batch)
                before = {h: ed.attention(*h)[rows, enc.last].float().cpu() for h in heads}  # (b, kv_len)
                logits = out.logits[rows, enc.last].float().cpu()
                vec = capture_binding(model, enc, heads)
                for i, h in enumerate(heads):
                    keys[h].append(vec.k[i])  # (b, n_pairs, d)
            letters = logits.gather(1, enc.letter_ids)  # (b, n_pairs)
            self.correct += int((letters.argmax(-1) == enc.answer).sum())
            self.items.append((enc, orig, target, before, targets[list(idx)]))
        self.letter_keys = {h: torch.cat(v) for h, v in keys.items()}

    def top_variance(self, head, rank: int) -> torch.Tensor:
        """(d, rank) the top principal directions (centred) of every box letter's key at `head`: label-free."""
        k = self.letter_keys[head].double().flatten(0, 1)  # (n·n_pairs, d)
        return torch.linalg.svd(k - k.mean(0), full_matrices=False).Vh[:rank].T


def _attention_metrics(a0: torch.Tensor, a1: torch.Tensor, orig: torch.Tensor, target: torch.Tensor) -> dict:
    """swap_metrics plus the authors' Δp (target's share of {orig, target}) and the flip from orig to target."""
    rows = torch.arange(a0.shape[0])
    m = swap_metrics(a0, a1, orig, target)
    p0 = a0[rows, target] / (a0[rows, target] + a0[rows, orig]).clamp_min(1e-12)
    p1 = a1[rows, target] / (a1[rows, target] + a1[rows, orig]).clamp_min(1e-12)
    m["share_shift"] = (p1 - p0).mean().item()
    m["flip_from_orig"] = ((a0.argmax(-1) == orig) & (a1.argmax(-1) == target)).double().mean().item()
    return m


@torch.no_grad()
def _swap(model, batches: _Batches, swaps: Sequence[tuple[tuple[int, int], torch.Tensor]]) -> dict:
    """Metrics of one swap condition over all prompts (means weighted by batch size), and "flips": per prompt
    whether the argmax moved to the target (averaged over the heads). swaps: (head, key basis) pairs edited in the
    same forward pass; attention metrics are averaged over those heads. With batches gathered for `recompute`, one
    head's rows are rebuilt from the gathered q and k instead (answer_to_target is then NaN)."""
    if batches.qk:
        return _recomputed_swap(batches, swaps)
    totals, n, flips = dict.fromkeys(METRICS, 0.0), 0, []
    for enc, orig, target, before, target_clause in batches.items:
        rows = torch.arange(enc.size)
        edits = [KeySwap(h[0], h[1], b.float(), orig.tolist(), target.tolist(), enc.last.tolist()) for h, b in swaps]
        with edit_attention(model, edits) as ed:
            out = run_model(model, enc.batch)
        after = {h: ed.attention(*h)[rows, enc.last].float().cpu() for h, _ in swaps}  # (b, kv_len) per head
        per_head = [_attention_metrics(before[h], after[h], orig, target) for h, _ in swaps]
        m = {k: sum(x[k] for x in per_head) / len(per_head) for k in per_head[0]}
        flips.append(sum((after[h].argmax(-1) == target).double() for h, _ in swaps) / len(swaps))
        letters = out.logits[rows, enc.last].float().cpu().gather(1, enc.letter_ids)  # (b, n_pairs)
        m["answer_to_target"] = (letters.argmax(-1) == target_clause).double().mean().item()
        for k in METRICS:
            totals[k] += m[k] * enc.size
        n += enc.size
    return {**{k: v / n for k, v in totals.items()}, "flips": torch.cat(flips)}


def _recomputed_swap(batches: _Batches, swaps) -> dict:
    """_swap for one head from the gathered pass: qkcore.interventions.swapped_attention per batch."""
    if len(swaps) != 1:
        raise ValueError(
            "swap_method='recompute' edits one head at a time (heads in different layers change "
            "each other's inputs, which only a forward pass shows)"
        )
    ((head, basis),) = swaps
    totals, n, flips = dict.fromkeys(METRICS, 0.0), 0, []
    for (enc, orig, target, before, _), qk in zip(batches.items, batches.qk):
        q, k_o, k_t, scale = qk[head]
        after = swapped_attention(before[head], q, k_o, k_t, basis, scale, orig, target).float()  # (b, S)
        m = _attention_metrics(before[head], after, orig, target)
        flips.append((after.argmax(-1) == target).double())
        for k in METRICS[:-1]:
            totals[k] += m[k] * enc.size
        n += enc.size
    return {**{k: v / n for k, v in totals.items()}, "answer_to_target": float("nan"), "flips": torch.cat(flips)}


def _interval(flips: torch.Tensor) -> dict[str, float]:
    lo, hi = bootstrap_interval(flips, torch.Generator().manual_seed(BOOTSTRAP_SEED))
    return {"flip_lo": lo, "flip_hi": hi}


def _row(head_label: str, condition: str, model_name: str, swaps, model, batches) -> dict:
    """One table row; swaps: [(head, basis or None)]; an empty subspace at any head gives NaN metrics. The row
    keeps the per-prompt flips under "flips" (popped by _finish)."""
    row = {
        "head": head_label,
        "condition": condition,
        "model": model_name,
        "rank": sum(0 if b is None else b.shape[1] for _, b in swaps),
    }
    if any(b is None or b.shape[1] == 0 for _, b in swaps):
        return {**row, **dict.fromkeys(METRICS, float("nan")), "flips": None}
    return {**row, **_swap(model, batches, swaps)}


def _mean_of_draws(draws: list[dict]) -> dict:
    """Rows of random draws → one row: metrics and per-prompt flips averaged over the draws."""
    out = {**draws[0], **{k: sum(x[k] for x in draws) / len(draws) for k in METRICS}}
    out["flips"] = None if draws[0]["flips"] is None else torch.stack([x["flips"] for x in draws]).mean(0)
    return out


def _finish(row: dict) -> dict:
    """The row with its bootstrap interval of the flip rate in place of the per-prompt flips."""
    flips = row.pop("flips")
    return {**row, **(_interval(flips) if flips is not None else {"flip_lo": float("nan"), "flip_hi": float("nan")})}


@dataclass
class InterventionResult:
    """analysis (subspaces, controls), table (one row per head and condition), baseline (unedited attention on
    the answer and the target letters, per head)."""

    analysis: BindingAnalysis
    table: pd.DataFrame
    baseline: pd.DataFrame


def head_swaps(
    analysis: BindingAnalysis, head, trained: _Batches, control: _Batches, n_random: int, generator: torch.Generator
) -> list[dict]:
    """Rows of one head: order / lexical / both, random subspaces of the three ranks, and the controls."""
    model, rnd = analysis.lm.model, analysis.random_model
    decs = {w: control_decompositions(analysis, head, w) for w in ("order", "lexical")}

    def bases(cond):
        o, l = decs["order"][cond].key_basis.float(), decs["lexical"][cond].key_basis.float()
        both = combine_bases([o, l]) if o.shape[1] + l.shape[1] > 0 else o
        return {"order": o, "lexical": l, "order+lexical": both}

    rows = []
    real = bases("trained")
    label = head_name(head)
    for name, b in real.items():
        rows.append(_row(label, name, "trained", [(head, b)], model, trained))
    d = real["order"].shape[0]
    for name, b in real.items():
        r = b.shape[1]
        draws = [
            _row(
                label,
                f"random ({name} rank)",
                "trained",
                [(head, random_orthonormal(d, r, generator).float() if r else None)],
                model,
                trained,
            )
            for _ in range(n_random)
        ]
        rows.append(_mean_of_draws(draws))
    for name, b in real.items():
        top = trained.top_variance(head, b.shape[1]).float() if b.shape[1] else None
        rows.append(_row(label, f"top key variance ({name} rank)", "trained", [(head, top)], model, trained))
    for name, b in bases("shuffled labels").items():
        rows.append(_row(label, f"shuffled labels: {name}", "trained", [(head, b)], model, trained))
    for name, b in bases("random init").items():
        rows.append(_row(label, f"random init: {name}", "random init", [(head, b)], rnd, control))
    return rows


def all_head_swaps(
    analysis: BindingAnalysis, trained: _Batches, n_random: int, generator: torch.Generator
) -> list[dict]:
    """Rows "all studied": every studied head swapped in the same pass, each in its own order+lexical subspace;
    then random subspaces of the same ranks and the shuffled-label subspaces (metrics averaged over the heads)."""

    def both(head, cond):
        decs = control_decompositions(analysis, head, "order"), control_decompositions(analysis, head, "lexical")
        o, l = decs[0][cond].key_basis.float(), decs[1][cond].key_basis.float()
        return combine_bases([o, l]) if o.shape[1] + l.shape[1] > 0 else o

    label, model = "all studied", analysis.lm.model
    real = [(h, both(h, "trained")) for h in analysis.heads]
    rows = [_row(label, "order+lexical", "trained", real, model, trained)]
    draws = [
        _row(
            label,
            "random (order+lexical rank)",
            "trained",
            [
                (h, random_orthonormal(b.shape[0], b.shape[1], generator).float() if b.shape[1] else None)
                for h, b in real
            ],
            model,
            trained,
        )
        for _ in range(n_random)
    ]
    rows.append(_mean_of_draws(draws))
    rows.append(
        _row(
            label,
            "shuffled labels: order+lexical",
            "trained",
            [(h, both(h, "shuffled labels")) for h in analysis.heads],
            model,
            trained,
        )
    )
    return rows


def run_interventions(
    params: InterventionParams, lm: LoadedLM | None = None, analysis: BindingAnalysis | None = None
) -> InterventionResult:
    """The Figure 9 chapter: subspaces (with controls), then every swap at every studied head."""
    analysis = analysis if analysis is not None else analyse_binding(params, lm)
    prompts, targets = swap_prompt_set(params)
    tok, chat, bs = analysis.lm.tokenizer, analysis.lm.chat, params.batch_size
    recompute = params.swap_method == "recompute"
    trained = _Batches(analysis.lm.model, tok, chat, prompts, targets, analysis.heads, bs, params.key_offset, recompute)
    control = _Batches(
        analysis.random_model, tok, chat, prompts, targets, analysis.heads, bs, params.key_offset, recompute
    )
    g = torch.Generator().manual_seed(params.seed + 4)
    rows = [r for head in analysis.heads for r in head_swaps(analysis, head, trained, control, params.n_random, g)]
    if len(analysis.heads) > 1 and not recompute:
        rows += all_head_swaps(analysis, trained, params.n_random, g)
    table = pd.DataFrame([_finish(r) for r in rows]).set_index(["head", "condition"])
    return InterventionResult(
        analysis, table, baseline_table(analysis.heads, {"trained": trained, "random init": control})
    )


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
            rows.append(
                {
                    "head": head_name(head),
                    "model": name,
                    "attn on answer": on_o / n,
                    "attn on target": on_t / n,
                    "answer is argmax": top / n,
                    "model accuracy": b.correct / n,
                }
            )
    return pd.DataFrame(rows).set_index(["head", "model"])


SUMMARY_CONDITIONS = (
    "order",
    "lexical",
    "order+lexical",
    "random (order+lexical rank)",
    "top key variance (order+lexical rank)",
    "shuffled labels: order+lexical",
    "random init: order+lexical",
)


def summary(result: InterventionResult) -> dict[str, object]:
    """The chapter's closing numbers, one line per head and condition: the flip rate with its 95% bootstrap interval
    under each subspace and control, and (when the forward path read it) how often the model's answer moves to the
    target's letter; plus the model's letter accuracy on the swap prompts."""
    t = result.table
    out: dict[str, object] = {"model": result.analysis.lm.description.split(" (")[0]}
    out["letter accuracy on the swap prompts"] = r3(result.baseline["model accuracy"].iloc[0])
    for h in t.index.get_level_values(0).unique():
        for c in [c for c in SUMMARY_CONDITIONS if (h, c) in t.index]:
            row = t.loc[(h, c)]
            out[f"{h} flip rate, {c}"] = (
                f"{r3(row['flip_rate']):.3f} [{r3(row['flip_lo']):.3f}, {r3(row['flip_hi']):.3f}]"
            )
            if row["answer_to_target"] == row["answer_to_target"]:  # not NaN: read by the forward path
                out[f"{h} answer moves, {c}"] = r3(row["answer_to_target"])
    return out
