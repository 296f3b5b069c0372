"""The rank rule, the SVD bases, combining and projecting; the planted example recovered exactly."""

import pytest
import torch

from qkcore.covariance import contrastive_covariance
from qkcore.planted import PlantedConfig, planted_pairs
from qkcore.subspace import (
    combine_bases,
    coordinates,
    decompose,
    principal_angles,
    project,
    random_orthonormal,
    rank_at_energy,
    ranks_at_energy,
)


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_planted_rank_and_subspaces_are_recovered(rank):
    pairs = planted_pairs(PlantedConfig(d_head=16, feature_rank=rank, n_pairs=40_000, seed=rank))
    dec = decompose(contrastive_covariance(pairs.q_pos, pairs.k_pos, pairs.q_neg, pairs.k_neg))
    assert dec.rank == rank
    assert principal_angles(dec.query_basis, pairs.query_map).max() < 5.0
    assert principal_angles(dec.key_basis, pairs.key_map).max() < 5.0


def test_exact_low_rank_matrix_is_recovered_exactly():
    g = torch.Generator().manual_seed(0)
    W_Q, W_K = (
        torch.randn(16, 4, generator=g, dtype=torch.float64),
        torch.randn(16, 4, generator=g, dtype=torch.float64),
    )
    dec = decompose(W_Q @ W_K.T)
    assert dec.rank == 4
    assert principal_angles(dec.query_basis, W_Q).max() < 1e-5
    assert principal_angles(dec.key_basis, W_K).max() < 1e-5
    torch.testing.assert_close(dec.query_basis.T @ dec.query_basis, torch.eye(4, dtype=torch.float64))


def test_rank_rule_counts_energy_not_magnitude():
    # energies 0.81, 0.16, 0.02, 0.01 of the total: 97% after two, 99% after three
    s = torch.tensor([0.9, 0.4, 0.02**0.5, 0.1], dtype=torch.float64)
    assert rank_at_energy(s, 0.97) == 2
    assert rank_at_energy(s, 0.99) == 3
    assert rank_at_energy(s, 1.0) == 4
    assert rank_at_energy(s, 0.5) == 1


def test_rank_of_zero_matrix_is_zero():
    assert rank_at_energy(torch.zeros(5)) == 0
    assert decompose(torch.zeros(4, 4)).rank == 0
    assert ranks_at_energy(torch.zeros(2, 4, 4)).tolist() == [0, 0]


def test_batched_ranks_equal_one_by_one():
    g = torch.Generator().manual_seed(5)
    stack = torch.stack([torch.randn(8, r, generator=g) @ torch.randn(r, 8, generator=g) for r in (1, 2, 5)])
    assert ranks_at_energy(stack).tolist() == [decompose(m).rank for m in stack] == [1, 2, 5]


@pytest.mark.parametrize("energy", [0.0, -0.1, 1.01, float("nan")])
def test_energy_outside_unit_interval_is_rejected(energy):
    with pytest.raises(ValueError, match="energy must be in"):
        rank_at_energy(torch.tensor([1.0, 0.5]), energy)
    with pytest.raises(ValueError, match="energy must be in"):
        decompose(torch.eye(3), energy)


def test_bad_singular_values_and_matrices_are_rejected():
    with pytest.raises(ValueError, match="descending"):
        rank_at_energy(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="matrix"):
        decompose(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="finite"):
        decompose(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def test_combine_bases_is_orthonormal_and_spans_the_union():
    g = torch.Generator().manual_seed(6)
    a = torch.linalg.qr(torch.randn(10, 2, generator=g, dtype=torch.float64)).Q
    b = torch.linalg.qr(torch.randn(10, 3, generator=g, dtype=torch.float64)).Q
    both = combine_bases([a, b])
    assert both.shape == (10, 5)
    torch.testing.assert_close(both.T @ both, torch.eye(5, dtype=torch.float64))
    assert principal_angles(both, torch.cat([a, b], 1)).max() < 1e-5
    # Signs fixed: the first column points along the first input column.
    assert (both[:, 0] @ a[:, 0]) > 0.999


def test_combine_bases_drops_dependent_directions():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(10, 1, generator=g, dtype=torch.float64)
    b = torch.randn(10, 1, generator=g, dtype=torch.float64)
    assert combine_bases([a, b, a + 2 * b]).shape == (10, 2)
    with pytest.raises(ValueError, match="same d"):
        combine_bases([a, torch.zeros(9, 1)])
    with pytest.raises(ValueError, match="span nothing"):
        combine_bases([torch.zeros(10, 2)])


def test_projection_and_coordinates():
    g = torch.Generator().manual_seed(8)
    basis = random_orthonormal(6, 2, g)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    p = project(x, basis)
    torch.testing.assert_close(project(p, basis), p)
    torch.testing.assert_close(coordinates(p, basis), coordinates(x, basis))
    torch.testing.assert_close(((x - p) @ basis), torch.zeros(4, 2, dtype=torch.float64))


def test_random_orthonormal_is_seeded_and_orthonormal():
    a = random_orthonormal(8, 3, torch.Generator().manual_seed(1))
    b = random_orthonormal(8, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    torch.testing.assert_close(a.T @ a, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="0 < r <= d"):
        random_orthonormal(3, 4, torch.Generator())


def test_planted_pairs_are_deterministic_and_validated():
    a, b = planted_pairs(PlantedConfig(n_pairs=100)), planted_pairs(PlantedConfig(n_pairs=100))
    assert torch.equal(a.q_pos, b.q_pos) and torch.equal(a.k_neg, b.k_neg)
    with pytest.raises(ValueError, match="feature_rank"):
        PlantedConfig(d_head=4, feature_rank=5)
    with pytest.raises(TypeError, match="d_head"):
        PlantedConfig(d_head=4.5)
