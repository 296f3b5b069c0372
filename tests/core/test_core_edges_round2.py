"""Issue 16, hard edges round two, in the core (ΔC, subspaces, swaps): each case the issue found silent or unclear is
now a clear error naming the argument and what it allows, or a documented behaviour with a test."""

import pytest
import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.interventions import bootstrap_interval, swap_in_subspace, swap_metrics, swapped_attention
from qkcore.subspace import combine_bases, coordinates, principal_angles, project, random_orthonormal

G = torch.Generator().manual_seed(0)
Q = torch.randn(5, 4, generator=G)
EYE2 = torch.eye(4, dtype=torch.float64)[:, :2]
SKEW = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # not orthonormal
ATTN = torch.softmax(torch.randn(3, 6, generator=G), -1)
IDX = torch.tensor([0, 1, 2])


def huge_add():
    a = ContrastiveCovariance(4)
    a.add(torch.full((2, 4), 1e200, dtype=torch.float64), torch.full((2, 4), 1e200, dtype=torch.float64), positive=True)


def swapped_same_column():
    q, k_o, k_t = torch.randn(3, 4, generator=G), torch.randn(3, 4, generator=G), torch.randn(3, 4, generator=G)
    return swapped_attention(ATTN, q, k_o, k_t, EYE2, 0.5, IDX, IDX)


CASES = {
    # silent before: accepted, result wrong or meaningless
    "cc add overflows float64": (huge_add, ValueError, "products overflow float64.*rescale them.*Nothing was added"),
    "principal_angles zero basis": (
        lambda: principal_angles(torch.zeros(4, 2), EYE2),
        ValueError,
        "a is all zeros: it spans no subspace",
    ),
    "project non-orthonormal": (
        lambda: project(Q, SKEW),
        ValueError,
        r"basis must have orthonormal columns.*combine_bases\(\[basis\]\)",
    ),
    "coordinates non-orthonormal": (lambda: coordinates(Q, SKEW), ValueError, "basis must have orthonormal columns"),
    "combine_bases negative tol": (
        lambda: combine_bases([EYE2], tol=-1e-3),
        ValueError,
        r"tol must be a number in \[0, 1\)",
    ),
    "combine_bases tol nan": (lambda: combine_bases([EYE2], tol=float("nan")), ValueError, "tol must be a number"),
    "swap_metrics n 0": (
        lambda: swap_metrics(torch.zeros(0, 4), torch.zeros(0, 4), IDX[:0], IDX[:0]),
        ValueError,
        r"at least one trial \(n = 0 rows\)",
    ),
    "bootstrap NaN": (
        lambda: bootstrap_interval(torch.tensor([1.0, float("nan")]), G),
        ValueError,
        "values contains NaN or inf",
    ),
    "swapped_attention orig == target": (
        swapped_same_column,
        ValueError,
        "row 0: orig and target are the same column 0 but k_orig and k_target differ",
    ),
    # unclear before: an error, but not naming the argument
    "cc d_head 1e8": (lambda: ContrastiveCovariance(10**8), MemoryError, r"d_head=100000000.*GiB of float64 sums"),
    "cc device meta": (lambda: ContrastiveCovariance(4, device="meta"), ValueError, "device='meta' holds no values"),
    "principal_angles other d": (
        lambda: principal_angles(EYE2, torch.eye(5)[:, :2]),
        ValueError,
        r"b must have d = 4 rows",
    ),
    "coordinates other d": (lambda: coordinates(Q, torch.eye(5)[:, :2]), ValueError, r"basis must have d = 4 rows"),
    "project x list": (lambda: project([[1.0] * 4], EYE2), ValueError, "x must be a real floating-point tensor"),
    "random_orthonormal d float": (lambda: random_orthonormal(4.0, 2, G), TypeError, r"d must be an int, got 4\.0"),
    "random_orthonormal no generator": (
        lambda: random_orthonormal(4, 2, 0),
        TypeError,
        "generator must be a torch.Generator",
    ),
    "swap_in_subspace int keys": (
        lambda: swap_in_subspace(torch.ones(2, 4, dtype=torch.long), torch.ones(2, 4, dtype=torch.long), EYE2),
        TypeError,
        "k_orig must be a real floating-point tensor, got torch.int64",
    ),
    "swap_metrics index out of range": (
        lambda: swap_metrics(ATTN, ATTN, torch.tensor([0, 1, 9]), IDX),
        ValueError,
        "orig contains column 9, out of range for attention over 6 keys",
    ),
    "swap_metrics float index": (
        lambda: swap_metrics(ATTN, ATTN, IDX, IDX.double()),
        TypeError,
        "target must hold integer column indices, got dtype torch.float64",
    ),
    "bootstrap empty": (lambda: bootstrap_interval(torch.zeros(0), G), ValueError, "non-empty 1-D tensor"),
    "bootstrap level 1.5": (
        lambda: bootstrap_interval(torch.ones(3), G, level=1.5),
        ValueError,
        r"level must be in \(0, 1\)",
    ),
    "bootstrap n_boot 0": (
        lambda: bootstrap_interval(torch.ones(3), G, n_boot=0),
        ValueError,
        "n_boot must be an int >= 1",
    ),
    # merging and state
    "merge other head_shape": (
        lambda: ContrastiveCovariance(4).merge(ContrastiveCovariance(4, head_shape=(2,))),
        ValueError,
        "different definitions",
    ),
    "load_state_dict other d": (
        lambda: ContrastiveCovariance(4).load_state_dict(ContrastiveCovariance(3).state_dict()),
        ValueError,
        "state holds an accumulator of definition",
    ),
    "load_state_dict junk": (
        lambda: ContrastiveCovariance(4).load_state_dict({"sums": 1}),
        ValueError,
        r"state must be a dict from ContrastiveCovariance.state_dict\(\)",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_core_edge_is_a_clear_error(case):
    call, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        call()


def test_add_detaches_inputs_that_require_grad():
    q = torch.randn(3, 4, requires_grad=True)
    acc = ContrastiveCovariance(4)
    acc.add(q * 2, q, positive=True), acc.add(q, q, positive=False)
    assert not acc.delta().requires_grad and acc.delta().grad_fn is None


def test_overflowing_add_leaves_the_accumulator_unchanged():
    acc = ContrastiveCovariance(4)
    acc.add(Q, Q, positive=True)
    before = acc.state_dict()
    with pytest.raises(ValueError):
        huge_add_into(acc)
    after = acc.state_dict()
    assert after["pairs"] == before["pairs"]
    assert all(torch.equal(after["tensors"][n], t) for n, t in before["tensors"].items())


def huge_add_into(acc):
    big = torch.full((2, 4), 1e200, dtype=torch.float64)
    acc.add(big, big, positive=True)


def test_mean_share_is_nan_where_delta_is_zero():
    """Documented: the share of a zero ΔC is undefined (NaN), not 1.0; other heads keep their value."""
    acc = ContrastiveCovariance(4, head_shape=(2,))
    q = torch.randn(2, 6, 4, generator=G)
    same = torch.stack([q[0], q[1]])
    acc.add(same, same, positive=True)
    acc.add(torch.stack([q[0], 2 * q[1]]), torch.stack([q[0], q[1]]), positive=False)
    share = acc.mean_share()
    assert torch.isnan(share[0]) and torch.isfinite(share[1])


def test_combine_bases_takes_non_orthonormal_bases():
    """Documented: combine_bases orthonormalises any spanning columns (the paper's concatenate-then-QR)."""
    out = combine_bases([SKEW])
    torch.testing.assert_close(out.T @ out, torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(project(SKEW.T, out), SKEW.T)  # the same span


def test_swapped_attention_with_the_same_key_at_the_same_column_is_the_row_unchanged():
    q, k = torch.randn(3, 4, generator=G), torch.randn(3, 4, generator=G)
    out = swapped_attention(ATTN, q, k, k, EYE2, 0.5, IDX, IDX)
    torch.testing.assert_close(out, ATTN.double())
