"""The cube chapter (paper Figure 3): queries and keys of the toy head inside the z₁ subspace found by ΔC_z₁.

With U, V the query and key bases of ΔC_z₁, every sequence gives a query coordinate Uᵀq and a key coordinate Vᵀk of
the target token i*; both are coloured by the target's z₁ code (its r₁ signs, 2^r₁ codes). Stacked and reduced to
3-D by PCA, the key means sit on the vertices of a cube for r₁ = 3. For r₁ > 3 the means form an r₁-dimensional
hypercube; the geometry numbers are measured in the full r₁-D coordinates and the picture is its 3-D PCA shadow.
r₁ < 3 is rejected (two signs make a square, not a cube). The Gaussian task has no codes; its points are grouped by
the signs of z₁ (orthants), whose means also sit on a hypercube's corners if the head reads z₁ linearly.

    P = CubeParams()                               # r1=3, r2=5, binary, d_head=16, seed 11
    result = run_cube(P)                           # CubeResult: coordinates, 3-D PCA, geometry of the means
    result.key_geometry.edge_ratio                 # longest / shortest cube edge (1 for a perfect cube)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from qkcore.experiments.tables import r3
from qkcore.experiments.toy.model import CONTROLS, ToyModelParams, train_and_analyse
from qkcore.experiments.toy.verdicts import Verdict, cube_verdict
from qkcore.params import require
from qkcore.subspace import coordinates, pca
from qkcore.toy.analysis import ModelAnalysis, activations
from qkcore.toy.train import TrainedModel

MIN_CUBE_R1 = 3
MAX_CUBE_R1 = 8
POINTS_PER_CODE = 10


@dataclass(frozen=True)
class CubeParams(ToyModelParams):
    """The toy model's fields (see ToyModelParams) and n_points: sequences drawn for the picture (one query and
    one target key each)."""

    QUICK: ClassVar[dict] = {**ToyModelParams.QUICK, "n_points": 1000}

    n_points: int = 2000

    def __post_init__(self):
        super().__post_init__()
        require(
            MIN_CUBE_R1 <= self.r1 <= MAX_CUBE_R1,
            f"the cube needs r1 between {MIN_CUBE_R1} and {MAX_CUBE_R1} (r1 = 3 is the paper's cube; r1 > 3 "
            f"gives a hypercube drawn by its 3-D PCA shadow; r1 = 2 would be a square), got r1={self.r1}",
        )
        require(self.r1 <= self.d_head, f"r1 = {self.r1} does not fit in d_head = {self.d_head}")
        require(
            self.n_points >= POINTS_PER_CODE * 2**self.r1,
            f"n_points = {self.n_points} is too few for 2^r1 = {2**self.r1} codes: use at least "
            f"{POINTS_PER_CODE * 2**self.r1} (about {POINTS_PER_CODE} points per code)",
        )


def sign_codes(z: torch.Tensor) -> torch.Tensor:
    """Code of each latent vector z (n, r): bit r−1−j is set when z_j > 0, so "+−+" → 0b101 = 5. Returns (n,)."""
    r = z.shape[-1]
    weights = 2 ** torch.arange(r - 1, -1, -1)  # (r,) most significant bit = first latent
    return ((z > 0).long() * weights).sum(-1)


def code_signs(r: int) -> torch.Tensor:
    """The ±1 vector of every code 0 … 2^r − 1, (2^r, r) float64; inverse of `sign_codes`."""
    codes = torch.arange(2**r)[:, None]
    bits = (codes >> torch.arange(r - 1, -1, -1)) & 1  # (2^r, r)
    return bits.double() * 2 - 1


def code_label(code: int, r: int) -> str:
    """ "+−+" for code 5 of r = 3."""
    return "".join("+" if s > 0 else "−" for s in code_signs(r)[code])


def hypercube_edges(r: int) -> list[tuple[int, int]]:
    """Pairs of codes (a, b), a < b, that differ in exactly one sign: r · 2^(r−1) edges (12 for a cube)."""
    return [(a, a ^ (1 << j)) for a in range(2**r) for j in range(r) if a < a ^ (1 << j)]


@dataclass(frozen=True)
class CubeGeometry:
    """How close 2^r code means are to a hypercube (a cube for r = 3), measured in the coordinates given.

    edge_ratio: longest / shortest of the r·2^(r−1) edges (1 for a cube). angle_min, angle_max: the angles (degrees)
    between any two edges that meet at a vertex (90 for a cube); angle_dev: their mean |angle − 90°|.
    affine_residual: share of the means' spread that the best affine image m₀ + M s of the ±1 codes s misses (0 when
    the means lie exactly on a parallelepiped, as they must if the factor enters linearly). code_share: share of the
    points' variance explained by their code means (1 when every point sits on its vertex)."""

    means: torch.Tensor  # (2^r, m) float64
    counts: torch.Tensor  # (2^r,) points per code
    edge_ratio: float
    edge_mean: float
    angle_min: float
    angle_max: float
    angle_dev: float
    affine_residual: float
    code_share: float


def cube_geometry(points: torch.Tensor, codes: torch.Tensor, r: int) -> CubeGeometry:
    """Geometry of the code means of `points` (n, m), grouped by `codes` (n,) in [0, 2^r)."""
    if points.dim() != 2 or codes.shape != (points.shape[0],):
        raise ValueError(f"points must be (n, m) and codes (n,), got {tuple(points.shape)}, {tuple(codes.shape)}")
    x = points.double()
    n_codes = 2**r
    if codes.min() < 0 or codes.max() >= n_codes:
        raise ValueError(f"codes must lie in [0, {n_codes}) for r = {r}")
    counts = torch.bincount(codes, minlength=n_codes)  # (2^r,)
    if (counts == 0).any():
        missing = [code_label(c, r) for c in torch.nonzero(counts == 0).flatten().tolist()]
        raise ValueError(f"codes {missing[:8]} have no points: draw more points (raise n_points)")
    sums = torch.zeros(n_codes, x.shape[1], dtype=torch.float64).index_add_(0, codes, x)
    means = sums / counts[:, None]  # (2^r, m)

    edges = hypercube_edges(r)
    lengths = torch.stack([(means[a] - means[b]).norm() for a, b in edges])
    angles = []
    for c in range(n_codes):
        for j, k in itertools.combinations(range(r), 2):
            e1 = means[c ^ (1 << j)] - means[c]
            e2 = means[c ^ (1 << k)] - means[c]
            cos = (e1 @ e2) / (e1.norm() * e2.norm())
            angles.append(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))))
    angles = torch.stack(angles)

    design = torch.cat([torch.ones(n_codes, 1, dtype=torch.float64), code_signs(r)], 1)  # (2^r, 1 + r)
    fit = design @ torch.linalg.lstsq(design, means).solution  # (2^r, m)
    spread = ((means - means.mean(0)) ** 2).sum()
    within = ((x - means[codes]) ** 2).sum()
    total = ((x - x.mean(0)) ** 2).sum()
    return CubeGeometry(
        means=means,
        counts=counts,
        edge_ratio=float(lengths.max() / lengths.min()),
        edge_mean=float(lengths.mean()),
        angle_min=float(angles.min()),
        angle_max=float(angles.max()),
        angle_dev=float((angles - 90).abs().mean()),
        affine_residual=float(((means - fit) ** 2).sum() / spread),
        code_share=float(1 - within / total),
    )


@dataclass(frozen=True)
class CubeResult:
    model: TrainedModel
    analysis: ModelAnalysis
    r1: int
    rank: int  # recovered rank of ΔC_z1 (the dimension of the coordinates below)
    codes: torch.Tensor  # (n,) z₁ code of the target, shared by its query and its key
    query_coords: torch.Tensor  # (n, rank) Uᵀq
    key_coords: torch.Tensor  # (n, rank) Vᵀk_{i*}
    pca_coords: torch.Tensor  # (2n, 3) stacked [queries; keys] in the 3-D PCA frame
    pca_variance: torch.Tensor  # (3,) share of the stacked points' variance per component
    query_means_3d: torch.Tensor  # (2^r1, 3)
    key_means_3d: torch.Tensor  # (2^r1, 3)
    query_geometry: CubeGeometry  # measured in the full rank-D coordinates
    key_geometry: CubeGeometry
    match_cosines: torch.Tensor  # (2^r1,) cosine of the centred query mean and key mean of each code
    match_rate: float  # share of codes whose query mean's most similar key mean (cosine) has the same code
    query_capture: float  # share of the spread of the full-space query code means that lies in span(U)
    key_capture: float  # same for the key code means and span(V)
    controls: dict[str, dict]  # "untrained", "early-stopped" → accuracy, rank, key_geometry (None if rank 0)

    @property
    def n_points(self) -> int:
        return self.codes.shape[0]


def run_cube(params: CubeParams, trained: tuple[TrainedModel, ModelAnalysis] | None = None) -> CubeResult:
    """Train and analyse the model (or reuse `trained`, see `train_and_analyse`), project a fresh batch on the z₁
    bases, measure the cube, reduce to 3-D."""
    model, analysis, trained_controls = train_and_analyse(params, trained)
    dec = analysis.z1
    require(
        dec.rank >= MIN_CUBE_R1,
        f"ΔC_z1 has recovered rank {dec.rank} < {MIN_CUBE_R1}, so there is no 3-D picture to draw; the head "
        f"did not learn z1 cleanly (see the rank-recovery chapter) — try d_head = 16 or more training steps",
    )
    task = model.task
    batch = task.sample(params.n_points, task.generator("cube"))
    rows = torch.arange(params.n_points)
    acts = activations(model, batch)
    q_coords = coordinates(acts.q, dec.query_basis)  # (n, rank)
    k_coords = coordinates(acts.k[rows, batch.target], dec.key_basis)  # (n, rank)
    codes = sign_codes(batch.z1[rows, batch.target])  # (n,)

    controls = {}
    for name in CONTROLS:
        m, a = trained_controls[name]
        k_ctl = activations(m, batch).k[rows, batch.target]
        geometry = cube_geometry(coordinates(k_ctl, a.z1.key_basis), codes, params.r1) if a.z1.rank else None
        controls[name] = {"accuracy": m.accuracy, "rank": a.z1.rank, "key_geometry": geometry}
    q_capture = _capture(acts.q, codes, params.r1, dec.query_basis)
    k_capture = _capture(acts.k[rows, batch.target], codes, params.r1, dec.key_basis)
    q_geo = cube_geometry(q_coords, codes, params.r1)
    k_geo = cube_geometry(k_coords, codes, params.r1)
    stacked = torch.cat([q_coords, k_coords])  # (2n, rank)
    coords3, comps, variance, mean = pca(stacked, 3)
    qc = q_geo.means - q_geo.means.mean(0)
    kc = k_geo.means - k_geo.means.mean(0)
    cos = torch.nn.functional.normalize(qc, dim=1) @ torch.nn.functional.normalize(kc, dim=1).T  # (2^r1, 2^r1)
    return CubeResult(
        model=model,
        analysis=analysis,
        r1=params.r1,
        rank=dec.rank,
        codes=codes,
        query_coords=q_coords,
        key_coords=k_coords,
        pca_coords=coords3,
        pca_variance=variance,
        query_means_3d=(q_geo.means - mean) @ comps,
        key_means_3d=(k_geo.means - mean) @ comps,
        query_geometry=q_geo,
        key_geometry=k_geo,
        match_cosines=cos.diagonal().clone(),
        match_rate=float((cos.argmax(1) == torch.arange(cos.shape[0])).double().mean()),
        query_capture=q_capture,
        key_capture=k_capture,
        controls=controls,
    )


def _cube_score(g: CubeGeometry | None) -> tuple[float, float]:
    """(edge ratio, largest |corner angle − 90°|); a collapsed cube (no subspace) scores (inf, 90)."""
    if g is None or not math.isfinite(g.edge_ratio):
        return (math.inf, 90.0)
    return (g.edge_ratio, max(90 - g.angle_min, g.angle_max - 90))


def verdicts(result: CubeResult) -> list[Verdict]:
    """The cube, judged on the trained head's key means and its controls'."""
    controls = {n: _cube_score(c["key_geometry"]) for n, c in result.controls.items()}
    return [cube_verdict(_cube_score(result.key_geometry), controls)]


def _capture(x: torch.Tensor, codes: torch.Tensor, r: int, basis: torch.Tensor) -> float:
    """‖P(m_c − m̄)‖² / ‖m_c − m̄‖² summed over the code means m_c of x (n, d) (full space), P = projection on
    span(basis): 1 when the subspace holds everything that tells the codes apart on average."""
    x = x.double()
    means = torch.zeros(2**r, x.shape[1], dtype=torch.float64).index_add_(0, codes, x)
    means = means / torch.bincount(codes, minlength=2**r)[:, None]  # (2^r, d)
    centred = means - means.mean(0)
    return float(coordinates(centred, basis).pow(2).sum() / centred.pow(2).sum())


def geometry_table(result: CubeResult) -> pd.DataFrame:
    """The geometry numbers of the query and key means as a small DataFrame (rows: queries, keys)."""
    rows = {}
    for name, g in (("queries Uᵀq", result.query_geometry), ("keys Vᵀk", result.key_geometry)):
        rows[name] = {
            "edge ratio": g.edge_ratio,
            "min angle": g.angle_min,
            "max angle": g.angle_max,
            "mean |angle−90|": g.angle_dev,
            "affine residual": g.affine_residual,
            "code share": g.code_share,
            "mean edge": g.edge_mean,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def summary(result: CubeResult) -> dict[str, object]:
    """The chapter's closing numbers: the key and query means' cube geometry, the PCA's kept variance and how well
    each code's query mean points at its own key mean."""
    k, q = result.key_geometry, result.query_geometry
    return {
        "rank of ΔC_z1": result.rank,
        "accuracy": r3(result.model.accuracy),
        "key means: edge ratio": r3(k.edge_ratio),
        "key means: corner angles (deg)": f"{k.angle_min:.1f}–{k.angle_max:.1f}",
        "key means: code share": r3(k.code_share),
        "query means: edge ratio": r3(q.edge_ratio),
        "query means: corner angles (deg)": f"{q.angle_min:.1f}–{q.angle_max:.1f}",
        "variance kept by 3 PCs": r3(result.pca_variance.sum()),
        "smallest cosine(query mean, key mean) of a code": r3(result.match_cosines.min()),
        "codes whose query mean is nearest their own key mean": r3(result.match_rate),
        **{f"{n} control: {k}": v for n, c in result.controls.items() for k, v in _control_numbers(c).items()},
    }


def _control_numbers(control: dict) -> dict[str, object]:
    g = control["key_geometry"]
    out = {"accuracy": r3(control["accuracy"]), "rank of ΔC_z1": control["rank"]}
    if g is None:
        return {**out, "key means": "no subspace (rank 0)"}
    return {
        **out,
        "key means: edge ratio": r3(g.edge_ratio),
        "key means: corner angles (deg)": f"{g.angle_min:.1f}–{g.angle_max:.1f}",
    }
