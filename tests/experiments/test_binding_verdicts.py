"""The binding chapters' judgement, on made-up numbers (no model): the gates (a model at chance and a head that does
not select the answer are not testable), the filler prompts that part clause from position, the decoders of the
clause beyond position, the attribution's key-side split and label-free baseline, and the null label draws with
their permutation p-values and the low-rank rule built on them."""

from collections import Counter

import numpy as np
import pytest
import torch

from qkcore.experiments.binding.attribution import explained_fraction, mean_query_basis, split_keys, split_logits
from qkcore.experiments.binding.filler import (
    FILLER_WORDS,
    filler_prompts,
    position_alone_accuracy,
    remove_position_means,
    with_filler,
)
from qkcore.experiments.binding.gates import binding_gate, head_evidence, model_evidence
from qkcore.experiments.binding.nulls import (
    LexicalVectors,
    OrderVectors,
    lexical_flip_draws,
    lexical_nulls,
    order_label_draws,
    order_nulls,
)
from qkcore.experiments.binding.report import verdict_markdown
from qkcore.experiments.binding.subspaces import rank_claim
from qkcore.experiments.binding.views import balanced_query_prompts, knn_accuracy, knn_correct
from qkcore.experiments.verdicts import IMPLIED, MATCHED, NOT_REPRODUCED, NOT_TESTABLE, REPRODUCED, Estimate
from qkcore.organisms.binding_task import PAPER_OBJECTS, VOCABULARY, sample_prompt
from qkcore.subspace import random_orthonormal

# -- gates ---------------------------------------------------------------------------------------------------------


def test_a_model_at_chance_is_not_testable():
    g = torch.Generator().manual_seed(0)
    at_chance = torch.rand(150, generator=g) < 0.25  # SmolLM2 at 4 pairs: 0.27 where chance is 0.25
    ev = model_evidence(at_chance, 4)
    assert not ev["ok"] and ev["binomial p"] > 0.05
    v = binding_gate("binding: swap, both", "SmolLM2", "L20H6", ev, None)
    assert v.verdict == NOT_TESTABLE and "cannot do the task" in v.rule and "0.250" in v.rule
    binds = torch.rand(150, generator=g) < 0.98  # Qwen at 9 pairs
    assert model_evidence(binds, 9)["ok"]
    assert binding_gate("binding: swap, both", "Qwen", None, model_evidence(binds, 9), None) is None


def test_a_head_that_does_not_select_the_answer_is_not_testable():
    g = torch.Generator().manual_seed(1)
    ok_model = model_evidence(torch.ones(100, dtype=torch.bool), 9)
    picky = head_evidence(torch.rand(100, generator=g) < 0.9, 3 + torch.randn(100, generator=g), 9)
    assert picky["ok"] and binding_gate("binding: swap, order", "m", "L1H1", ok_model, picky) is None
    # the answer on top about as often as any letter, the logit gap centred on 0
    flat = head_evidence(torch.rand(100, generator=g) < 1 / 9, torch.randn(100, generator=g), 9)
    assert not flat["ok"]
    v = binding_gate("binding: swap, order", "m", "L1H1", ok_model, flat)
    assert v.verdict == NOT_TESTABLE and "does not select" in v.rule
    # selective by the argmax but a logit-gap interval reaching 0: still not testable
    gapless = head_evidence(torch.ones(100, dtype=torch.bool), torch.randn(100, generator=g) - 0.5, 9)
    assert not gapless["ok"] and isinstance(gapless["logit gap"], Estimate)


# -- filler prompts: the clause index apart from absolute position ---------------------------------------------------


def test_filler_moves_clauses_and_keeps_the_spans():
    g = torch.Generator().manual_seed(2)
    p = sample_prompt(4, g)
    f = with_filler(p, [2, 0, 3], FILLER_WORDS, g)
    assert len(f.words) == len(p.words) + 5 and set(f.words) <= set(VOCABULARY)
    assert [f.words[i] for i in f.letter_positions] == list(p.letters)
    assert [f.words[i] for i in f.object_positions] == list(p.objects)
    assert [f.text[s:e] for s, e in f.letter_spans] == list(p.letters)
    assert f.text[slice(*f.query_span)] == p.query_object and f.text.endswith("Box")
    shifts = np.array(f.letter_positions) - np.array(p.letter_positions)
    assert shifts.tolist() == [0, 2, 2, 5]
    assert with_filler(p, [0, 0, 0], FILLER_WORDS, g) == p
    with pytest.raises(ValueError, match="gap"):
        with_filler(p, [1, 1], FILLER_WORDS, g)
    many = filler_prompts([sample_prompt(9, g) for _ in range(50)], 4, g)
    pos = np.array([q.letter_positions for q in many])  # (50, 9)
    assert pos[:, 0].std() == 0 and pos[:, 8].std() > 2  # later clauses spread over many positions


def test_position_alone_and_beyond_position():
    rng = np.random.default_rng(0)
    clauses = np.tile(np.arange(3), 200)
    positions = 7 * clauses + rng.integers(0, 5, size=clauses.size).cumsum() % 3  # overlapping ranges
    assert 1 / 3 < position_alone_accuracy(positions, clauses) <= 1
    assert position_alone_accuracy(clauses, clauses) == 1.0  # position = clause: position alone tells all
    x = np.stack([positions, rng.normal(size=positions.size)], 1).astype(float)
    left = remove_position_means(x, positions)
    for p in np.unique(positions):
        assert np.allclose(left[positions == p].mean(0), 0)


# -- attribution: the key-side split adds up; the mean query's direction alone ----------------------------------------


def test_key_side_split_and_mean_query_baseline():
    g = torch.Generator().manual_seed(3)
    q = 5 * torch.ones(8, 16) + 0.1 * torch.randn(8, 16, generator=g)  # concentrated queries
    K = torch.randn(8, 20, 16, generator=g)
    V_o, V_l = random_orthonormal(16, 1, g), random_orthonormal(16, 3, g)
    parts = split_keys(q, K, V_o, V_l)
    torch.testing.assert_close(parts.order + parts.lexical + parts.residual, parts.total, rtol=0, atol=1e-10)
    torch.testing.assert_close(parts.total, split_logits(q, K, V_o, V_l).total, rtol=0, atol=1e-10)
    U = mean_query_basis(q)
    assert U.shape == (16, 1) and abs(float(U.norm()) - 1) < 1e-12
    empty = torch.zeros(16, 0, dtype=torch.float64)
    frac = explained_fraction(split_logits(q, K, U, empty))
    assert (frac > 0.99).all()  # the label-free direction alone explains concentrated queries' logits


def test_verdict_markdown_states_each_rule_once():
    ev = model_evidence(torch.zeros(50, dtype=torch.bool), 4)
    vs = [
        binding_gate("binding: swap, order", "m", "L1H1", ev, None),
        binding_gate("binding: swap, lexical", "m", "L1H1", ev, None),
    ]
    md = verdict_markdown(vs)
    assert md.count("**not testable here**") == 2 and md.count("* Rule:") == 1


# -- null label draws of the binding contrasts: balanced families, permutation p-values that can fail ----------------


def test_balanced_draws_use_each_clause_equally_often_and_flip_half():
    g = torch.Generator().manual_seed(4)
    labels = order_label_draws(63, 9, 50, balanced=True, generator=g)  # (50, 63)
    assert labels.shape == (50, 63)
    assert all(torch.bincount(row, minlength=9).tolist() == [7] * 9 for row in labels)
    odd = order_label_draws(40, 9, 20, balanced=True, generator=g)  # 40 = 4·9 + 4: counts 4 or 5
    for row in odd:
        c = torch.bincount(row, minlength=9)
        assert c.min() == 4 and c.max() == 5 and int(c.sum()) == 40
    assert len({tuple(r.tolist()) for r in labels}) == 50  # not one draw repeated
    rnd = order_label_draws(63, 9, 50, balanced=False, generator=g)
    assert any(torch.bincount(row, minlength=9).max() > 7 for row in rnd)  # uniform draws are not balanced
    flips = lexical_flip_draws(31, 50, balanced=True, generator=g)
    assert (flips.sum(1) == 15).all()
    assert not (lexical_flip_draws(31, 50, balanced=False, generator=g).sum(1) == 15).all()


def _order_vectors(signal: float, seed: int, n: int = 120, P: int = 6, d: int = 16) -> OrderVectors:
    """Concentrated queries; the answer's key carries `signal` along the query's mean direction, plus noise keys."""
    g = torch.Generator().manual_seed(seed)
    q = 3 * torch.ones(n, d) / d**0.5 + 0.3 * torch.randn(n, d, generator=g)
    k = torch.randn(n, P, d, generator=g)
    answer = torch.randint(P, (n,), generator=g)
    k[torch.arange(n), answer] += signal * torch.ones(d) / d**0.5
    return OrderVectors(q, k, answer)


def test_permutation_p_is_small_for_planted_signal_and_large_for_noise_labels():
    planted = order_nulls(_order_vectors(2.0, 0), "pair_mean", 50, torch.Generator().manual_seed(1))
    assert planted.p_values() == {"random labels": 1 / 51, "balanced labels": 1 / 51}
    small = 0
    for seed in range(20):  # labels that carry nothing: p roughly uniform, rarely below 0.05
        noise = order_nulls(_order_vectors(0.0, seed), "prompt_sum", 50, torch.Generator().manual_seed(seed))
        small += min(noise.p_values().values()) < 0.05
    assert small <= 4
    # the lexical contrast: the prompt's answer key shares a direction with its query, the counterfactual's does not
    g = torch.Generator().manual_seed(2)
    qp, qc = torch.randn(80, 16, generator=g) + 2, torch.randn(80, 16, generator=g) + 2
    kp, kc = torch.randn(80, 16, generator=g) + 1.5, torch.randn(80, 16, generator=g)
    lex = lexical_nulls(LexicalVectors(qp, kp, qc, kc), 50, torch.Generator().manual_seed(3))
    assert max(lex.p_values().values()) == 1 / 51
    same = lexical_nulls(LexicalVectors(qp, torch.randn(80, 16, generator=g), qc, kc), 50, g)
    assert min(same.p_values().values()) > 0.05  # prompt and counterfactual keys from one distribution
    with pytest.raises(ValueError, match="n_null_draws must be an int ≥ 50"):
        order_nulls(_order_vectors(2.0, 0), "pair_mean", 20, g)


def test_rank_claim_needs_the_null_test_as_well_as_the_rank():
    planted = order_nulls(_order_vectors(2.0, 0), "pair_mean", 50, torch.Generator().manual_seed(1))
    noise = order_nulls(_order_vectors(0.0, 3), "pair_mean", 50, torch.Generator().manual_seed(1))
    claim = "binding: order-ID low rank"
    v = rank_claim(claim, "m", "L1H1", 1, 64, False, planted, {})
    assert v.verdict == REPRODUCED and v.numbers["random labels: p"] == pytest.approx(1 / 51)
    assert "balanced labels: 95th percentile" in v.numbers and "σ₁" in v.rule
    assert min(noise.p_values().values()) >= 0.05  # labels that carry nothing, at a rank just as low
    assert rank_claim(claim, "m", "L1H1", 1, 64, False, noise, {}).verdict == MATCHED
    assert rank_claim(claim, "m", "L1H1", 40, 64, False, planted, {}).verdict == NOT_REPRODUCED
    implied = rank_claim(claim, "m", "L1H1", 1, 64, True, noise, {})
    assert implied.verdict == IMPLIED and "balanced labels: p" in implied.numbers


def test_lexical_view_prompts_ask_each_object_equally_and_knn_reads_small_classes():
    g = torch.Generator().manual_seed(5)
    for n_pairs in (9, 4):
        prompts = balanced_query_prompts(27, n_pairs, g)
        counts = Counter(p.query_object for p in prompts)
        assert set(counts) == set(PAPER_OBJECTS) and set(counts.values()) == {3}
        assert all(p.objects[p.query] == p.query_object and p.n_pairs == n_pairs for p in prompts)
    # 3 rows per label, 9 tight clusters: a 10-neighbour vote would drown each label's 2 training rows
    labels = np.repeat(np.arange(9), 3)
    x = 10.0 * labels[:, None] + np.random.default_rng(0).normal(size=(27, 2))
    assert knn_accuracy(x, labels) == 1.0 and (knn_correct(x, labels) == 1).all()
    assert np.isnan(knn_accuracy(x[:-2], labels[:-2]))  # a label seen once: no held-out decoding
