"""The filter-heads chapter (paper Figures 6–7): which heads attend to the asked category's items, the rank of each
category's ΔC at those heads, the combined category subspace, 3-D PCA of keys and queries inside it, the key-swap
intervention, and the controls (shuffled category labels; a randomly initialised copy of the model). The 13-category
keys-only view is qkcore.experiments.filter_heads.keys13.

    P = FilterHeadsParams()                      # model="organism": the CPU-trained filter-5x5 / filter-13 models
    model, tokenizer, label = load_filter_model(P.model, P)
    result = analyse_heads(model, tokenizer, P)  # scan, per-head analyses, PCA, controls (see FilterHeadsResult)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.experiments.filter_heads.nulls import (
    balanced_grouping,
    eta_squared,
    item_indices,
    null_tests,
    random_grouping,
)
from qkcore.experiments.filter_heads.vectors import HeadScan, Vectors, collect_vectors, head_scan
from qkcore.experiments.models import LMChapterParams, LoadedLM, load_chapter_model
from qkcore.experiments.verdicts import binomial_above_chance, fmt_p
from qkcore.lm import attention_layout
from qkcore.lm.residency import random_init_control
from qkcore.organisms.filter_task import (
    ALL_CATEGORY_NAMES,
    CATEGORIES,
    PAPER_CATEGORY_NAMES,
    FilterTask,
    FilterTaskConfig,
)
from qkcore.params import require
from qkcore.subspace import combine_bases, decompose, pca, rank_at_energy

PAPER_HEADS = ((16, 19), (20, 26), (20, 14))  # Llama-3.1-8B-Instruct; L20H26 is the PCA figure's head


@dataclass(frozen=True)
class FilterHeadsParams(LMChapterParams):
    """LMChapterParams (model="organism": filter-5x5, and filter-13 for the 13-category view), plus the categories,
    the prompt counts of each part (ΔC, PCA, swaps, the 13-category view) and how many categories a 13-category
    prompt lists."""

    categories: tuple[str, ...] = PAPER_CATEGORY_NAMES
    categories_13: tuple[str, ...] = ALL_CATEGORY_NAMES
    listed_13: int = 5  # categories listed per prompt in the 13-category view
    n_delta_prompts: int = 500  # ΔC prompts, asked categories in turn (paper: 2,000)
    n_pca_prompts: int = 200  # fresh prompts for the PCA (paper: 200)
    n_swap_prompts: int = 300  # 1 asked item among 20 others (paper: 1,000)
    n_prompts_13: int = 650
    answer_prefix: str = ""  # chat models: the answer begun, "{plural}" = the asked category ("" = none)
    swap_method: Literal["forward", "recompute"] = "forward"  # rebuilt rows; "forward" also checks them by a pass
    n_groupings: int = 50  # random and balanced null groupings of the items, each
    n_random: int = 20  # random subspaces per swap condition and per decoding comparison
    keys_13: bool = True  # the 13-category keys-only view (the talk's figure)
    scan_by: Literal["logit_gap", "attention"] = "logit_gap"  # how the scan ranks heads (HeadScan.score)
    preset: Literal["full", "quick"] = "full"
    QUICK: ClassVar[dict] = {"n_delta_prompts": 100, "n_pca_prompts": 50, "n_swap_prompts": 100, "n_prompts_13": 130}

    def __post_init__(self):
        super().__post_init__()
        for name in ("categories", "categories_13"):
            cats = getattr(self, name)
            bad = [c for c in cats if c not in CATEGORIES]
            require(
                not bad and len(set(cats)) == len(cats) and len(cats) >= 2,
                f"{name} must be ≥ 2 distinct names from {list(CATEGORIES)}; bad: {bad}",
            )
        require(2 <= self.listed_13 <= len(self.categories_13), f"listed_13 must be in [2, {len(self.categories_13)}]")
        require(
            len(self.categories) * 5 - 5 >= 20,
            "the swap prompts need ≥ 20 items outside the asked category: give at least 5 categories",
        )
        require(self.n_groupings >= 50, f"n_groupings must be ≥ 50 for a permutation p-value, got {self.n_groupings}")
        require(self.n_random >= 1, f"n_random must be ≥ 1, got {self.n_random}")
        for name in ("n_delta_prompts", "n_pca_prompts", "n_swap_prompts", "n_prompts_13"):
            require(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")
        require(
            self.n_delta_prompts >= 2 * len(self.categories),
            f"n_delta_prompts must give each category ≥ 2 prompts (≥ {2 * len(self.categories)})",
        )
        require(
            self.n_prompts_13 >= 2 * len(self.categories_13), f"n_prompts_13 must be ≥ {2 * len(self.categories_13)}"
        )


ORGANISMS = {"5x5": "filter-5x5", "13": "filter-13"}  # model="organism": the 5-category and 13-category organisms


def load_filter_model(params: FilterHeadsParams, organism: str = ORGANISMS["5x5"]) -> LoadedLM:
    """The chapter's model: for model="organism" the committed organism `organism`, else params.model (a registered
    name, local folder or hub id), in the params' dtype and on its device."""
    return load_chapter_model(params.model, organism, params.dtype, params.device)


def relabel(vecs: Vectors, prompt_items: list[tuple[str, ...]], grouping: dict[str, str]) -> Vectors:
    """The same vectors with item categories replaced by `grouping` (item → category); the asked label stays."""
    index = {c: i for i, c in enumerate(vecs.categories)}
    item_cat = torch.tensor([[index[grouping[i]] for i in items] for items in prompt_items])
    return Vectors(vecs.heads, vecs.categories, vecs.q, vecs.k, vecs.attn, vecs.asked, item_cat)


@dataclass
class HeadAnalysis:
    """One head under one condition. Per category: ΔC (C, d, d), energy fractions (C, d), rank (C,), logit gap (C,),
    query_concentration |q̄|²/E|q|² (C,), mean_share = 1 − ‖ΔC − q̄ dᵀ‖²/‖ΔC‖² with d = E[k|+] − E[k|−] (C,) (the
    rank-1 diagnostics of qkcore.covariance; with equal item counts per prompt q̄⁺ = q̄⁻ = q̄), attention
    on positives (C,). Combined: query/key bases (QR of the per-category bases, the paper's way), the singular
    values of the stacked unit bases and the ranks they give at `energy`; closure ‖Σ_c d_c‖ / Σ_c ‖d_c‖;
    key_pcs (d, d): principal directions of all item keys (centred), by decreasing variance; key_span (d, key_rank):
    the stacked key bases' top left singular vectors (the subspace the key rank counts)."""

    head: tuple[int, int]
    deltas: torch.Tensor
    energy_fractions: torch.Tensor
    ranks: torch.Tensor
    logit_gap: torch.Tensor
    query_concentration: torch.Tensor
    mean_share: torch.Tensor
    attn_pos: torch.Tensor
    query_basis: torch.Tensor
    key_basis: torch.Tensor
    query_stack_sv: torch.Tensor
    key_stack_sv: torch.Tensor
    query_rank: int
    key_rank: int
    closure: float
    key_pcs: torch.Tensor
    key_span: torch.Tensor


def analyse_head(vecs: Vectors, head: tuple[int, int], weighting: str, energy: float) -> HeadAnalysis:
    """ΔC per category from stored vectors (positives: items of the asked category; negatives: the others)."""
    q_all, k_all = vecs.at(head)  # (n, d), (n, I, d)
    d = q_all.shape[-1]
    out = {k: [] for k in ("deltas", "fractions", "ranks", "gap", "share", "product", "attn", "U", "V", "diff")}
    # share, product: the rank-1 diagnostics of qkcore.covariance (query concentration, mean share)
    for c in range(len(vecs.categories)):
        rows = (vecs.asked == c).nonzero().flatten()
        pos = vecs.item_cat[rows] == c  # (n_c, I)
        q, k = q_all[rows].double(), k_all[rows].double()  # (n_c, d), (n_c, I, d)
        acc = ContrastiveCovariance(d, weighting=weighting)
        for sign, mask in ((True, pos), (False, ~pos)):
            r, i = mask.nonzero(as_tuple=True)
            acc.add(q[r], k[r, i], positive=sign, prompts=len(rows))
        delta = acc.delta()
        dec = decompose(delta, energy)
        out["deltas"].append(delta), out["fractions"].append(dec.energy_fractions), out["ranks"].append(dec.rank)
        out["gap"].append(torch.trace(delta)), out["diff"].append(acc.mean_key(True) - acc.mean_key(False))
        out["share"].append(acc.query_concentration()), out["product"].append(acc.mean_share())
        out["attn"].append((vecs.attn[vecs.heads.index(tuple(head))][rows] * pos).sum(-1).mean())
        out["U"].append(dec.query_basis), out["V"].append(dec.key_basis)
    q_stack, k_stack = torch.cat(out["U"], 1), torch.cat(out["V"], 1)  # (d, Σ r_c)
    q_sv, k_sv = torch.linalg.svdvals(q_stack), torch.linalg.svdvals(k_stack)
    diffs = torch.stack(out["diff"])  # (C, d)
    keys = k_all.reshape(-1, d).double()  # (n·I, d) every item key
    return HeadAnalysis(
        head=tuple(head),
        deltas=torch.stack(out["deltas"]),
        energy_fractions=torch.stack(out["fractions"]),
        ranks=torch.tensor(out["ranks"]),
        logit_gap=torch.stack(out["gap"]),
        query_concentration=torch.stack(out["share"]),
        mean_share=torch.stack(out["product"]),
        attn_pos=torch.stack(out["attn"]).double(),
        query_basis=combine_bases(out["U"]),
        key_basis=combine_bases(out["V"]),
        query_stack_sv=q_sv,
        key_stack_sv=k_sv,
        query_rank=rank_at_energy(q_sv, energy),
        key_rank=rank_at_energy(k_sv, energy),
        closure=float(diffs.sum(0).norm() / diffs.norm(dim=1).sum()),
        key_pcs=torch.linalg.svd(keys - keys.mean(0), full_matrices=False).Vh.T,
        key_span=torch.linalg.svd(k_stack, full_matrices=False).U[:, : rank_at_energy(k_sv, energy)],
    )


@dataclass
class Projection:
    """Keys (n·I, 3) and queries (n, 3) of fresh prompts: coordinates in the combined key / query basis, then PCA to
    3-D. eta2 = between-category share of the variance of the full coordinates (1 = pure category code)."""

    keys: torch.Tensor
    key_labels: torch.Tensor
    queries: torch.Tensor
    query_labels: torch.Tensor
    key_eta2: float
    query_eta2: float
    key_explained: torch.Tensor
    query_explained: torch.Tensor


def project_categories(vecs: Vectors, head: tuple[int, int], analysis: HeadAnalysis) -> Projection:
    q, k = vecs.at(head)  # (n, d), (n, I, d)
    kc = k.reshape(-1, k.shape[-1]).double() @ analysis.key_basis  # (n·I, r_k)
    qc = q.double() @ analysis.query_basis  # (n, r_q)
    k_labels, q_labels = vecs.item_cat.reshape(-1), vecs.asked
    kxyz, _, kexp, _ = pca(kc, 3, pad=True)
    qxyz, _, qexp, _ = pca(qc, 3, pad=True)
    return Projection(
        kxyz.float(), k_labels, qxyz.float(), q_labels, eta_squared(kc, k_labels), eta_squared(qc, q_labels), kexp, qexp
    )


def delta_prompts(categories: tuple[str, ...], n: int, generator: torch.Generator, listed: int | None = None):
    """n prompts in the paper's format (every listed category with all 5 items), asked categories in turn."""
    task = FilterTask(FilterTaskConfig(categories=categories, listed=listed))
    return [task.sample(1, generator, asked=categories[i % len(categories)], full=True)[0] for i in range(n)]


@dataclass
class FilterHeadsResult:
    """Everything the chapter shows for the 5-category part (the 13-category view: `keys_13`)."""

    model_label: str
    scan: HeadScan
    random_scan: HeadScan
    heads: tuple[tuple[int, int], ...]
    random_model: torch.nn.Module
    analyses: dict[str, dict[tuple[int, int], HeadAnalysis]]  # condition → head → analysis
    projections: dict[str, dict[tuple[int, int], Projection]]
    grouping: dict[str, str]
    scan_by: str = "logit_gap"
    accuracy: dict[str, float] | None = None  # first answer token in the asked category: model, random init, chance
    nulls: dict | None = None  # head → NullTests
    gate: tuple[bool, str] = (True, "")  # can the model read the task (rules.gate)
    words: tuple[str, ...] = ()  # the items, in the order of the item indices of the null tests


def first_answer_accuracy(next_token: torch.Tensor, prompts, tokenizer) -> float:
    """Share of prompts whose predicted first answer token begins an item of the asked category (the item written
    with or without a leading space: word-level, BPE and SentencePiece tokenizers differ)."""
    hits = first_answer_hits(next_token, prompts, tokenizer)
    return sum(hits) / len(hits)


def task_gate(unknown: list[str], successes: int, n: int, chance: float, alpha: float = 0.05) -> tuple[bool, str]:
    """Can the model read the task? No when its tokenizer maps task items to the unknown token, or when its first
    answer is in the asked category no more often than chance (one-sided exact binomial test at `alpha`)."""
    if unknown:
        shown = ", ".join(unknown[:6]) + (" …" if len(unknown) > 6 else "")
        return False, f"its tokenizer maps {len(unknown)} task items to the unknown token ({shown})"
    p = binomial_above_chance(successes, n, chance)
    if p >= alpha:
        return False, (
            f"its first answer is an item of the asked category in {successes}/{n} prompts, not above chance "
            f"{chance:.2f} (binomial {fmt_p(p)})"
        )
    return True, f"first answer right in {successes}/{n} prompts against chance {chance:.2f} (binomial {fmt_p(p, 1)})"


def unknown_items(tokenizer, words) -> list[str]:
    """The task items the tokenizer writes with its unknown token (as written with a leading space or without)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    return [w for w in words if any(unk in tokenizer(s, add_special_tokens=False)["input_ids"] for s in (w, " " + w))]


def first_answer_hits(next_token: torch.Tensor, prompts, tokenizer) -> list[bool]:
    """Per prompt, whether the predicted first answer token begins an item of the asked category."""

    known: dict[str, set[int]] = {}  # the lists reuse a small vocabulary: tokenize each word once

    def firsts(word: str) -> set[int]:
        if word not in known:
            known[word] = {
                ids[0]
                for ids in (tokenizer(w, add_special_tokens=False)["input_ids"] for w in (word, " " + word))
                if ids
            }
        return known[word]

    return [
        int(next_token[i]) in set().union(*(firsts(it) for it, c in zip(p.items, p.item_categories) if c == p.asked))
        for i, p in enumerate(prompts)
    ]


CONDITIONS = ("model", "shuffled labels", "random init")


def analyse_heads(model, tokenizer, params: FilterHeadsParams, model_label: str = "") -> FilterHeadsResult:
    """Scan, choose heads, analyse them and the two controls, project fresh prompts."""
    if params.heads is not None:  # checked against the model before the scan, the expensive part
        attention_layout(model).check_heads(params.heads)
    g = torch.Generator().manual_seed(params.seed)
    cats = tuple(params.categories)
    prompts = delta_prompts(cats, params.n_delta_prompts, g)
    fresh = delta_prompts(cats, params.n_pca_prompts, g)
    words = tuple(w for c in cats for w in CATEGORIES[c])
    true_group = torch.arange(len(cats)).repeat_interleave(5)
    gn = torch.Generator().manual_seed(params.seed + 21)
    randoms = [random_grouping(len(cats), 5, gn) for _ in range(params.n_groupings)]
    balanced = [balanced_grouping(len(cats), 5, gn) for _ in range(params.n_groupings)]
    grouping = {w: cats[int(balanced[0][i])] for i, w in enumerate(words)}  # the shuffled-label condition
    scan = head_scan(
        model, tokenizer, prompts, cats, params.weighting, params.batch_size, params.answer_prefix, keep_vectors=True
    )
    layout = attention_layout(model)
    ranked = scan.ranking(params.scan_by)
    heads = layout.select(params.heads) if params.heads is not None else tuple(ranked[: params.n_heads])
    vecs = {"model": scan.vectors(heads)}
    scan.stored = None  # every head's vectors: no longer needed
    fresh_vecs = {
        "model": collect_vectors(model, tokenizer, fresh, cats, heads, params.batch_size, params.answer_prefix)
    }
    # the control's block: it shares one memory slot with the model (qkcore.lm.residency), so the trained model's
    # passes all come before it
    rand = random_init_control(model, params.seed + 1)
    random_scan = head_scan(
        rand, tokenizer, prompts, cats, params.weighting, params.batch_size, params.answer_prefix, keep_vectors=True
    )
    vecs["random init"] = random_scan.vectors(heads)
    random_scan.stored = None
    fresh_vecs["random init"] = collect_vectors(
        rand, tokenizer, fresh, cats, heads, params.batch_size, params.answer_prefix
    )
    vecs["shuffled labels"] = relabel(vecs["model"], [p.items for p in prompts], grouping)
    fresh_vecs["shuffled labels"] = relabel(fresh_vecs["model"], [p.items for p in fresh], grouping)
    analyses = {c: {h: analyse_head(vecs[c], h, params.weighting, params.energy) for h in heads} for c in CONDITIONS}
    projections = {c: {h: project_categories(fresh_vecs[c], h, analyses[c][h]) for h in heads} for c in CONDITIONS}
    hits = first_answer_hits(scan.next_token, prompts, tokenizer)
    chance = scan.items_per_prompt[0] / sum(scan.items_per_prompt)
    accuracy = {
        "model": sum(hits) / len(hits),
        "random init": first_answer_accuracy(random_scan.next_token, prompts, tokenizer),
        "chance (a random list item)": chance,
    }
    gate = task_gate(unknown_items(tokenizer, words), sum(hits), len(hits), chance)
    ids, fresh_ids = item_indices(prompts, words), item_indices(fresh, words)
    nulls = {
        h: null_tests(
            vecs,
            fresh_vecs,
            ids,
            fresh_ids,
            h,
            true_group,
            randoms,
            balanced,
            params.weighting,
            params.energy,
            params.n_random,
            torch.Generator().manual_seed(params.seed + 22),
        )
        for h in heads
    }
    return FilterHeadsResult(
        model_label,
        scan,
        random_scan,
        tuple(heads),
        rand,
        analyses,
        projections,
        grouping,
        params.scan_by,
        accuracy,
        nulls,
        gate,
        words,
    )
