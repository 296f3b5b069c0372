"""The cube (Figure 3) and causal-swap (Figure 4) experiments: geometry measures on planted cubes, swap mechanics,
parameter checks, and both experiments on the trained r₁ = 3, r₂ = 5 head."""

import pytest
import torch

from qkcore.experiments.toy.causal_swaps import (
    SwapParams,
    choose_targets,
    run_causal_swaps,
    subspace_overlap,
    swap_keys,
)
from qkcore.experiments.toy.cube import CubeParams, code_signs, cube_geometry, hypercube_edges, run_cube, sign_codes
from qkcore.experiments.toy.model import train_and_analyse
from qkcore.params import from_namespace
from qkcore.subspace import pca
from qkcore.toy.task import PayloadTask, TaskBatch, TaskConfig

# ---------------------------------------------------------------- parameters


def test_papermill_overrides_are_accepted():
    p = from_namespace(SwapParams, {"seed": 3, "r2": 4, "n_random": 2})
    assert (p.r1, p.r2, p.seed, p.n_random, p.task) == (3, 4, 3, 2, "binary")
    c = from_namespace(CubeParams, {"r1": 4, "r2": 6, "seed": 3})
    assert (c.r1, c.r2, c.d_head) == (4, 6, 16)


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(r1=2), "the cube needs r1 between 3"),
        (dict(r1=9, r2=3), "the cube needs r1 between 3"),
        (dict(n_points=50), "too few for 2\\^r1 = 8"),
        (dict(task="ternary"), "task must be one of"),
        (dict(r1=12, r2=12, d_head=32), "must fit in d_model"),
        (dict(energy=0.0), "energy"),
        (dict(seed="11"), "seed"),
        (dict(max_steps=0), "max_steps"),
    ],
)
def test_cube_params_reject_bad_values(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        CubeParams(**bad)


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(r1=7, r2=7, d_head=8), "does not fit in d_head"),
        (dict(n_trials=0), "n_trials"),
        (dict(n_random=0), "n_random"),
        (dict(r2=0), "latent dims must be >= 1"),
        (dict(contrast_batches=0), "contrast_batches"),
    ],
)
def test_swap_params_reject_bad_values(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SwapParams(**bad)


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="unknown parameter"):
        from_namespace(SwapParams, {"n_trail": 10})


# ---------------------------------------------------------------- cube geometry on planted points


def test_codes_round_trip_and_edges():
    z = code_signs(4)  # (16, 4)
    assert torch.equal(sign_codes(z), torch.arange(16))
    assert sign_codes(torch.tensor([[1.0, -1.0, 1.0]])).item() == 5
    edges = hypercube_edges(3)
    assert len(edges) == 12 and len(hypercube_edges(5)) == 5 * 2**4
    assert all(bin(a ^ b).count("1") == 1 for a, b in edges)


def _planted_points(M: torch.Tensor, noise: float = 0.0, seed: int = 0):
    """Points m₀ + M s(code) (+ noise), 20 per code of r = M.shape[1]."""
    g = torch.Generator().manual_seed(seed)
    r = M.shape[1]
    codes = torch.arange(2**r).repeat(20)
    pts = (
        code_signs(r)[codes] @ M.T + 3.0 + noise * torch.randn(len(codes), M.shape[0], generator=g, dtype=torch.float64)
    )
    return pts, codes


def test_a_rotated_cube_is_a_cube():
    Q = torch.linalg.qr(torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).Q
    pts, codes = _planted_points(2.0 * Q)  # a cube of side 4 inside ℝ⁵
    g = cube_geometry(pts, codes, 3)
    assert g.edge_ratio == pytest.approx(1.0) and g.edge_mean == pytest.approx(4.0)
    assert g.angle_min == pytest.approx(90.0) and g.angle_max == pytest.approx(90.0)
    assert g.affine_residual == pytest.approx(0.0, abs=1e-12) and g.code_share == pytest.approx(1.0)


def test_a_sheared_box_is_not_a_cube():
    M = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    pts, codes = _planted_points(M, noise=0.1)
    g = cube_geometry(pts, codes, 3)
    assert g.edge_ratio == pytest.approx(2.0, rel=0.05)  # edges 2·|column|: longest 4, shortest 2
    assert g.angle_min < 70 and g.angle_max > 110  # the shear: arccos(0.5/√1.25) ≈ 63°
    assert 0.9 < g.code_share < 1.0
    bent = pts.clone()
    bent[codes == 7] += 1.0  # one vertex pushed off: no longer an affine cube
    assert cube_geometry(bent, codes, 3).affine_residual > 0.01


def test_cube_geometry_rejects_missing_codes():
    pts, codes = _planted_points(torch.eye(3, dtype=torch.float64))
    keep = codes != 6
    with pytest.raises(ValueError, match="have no points"):
        cube_geometry(pts[keep], codes[keep], 3)


def test_pca_recovers_a_planted_plane():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64)).Q
    x = torch.randn(500, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0]) @ basis.T
    coords, comps, variance, _ = pca(x, 2)
    assert variance.sum() == pytest.approx(1.0)
    assert torch.allclose(coords @ comps.T, x - x.mean(0), atol=1e-10)


# ---------------------------------------------------------------- swap mechanics and the trained head


@pytest.fixture(scope="module")
def trained():
    """The chapters' model (r1=3, r2=5, binary, d_head 16, seed 11), ΔC from 20 × 512 triples to save time."""
    return train_and_analyse(SwapParams(contrast_batches=20))


def _small_batch(n=64):
    task = PayloadTask(TaskConfig(r1=3, r2=5))
    return task, task.sample(n, task.generator("test-swaps"))


def test_choose_targets_differ_in_both_factors():
    _, b = _small_batch(256)
    target, ok = choose_targets(b, torch.Generator().manual_seed(0))
    rows = torch.arange(256)
    assert ok.all()
    assert (b.z1[rows, target] != b.z1[rows, b.target]).any(-1).all()
    assert (b.z2[rows, target] != b.z2[rows, b.target]).any(-1).all()
    same = TaskBatch(**{**b.__dict__, "z1": b.z1[rows, b.target][:, None].expand_as(b.z1).clone()})
    _, ok_same = choose_targets(same, torch.Generator().manual_seed(0))
    assert not ok_same.any()  # every position shares the query's z1: nothing qualifies


def test_full_space_swap_exchanges_the_keys(trained):
    _, b = _small_batch()
    head = trained[0].head
    target, _ = choose_targets(b, torch.Generator().manual_seed(0))
    rows = torch.arange(64)
    before = swap_keys(head, b, b.target, target, None).attention
    assert torch.allclose(before, head.attention(b.x_q, b.x_ctx))
    after = swap_keys(head, b, b.target, target, torch.eye(16, dtype=torch.float64)).attention
    assert torch.allclose(after[rows, target], before[rows, b.target], atol=1e-6)
    assert torch.allclose(after[rows, b.target], before[rows, target], atol=1e-6)


def test_subspace_overlap():
    V = torch.eye(6, dtype=torch.float64)[:, :4]
    assert subspace_overlap(V, V) == pytest.approx(1.0)
    assert subspace_overlap(V[:, :1], V) == pytest.approx(0.25)
    assert subspace_overlap(None, V) == 0.0


def test_z1_plus_z2_swap_moves_attention_and_random_does_not(trained):
    result = run_causal_swaps(SwapParams(contrast_batches=20, n_trials=500, n_random=4), trained)
    t = result.table
    assert result.n_without_target == 0 and result.n_trials == 500
    assert t.loc["none", "flip_rate"] == 0.0 and t.loc["none", "attn_orig_before"] > 0.9
    both, random = t.loc["z1+z2"], t.loc["random 8-d"]
    assert both["overlap"] == pytest.approx(1.0)
    assert both["flip_rate"] > 0.9 and both["target_shift"] > 0.85 and both["follows_target"] > 0.9
    assert random["target_shift"] < 0.5 and both["target_shift"] > 2 * random["target_shift"]
    assert both["flip_rate"] > 2 * random["flip_rate"]
    for single in ("z1", "z2"):  # one factor alone moves part of the attention
        assert 0.05 < t.loc[single, "target_shift"] < both["target_shift"]
    assert (result.random_draws.groupby("condition").size() == 4).all()


def test_cube_on_the_trained_head(trained):
    result = run_cube(CubeParams(contrast_batches=20, n_points=800), trained)
    assert result.rank == 3 and result.pca_variance.sum() == pytest.approx(1.0)
    for g in (result.key_geometry, result.query_geometry):
        assert g.edge_ratio < 1.3
        assert 70 < g.angle_min and g.angle_max < 110
        assert g.affine_residual < 0.01 and g.code_share > 0.8
    assert result.match_rate == 1.0 and result.match_cosines.min() > 0.95
    assert result.key_capture > 0.95 and result.query_capture > 0.95  # z1's code means live in span(V), span(U)


def test_trained_model_must_match_the_parameters(trained):
    with pytest.raises(ValueError, match="the trained model has"):
        run_cube(CubeParams(r2=4), trained)
