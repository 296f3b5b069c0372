"""The filter chapter's tests that can fail (issue 14), on planted data: the rank-1 bound, the null groupings, the
matching matrix, leave-one-item-out decoding, the swap metrics and the verdict rules."""

import pytest
import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.experiments.filter_heads import nulls
from qkcore.experiments.filter_heads.analysis import task_gate
from qkcore.subspace import decompose

G, PER, D = 5, 5, 12
N_ITEMS = G * PER


def _planted(n=200, signal=3.0, query_noise=0.05, seed=0):
    """Every prompt lists all 25 items (shuffled); keys carry their category's direction times `signal` plus noise;
    the query of a prompt asking c is that direction (plus a little noise) — a head that matches by category."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.linalg.qr(torch.randn(D, G, generator=g))[0].T  # (G, D)
    item_noise = torch.randn(N_ITEMS, D, generator=g) * 0.5
    ids = torch.stack([torch.randperm(N_ITEMS, generator=g) for _ in range(n)])  # (n, I)
    cat = ids // PER
    k = signal * dirs[cat] + item_noise[ids] + 0.3 * torch.randn(n, N_ITEMS, D, generator=g)
    asked = torch.arange(n) % G
    q = 2 * dirs[asked] + 1.0 + query_noise * torch.randn(n, D, generator=g)
    return q, k, asked, ids, cat


def test_group_deltas_and_fit_equal_the_streamed_contrast():
    q, k, asked, ids, cat = _planted()
    for weighting in ("pair_mean", "prompt_sum"):
        deltas = nulls.group_deltas(q, k, asked, cat, G, weighting)
        fit = nulls.Fit(q, k, asked, ids, k[:40], ids[:40], G, weighting)
        torch.testing.assert_close(fit.deltas(torch.arange(N_ITEMS) // PER), deltas)
        for c in range(G):
            rows = asked == c
            acc = ContrastiveCovariance(D, weighting=weighting)
            for sign, mask in ((True, cat[rows] == c), (False, cat[rows] != c)):
                r, i = mask.nonzero(as_tuple=True)
                acc.add(q[rows][r], k[rows][r, i], positive=sign, prompts=int(rows.sum()))
            torch.testing.assert_close(deltas[c], acc.delta(), atol=1e-9, rtol=1e-7)
    # leaving an item out = the contrast over the other items' keys only
    true = torch.arange(N_ITEMS) // PER
    fit = nulls.Fit(q, k, asked, ids, k[:40], ids[:40], G)
    keep = ids != 7
    torch.testing.assert_close(fit.deltas(true, leave_out=7), nulls.group_deltas(q, k, asked, cat, G, keep=keep))


@pytest.mark.parametrize("query_noise", [0.01, 0.3, 3.0])
def test_rank_bound_holds_and_decomposes(query_noise):
    q, k, asked, ids, cat = _planted(query_noise=query_noise, seed=1)
    for c in range(G):
        b = nulls.rank_bound(q, k, asked, cat, c)
        assert b.off_energy <= b.bound + 1e-12  # the bound is a bound
        delta = nulls.group_deltas(q, k, asked, cat, G)[c]
        assert b.off_energy == pytest.approx(1 - decompose(delta).energy_fractions[0].item(), abs=1e-9)
    tight = nulls.rank_bound(*_planted(query_noise=0.01)[:3], _planted(query_noise=0.01)[4], 0)
    loose = nulls.rank_bound(*_planted(query_noise=3.0)[:3], _planted(query_noise=3.0)[4], 0)
    assert tight.implies_rank1() and not loose.implies_rank1()


def test_groupings_keep_sizes_and_balance_categories():
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        r = nulls.random_grouping(G, PER, g)
        b = nulls.balanced_grouping(G, PER, g)
        assert torch.bincount(r).tolist() == [PER] * G and torch.bincount(b).tolist() == [PER] * G
        for grp in range(G):  # one item of every category in each balanced group
            assert sorted((torch.arange(N_ITEMS)[b == grp] // PER).tolist()) == list(range(G))
    wide = nulls.balanced_grouping(7, 5, g)  # more categories than items per category: still no repeats
    for grp in range(7):
        members = (torch.arange(35)[wide == grp] // 5).tolist()
        assert len(members) == 5 and len(set(members)) == 5


def test_nulls_fail_a_planted_category_code_and_pass_noise():
    q, k, asked, ids, cat = _planted(n=260)
    q, k, asked, ids, fk, fids = q[:200], k[:200], asked[:200], ids[:200], k[200:], ids[200:]  # fresh: held out
    true = torch.arange(N_ITEMS) // PER
    g = torch.Generator().manual_seed(0)
    groupings = [nulls.random_grouping(G, PER, g) for _ in range(30)]
    fit = nulls.Fit(q, k, asked, ids, fk, fids, G)
    score = nulls.score_grouping(fit, true, fit.basis(true))
    null = [nulls.score_grouping(fit, x, fit.basis(true)) for x in groupings]
    assert score.decoding > 0.95 and score.eta2 > max(s.eta2 for s in null)
    assert nulls.p_value(score.eta2, [s.eta2 for s in null]) == pytest.approx(1 / 31, rel=1e-6)
    test = nulls.matching_test(q, k, asked, ids, true, groupings)
    assert test.p_value == pytest.approx(1 / 31, rel=1e-6) and test.statistic > test.null.max()
    # keys with no category signal: decoding near chance, matching not significant
    q0, k0, a0, i0, _ = _planted(signal=0.0, seed=3)
    fit0 = nulls.Fit(q0, k0, a0, i0, k0[:60], i0[:60], G)
    assert nulls.decoding_accuracy(fit0, true) < 0.45
    assert nulls.matching_test(q0, k0, a0, i0, true, groupings).p_value > 0.05


def test_leave_one_item_out_centroids_exclude_the_item():
    coords = torch.tensor([[0.0], [0.1], [10.0], [10.1], [5.2]])
    ids = torch.tensor([0, 1, 2, 3, 4])
    label = torch.tensor([0, 0, 1, 1, 1])
    hits = nulls.nearest_centroid_loo(coords, ids, label)
    # item 4 (label 1) at 5.2: centroids without it are 0.05 (label 0) and 10.05 (label 1) → closer to label 1
    assert hits.tolist() == [True, True, True, True, True]
    label = torch.tensor([0, 0, 1, 1, 0])  # item 4 labelled 0: left-out centroid of 0 is 0.05, of 1 is 10.05 → miss
    assert not nulls.nearest_centroid_loo(coords, ids, label)[4]


def test_task_gate():
    assert task_gate(["cat", "dog"], 90, 100, 0.2)[0] is False
    assert task_gate([], 22, 100, 0.2)[0] is False  # at chance
    assert task_gate([], 40, 100, 0.2)[0] is True
    assert task_gate([], 40, 100, 0.2)[1].endswith("against chance 0.20 (binomial p = 4e-06)")
    # 500 of 500 at chance 0.2: the exact tail (~1e-349) underflows float64, and the page says so instead of "p = 0"
    assert task_gate([], 500, 500, 0.2)[1].endswith("(binomial p < 1e-300)")


def test_unknown_items_are_found():
    from qkcore.experiments.filter_heads.analysis import unknown_items

    class Tok:
        unk_token_id = 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [0 if w == "scooter" else 5 for w in text.split()]}

    assert unknown_items(Tok(), ["cat", "scooter"]) == ["scooter"]


# ---------------------------------------------------------------- the 13-category view: prompts list 5 of 13 categories
G13, LISTED = 13, 5


def _planted_13(n=390, signal=3.0, shuffle=False, seed=0):
    """Prompts list LISTED of 13 categories (all five items each, shuffled) and ask one of them; keys carry their
    category's direction times `signal` plus item and occurrence noise. shuffle: the keys are permuted over every
    (prompt, slot) (the same vectors, the link between a key and its item and prompt broken)."""
    g = torch.Generator().manual_seed(seed)
    d = 16
    dirs = torch.randn(G13, d, generator=g)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    item_noise = torch.randn(G13 * PER, d, generator=g) * 0.5
    asked = torch.arange(n) % G13
    ids = []
    for c in asked.tolist():
        others = [x for x in torch.randperm(G13, generator=g).tolist() if x != c][: LISTED - 1]
        items = torch.tensor([cat * PER + j for cat in (c, *others) for j in range(PER)])
        ids.append(items[torch.randperm(len(items), generator=g)])
    ids = torch.stack(ids)  # (n, 25)
    k = signal * dirs[ids // PER] + item_noise[ids] + 0.3 * torch.randn(*ids.shape, d, generator=g)
    if shuffle:
        k = k.reshape(-1, d)[torch.randperm(k.shape[0] * k.shape[1], generator=g)].reshape(k.shape)
    q = 2 * dirs[asked] + 1.0 + 0.05 * torch.randn(n, d, generator=g)
    return q, k, asked, ids


def test_13_category_null_families_have_the_right_sizes_and_balance():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        r, b = nulls.random_grouping(G13, PER, g), nulls.balanced_grouping(G13, PER, g)
        assert len(r) == len(b) == 65 and torch.bincount(r).tolist() == torch.bincount(b).tolist() == [PER] * G13
        category = torch.arange(65) // PER
        for grp in range(G13):  # a balanced group: five items, from five different categories
            assert len(set(category[b == grp].tolist())) == PER
        for c in range(G13):  # and each category's five items in five different groups
            assert len(set(b[category == c].tolist())) == PER


@pytest.mark.parametrize("weighting", ["pair_mean", "prompt_sum"])
def test_fit_on_partial_lists_equals_the_streamed_contrast(weighting):
    """With 5 of 13 categories per prompt and a null grouping, a group's positives per prompt vary (0 to 5): the
    Fit's weighted sums still equal ContrastiveCovariance fed the same pairs, with and without a held-out item."""
    q, k, asked, ids = _planted_13(n=130)
    grouping = nulls.random_grouping(G13, PER, torch.Generator().manual_seed(1))
    fit = nulls.Fit(q, k, asked, ids, k[:20], ids[:20], G13, weighting, n_items=65)
    for leave_out in (None, 7):
        got = fit.deltas(grouping, leave_out)
        keep = ids != (-1 if leave_out is None else leave_out)
        for c in range(G13):
            rows = asked == c
            pos = grouping[ids[rows]] == c
            acc = ContrastiveCovariance(16, weighting=weighting)
            for sign, mask in ((True, pos & keep[rows]), (False, ~pos & keep[rows])):
                r, i = mask.nonzero(as_tuple=True)
                acc.add(q[rows][r], k[rows][r, i], positive=sign, prompts=int(rows.sum()))
            torch.testing.assert_close(got[c], acc.delta(), atol=1e-9, rtol=1e-7)
    with pytest.raises(ValueError, match="twice"):
        nulls.Fit(q, k, asked, ids.clone().index_fill_(1, torch.tensor([1]), int(ids[0, 0])), k, ids, G13)


def _tests_13(shuffle: bool, seed: int = 0, n_groupings: int = 50):
    q, k, asked, ids = _planted_13(n=455, shuffle=shuffle, seed=seed)
    vecs = nulls_vectors(q[:390], k[:390], asked[:390], ids[:390])
    fresh = nulls_vectors(q[390:], k[390:], asked[390:], ids[390:])
    g = torch.Generator().manual_seed(seed + 1)
    randoms = [nulls.random_grouping(G13, PER, g) for _ in range(n_groupings)]
    balanced = [nulls.balanced_grouping(G13, PER, g) for _ in range(n_groupings)]
    true = torch.arange(65) // PER
    return nulls.null_tests(
        {"model": vecs}, {"model": fresh}, ids[:390], ids[390:], (0, 0), true, randoms, balanced,
        "pair_mean", 0.99, 3, torch.Generator().manual_seed(2),
    )  # fmt: skip


def nulls_vectors(q, k, asked, ids):
    from qkcore.experiments.filter_heads.vectors import Vectors

    n, n_slots = ids.shape
    return Vectors(((0, 0),), tuple(map(str, range(G13))), q[None], k[None], torch.ones(1, n, n_slots), asked, ids // 5)


def test_13_category_p_values_small_for_planted_categories_large_for_shuffled_keys():
    planted = _tests_13(shuffle=False)
    assert len(planted.random) == len(planted.balanced) == 50
    assert planted.p_eta == pytest.approx((1 / 51, 1 / 51)) and planted.p_decoding == pytest.approx((1 / 51, 1 / 51))
    assert planted.matching.p_value == pytest.approx(1 / 51) and planted.score.decoding > 0.9
    for seed in (0, 1, 2):  # the same vectors with the item ↔ key link broken: no family rejects
        shuffled = _tests_13(shuffle=True, seed=seed)
        assert min(shuffled.p_eta) > 0.05 and min(shuffled.p_decoding) > 0.05, (seed, shuffled.p_eta)
        assert shuffled.decoding.category < 0.2  # chance 1/13
