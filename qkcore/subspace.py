"""From ΔC to feature subspaces: SVD, the 99%-energy rank rule, query/key bases, combining and projecting
(the paper's §3; talk "Contrastive Covariance Method").

    dec = decompose(delta, energy=0.99)       # delta (d_query, d_key)
    dec.rank, dec.query_basis, dec.key_basis  # U[:, :r] (d_query, r), V[:, :r] (d_key, r)
    both = combine_bases([dec_a.key_basis, dec_b.key_basis])   # orthonormal (d_key, r_a + r_b) at most
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _check_energy(energy: float) -> None:
    if isinstance(energy, bool) or not isinstance(energy, (int, float)):
        raise TypeError(f"energy must be a number in (0, 1] (the paper uses 0.99), got {energy!r}")
    if not (0.0 < float(energy) <= 1.0):
        raise ValueError(f"energy must be in (0, 1] (the paper uses 0.99), got {energy}")


def rank_at_energy(singular_values: torch.Tensor, energy: float = 0.99) -> int:
    """Smallest r with σ₁² + … + σ_r² ≥ energy · Σσᵢ² (singular values sorted descending, shape (n,)).

    A zero matrix has rank 0. `energy` must lie in (0, 1]."""
    _check_energy(energy)
    s = torch.as_tensor(singular_values, dtype=torch.float64)
    if s.dim() != 1:
        raise ValueError(f"singular_values must be 1-D, got shape {tuple(s.shape)}")
    if not torch.isfinite(s).all() or (s < 0).any():
        raise ValueError("singular values must be finite and non-negative")
    if s.numel() > 1 and (s[1:] > s[:-1]).any():
        raise ValueError("singular values must be sorted in descending order (as torch.linalg.svd returns them)")
    power = s**2
    total = power.sum()
    if total == 0:
        return 0
    cumulative = torch.cumsum(power, 0) / total
    # Tolerance so that exactly-at-threshold energies (e.g. energy=1.0) are not lost to rounding.
    return int((cumulative < energy - 1e-12).sum().item()) + 1


def ranks_at_energy(deltas: torch.Tensor, energy: float = 0.99) -> torch.Tensor:
    """Rank rule for a stack of matrices (..., d_query, d_key) → integer tensor (...)."""
    _check_energy(energy)
    _check_matrix(deltas, "deltas", stacked=True)
    s = torch.linalg.svdvals(deltas.to(torch.float64))  # (..., min(d_query, d_key))
    power = s**2
    total = power.sum(-1, keepdim=True)
    cumulative = torch.cumsum(power, -1) / total.clamp_min(torch.finfo(torch.float64).tiny)
    ranks = (cumulative < energy - 1e-12).sum(-1) + 1
    return torch.where(total.squeeze(-1) == 0, torch.zeros_like(ranks), ranks)


def _check_matrix(x, name: str, stacked: bool = False) -> None:
    """A real, finite torch matrix (or stack of matrices when stacked)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point tensor, got dtype {x.dtype}")
    if x.dim() < 2 or (x.dim() != 2 and not stacked):
        want = "(..., d_query, d_key) stack of matrices" if stacked else "(d_query, d_key) matrix"
        raise ValueError(f"{name} must be a {want}, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite: found NaN or inf")


@dataclass(frozen=True)
class Decomposition:
    """ΔC = U diag(S) Vᵀ with the rank chosen by the energy rule."""

    U: torch.Tensor  # (d_query, m), m = min(d_query, d_key)
    S: torch.Tensor  # (m,) descending
    V: torch.Tensor  # (d_key, m)
    rank: int
    energy: float

    @property
    def query_basis(self) -> torch.Tensor:
        """U[:, :rank]: orthonormal basis of the feature in query space, (d_query, rank)."""
        return self.U[:, : self.rank]

    @property
    def key_basis(self) -> torch.Tensor:
        """V[:, :rank]: orthonormal basis of the feature in key space, (d_key, rank)."""
        return self.V[:, : self.rank]

    @property
    def energy_fractions(self) -> torch.Tensor:
        """σᵢ² / Σσ², (m,): the spectrum the rank rule reads."""
        power = self.S**2
        return power / power.sum() if power.sum() > 0 else power


def decompose(delta: torch.Tensor, energy: float = 0.99) -> Decomposition:
    """SVD of one ΔC (d_query, d_key) and its rank at the given energy."""
    _check_energy(energy)
    _check_matrix(delta, "delta")
    U, S, Vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
    return Decomposition(U=U, S=S, V=Vh.T, rank=rank_at_energy(S, energy), energy=float(energy))


def combine_bases(bases: list[torch.Tensor], tol: float = 1e-8) -> torch.Tensor:
    """Orthonormal basis of span(B₁ ∪ B₂ ∪ …) (paper: concatenate, then QR with signs fixed).

    Gram–Schmidt in float64 over the concatenated columns, in order: for full-rank input this is the QR
    factor with a positive diagonal of R (so the result is deterministic). A column whose remainder after
    projecting out the earlier ones is below `tol` × its norm adds no new direction and is skipped, so the
    result has dim(span) columns — e.g. five rank-1 key bases that are linearly dependent give 4 columns.
    The input bases need not be orthonormal (any spanning columns). Returns (d, r_total)."""
    if isinstance(bases, torch.Tensor) or not bases:
        raise ValueError("combine_bases needs a non-empty list of (d, r_i) bases")
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < 1:
        raise ValueError(f"tol must be a number in [0, 1) (a fraction of each column's norm), got {tol!r}")
    for i, b in enumerate(bases):
        _check_matrix(b, f"bases[{i}]")
    dims = {b.shape[0] for b in bases}
    if len(dims) != 1:
        raise ValueError(f"bases must all be (d, r_i) with the same d, got {[tuple(b.shape) for b in bases]}")
    columns = torch.cat([b.to(torch.float64) for b in bases], dim=1)  # (d, Σ r_i)
    kept: list[torch.Tensor] = []
    for j in range(columns.shape[1]):
        v = columns[:, j].clone()
        norm0 = v.norm()
        if norm0 == 0:
            continue
        for _ in range(2):  # twice is enough (re-orthogonalisation)
            for u in kept:
                v -= (u @ v) * u
        if v.norm() > tol * norm0:
            kept.append(v / v.norm())
    if not kept:
        raise ValueError("the bases span nothing (all columns are zero)")
    return torch.stack(kept, dim=1)


def _check_basis(basis, name: str, d: int | None = None, orthonormal: bool = True) -> None:
    """A real (d, r) matrix; with `orthonormal`, BᵀB = I (to 1e-4, float32 bases pass); with d, of that height."""
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2 or not basis.is_floating_point():
        shape = tuple(basis.shape) if isinstance(basis, torch.Tensor) else type(basis).__name__
        raise ValueError(f"{name} must be a real floating-point (d, r) matrix of column vectors, got {shape}")
    if d is not None and basis.shape[0] != d:
        raise ValueError(f"{name} must have d = {d} rows (the vectors' size), got shape {tuple(basis.shape)}")
    if orthonormal:
        b = basis.double()
        if not torch.allclose(b.T @ b, torch.eye(b.shape[1], dtype=b.dtype), atol=1e-4):
            raise ValueError(
                f"{name} must have orthonormal columns (BᵀB = I); orthonormalise it first with combine_bases([{name}])"
            )


def _check_vectors(x, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.is_floating_point():
        raise ValueError(f"{name} must be a real floating-point tensor of vectors (..., d), got {x!r:.80}")


def coordinates(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Coordinates of vectors in an orthonormal basis: x (..., d), basis (d, r) → (..., r)."""
    _check_vectors(x, "x")
    _check_basis(basis, "basis", x.shape[-1])
    return x.to(basis.dtype) @ basis


def project(x: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthogonal projection onto span(basis): x (..., d) → (..., d), same dtype as x. basis: orthonormal (d, r)."""
    _check_vectors(x, "x")
    _check_basis(basis, "basis", x.shape[-1])
    b = basis.to(x.dtype)
    return (x @ b) @ b.T


def principal_angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees between span(a) (d, r_a) and span(b) (d, r_b), ascending, (min(r_a, r_b),).
    Any bases of the two spans will do (they are orthonormalised here); an all-zero one spans nothing: refused."""
    _check_basis(a, "a", orthonormal=False)
    _check_basis(b, "b", a.shape[0], orthonormal=False)
    for name, m in (("a", a), ("b", b)):
        if not (m != 0).any():
            raise ValueError(f"{name} is all zeros: it spans no subspace, so it has no angles to another")
    qa = torch.linalg.qr(a.to(torch.float64)).Q
    qb = torch.linalg.qr(b.to(torch.float64)).Q
    cosines = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cosines))


def random_orthonormal(d: int, r: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random r-dimensional orthonormal basis of ℝ^d, (d, r): the baseline subspace of equal rank."""
    for name, v in (("d", d), ("r", r)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (seeded), got {type(generator).__name__}")
    if not (0 < r <= d):
        raise ValueError(f"need 0 < r <= d, got r={r}, d={d}")
    g = torch.randn(d, r, generator=generator, dtype=torch.float64)
    q, rr = torch.linalg.qr(g)
    return q * torch.sign(torch.diagonal(rr))


def pca(x: torch.Tensor, k: int, pad: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of the rows of x (n, m) to k components: (coords (n, k), components (m, k), variance fractions (k,),
    mean (m,)), float64. Signs are fixed so that each component's largest loading is positive (the same picture on
    every run). With pad=True, fewer than k available components are zero-padded to k (a rank-2 cloud drawn in 3-D).
    The book's one PCA: the cube (Figure 3), the filter keys (Figure 6) and the binding views (Figure 8)."""
    x = torch.as_tensor(x).double()
    if x.dim() != 2:
        raise ValueError(f"x must be a 2-D (n, m) matrix of row vectors, got shape {tuple(x.shape)}")
    available = min(x.shape)
    if not (1 <= k and (pad or k <= available)):
        raise ValueError(f"need 1 <= k <= min{tuple(x.shape)} = {available} (or pad=True), got k={k}")
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    kept = min(k, available)
    comps = vh[:kept].T  # (m, kept)
    comps = comps * torch.sign(comps.gather(0, comps.abs().argmax(0, keepdim=True)))  # largest loading > 0
    coords = (x - mean) @ comps  # (n, kept)
    total = (s**2).sum()
    variance = (s[:kept] ** 2) / total if total > 0 else torch.zeros(kept, dtype=x.dtype)
    if kept < k:
        coords = torch.cat([coords, coords.new_zeros(len(x), k - kept)], 1)
        comps = torch.cat([comps, comps.new_zeros(x.shape[1], k - kept)], 1)
        variance = torch.cat([variance, variance.new_zeros(k - kept)])
    return coords, comps, variance, mean
