"""ΔC of trained toy heads: rank r₁ (r₂) and the analytic subspaces span(W_Q B₁), span(W_K A₁) (paper App. B)."""

import pytest
import torch

from qkcore.subspace import principal_angles
from qkcore.toy.analysis import (
    activations,
    analyse_model,
    expected_delta,
    factor_delta,
    grid_factor_deltas,
    ground_truth_maps,
    interaction_matrix,
    reference_accuracy,
    subspace_angles,
)
from qkcore.toy.ceiling import binary_ceiling
from qkcore.toy.train import ToyTrainConfig, grid_tasks, train_grid, train_one

CONFIG = ToyTrainConfig(max_steps=400, warmup_steps=40, val_size=1024, test_size=4096)


@pytest.fixture(scope="module", params=["binary", "gaussian"])
def model(request):
    return train_one(3, 5, request.param, 16, seed=11, config=CONFIG)


def test_model_reaches_its_ceiling(model):
    reference = reference_accuracy(model.task, CONFIG.test_size)
    assert model.accuracy > reference - 0.02
    if model.config.kind == "binary":
        assert abs(reference - binary_ceiling(3, 5)) < 0.01  # Bayes-optimal on the same test sequences


def test_recovered_ranks_and_subspaces_match_the_analytic_ones(model):
    a = analyse_model(model, n_batches=20, batch_size=512)
    assert (a.z1.rank, a.z2.rank) == (3, 5)
    angles = subspace_angles(model, a)
    for name, values in angles.items():
        assert values.max() < 5.0, (name, values)
    # ... and not the other factor's span: the z1 key basis is far from span(W_K A2)
    assert principal_angles(a.z1.key_basis, ground_truth_maps(model, "z2")[1]).min() > 30
    for f in ("z1", "z2"):
        truth = expected_delta(model, f)
        assert (a.delta[f] - truth).norm() / truth.norm() < 0.05


def test_interaction_matrix_is_block_diagonal(model):
    G = interaction_matrix(model)  # (8, 8): z1 block 3×3, z2 block 5×5
    off = G[:3, 3:].square().sum() + G[3:, :3].square().sum()
    assert off / G.square().sum() < 0.05
    assert torch.diagonal(G).min() > 0  # each latent matches itself with a positive weight


def test_activations_are_the_heads_own_computation(model):
    b = model.task.sample(128, model.task.generator("figure"))
    acts = activations(model, b)
    assert acts.q.shape == (128, 16) and acts.k.shape == (128, 16, 16) and acts.attention.shape == (128, 16)
    torch.testing.assert_close(acts.attention, model.head.attention(b.x_q, b.x_ctx))
    torch.testing.assert_close(acts.logits, model.head.logits(b.x_q, b.x_ctx))
    torch.testing.assert_close(acts.attention.sum(-1), torch.ones(128))


def test_grid_deltas_equal_per_model_deltas():
    config = ToyTrainConfig(max_steps=20, warmup_steps=2, val_every=10, val_size=128, test_size=128)
    grid = train_grid(grid_tasks(seed=3, latent_dims=(3,), kinds=("binary", "gaussian")), (16, 8), config)
    deltas = grid_factor_deltas(grid, "z2", n_batches=3, batch_size=256)  # (T, G, 16, 16)
    for t in range(2):
        for g, dh in enumerate((16, 8)):
            single = factor_delta(grid.model_at(t, g), "z2", n_batches=3, batch_size=256)
            torch.testing.assert_close(deltas[t, g, :dh, :dh], single, atol=1e-5, rtol=1e-4)
            assert deltas[t, g, dh:].abs().max() == 0 if dh < 16 else True
    with pytest.raises(ValueError, match="factor"):
        factor_delta(grid.model_at(0, 0), "z3")
