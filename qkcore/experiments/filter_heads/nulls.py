"""Tests that can fail, for the filter-heads chapter (issue 14): the rank-1 bound implied by query concentration,
null groupings of the items (unconstrained and balanced) scored exactly like the true categories, the
category-matching matrix E[q·k | c asked, item in c′] with its permutation test, and leave-one-item-out decoding of
the category in the category subspace against label-free and random subspaces. Everything works on stored vectors
(`Vectors`): no forward pass.

    bound = rank_bound(q, k, asked, item_cat, c=0, weighting="pair_mean")   # RankBound: off-rank-1 energy ≤ bound
    groupings = [balanced_grouping(5, 5, g) for _ in range(50)]           # item index → group
    score = score_grouping(fit, item_group=groupings[0])                  # key η², overlap, decoding
    test = matching_test(q, k, asked, item_cat, groupings)                 # diagonal minus off-diagonal, p-value

Items are identified by an index 0..C·5−1 (category-major: item j of category c is c·5 + j); `item_ids` (n, I)
gives the index of each listed item.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qkcore.subspace import random_orthonormal


# ---------------------------------------------------------------- ΔC per group from per-prompt contrasts
def prompt_contrasts(k: torch.Tensor, positive: torch.Tensor, weighting: str, keep: torch.Tensor | None = None):
    """Δ_p (n, d): each prompt's positive-minus-negative key mean ("pair_mean") or sum ("prompt_sum").
    k (n, I, d); positive (n, I) bool; keep (n, I) bool: which keys take part (default all)."""
    keep = torch.ones_like(positive) if keep is None else keep
    pos, neg = (positive & keep).double(), (~positive & keep).double()  # (n, I)
    s_pos, s_neg = torch.einsum("ni,nid->nd", pos, k), torch.einsum("ni,nid->nd", neg, k)
    if weighting == "prompt_sum":
        return s_pos - s_neg
    if weighting != "pair_mean":
        raise ValueError(f'weighting must be "pair_mean" or "prompt_sum", got {weighting!r}')
    return s_pos / pos.sum(1, keepdim=True).clamp(min=1) - s_neg / neg.sum(1, keepdim=True).clamp(min=1)


def group_deltas(q, k, asked, item_group, n_groups: int, weighting: str = "pair_mean", keep=None) -> torch.Tensor:
    """ΔC_g = (1/N_g) Σ_p q_p Δ_pᵀ over the prompts asking g, positives the items of group g: (G, d, d) float64.
    Equal to ContrastiveCovariance when every prompt holds the same number of positives. q (n, d), k (n, I, d),
    asked (n,), item_group (n, I)."""
    q, k = q.double(), k.double()
    out = []
    for g in range(n_groups):
        rows = asked == g
        dp = prompt_contrasts(k[rows], item_group[rows] == g, weighting, None if keep is None else keep[rows])
        out.append(q[rows].T @ dp / max(int(rows.sum()), 1))
    return torch.stack(out)


@dataclass(frozen=True)
class RankBound:
    """ΔC_c = q̄ d̄ᵀ + R with R = (1/N) Σ_p ε_p (Δ_p − d̄)ᵀ (ε_p = q_p − q̄; Σ ε_p = 0). By Cauchy–Schwarz
    ‖R‖_F ≤ b·|q̄||d̄| with b = √(E|ε|²)/|q̄| · rms|Δ_p − d̄|/|d̄|, and since q̄ d̄ᵀ is one rank-1 approximation,
    the off-rank-1 energy (Σ_{i≥2} σ_i²)/Σσ² ≤ b²/(1 − b)² (b < 1). query_spread = √(E|ε|²)/|q̄|;
    key_spread = rms|Δ_p − d̄|/|d̄|; concentration = |q̄|²/E|q|²; off_energy = the measured σ₂²+…/Σσ²;
    bound = min(b²/(1−b)², 1) (1: no guarantee)."""

    concentration: float
    query_spread: float
    key_spread: float
    bound: float
    off_energy: float
    sigma2_share: float

    def implies_rank1(self, energy: float = 0.99) -> bool:
        return self.bound <= 1 - energy


def rank_bound(q, k, asked, item_group, c: int, weighting: str = "pair_mean") -> RankBound:
    """The bound of `RankBound` for group c, from the prompts asking c."""
    rows = asked == c
    qc = q[rows].double()  # (n_c, d)
    dp = prompt_contrasts(k[rows].double(), item_group[rows] == c, weighting)  # (n_c, d)
    qbar, dbar = qc.mean(0), dp.mean(0)
    eps = (qc - qbar).square().sum(1).mean().sqrt()
    spread = (dp - dbar).square().sum(1).mean().sqrt()
    qs, ks = float(eps / qbar.norm()), float(spread / dbar.norm().clamp(min=1e-300))
    b = qs * ks
    sv2 = torch.linalg.svdvals(qc.T @ dp / len(qc)).square()
    total = float(sv2.sum())
    return RankBound(
        concentration=float(qbar.square().sum() / qc.square().sum(1).mean()),
        query_spread=qs,
        key_spread=ks,
        bound=min(b * b / (1 - b) ** 2, 1.0) if b < 1 else 1.0,
        off_energy=float(1 - sv2[0] / total) if total > 0 else float("nan"),
        sigma2_share=float(sv2[1] / total) if total > 0 and len(sv2) > 1 else float("nan"),
    )


# ---------------------------------------------------------------- groupings of the items
def random_grouping(n_groups: int, per_group: int, generator: torch.Generator) -> torch.Tensor:
    """(n_groups·per_group,) group of each item: the same group sizes, items assigned by a random permutation."""
    perm = torch.randperm(n_groups * per_group, generator=generator)
    return torch.arange(n_groups).repeat_interleave(per_group)[perm]


def balanced_grouping(n_groups: int, per_group: int, generator: torch.Generator) -> torch.Tensor:
    """(n_groups·per_group,) group of each item (n_groups categories of per_group items, category-major) such that
    no group holds two items of one category: item j of category c goes to group (σ_c(j) + π(c)) mod n_groups,
    σ_c and π random permutations. With 5 categories of 5 items every group holds one item of each category."""
    if n_groups < per_group:
        raise ValueError(f"a balanced grouping needs n_groups ≥ per_group, got {n_groups}, {per_group}")
    shift = torch.randperm(n_groups, generator=generator)
    return torch.cat([(torch.randperm(per_group, generator=generator) + shift[c]) % n_groups for c in range(n_groups)])


def eta_squared(x: torch.Tensor, labels: torch.Tensor) -> float:
    """Between-group sum of squares / total sum of squares of the rows of x (n, r); nan without variance."""
    x = x.double() - x.double().mean(0)
    total = x.square().sum()
    if total <= 1e-12 * max(1, x.numel()):
        return float("nan")
    between = sum(int((labels == g).sum()) * x[labels == g].mean(0).square().sum() for g in labels.unique())
    return float(between / total)


def key_basis(deltas: torch.Tensor, energy: float) -> torch.Tensor:
    """An orthonormal basis of the combined key subspace of per-group ΔCs (G, d, d): the span of the per-group
    rank-r key bases (the span of the paper's QR; a basis from one SVD, fast enough for hundreds of groupings)."""
    _, s, vh = torch.linalg.svd(deltas.double(), full_matrices=False)
    return _combine(s, vh, energy)


def _item_means(coords: torch.Tensor, item_ids: torch.Tensor, n_items: int) -> torch.Tensor:
    sums = torch.zeros(n_items, coords.shape[1], dtype=torch.float64).index_add_(0, item_ids, coords.double())
    return sums / torch.bincount(item_ids, minlength=n_items).double().clamp(min=1)[:, None]  # (n_items, r)


def nearest_centroid_loo(coords: torch.Tensor, item_ids: torch.Tensor, item_label: torch.Tensor) -> torch.Tensor:
    """Per key occurrence (m,), whether nearest-centroid decoding gets its item's label right when the centroids
    (means of the items' mean keys) are built from the other items only (leave one item out). An item with no key
    among `coords` (a category no fresh prompt listed) takes no part. coords (m, r), item_ids (m,), item_label
    (n_items,)."""
    coords = coords.double()
    means = _item_means(coords, item_ids, len(item_label))  # (n_items, r)
    present = torch.bincount(item_ids, minlength=len(item_label)) > 0  # (n_items,)
    onehot = torch.nn.functional.one_hot(item_label, int(item_label.max()) + 1).double() * present[:, None]
    g_sum, g_cnt = onehot.T @ means, onehot.sum(0)  # (G, r), (G,)
    own = item_label[item_ids]  # (m,)
    dist = torch.cdist(coords, g_sum / g_cnt.clamp(min=1)[:, None])  # (m, G)
    dist[:, g_cnt == 0] = float("inf")  # a group none of whose items has keys here has no centroid
    left = g_cnt[own] - 1  # the own label's centroid without this item
    own_cen = (g_sum[own] - means[item_ids]) / left.clamp(min=1)[:, None]  # (m, r)
    own_dist = (coords - own_cen).norm(dim=1)
    dist[torch.arange(len(coords)), own] = torch.where(left > 0, own_dist, torch.full_like(own_dist, float("inf")))
    return dist.argmin(1) == own


@dataclass
class Fit:
    """What a grouping is scored on: the ΔC prompts' vectors at one head (q (n, d), k (n, I, d), asked (n,),
    item_ids (n, I)), fresh prompts' keys (fresh_k (m, I, d), fresh_ids (m, I)), weighting and energy. A prompt
    lists each of its items once, all n_items of them (the 5-category format) or a subset (the 13-category view).
    With S_gi = Σ_{p asks g, i listed} q_p k_piᵀ and n_gi its pair count (computed once), per-pair means give
    ΔC_g = Σ_{i∈g} S_gi / Σ_{i∈g} n_gi − Σ_{i∉g} S_gi / Σ_{i∉g} n_gi (ContrastiveCovariance's "pair_mean") and
    per-prompt sums ΔC_g = Σ_i ±S_gi / N_g ("prompt_sum"): any grouping, with or without a held-out item, is a
    weighted sum of the S_gi, no pass over the prompts. n_items: default the largest item index + 1."""

    q: torch.Tensor
    k: torch.Tensor
    asked: torch.Tensor
    item_ids: torch.Tensor
    fresh_k: torch.Tensor
    fresh_ids: torch.Tensor
    n_groups: int
    weighting: str = "pair_mean"
    energy: float = 0.99
    n_items: int | None = None

    def __post_init__(self):
        if self.weighting not in ("pair_mean", "prompt_sum"):
            raise ValueError(f'weighting must be "pair_mean" or "prompt_sum", got {self.weighting!r}')
        if self.n_items is None:
            self.n_items = int(max(self.item_ids.max(), self.fresh_ids.max())) + 1
        for name in ("item_ids", "fresh_ids"):
            ids = getattr(self, name)
            if ids.min() < 0 or ids.max() >= self.n_items:
                got = f"{int(ids.min())}..{int(ids.max())}"
                raise ValueError(f"{name} must index items 0..{self.n_items - 1}, got {got}")
        if (self.item_ids.sort(1).values.diff(dim=1) == 0).any():
            raise ValueError("a ΔC prompt lists an item twice: every item at most once per prompt")
        n, d = self.q.shape[0], self.k.shape[-1]
        by_item = torch.zeros(n, self.n_items, d, dtype=torch.float64)
        by_item.scatter_(1, self.item_ids[..., None].expand(-1, -1, d), self.k.double())  # (n, n_items, d), 0: unlisted
        listed = torch.zeros(n, self.n_items).scatter_(1, self.item_ids, 1.0).double()  # (n, n_items)
        q = self.q.double()
        rows = [self.asked == g for g in range(self.n_groups)]
        self.sums = torch.stack([torch.einsum("nd,nie->ide", q[r], by_item[r]) for r in rows])  # (G, n_items, d, d)
        self.counts = torch.stack([listed[r].sum(0) for r in rows])  # (G, n_items) pairs
        self.prompts = torch.stack([r.sum() for r in rows]).double()  # (G,)

    def deltas(self, item_group: torch.Tensor, leave_out: int | None = None) -> torch.Tensor:
        """(G, d, d) ΔC of each group under the grouping item_group (n_items,), without item `leave_out` if given."""
        keep = torch.ones(len(item_group), dtype=torch.bool)
        if leave_out is not None:
            keep[leave_out] = False
        return torch.einsum("gi,gide->gde", self._weights(item_group, keep), self.sums)

    def _weights(self, item_group: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(..., G, n_items) weights of the S_gi in each group's ΔC; keep (..., n_items) the items taking part."""
        if len(item_group) != self.n_items:
            raise ValueError(f"a grouping gives a group to each of the {self.n_items} items, got {len(item_group)}")
        pos = (item_group[None, :] == torch.arange(self.n_groups)[:, None]) & keep[..., None, :]  # (..., G, n_items)
        pos, neg = pos.double(), (~pos & keep[..., None, :]).double()
        if self.weighting == "prompt_sum":
            return (pos - neg) / self.prompts.clamp(min=1)[:, None]
        n_pos = (pos * self.counts).sum(-1, keepdim=True).clamp(min=1)  # (..., G, 1) positive pairs
        n_neg = (neg * self.counts).sum(-1, keepdim=True).clamp(min=1)
        return pos / n_pos - neg / n_neg

    def basis(self, item_group: torch.Tensor, leave_out: int | None = None) -> torch.Tensor:
        """The combined key basis of the grouping (item_group (n_items,)), optionally fitted without one item."""
        return key_basis(self.deltas(item_group, leave_out), self.energy)

    def loo_bases(self, item_group: torch.Tensor) -> list[torch.Tensor]:
        """The grouping's key basis refitted without each item in turn (one batched SVD)."""
        keep = ~torch.eye(len(item_group), dtype=torch.bool)  # (n_items, n_items): row i leaves item i out
        deltas = torch.einsum("lgi,gide->lgde", self._weights(item_group, keep), self.sums)  # (n_items, G, d, d)
        return [_combine(*torch.linalg.svd(dl, full_matrices=False)[1:], self.energy) for dl in deltas]


def _combine(s: torch.Tensor, vh: torch.Tensor, energy: float) -> torch.Tensor:
    """From batched SVDs (G, d), (G, d, d) of per-group ΔCs: a basis of the span of the per-group key bases."""
    e = s.square()
    frac = e.cumsum(-1) / e.sum(-1, keepdim=True).clamp(min=1e-300)
    ranks = (frac < energy - 1e-12).sum(-1) + 1  # (G,) smallest r reaching the energy
    cols = torch.cat([vh[g, : int(r)].T for g, r in enumerate(ranks)], 1)
    u, sv, _ = torch.linalg.svd(cols, full_matrices=False)
    return u[:, sv > 1e-6]


@dataclass(frozen=True)
class GroupingScore:
    """A grouping's key subspace scored like the categories': dims, key η² of fresh keys (grouping labels),
    overlap ‖B_catᵀB‖²_F / min(dims) with the category subspace, and decoding accuracy of the grouping's labels in
    its subspace (nearest centroid, centroids without the held-out item; the subspace fitted once)."""

    dims: int
    eta2: float
    overlap: float
    decoding: float


def decoding_hits(fit: Fit, item_group: torch.Tensor, basis: torch.Tensor | None = None) -> torch.Tensor:
    """Per fresh key occurrence (m,), whether leave-one-item-out nearest-centroid decoding gets the grouping's label
    right: each held-out item's keys against centroids (means of the other items' mean keys) — inside `basis` when
    given (label-free or random), else inside the grouping's own subspace refitted without the held-out item."""
    keys, ids = fit.fresh_k.reshape(-1, fit.fresh_k.shape[-1]).double(), fit.fresh_ids.reshape(-1)
    if basis is not None:
        return nearest_centroid_loo(keys @ basis.double(), ids, item_group)
    n_items, n_groups = len(item_group), int(item_group.max()) + 1
    means = _item_means(keys, ids, n_items)  # (n_items, d): projecting a mean = the mean of the projections
    present = torch.bincount(ids, minlength=n_items) > 0  # items with fresh keys (all, unless a category is unlisted)
    hits = torch.zeros(len(keys), dtype=torch.bool)
    for i, b in enumerate(fit.loo_bases(item_group)):
        if not present[i]:
            continue
        m = means @ b  # (n_items, r)
        others = (torch.arange(n_items) != i) & present
        cen = torch.stack(
            [
                m[others & (item_group == g)].mean(0)
                if (others & (item_group == g)).any()
                else torch.full((b.shape[1],), float("inf"), dtype=torch.float64)
                for g in range(n_groups)
            ]
        )
        rows = ids == i
        hits[rows] = torch.cdist(keys[rows] @ b, cen).argmin(1) == item_group[i]
    return hits


def decoding_accuracy(fit: Fit, item_group: torch.Tensor, basis: torch.Tensor | None = None) -> float:
    """The mean of `decoding_hits`."""
    return float(decoding_hits(fit, item_group, basis).double().mean())


def score_grouping(fit: Fit, item_group: torch.Tensor, category_basis: torch.Tensor) -> GroupingScore:
    b = fit.basis(item_group)
    keys, ids = fit.fresh_k.reshape(-1, fit.fresh_k.shape[-1]).double(), fit.fresh_ids.reshape(-1)
    overlap = float((category_basis.double().T @ b).square().sum() / min(b.shape[1], category_basis.shape[1]))
    decoding = float(nearest_centroid_loo(keys @ b, ids, item_group).double().mean())
    return GroupingScore(b.shape[1], eta_squared(keys @ b, item_group[ids]), overlap, decoding)


def p_value(observed: float, null: list[float] | torch.Tensor) -> float:
    """One-sided permutation p-value (1 + #{null ≥ observed}) / (1 + n)."""
    null = torch.as_tensor(null, dtype=torch.float64)
    null = null[~null.isnan()]
    return float((1 + (null >= observed - 1e-12).sum()) / (1 + len(null)))


# ---------------------------------------------------------------- the category-matching matrix
def matching_matrix(q, k, asked, item_group, n_groups: int) -> torch.Tensor:
    """(G, G): M[c, c′] = E[q·k | c asked, item in c′], the raw logit before scaling."""
    logits = torch.einsum("nd,nid->ni", q.double(), k.double())  # (n, I)
    m = torch.full((n_groups, n_groups), float("nan"), dtype=torch.float64)
    for c in range(n_groups):
        rows = asked == c
        for c2 in range(n_groups):
            mask = item_group[rows] == c2
            if mask.any():
                m[c, c2] = logits[rows][mask].mean()
    return m


def matching_statistic(m: torch.Tensor) -> float:
    """Mean of the diagonal minus mean of the off-diagonal entries (NaN entries, pairs no prompt held, left out)."""
    off = ~torch.eye(len(m), dtype=torch.bool)
    return float(m.diagonal().nanmean() - m[off].nanmean())


@dataclass(frozen=True)
class MatchingTest:
    matrix: torch.Tensor
    statistic: float
    diagonal_max_rows: int  # rows whose largest entry is on the diagonal
    null: torch.Tensor
    p_value: float


def matching_test(q, k, asked, item_ids, true_group: torch.Tensor, null_groups: list[torch.Tensor]) -> MatchingTest:
    """The matrix under the true item groups, and its statistic against the same statistic under each null
    grouping of the items (a permutation test)."""
    g = int(true_group.max()) + 1
    m = matching_matrix(q, k, asked, true_group[item_ids], g)
    stat = matching_statistic(m)
    null = torch.tensor([matching_statistic(matching_matrix(q, k, asked, ng[item_ids], g)) for ng in null_groups])
    rows = int((m.nan_to_num(float("-inf")).argmax(1) == torch.arange(g)).sum())
    return MatchingTest(m, stat, rows, null, p_value(stat, null))


# ---------------------------------------------------------------- decoding: category subspace vs label-free and random
@dataclass(frozen=True)
class DecodingComparison:
    """Decoding accuracies; category_hits and pcs_hits (n_items,): the accuracy on each held-out item's keys (NaN for
    an item no fresh prompt listed), for a paired comparison over items (keys of one item are not independent)."""

    category: float
    top_pcs: float
    random_mean: float
    random_hi: float  # 95th percentile over random draws
    chance: float
    dims: int
    category_hits: torch.Tensor
    pcs_hits: torch.Tensor


def decoding_comparison(fit: Fit, item_group: torch.Tensor, n_random: int, generator: torch.Generator):
    """Leave-one-item-out decoding of the category in its own subspace (refitted without the held-out item),
    in the span of the top-r principal directions of the ΔC prompts' keys (no labels), and in random r-d subspaces."""
    b = fit.basis(item_group)
    r, d = b.shape[1], b.shape[0]
    keys = fit.k.reshape(-1, d).double()
    pcs = torch.linalg.svd(keys - keys.mean(0), full_matrices=False).Vh.T[:, :r]
    rand = [decoding_accuracy(fit, item_group, random_orthonormal(d, r, generator)) for _ in range(n_random)]
    rand_t = torch.tensor(rand)
    ids, n_items = fit.fresh_ids.reshape(-1), len(item_group)

    def per_item(hits: torch.Tensor) -> torch.Tensor:  # (n_items,) accuracy on each held-out item's keys (NaN: none)
        return torch.zeros(n_items, dtype=torch.float64).index_add_(0, ids, hits.double()) / torch.bincount(
            ids, minlength=n_items
        )

    cat_hits, pcs_hits = per_item(decoding_hits(fit, item_group)), per_item(decoding_hits(fit, item_group, pcs))
    return DecodingComparison(
        category=float(cat_hits.nanmean()),
        top_pcs=float(pcs_hits.nanmean()),
        random_mean=float(rand_t.mean()),
        random_hi=float(torch.quantile(rand_t, 0.95)),
        chance=1 / (int(item_group.max()) + 1),
        dims=r,
        category_hits=cat_hits,
        pcs_hits=pcs_hits,
    )


# ---------------------------------------------------------------- everything at one head
@dataclass
class NullTests:
    """One head's label tests. bounds: condition → one RankBound per category; score: the categories' own
    GroupingScore; random / balanced: the null groupings' scores; p_eta, p_decoding: permutation p-values of the
    categories' key η² and decoding against (random, balanced) groupings; matching: MatchingTest against the random
    groupings; decoding: DecodingComparison."""

    bounds: dict[str, list[RankBound]]
    score: GroupingScore
    random: list[GroupingScore]
    balanced: list[GroupingScore]
    p_eta: tuple[float, float]
    p_decoding: tuple[float, float]
    matching: MatchingTest
    decoding: DecodingComparison

    def implied(self, condition: str = "model", energy: float = 0.99) -> bool:
        return all(b.implies_rank1(energy) for b in self.bounds[condition])


def item_indices(prompts, words: Sequence[str]) -> torch.Tensor:
    """(n, I) index into `words` of each listed item."""
    index = {w: i for i, w in enumerate(words)}
    return torch.tensor([[index[w] for w in p.items] for p in prompts])


def null_tests(
    vecs: dict,
    fresh: dict,
    ids,
    fresh_ids,
    head,
    true_group,
    randoms,
    balanced,
    weighting: str,
    energy: float,
    n_random: int,
    generator: torch.Generator,
) -> NullTests:
    """vecs / fresh: condition → Vectors of the ΔC / fresh prompts ("model", "shuffled labels", "random init");
    ids / fresh_ids (n, I) item indices; true_group (n_items,) the categories; randoms / balanced: null groupings."""
    q, k = vecs["model"].at(head)
    fit = Fit(
        q,
        k,
        vecs["model"].asked,
        ids,
        fresh["model"].at(head)[1],
        fresh_ids,
        len(true_group.unique()),
        weighting,
        energy,
        len(true_group),
    )
    cat_basis = fit.basis(true_group)
    bounds = {}
    for cond, v in vecs.items():
        qc, kc = v.at(head)
        bounds[cond] = [rank_bound(qc, kc, v.asked, v.item_cat, c, weighting) for c in range(fit.n_groups)]
    score = score_grouping(fit, true_group, cat_basis)
    rs = [score_grouping(fit, g, cat_basis) for g in randoms]
    bs = [score_grouping(fit, g, cat_basis) for g in balanced]
    return NullTests(
        bounds,
        score,
        rs,
        bs,
        (p_value(score.eta2, [s.eta2 for s in rs]), p_value(score.eta2, [s.eta2 for s in bs])),
        (p_value(score.decoding, [s.decoding for s in rs]), p_value(score.decoding, [s.decoding for s in bs])),
        matching_test(q, k, vecs["model"].asked, ids, true_group, randoms),
        decoding_comparison(fit, true_group, n_random, generator),
    )
