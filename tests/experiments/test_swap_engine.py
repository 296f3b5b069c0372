"""The one swap engine: recomputed rows equal an edited forward pass (the two methods checked against each other),
the authors' flip is undefined where the baseline argmax is not orig, random conditions average n_random draws,
and bad indices are refused."""

import math

import pytest
import torch

from qkcore.experiments.swap_engine import (
    EncodedTask,
    forward_swaps,
    gather_swap_sets,
    prompt_metrics,
    recomputed_metrics,
    swap_conditions,
    top_key_variance,
)
from qkcore.lm import pad_batch
from qkcore.lm.tiny import tiny_model
from qkcore.subspace import random_orthonormal

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 9, 20, 4, 33, 40, 41], [7, 7, 8, 30, 31, 32, 33, 34, 35, 36]]


def _tasks():
    """Two batches; candidates: three prompt positions per row, the query the last token."""
    out = []
    for rows in (PROMPTS[:2], PROMPTS[2:]):
        batch = pad_batch(rows, "left")
        query = torch.tensor([batch.padded(r, -1) for r in range(batch.size)])
        cand = batch.padded_positions([[1, 3, 5]] * batch.size)
        out.append(EncodedTask(batch, query, cand, torch.tensor([[0, 1, 2]] * batch.size)))
    return out


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", attn_implementation="eager")


def test_recomputed_rows_equal_an_edited_forward_pass(model):
    orig, target = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 2])
    sets = gather_swap_sets(model, _tasks(), [(1, 1)], orig, target)
    basis = random_orthonormal(sets[(1, 1)].d, 3, torch.Generator().manual_seed(0))
    rec = recomputed_metrics(sets[(1, 1)], basis)
    fwd = forward_swaps(model, _tasks(), (1, 1), orig, target, basis)
    for name in rec:
        a, b = rec[name], fwd[name]
        assert torch.equal(torch.isnan(a), torch.isnan(b)), name
        assert torch.allclose(a.nan_to_num(), b.nan_to_num(), atol=1e-5), name


def test_whole_space_swap_moves_all_attention(model):
    orig, target = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 2])
    s = gather_swap_sets(model, _tasks(), [(0, 0)], orig, target)[(0, 0)]
    m = recomputed_metrics(s, torch.eye(s.d, dtype=torch.float64))
    # a swap of the whole key exchanges the two logits: attention on orig and target trade places exactly
    assert torch.allclose(m["attn_orig_after"], m["attn_target_before"], atol=1e-10)
    assert torch.allclose(m["gap_fraction"], torch.ones(3, dtype=torch.float64))
    # and the empty subspace changes nothing
    z = recomputed_metrics(s, torch.zeros(s.d, 0, dtype=torch.float64))
    assert torch.allclose(z["delta_p"], torch.zeros(3, dtype=torch.float64))


def test_authors_flip_is_undefined_unless_orig_is_on_top():
    attn = torch.tensor([[0.6, 0.1, 0.3, 0.0], [0.1, 0.2, 0.3, 0.4]], dtype=torch.float64)
    chunk = {
        "attn": attn,
        "cand": torch.tensor([[1, 2, 3], [1, 2, 3]]),
        "orig": torch.tensor([1, 2]),  # row 0: orig = column 2 (not the argmax, a sink is); row 1: column 3 (argmax)
        "target": torch.tensor([0, 0]),
        "q": torch.ones(2, 2, dtype=torch.float64),
        "keys": torch.ones(2, 3, 2, dtype=torch.float64),
    }
    after = torch.tensor([[0.6, 0.3, 0.1, 0.0], [0.1, 0.5, 0.3, 0.1]], dtype=torch.float64)
    m = prompt_metrics(chunk, after, torch.eye(2, dtype=torch.float64))
    assert math.isnan(m["flip"][0]) and m["flip"][1] == 1.0
    assert m["flip_candidates"][0] == 1.0  # among the candidates orig (col 2) was on top, target (col 1) is after
    assert m["flip_any"].tolist() == [0.0, 1.0]  # row 0: the sink stays on top, the whole-row argmax cannot move
    assert math.isnan(m["gap_fraction"][0])  # equal keys: no gap to explain


def test_random_condition_averages_its_draws_and_rank_zero_is_nan(model):
    orig, target = torch.tensor([0, 2, 1]), torch.tensor([1, 0, 2])
    s = gather_swap_sets(model, _tasks(), [(1, 0)], orig, target)[(1, 0)]
    g = torch.Generator().manual_seed(3)
    res = swap_conditions(s, {"random": 2, "none": None, "top": top_key_variance(s, 2)}, g, n_random=4)
    g2 = torch.Generator().manual_seed(3)
    draws = [recomputed_metrics(s, random_orthonormal(s.d, 2, g2)) for _ in range(4)]
    assert torch.allclose(res.per_prompt["random"]["delta_p"], torch.stack([x["delta_p"] for x in draws]).mean(0))
    assert torch.isnan(res.per_prompt["none"]["flip_any"]).all() and res.ranks["none"] == 0
    # a list of bases (several shuffled-label draws) is averaged per prompt the same way
    listed = [random_orthonormal(s.d, 2, g2) for _ in range(3)]
    avg = swap_conditions(s, {"draws": listed}, g2).per_prompt["draws"]["delta_p"]
    assert torch.allclose(avg, torch.stack([recomputed_metrics(s, b)["delta_p"] for b in listed]).mean(0))
    table = res.table()
    assert list(table.index) == ["random", "none", "top"] and table.loc["top", "rank"] == 2
    assert ((res.sink_share >= 0) & (res.sink_share <= 1)).all()


def test_bad_indices_are_refused(model):
    with pytest.raises(ValueError, match="must differ"):
        gather_swap_sets(model, _tasks(), [(0, 0)], torch.tensor([0, 1, 1]), torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match="0..2"):
        gather_swap_sets(model, _tasks(), [(0, 0)], torch.tensor([0, 1, 3]), torch.tensor([1, 2, 2]))
    with pytest.raises(ValueError, match="entries for"):
        gather_swap_sets(model, _tasks(), [(0, 0)], torch.tensor([0, 1, 1, 0]), torch.tensor([1, 2, 2, 1]))
    with pytest.raises(ValueError, match="n_random"):
        swap_conditions(
            gather_swap_sets(model, _tasks(), [(0, 0)], torch.tensor([0, 1, 1]), torch.tensor([1, 2, 2]))[(0, 0)],
            {"r": 2},
            torch.Generator(),
            0,
        )


def test_gap_fraction_in_the_table_is_a_ratio_of_means():
    from qkcore.experiments.swap_engine import ratio_of_means

    num = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    den = torch.tensor([2.0, 1e-12, 2.0], dtype=torch.float64)  # a near-zero gap would blow up a mean of ratios
    e = ratio_of_means(num, den)
    assert e.value == pytest.approx(4 / 4) and e.n == 3 and e.lo <= e.value <= e.hi
    assert math.isnan(ratio_of_means(num[:0], den[:0]).value)
