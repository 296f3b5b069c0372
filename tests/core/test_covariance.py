"""The streaming contrastive covariance: equals a slow explicit loop, for one head and a stack, in any batching."""

import pytest
import torch

from qkcore.covariance import ContrastiveCovariance, contrastive_covariance


def slow_delta(q_pos, k_pos, q_neg, k_neg):
    """ΔC by an explicit Python loop over pairs: the definition, written out."""
    d = q_pos.shape[-1]
    c_pos = torch.zeros(d, d, dtype=torch.float64)
    for q, k in zip(q_pos, k_pos):
        c_pos += torch.outer(q.double(), k.double())
    c_neg = torch.zeros(d, d, dtype=torch.float64)
    for q, k in zip(q_neg, k_neg):
        c_neg += torch.outer(q.double(), k.double())
    return c_pos / len(q_pos) - c_neg / len(q_neg)


@pytest.fixture
def pairs():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, 6, generator=g) for n in (37, 37, 53, 53)]


def test_streaming_in_uneven_batches_equals_explicit_loop(pairs):
    q_pos, k_pos, q_neg, k_neg = pairs
    acc = ContrastiveCovariance(6)
    for lo, hi in [(0, 1), (1, 20), (20, 37)]:
        acc.add(q_pos[lo:hi], k_pos[lo:hi], positive=True)
    for lo, hi in [(0, 50), (50, 53)]:
        acc.add(q_neg[lo:hi], k_neg[lo:hi], positive=False)
    expected = slow_delta(q_pos, k_pos, q_neg, k_neg)
    torch.testing.assert_close(acc.delta(), expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(contrastive_covariance(*pairs), expected, rtol=1e-10, atol=1e-12)
    assert acc.pairs == {True: 37, False: 53}


def test_head_stack_equals_each_head_alone():
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 4, 10, 5, generator=g)  # (layers, heads, n, d)
    k = torch.randn(3, 4, 10, 5, generator=g)
    stack = ContrastiveCovariance(5, head_shape=(3, 4))
    stack.add(q[..., :6, :], k[..., :6, :], positive=True)
    stack.add(q[..., 6:, :], k[..., 6:, :], positive=False)
    for layer in range(3):
        for head in range(4):
            alone = slow_delta(q[layer, head, :6], k[layer, head, :6], q[layer, head, 6:], k[layer, head, 6:])
            torch.testing.assert_close(stack.delta()[layer, head], alone, rtol=1e-10, atol=1e-12)


def test_rectangular_query_and_key_dims():
    g = torch.Generator().manual_seed(3)
    acc = ContrastiveCovariance(4, d_key=7)
    acc.add(torch.randn(5, 4, generator=g), torch.randn(5, 7, generator=g), positive=True)
    acc.add(torch.randn(5, 4, generator=g), torch.randn(5, 7, generator=g), positive=False)
    assert acc.delta().shape == (4, 7)


def test_logit_gap_is_mean_dot_product_difference(pairs):
    q_pos, k_pos, q_neg, k_neg = pairs
    acc = ContrastiveCovariance(6)
    acc.add(q_pos, k_pos, positive=True)
    acc.add(q_neg, k_neg, positive=False)
    gap = (q_pos.double() * k_pos.double()).sum(-1).mean() - (q_neg.double() * k_neg.double()).sum(-1).mean()
    torch.testing.assert_close(acc.logit_gap(), gap, rtol=1e-10, atol=1e-12)


def test_prompt_sum_weighting_divides_by_prompts_not_pairs():
    """The authors' filter-head weighting: 5 positives and 20 negatives per prompt, both summed, / prompts."""
    g = torch.Generator().manual_seed(4)
    q = torch.randn(2, 4, generator=g)  # two prompts, one query each
    k_pos = torch.randn(2, 5, 4, generator=g)
    k_neg = torch.randn(2, 20, 4, generator=g)
    acc = ContrastiveCovariance(4, weighting="prompt_sum")
    mean = ContrastiveCovariance(4)
    for i in range(2):
        acc.add(q[i].expand(5, 4), k_pos[i], positive=True, prompts=1)
        acc.add(q[i].expand(20, 4), k_neg[i], positive=False, prompts=1)
        mean.add(q[i].expand(5, 4), k_pos[i], positive=True)
        mean.add(q[i].expand(20, 4), k_neg[i], positive=False)
    expected = sum(torch.outer(q[i], k_pos[i].sum(0)) - torch.outer(q[i], k_neg[i].sum(0)) for i in range(2)) / 2
    torch.testing.assert_close(acc.delta().float(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean.covariance(True) * 5, acc.covariance(True))
    torch.testing.assert_close(mean.covariance(False) * 20, acc.covariance(False))


def test_deterministic_for_same_inputs(pairs):
    def run():
        acc = ContrastiveCovariance(6)
        acc.add(pairs[0], pairs[1], positive=True)
        acc.add(pairs[2], pairs[3], positive=False)
        return acc.delta()

    assert torch.equal(run(), run())


@pytest.mark.parametrize(
    "q_shape, k_shape, match",
    [
        ((5, 6), (5, 4), "k must have shape"),
        ((5, 3), (5, 6), "q must have shape"),
        ((6,), (6,), "q must have shape"),
        ((5, 6), (4, 6), "k must have shape"),
    ],
)
def test_shape_mismatch_is_a_clear_error(q_shape, k_shape, match):
    acc = ContrastiveCovariance(6)
    with pytest.raises(ValueError, match=match):
        acc.add(torch.zeros(q_shape), torch.zeros(k_shape), positive=True)


def test_empty_positive_or_negative_set_is_an_error(pairs):
    acc = ContrastiveCovariance(6)
    acc.add(pairs[0], pairs[1], positive=True)
    with pytest.raises(ValueError, match="no negative pairs"):
        acc.delta()
    other = ContrastiveCovariance(6)
    other.add(pairs[2], pairs[3], positive=False)
    with pytest.raises(ValueError, match="no positive pairs"):
        other.delta()


def test_prompt_sum_without_prompt_counts_is_an_error(pairs):
    acc = ContrastiveCovariance(6, weighting="prompt_sum")
    acc.add(pairs[0], pairs[1], positive=True)
    acc.add(pairs[2], pairs[3], positive=False)
    with pytest.raises(ValueError, match="prompts=n"):
        acc.delta()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_values_are_rejected(bad, pairs):
    q = pairs[0].clone()
    q[3, 2] = bad
    with pytest.raises(ValueError, match="finite"):
        ContrastiveCovariance(6).add(q, pairs[1], positive=True)


def test_unknown_weighting_is_rejected():
    with pytest.raises(ValueError, match="weighting must be one of"):
        ContrastiveCovariance(6, weighting="mean")
