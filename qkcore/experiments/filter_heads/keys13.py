"""The filter chapter's 13-category keys-only view (the talk's extension of paper Fig. 6 to 13 categories): each
prompt lists `listed_13` of 13 categories (five items each) and asks one; at one head, the categories' combined key
subspace, fresh prompts' keys in it, and the same tests as the 5-category part (qkcore.experiments.filter_heads.nulls):
key η² and leave-one-item-out decoding against `n_groupings` random and as many balanced groupings of the 65 items
into 13 groups of five (permutation p-values), the category-matching matrix, the rank-1 bound. Every null is a
relabelling of vectors already gathered: no forward pass beyond the view's own.

    k13 = run_keys_13(P, model, tokenizer, lm.name)   # None when P.keys_13 is False
    k13.nulls.p_eta                                   # key η²: p against (random, balanced) groupings
    keys13_verdict(k13); keys13_summary(k13); keys13_finding(k13)   # the verdict, the closing numbers, the prose
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qkcore.experiments import verdicts
from qkcore.experiments.filter_heads.analysis import (
    ORGANISMS,
    FilterHeadsParams,
    HeadAnalysis,
    Projection,
    analyse_head,
    delta_prompts,
    first_answer_hits,
    load_filter_model,
    project_categories,
    relabel,
    task_gate,
    unknown_items,
)
from qkcore.experiments.filter_heads.nulls import (
    NullTests,
    balanced_grouping,
    item_indices,
    null_tests,
    random_grouping,
)
from qkcore.experiments.filter_heads.vectors import HeadScan, collect_vectors, head_scan
from qkcore.experiments.tables import r3
from qkcore.lm.layout import head_name
from qkcore.lm.residency import random_init_control
from qkcore.organisms.filter_task import CATEGORIES

CLAIM = "filter: keys cluster by category"


@dataclass
class Keys13Result:
    """The 13-category keys-only view at one head (the top of this model's own scan unless given): per-category
    analysis; fresh prompts' keys in the combined key subspace; the same under one balanced null grouping (the
    figure's middle panel, for the eye) and on a randomly initialised copy (same head); `nulls`, the tests against
    the families of `n_groupings` random and balanced groupings; `gate`, whether the model reads the task;
    model_label, the recorded name; description, what the page prints."""

    model_label: str
    categories: tuple[str, ...]
    scan: HeadScan
    head: tuple[int, int]
    analysis: HeadAnalysis
    projection: Projection
    null_analysis: HeadAnalysis
    null_projection: Projection
    random_analysis: HeadAnalysis
    random_projection: Projection
    nulls: NullTests
    gate: tuple[bool, str]
    words: tuple[str, ...]
    description: str = ""

    @property
    def head_label(self) -> str:
        """The head as the verdicts and the glance page name it: the head, marked as the 13-category view."""
        return f"{head_name(self.head)}, 13 categories (keys only)"


def items_13(categories: tuple[str, ...]) -> tuple[tuple[str, ...], int]:
    """The items, category-major, and the items per category (every category must have the same number, and no
    item may belong to two categories: the groupings relabel items)."""
    sizes = {len(CATEGORIES[c]) for c in categories}
    words = tuple(w for c in categories for w in CATEGORIES[c])
    if len(sizes) != 1 or len(set(words)) != len(words):
        raise ValueError(f"the 13-category view needs distinct items and equal category sizes, got sizes {sizes}")
    return words, sizes.pop()


def analyse_13(
    model, tokenizer, params: FilterHeadsParams, head: tuple[int, int] | None = None, model_label: str = ""
) -> Keys13Result:
    """Prompts list `listed_13` of the 13 categories (5 items each) and ask one of them; n_prompts_13 prompts for
    ΔC, n_pca_prompts fresh ones for the projections, decoding and η²."""
    g = torch.Generator().manual_seed(params.seed + 13)
    cats = tuple(params.categories_13)
    prompts = delta_prompts(cats, params.n_prompts_13, g, listed=params.listed_13)
    fresh = delta_prompts(cats, params.n_pca_prompts, g, listed=params.listed_13)
    words, per = items_13(cats)
    true_group = torch.arange(len(cats)).repeat_interleave(per)  # (65,)
    gn = torch.Generator().manual_seed(params.seed + 131)
    randoms = [random_grouping(len(cats), per, gn) for _ in range(params.n_groupings)]
    balanced = [balanced_grouping(len(cats), per, gn) for _ in range(params.n_groupings)]
    shown = {w: cats[int(balanced[0][i])] for i, w in enumerate(words)}  # the figure's null panel
    scan = head_scan(model, tokenizer, prompts, cats, params.weighting, params.batch_size, params.answer_prefix)
    head = tuple(head) if head is not None else scan.ranking()[0]
    vecs = collect_vectors(model, tokenizer, prompts, cats, [head], params.batch_size, params.answer_prefix)
    fresh_vecs = collect_vectors(model, tokenizer, fresh, cats, [head], params.batch_size, params.answer_prefix)
    analysis = analyse_head(vecs, head, params.weighting, params.energy)
    null = analyse_head(relabel(vecs, [p.items for p in prompts], shown), head, params.weighting, params.energy)
    rand = random_init_control(model, params.seed + 1)  # one of the two resident at a time (qkcore.lm.residency)
    rand_vecs = collect_vectors(rand, tokenizer, prompts, cats, [head], params.batch_size, params.answer_prefix)
    rand_analysis = analyse_head(rand_vecs, head, params.weighting, params.energy)
    rand_fresh = collect_vectors(rand, tokenizer, fresh, cats, [head], params.batch_size, params.answer_prefix)
    hits = first_answer_hits(scan.next_token, prompts, tokenizer)
    chance = scan.items_per_prompt[0] / sum(scan.items_per_prompt)
    gate = task_gate(unknown_items(tokenizer, words), sum(hits), len(hits), chance)
    nulls = null_tests(
        {"model": vecs, "random init": rand_vecs},
        {"model": fresh_vecs},
        item_indices(prompts, words),
        item_indices(fresh, words),
        head,
        true_group,
        randoms,
        balanced,
        params.weighting,
        params.energy,
        params.n_random,
        torch.Generator().manual_seed(params.seed + 132),
    )
    return Keys13Result(
        model_label,
        cats,
        scan,
        head,
        analysis,
        project_categories(fresh_vecs, head, analysis),
        null,
        project_categories(relabel(fresh_vecs, [p.items for p in fresh], shown), head, null),
        rand_analysis,
        project_categories(rand_fresh, head, rand_analysis),
        nulls,
        gate,
        words,
    )


def run_keys_13(params: FilterHeadsParams, model, tokenizer, model_label: str) -> Keys13Result | None:
    """The 13-category view with the chapter's model: for model="organism" the filter-13 organism (its head from its
    own scan); otherwise the same model, at the first of `heads` when given (the talk: L20H26), else its scan's top."""
    if not params.keys_13:
        return None
    if params.model == "organism":
        lm13 = load_filter_model(params, ORGANISMS["13"])
        k13 = analyse_13(lm13.model, lm13.tokenizer, params, None, ORGANISMS["13"])
        k13.description = lm13.description
        return k13
    head = params.heads[0] if params.heads is not None else None
    k13 = analyse_13(model, tokenizer, params, head, model_label)
    k13.description = model_label
    return k13


def keys13_verdict(k13: Keys13Result) -> verdicts.Verdict:
    """The claim "keys cluster by category" for the 13-category view: not testable when the model cannot read the
    task; else the categories' key η² against the random and the balanced groupings (verdicts.against_null)."""
    ok, why = k13.gate
    if not ok:
        return verdicts.gate(CLAIM, k13.model_label, k13.head_label, False, f"the model cannot read the task: {why}")
    n = k13.nulls
    return verdicts.against_null(
        CLAIM,
        k13.model_label,
        k13.head_label,
        n.score.eta2,
        {"random groupings": [x.eta2 for x in n.random], "balanced groupings": [x.eta2 for x in n.balanced]},
        statistic="key η²",
    )


def _mean(xs) -> float:
    t = torch.tensor([float(x) for x in xs], dtype=torch.float64)
    return float(t.nanmean())


def keys13_summary(k13: Keys13Result) -> dict[str, object]:
    """The view's closing numbers, rounded to 3 decimals, and its verdict ("verdict: …")."""
    a, n, d = k13.analysis, k13.nulls, k13.nulls.decoding
    v = keys13_verdict(k13)
    return {
        "13 categories: model": k13.model_label,
        "13 categories: task readable": k13.gate[1],
        "13 categories: head": head_name(k13.head),
        "13 categories: ΔC ranks": a.ranks.tolist(),
        "13 categories: rank-1 bound max": r3(max(b.bound for b in n.bounds["model"])),
        "13 categories: key rank (dims)": (a.key_rank, a.key_basis.shape[1]),
        "13 categories: key η² (model, random init)": (r3(n.score.eta2), r3(k13.random_projection.key_eta2)),
        "13 categories: key η² null mean (random, balanced groupings)": (
            r3(_mean(x.eta2 for x in n.random)),
            r3(_mean(x.eta2 for x in n.balanced)),
        ),
        "13 categories: key η² p (random, balanced groupings)": [r3(x) for x in n.p_eta],
        "13 categories: decoding (category, top PCs, random subspaces)": [
            r3(d.category),
            r3(d.top_pcs),
            r3(d.random_mean),
        ],
        "13 categories: decoding p (random, balanced groupings)": [r3(x) for x in n.p_decoding],
        "13 categories: matching diag − off (p)": [r3(n.matching.statistic), r3(n.matching.p_value)],
        f"verdict: keys cluster by category, {k13.head_label}": f"{v.verdict} (at {k13.head_label})",
    }


def keys13_finding(k13: Keys13Result) -> str:
    """A markdown paragraph on the view, every number from this run."""
    a, n, d = k13.analysis, k13.nulls, k13.nulls.decoding
    ok, why = k13.gate
    v = keys13_verdict(k13)
    implied = sum(b.implies_rank1() for b in n.bounds["model"])
    n_items, n_cats = len(k13.words), len(k13.categories)
    gate = (
        f"{k13.model_label} reads the task ({why})"
        if ok
        else f"**{k13.model_label} cannot read the task here** ({why}), so its verdict is *{verdicts.NOT_TESTABLE}*"
    )
    return (
        f"{gate}. At {head_name(k13.head)} {_ranks(a.ranks)} (the query-concentration bound implies rank 1 "
        f"for {implied} of {n_cats}); the categories' key subspace has "
        f"{a.key_basis.shape[1]} dimensions. Key η² of fresh prompts' keys in it: {n.score.eta2:.2f}, against a mean "
        f"of {_mean(x.eta2 for x in n.random):.2f} for {len(n.random)} random groupings of the {n_items} items into "
        f"{n_cats} groups of the same sizes (p = {n.p_eta[0]:.2g}) and {_mean(x.eta2 for x in n.balanced):.2f} for "
        f"{len(n.balanced)} balanced ones, no two items of a category in one group (p = {n.p_eta[1]:.2g}); the "
        f"random-init copy's own category subspace gives {k13.random_projection.key_eta2:.2f}. Leave-one-item-out "
        f"decoding of the category: {n.score.decoding:.2f} (the groupings' own labels: mean "
        f"{_mean(x.decoding for x in n.random):.2f}, p = {n.p_decoding[0]:.2g}; balanced "
        f"{_mean(x.decoding for x in n.balanced):.2f}, p = {n.p_decoding[1]:.2g}); refitting the subspace without "
        f"the held-out item, {d.category:.2f}, against {d.top_pcs:.2f} in the top {d.dims} key PCs (no labels) and "
        f"{d.random_mean:.2f} in random {d.dims}-d subspaces (chance {d.chance:.2f}). Matching: diagonal minus "
        f"off-diagonal {n.matching.statistic:.2f} (p = {n.matching.p_value:.2g} against the random groupings), the "
        f"diagonal the row maximum in {n.matching.diagonal_max_rows} of {n_cats} rows. Verdict (keys cluster by "
        f"category, {n_cats} categories): *{v.verdict}*. With {len(n.random)} groupings the smallest possible p is "
        f"{1 / (len(n.random) + 1):.2g}."
    )


def _ranks(ranks: torch.Tensor) -> str:
    lo, hi = int(ranks.min()), int(ranks.max())
    return f"every category's ΔC has rank {lo}" if lo == hi else f"the categories' ΔC ranks run from {lo} to {hi}"
