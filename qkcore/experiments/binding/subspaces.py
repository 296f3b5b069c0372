"""The binding-subspaces chapter (paper Figure 8): both contrasts at every head with their controls, and the order-ID
and lexical views (PCA, kNN, UMAP) at one head.

    P = SubspaceParams()                  # model="organism": the CPU-trained binding organism
    result = run_subspaces(P)             # .analysis (BindingAnalysis), .order_views / .lexical_views per condition
    summary(result)                       # the chapter's closing numbers
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from qkcore.experiments.binding.analysis import (
    CONDITIONS,
    BindingAnalysis,
    BindingParams,
    analyse_binding,
    control_decompositions,
    load_binding_lm,
    shuffled_draws,
)
from qkcore.experiments.binding.filler import filler_prompts
from qkcore.experiments.binding.gates import binding_gate
from qkcore.experiments.binding.views import (
    balanced_query_prompts,
    collect,
    lexical_view,
    mean_beyond_position,
    mean_view,
    order_beyond_position,
    order_view,
)
from qkcore.experiments.models import LoadedLM
from qkcore.experiments.tables import r3
from qkcore.experiments.verdicts import (
    ALPHA,
    IMPLIED,
    MATCHED,
    REPRODUCED,
    Verdict,
    against_null,
    effect_vs_controls,
    rank_verdict,
)
from qkcore.lm import attention_layout
from qkcore.lm.layout import head_name
from qkcore.organisms.binding_task import order_id_prompts
from qkcore.params import require

QUERY_CONCENTRATED = 0.99  # |q̄|²/E|q|² from which a rank-1 ΔC says nothing about the keys (issue 14)
# σ₂²/Σσ² below this is the float32 SVD's round-off (σ₂/σ₁ < 1e-5; a rank-1 ΔC gives ~1e-7), reported as 0: its digits
# were noise that differed from one CPU to another (4.9e-15 here, 4.91e-15 there)
SVD_ROUNDOFF = 1e-10


@dataclass(frozen=True)
class SubspaceParams(BindingParams):
    """BindingParams, plus: view_head (None → the first studied head), n_view_prompts fresh prompts for the
    PCA/UMAP views, umap (False skips the UMAP view: its first fit in an environment compiles numba kernels for
    ~15 s, which later processes reuse), umap_neighbours; max_filler: 0…max_filler filler words in each gap between
    clauses of a second set of order prompts, so that the clause index is decoded apart from absolute position (0: no
    such test)."""

    view_head: tuple[int, int] | None = None
    n_view_prompts: int = 200
    umap: bool = True
    umap_neighbours: int = 15
    max_filler: int = 8
    QUICK: ClassVar[dict] = {"n_order_prompts": 200, "n_lexical_prompts": 200, "n_view_prompts": 100, "umap": False}

    def __post_init__(self):
        super().__post_init__()
        require(self.n_view_prompts >= 10, f"n_view_prompts must be ≥ 10, got {self.n_view_prompts}")
        require(self.umap_neighbours >= 2, f"umap_neighbours must be ≥ 2, got {self.umap_neighbours}")
        require(0 <= self.max_filler <= 12, f"max_filler must be in [0, 12], got {self.max_filler}")


@dataclass
class SubspaceResult:
    """The analysis, the view head, and the order / lexical views per condition (trained, shuffled labels,
    random init; controls at the trained rank; the shuffled-label view's kNN numbers averaged over n_shuffled null
    draws)."""

    analysis: BindingAnalysis
    view_head: tuple[int, int]
    order_views: dict
    lexical_views: dict
    beyond_position: dict  # condition → OrderBeyondPosition on the filler prompts ({} when max_filler = 0)

    def view_table(self) -> pd.DataFrame:
        """kNN accuracy of the clause index (order keys and queries) and of the queried object (lexical)."""
        rows = {
            cond: {
                "order rank": self.order_views[cond].rank,
                "order: clause from keys": self.order_views[cond].key_knn,
                "order: clause from queries": self.order_views[cond].query_knn,
                "lexical rank": self.lexical_views[cond].rank,
                "lexical: object from keys": self.lexical_views[cond].key_knn,
                "lexical: object from queries": self.lexical_views[cond].query_knn,
            }
            for cond in CONDITIONS
        }
        return pd.DataFrame(rows).T

    def position_table(self) -> pd.DataFrame:
        """Per condition, on prompts with filler between clauses: the clause from the order keys, from position
        alone, and from the keys with position removed (chance 1/n_pairs)."""
        rows = {
            cond: {
                "clause from keys": b.keys,
                "clause from position alone": b.position_alone,
                "clause from keys, position removed": b.beyond_position,
                "chance": b.chance,
            }
            for cond, b in self.beyond_position.items()
        }
        return pd.DataFrame(rows).T


def run_subspaces(params: SubspaceParams, lm: LoadedLM | None = None) -> SubspaceResult:
    """The Figure 8 chapter: analysis (scan, contrasts, controls) and the views at the view head."""
    lm = lm if lm is not None else load_binding_lm(params)
    if params.view_head is not None:  # checked before the contrasts are streamed
        attention_layout(lm.model).check_heads([params.view_head], name="view_head")
    analysis = analyse_binding(params, lm)
    head = analysis.heads[0] if params.view_head is None else tuple(params.view_head)
    g = torch.Generator().manual_seed(params.seed + 2)
    order = order_id_prompts(params.n_view_prompts, params.n_pairs, g, query_object=params.query_object)
    plain = balanced_query_prompts(params.n_view_prompts, params.n_pairs, g)
    spaced = filler_prompts(order, params.max_filler, g) if params.max_filler > 0 else None
    tok, chat, bs = analysis.lm.tokenizer, analysis.lm.chat, params.batch_size
    models = {"trained": analysis.lm.model, "shuffled labels": analysis.lm.model, "random init": analysis.random_model}
    order_views, lexical_views = {}, {}
    vectors = {}  # (model, which prompts) → collected q, k: the trained model serves two conditions

    def got(model, which):
        key = (id(model), which)
        if key not in vectors:
            vectors[key] = collect(
                model,
                tok,
                chat,
                {"order": order, "lexical": plain, "filler": spaced}[which],
                head,
                bs,
                params.key_offset,
                params.answer_prefix,
            )
        return vectors[key]

    # each model's collections in one block, the control's first: the two share one memory slot and analyse_binding
    # left the control resident, so they swap once (qkcore.lm.residency; each is mapped back from its file)
    for net in (analysis.random_model, analysis.lm.model):
        for which in ("order", "lexical", "filler") if spaced is not None else ("order", "lexical"):
            got(net, which)

    def decs(which):  # condition → its decompositions (the shuffled-label control: n_shuffled null draws)
        out = {c: [d] for c, d in control_decompositions(analysis, head, which).items()}
        return {**out, "shuffled labels": shuffled_draws(analysis, head, which)}

    for which, views in (("order", order_views), ("lexical", lexical_views)):
        for cond, dec_list in decs(which).items():
            net = models[cond]
            if which == "order":
                made = [
                    order_view(net, tok, chat, order, head, dec, bs, params.key_offset, collected=got(net, which))
                    for dec in dec_list
                ]
            else:
                made = [
                    lexical_view(
                        net,
                        tok,
                        chat,
                        plain,
                        head,
                        dec,
                        bs,
                        umap_seed=params.seed if cond == "trained" and params.umap else None,
                        umap_neighbours=params.umap_neighbours,
                        key_offset=params.key_offset,
                        collected=got(net, which),
                    )
                    for dec in dec_list
                ]
            views[cond] = mean_view(made)
    beyond = {}
    if spaced is not None:
        for cond, dec_list in decs("order").items():
            collected = got(models[cond], "filler")
            beyond[cond] = mean_beyond_position([order_beyond_position(dec, collected) for dec in dec_list])
    return SubspaceResult(analysis, head, order_views, lexical_views, beyond)


NULL_RULE = (
    "; and, beside the rank, ΔC's top singular value σ₁ with the true labels must exceed every null family "
    f"(≥ 50 random and ≥ 50 balanced relabellings of the same prompts) at permutation p < {ALPHA}: "
    "matched by a control when a family reaches it"
)


def rank_claim(claim: str, model: str, head: str, rank: int, d_head: int, implied: bool, nulls, numbers) -> Verdict:
    """The low-rank claim at one head: verdicts.rank_verdict (rank ≤ d_head/4; "implied by query concentration"
    where the query barely varies), and then the permutation test of σ₁(ΔC) against the null families
    (verdicts.against_null): a rank the true labels reach is "reproduced" only when they also beat every family;
    where a family does as well it is "matched by a control". The null numbers are recorded whatever the rank says.
    nulls: qkcore.experiments.binding.nulls.NullDraws."""
    v = rank_verdict(claim, model, head, rank, d_head // 4, implied, numbers)
    test = against_null(
        claim,
        model,
        head,
        nulls.observed,
        {f: x.tolist() for f, x in nulls.families.items()},
        statistic=nulls.statistic,
    )
    word = v.verdict
    if v.verdict == REPRODUCED and test.verdict == MATCHED:
        word = MATCHED
    rule = v.rule if v.verdict == IMPLIED else v.rule + NULL_RULE
    # the deciding numbers first (a page's verdict table shows the first few): rank, then what decided the word
    first = ["rank", "|q̄|²/E|q|²", "σ₂²/Σσ²"] if v.verdict == IMPLIED else ["rank"]
    first += [nulls.statistic, *(f"{f}: p" for f in nulls.families)]
    merged = {**v.numbers, **test.numbers}
    return Verdict(claim, model, head, word, rule, {**{k: merged[k] for k in first if k in merged}, **merged})


def subspace_verdicts(result: SubspaceResult) -> list[Verdict]:
    """One verdict per studied head and contrast (order ID, lexical ID): gated on the model binding and the head
    selecting the answer's box; else `rank_claim` (the rank, rank 1 "implied by query concentration" where the
    queries barely vary, |q̄|²/E|q|² ≥ QUERY_CONCENTRATED, and the permutation test of σ₁ against the null label
    draws), with σ₂²/Σσ² and the random-init copy's rank beside it."""
    from qkcore.experiments.binding.interventions import chapter_gates, model_label

    a = result.analysis
    gates = chapter_gates(a)
    d_head = a.trained.order.delta.shape[-1]
    out = []
    for head in a.heads:
        name = head_name(head)
        for which in ("order", "lexical"):
            claim = f"binding: {which}-ID low rank"
            v = binding_gate(claim, model_label(a), name, gates["model"], gates[name])
            if v is None:
                c = a.trained.get(which)
                dec = a.decomposition(head, which)
                S2 = dec.S.double() ** 2
                conc = float(c.query_concentration[c.index(head)])
                second = float(S2[1] / S2.sum()) if len(S2) > 1 else 0.0
                numbers = {
                    "σ₂²/Σσ²": second if second >= SVD_ROUNDOFF else 0.0,
                    "|q̄|²/E|q|²": conc,
                    "random-init rank": int(a.decomposition(head, which, "random init").rank),
                }
                nulls = a.nulls[head][which]
                v = rank_claim(
                    claim, model_label(a), name, int(dec.rank), d_head, conc >= QUERY_CONCENTRATED, nulls, numbers
                )
            out.append(v)
    out += view_verdicts(result, gates)
    return out


def view_verdicts(result: SubspaceResult, gates: dict) -> list[Verdict]:
    """The two views at the view head, gated like every binding claim. Order-ID view: on the filler prompts, the
    share of a prompt's keys whose clause kNN reads from the order coordinates, minus chance, against the clause
    read from absolute position alone, the shuffled-label subspace and the random-init copy (per prompt, paired).
    Lexical-ID view: whether kNN reads the queried object from the answer's key in the lexical coordinates, minus
    chance, against the shuffled-label subspace and the random-init copy."""
    from qkcore.experiments.binding.interventions import model_label

    a, name = result.analysis, head_name(result.view_head)
    out = []
    for which in ("order", "lexical"):
        claim = f"binding: {which}-ID view"
        v = binding_gate(claim, model_label(a), name, gates["model"], gates.get(name))
        if v is None and which == "order" and not result.beyond_position:
            continue  # max_filler = 0: the order view is not judged (clause and position are one label)
        if v is None:
            if which == "order":
                b = result.beyond_position
                chance = b["trained"].chance
                effect = torch.tensor(b["trained"].per_prompt_keys) - chance
                controls = {
                    "position alone": torch.tensor(b["trained"].per_prompt_position) - chance,
                    "shuffled labels": torch.tensor(b["shuffled labels"].per_prompt_keys) - chance,
                    "random init": torch.tensor(b["random init"].per_prompt_keys) - chance,
                }
            else:
                views = result.lexical_views
                chance = 1 / len(np.unique(views["trained"].key_labels))
                effect = torch.tensor(views["trained"].key_correct) - chance
                controls = {c: torch.tensor(views[c].key_correct) - chance for c in ("shuffled labels", "random init")}
            v = effect_vs_controls(claim, model_label(a), name, effect, controls, floor_reason=knn_floor(result, which))
            v.numbers["chance"] = chance
        out.append(v)
    return out


def knn_floor(result: SubspaceResult, which: str) -> str:
    """Why a view's per-prompt kNN hits may be undefined: kNN holds each label out in stratified folds, so every
    label needs at least 2 rows (the labels: the queried object for the lexical view, the clause for the order
    view)."""
    labels = (result.lexical_views if which == "lexical" else result.order_views)["trained"].key_labels
    _, counts = np.unique(labels, return_counts=True)
    return (
        f"the kNN needs every label at least twice; the rarest of the {len(counts)} labels occurs {counts.min()} "
        f"times in {len(labels)} rows"
    )


def summary(result: SubspaceResult) -> dict[str, object]:
    """The chapter's closing numbers: the model's letter accuracy; per studied head the order and lexical ranks and
    the order logit gap beside their controls (trained, shuffled labels, random init); at the view head the kNN
    accuracies of the views beside their controls."""
    a, conds = result.analysis, ("trained", "shuffled labels", "random init")
    table = a.head_table()
    out: dict[str, object] = {
        "model": a.lm.description.split(" (")[0],
        "letter accuracy": r3(a.trained.order.accuracy["order prompts"]),
        "chance": r3(1 / a.params.n_pairs),
    }
    for head in a.heads:
        name = head_name(head)
        for which in ("order", "lexical"):
            out[f"{name} {which} rank (trained, shuffled, random init)"] = tuple(
                int(table.loc[(name, c), f"{which} rank"]) for c in conds
            )
        out[f"{name} order logit gap (trained, shuffled, random init)"] = tuple(
            r3(table.loc[(name, c), "order gap"]) for c in conds
        )
        for which in ("order", "lexical"):
            row = a.nulls[head][which].table_row()
            out[f"{name} {which} σ₁ (true; random labels mean, 95th pct, p; balanced labels mean, 95th pct, p)"] = (
                r3(row["true σ₁"]),
                *(
                    r3(row[f"{f}: {x}"])
                    for f in ("random labels", "balanced labels")
                    for x in ("mean", "95th pct", "p")
                ),
            )
    views = result.view_table()
    view = head_name(result.view_head)
    for col, label in (
        ("order: clause from keys", "clause from order keys"),
        ("lexical: object from keys", "object from lexical keys"),
    ):
        out[f"{view} kNN {label} (trained, shuffled, random init)"] = tuple(
            round(float(views.loc[c, col]), 2) + 0.0 for c in conds
        )
    if result.beyond_position:
        pt = result.position_table()
        for col in ("clause from keys", "clause from position alone", "clause from keys, position removed"):
            out[f"{view} filler prompts: {col} (trained, shuffled, random init)"] = tuple(
                round(float(pt.loc[c, col]), 2) + 0.0 for c in conds
            )
    out["verdicts"] = [f"{v.head}, {v.claim}: {v.verdict}" for v in subspace_verdicts(result)]
    return out
