"""Binding interventions (paper Figure 9): at a head, swap the answer box letter's key with another box letter's
key inside the order-ID subspace, the lexical-ID subspace, both, or controls of the same ranks, and read where the
head's attention goes. The swaps run on the book's one swap engine (qkcore.experiments.swap_engine): this module only
chooses the prompts (the authors' set: an unused queried object), orig (the answer's box) and target (a random other
box), and the bases compared.

Conditions per studied head: order / lexical / order+lexical; random subspaces of each rank (`n_random` draws,
averaged per prompt); the top key-variance subspace (label-free); the shuffled-label subspaces at the trained ranks
(n_shuffled balanced null draws, averaged per prompt);
and the random-init copy's own subspaces on that copy. Metrics per prompt (the engine's): the authors' flip
(undefined where the answer's key is not the head's argmax before the swap), the flip among the box letters, Δp,
the gap fraction; and the baseline sink share. Verdicts (qkcore.experiments.verdicts): gated on the model binding
and the head selecting the answer's box (qkcore.experiments.binding.gates), then the authors' flip in each of the
three subspaces against its controls by paired bootstrap on the same prompts.

    P = InterventionParams()                  # the authors' swap set; n_random random draws per rank
    result = run_interventions(P)             # result.table: one row per (head, condition); result.verdicts
    result.table.loc[("L1H3", "order+lexical"), "flip"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import pandas as pd
import torch

from qkcore.experiments.binding.analysis import (
    BindingAnalysis,
    BindingParams,
    analyse_binding,
    control_decompositions,
    shuffled_draws,
)
from qkcore.experiments.binding.gates import binding_gate, fmt_p, head_evidence, model_evidence
from qkcore.experiments.binding.prompts import encode_binding_prompts
from qkcore.experiments.models import LoadedLM
from qkcore.experiments.swap_engine import SwapResult, gather_swap_sets, swap_conditions, top_key_variance
from qkcore.experiments.tables import r3
from qkcore.experiments.verdicts import MIN_DEFINED, Estimate, Verdict, effect_vs_controls, paired_difference
from qkcore.lm import iter_batches
from qkcore.lm.layout import head_name
from qkcore.organisms.binding_task import EXTRA_OBJECTS, BindingPrompt, counterfactual, sample_prompt
from qkcore.params import require
from qkcore.subspace import combine_bases

SUBSPACES = ("order", "lexical", "order+lexical")
CLAIM_OF = {
    "order": "binding: swap, order",
    "lexical": "binding: swap, lexical",
    "order+lexical": "binding: swap, both",
}
METRICS = ("flip", "flip_candidates", "delta_p", "gap_fraction")


@dataclass(frozen=True)
class InterventionParams(BindingParams):
    """BindingParams, plus: n_swap_prompts fresh prompts (paper: 1,000); n_random random subspaces per rank (their
    per-prompt metrics are averaged); swap_prompts: "unused query" (the queried object is one the prompt does not
    use, as in the authors' intervention set) or "plain" (the paper's objects). preset="quick": QUICK."""

    n_swap_prompts: int = 300
    n_random: int = 10
    swap_prompts: Literal["plain", "unused query"] = "unused query"
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


def swap_tasks(analysis: BindingAnalysis, prompts: list[BindingPrompt]) -> list:
    """The swap prompts encoded in batches as the engine's EncodedTasks (query: the last token; candidates: the
    box letters' keys; labels: clause indices)."""
    p, lm = analysis.params, analysis.lm
    return [
        encode_binding_prompts(lm.tokenizer, [prompts[i] for i in idx], lm.chat, p.key_offset, p.answer_prefix).task
        for idx in iter_batches(len(prompts), p.batch_size)
    ]


def _bases(order_dec, lexical_dec) -> dict[str, torch.Tensor]:
    o, l = order_dec.key_basis.double(), lexical_dec.key_basis.double()
    both = combine_bases([o, l]).double() if o.shape[1] + l.shape[1] > 0 else o
    return {"order": o, "lexical": l, "order+lexical": both}


def head_bases(analysis: BindingAnalysis, head, condition: str) -> dict[str, torch.Tensor]:
    """The order, lexical and order+lexical key bases (d, r) of `head` under a condition of CONDITIONS (the controls
    at the trained ranks); "order+lexical" is the two bases' union, orthonormalised."""
    decs = {w: control_decompositions(analysis, head, w)[condition] for w in ("order", "lexical")}
    return _bases(decs["order"], decs["lexical"])


def shuffled_bases(analysis: BindingAnalysis, head) -> dict[str, list[torch.Tensor]]:
    """The same three bases for each of the n_shuffled null draws (at the trained ranks): the swap engine averages
    a list of bases per prompt."""
    draws = [
        _bases(o, l) for o, l in zip(shuffled_draws(analysis, head, "order"), shuffled_draws(analysis, head, "lexical"))
    ]
    return {name: [b[name] for b in draws] for name in SUBSPACES}


def _controls_of(name: str) -> tuple[str, ...]:
    return (
        f"random ({name} rank)",
        f"top key variance ({name} rank)",
        f"shuffled labels: {name}",
        f"random init: {name}",
    )


@dataclass
class InterventionResult:
    """analysis; per_head: head → condition → metric → (n,) per-prompt values (NaN = undefined); ranks: head →
    condition → rank; sink_share: head → (n,) baseline attention outside the box letters (trained model); baseline
    (per head: attention on the answer and target, how often the answer's key is the argmax); verdicts: one per head
    and subspace; gates: the model's and each head's gate evidence."""

    analysis: BindingAnalysis
    per_head: dict
    ranks: dict
    sink_share: dict
    baseline: pd.DataFrame
    verdicts: list[Verdict]
    gates: dict

    @property
    def table(self) -> pd.DataFrame:
        """One row per (head, condition): rank, and each metric's mean, 95% interval and defined-prompt count."""
        rows = []
        for h, conds in self.per_head.items():
            for cond, per in conds.items():
                row = {"head": h, "condition": cond, "rank": self.ranks[h][cond]}
                for m in METRICS:
                    e = Estimate.of(per[m])
                    row.update({m: e.value, f"{m} lo": e.lo, f"{m} hi": e.hi, f"{m} n": e.n})
                rows.append(row)
        return pd.DataFrame(rows).set_index(["head", "condition"])


def run_interventions(
    params: InterventionParams, lm: LoadedLM | None = None, analysis: BindingAnalysis | None = None
) -> InterventionResult:
    """The Figure 9 chapter: subspaces (with controls), then every swap at every studied head on the swap engine."""
    analysis = analysis if analysis is not None else analyse_binding(params, lm)
    prompts, targets = swap_prompt_set(params)
    orig = torch.tensor([p.query for p in prompts])  # (n,) candidate index of the answer's box
    tasks = swap_tasks(analysis, prompts)
    heads = analysis.heads
    # the control first: analyse_binding left it resident, so the two models swap memory once (qkcore.lm.residency;
    # each is mapped back from its file); the two gathers are independent
    rsets = gather_swap_sets(analysis.random_model, tasks, heads, orig, targets)
    sets = gather_swap_sets(analysis.lm.model, tasks, heads, orig, targets)
    g = torch.Generator().manual_seed(params.seed + 4)
    per_head, ranks, sinks, base = {}, {}, {}, []
    for head in heads:
        real, rnd = (head_bases(analysis, head, c) for c in ("trained", "random init"))
        shuffled = shuffled_bases(analysis, head)
        bases: dict = {}
        for name in SUBSPACES:
            r = real[name].shape[1]
            bases[name] = real[name]
            bases[f"random ({name} rank)"] = r
            bases[f"top key variance ({name} rank)"] = top_key_variance(sets[head], r) if r else None
            bases[f"shuffled labels: {name}"] = shuffled[name]
        res: SwapResult = swap_conditions(sets[head], bases, g, params.n_random)
        ctrl = swap_conditions(rsets[head], {f"random init: {n}": rnd[n] for n in SUBSPACES}, g, params.n_random)
        label = head_name(head)
        per_head[label] = {**res.per_prompt, **ctrl.per_prompt}
        ranks[label] = {**res.ranks, **ctrl.ranks}
        sinks[label] = sets[head].sink_share
        for model, s in (("trained", sets[head]), ("random init", rsets[head])):
            base.append(
                {
                    "head": label,
                    "model": model,
                    "answer is argmax (row)": float(s.orig_on_top.double().mean()),
                    "answer is argmax (letters)": float(s.orig_on_top_of_candidates.double().mean()),
                    "sink share": float(s.sink_share.mean()),
                    "attn on answer": float(
                        torch.cat([c["attn"].gather(1, c["cand"]) for c in s.chunks]).gather(1, orig[:, None]).mean()
                    ),
                }
            )
    verdicts, gates = swap_verdicts(analysis, per_head, sets)
    baseline = pd.DataFrame(base).set_index(["head", "model"])
    return InterventionResult(analysis, per_head, ranks, sinks, baseline, verdicts, gates)


def model_label(analysis: BindingAnalysis) -> str:
    return analysis.lm.description.split(" (")[0]


def chapter_gates(analysis: BindingAnalysis) -> dict:
    """The model's gate evidence (letter accuracy on the order prompts) and each studied head's (selectivity on
    them), from the scan's per-prompt records."""
    scan, n_pairs = analysis.trained.scan, analysis.params.n_pairs
    out = {"model": model_evidence(scan.correct, n_pairs)}
    for head in analysis.heads:
        i = analysis.trained.order.index(head)
        out[head_name(head)] = head_evidence(scan.top_is_answer[i], scan.gap[i], n_pairs)
    return out


def swap_verdicts(analysis: BindingAnalysis, per_head: dict, sets: dict) -> tuple[list[Verdict], dict]:
    """One verdict per studied head and subspace: gated, else the authors' flip against its four controls."""
    gates = chapter_gates(analysis)
    model = model_label(analysis)
    out = []
    for head in analysis.heads:
        label = head_name(head)
        for name in SUBSPACES:
            claim = CLAIM_OF[name]
            v = binding_gate(claim, model, label, gates["model"], gates[label])
            if v is None:
                per = per_head[label]
                n_top = int(sets[head].orig_on_top.sum())
                controls = {c: per[c]["flip"] for c in _controls_of(name)}
                floors = {c: x for c, x in controls.items() if int((~torch.isnan(x)).sum()) < MIN_DEFINED}
                v = effect_vs_controls(
                    claim,
                    model,
                    label,
                    per[name]["flip"],
                    {c: x for c, x in controls.items() if c not in floors},
                    floor_reason=f"the answer's key is the head's argmax in {n_top} of {sets[head].n} prompts",
                )
                for c, x in floors.items():  # a control whose flip cannot be measured is reported, not compared
                    v.numbers[c] = f"undefined (floor): defined on {int((~torch.isnan(x)).sum())} prompts"
            out.append(v)
    return out, gates


POWER_CONTROL = "random (order+lexical rank)"  # the run's power: the paired order+lexical − random interval


def summary(result: InterventionResult) -> dict[str, object]:
    """The chapter's closing numbers: the gates, and per head and condition the authors' flip, Δp and the flip among
    the box letters with their 95% intervals (n = prompts where defined); per head the run's power (half-width of the
    paired order+lexical − random flip interval: the smallest difference these prompts resolve); the verdicts."""
    a = result.analysis
    g = result.gates["model"]
    out: dict[str, object] = {
        "model": model_label(a),
        "letter accuracy (order prompts)": r3(g["letter accuracy"]),
        "chance": r3(g["chance"]),
        "letter accuracy binomial p": fmt_p(g["binomial p"]),
    }
    t = result.table
    for h in result.per_head:
        he = result.gates[h]
        out[f"{h} answer is top-attended letter (order prompts)"] = r3(he["answer is top-attended letter"])
        out[f"{h} logit gap"] = str(he["logit gap"])
        out[f"{h} sink share"] = r3(float(result.sink_share[h].mean()))
        for c in SUMMARY_CONDITIONS:
            row = t.loc[(h, c)]
            n = int(row["flip n"])
            out[f"{h} flip, {c}"] = (
                f"{row['flip']:.3f} [{row['flip lo']:.3f}, {row['flip hi']:.3f}] n={n}"
                if n >= MIN_DEFINED
                else f"undefined (floor): defined on {n} prompts"
            )
            out[f"{h} Δp, {c}"] = r3(row["delta_p"])
        diff = paired_difference(result.per_head[h]["order+lexical"]["flip"], result.per_head[h][POWER_CONTROL]["flip"])
        out[f"{h} swap power (± half-width, n)"] = (
            [r3(diff.half_width), diff.n]
            if diff.n >= MIN_DEFINED
            else f"undefined (floor): defined on {diff.n} prompts"
        )
    out["verdicts"] = [f"{v.head}, {v.claim}: {v.verdict}" for v in result.verdicts]
    return out


SUMMARY_CONDITIONS = (
    "order",
    "lexical",
    "order+lexical",
    "random (order+lexical rank)",
    "top key variance (order+lexical rank)",
    "shuffled labels: order+lexical",
    "random init: order+lexical",
)
