"""Swaps inside a key subspace, and the swap metrics."""

import pytest
import torch

from qkcore.interventions import swap_in_subspace, swap_metrics
from qkcore.subspace import random_orthonormal


def test_swap_exchanges_inside_and_keeps_outside():
    g = torch.Generator().manual_seed(0)
    basis = random_orthonormal(8, 3, g)
    a, b = torch.randn(5, 8, generator=g, dtype=torch.float64), torch.randn(5, 8, generator=g, dtype=torch.float64)
    new_a, new_b = swap_in_subspace(a, b, basis)
    torch.testing.assert_close(new_a @ basis, b @ basis)
    torch.testing.assert_close(new_b @ basis, a @ basis)
    outside = torch.eye(8, dtype=torch.float64) - basis @ basis.T
    torch.testing.assert_close(new_a @ outside, a @ outside)
    torch.testing.assert_close(new_b @ outside, b @ outside)
    # swapping twice is the identity
    back_a, back_b = swap_in_subspace(new_a, new_b, basis)
    torch.testing.assert_close(back_a, a)
    torch.testing.assert_close(back_b, b)


def test_swap_rejects_non_orthonormal_or_mismatched_inputs():
    a = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="orthonormal"):
        swap_in_subspace(a, a, 2 * torch.eye(4)[:, :2])
    with pytest.raises(ValueError, match="basis must be"):
        swap_in_subspace(a, a, torch.eye(5)[:, :2])
    with pytest.raises(ValueError, match="must match"):
        swap_in_subspace(a, torch.zeros(3, 4), torch.eye(4)[:, :2])


def test_swap_metrics_on_a_hand_made_example():
    before = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.1, 0.3]])
    after = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]])
    m = swap_metrics(before, after, orig=torch.tensor([0, 0]), target=torch.tensor([1, 2]))
    assert m["attn_orig_before"] == pytest.approx(0.65)
    assert m["attn_target_before"] == pytest.approx(0.25)
    assert m["attn_orig_after"] == pytest.approx(0.35)
    assert m["attn_target_after"] == pytest.approx(0.55)
    assert m["target_shift"] == pytest.approx(0.30)
    assert m["flip_rate"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="orig and target"):
        swap_metrics(before, after, torch.tensor([0]), torch.tensor([1, 2]))
