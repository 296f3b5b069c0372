"""The binding chapters' judgement, on made-up numbers (no model): the gates (a model at chance and a head that does
not select the answer are not testable), the filler prompts that part clause from position, the decoders of the
clause beyond position, and the attribution's key-side split and label-free baseline."""

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
from qkcore.experiments.binding.report import verdict_markdown
from qkcore.experiments.verdicts import NOT_TESTABLE, Estimate
from qkcore.organisms.binding_task import VOCABULARY, sample_prompt
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
