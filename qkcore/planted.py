"""A planted bilinear example whose answer is known: the method's first check (the book's "method" chapter).

A feature f ∈ ℝʳ (r = `feature_rank`) is written into queries by W_Q and into keys by W_K; a nuisance u ∈ ℝᵐ that
every key carries, independent of the query, is written by N_K; the query also carries its own nuisance N_Q v.

    q = W_Q f + N_Q v + ε                 (d_head,)
    k⁺ = W_K f  + N_K u + ε               positive key: same feature as the query
    k⁻ = W_K f′ + N_K u + ε               negative key: an independent feature f′, the same nuisance u

f, f′, u, v ~ N(0, I) (or ±1 with `latent="sign"`). Everything but the shared feature is equal in distribution between
the two sets, so ΔC = E[q k⁺ᵀ] − E[q k⁻ᵀ] = W_Q Cov(f) W_Kᵀ = W_Q W_Kᵀ: rank r, column space span(W_Q), row space
span(W_K). With finitely many pairs the estimate carries sampling noise of order 1/√n_pairs.

    pairs = planted_pairs(PlantedConfig(d_head=16, feature_rank=3))
    dec = decompose(contrastive_covariance(pairs.q_pos, pairs.k_pos, pairs.q_neg, pairs.k_neg))
    principal_angles(dec.query_basis, pairs.query_map)   # ≈ 0°
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class PlantedConfig:
    d_head: int = 16
    feature_rank: int = 3
    nuisance_rank: int = 4
    n_pairs: int = 20_000
    noise: float = 0.01
    latent: Literal["gaussian", "sign"] = "gaussian"
    seed: int = 0

    def __post_init__(self):
        for name in ("d_head", "feature_rank", "nuisance_rank", "n_pairs", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if not isinstance(self.noise, (int, float)) or isinstance(self.noise, bool) or not math.isfinite(self.noise):
            raise TypeError(f"noise must be a finite number, got {self.noise!r}")
        _require(self.latent in ("gaussian", "sign"), f'latent must be "gaussian" or "sign", got {self.latent!r}')
        _require(self.d_head >= 1, f"d_head must be >= 1, got {self.d_head}")
        _require(
            1 <= self.feature_rank <= self.d_head,
            f"feature_rank must be in [1, d_head={self.d_head}], got {self.feature_rank}",
        )
        _require(self.nuisance_rank >= 0, f"nuisance_rank must be >= 0, got {self.nuisance_rank}")
        _require(self.n_pairs >= 2, f"n_pairs must be >= 2, got {self.n_pairs}")
        _require(self.noise >= 0, f"noise must be >= 0, got {self.noise}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PlantedPairs:
    q_pos: torch.Tensor  # (n_pairs, d_head)
    k_pos: torch.Tensor  # (n_pairs, d_head)
    q_neg: torch.Tensor  # (n_pairs, d_head)
    k_neg: torch.Tensor  # (n_pairs, d_head)
    query_map: torch.Tensor  # W_Q (d_head, feature_rank)
    key_map: torch.Tensor  # W_K (d_head, feature_rank)

    @property
    def true_delta(self) -> torch.Tensor:
        """The population ΔC = W_Q W_Kᵀ (d_head, d_head)."""
        return self.query_map @ self.key_map.T


def planted_pairs(config: PlantedConfig) -> PlantedPairs:
    """Draw positive and negative (q, k) pairs of the planted model (see the module docstring)."""
    g = torch.Generator().manual_seed(config.seed)
    d, r, m, n = config.d_head, config.feature_rank, config.nuisance_rank, config.n_pairs

    def latent(*shape: int) -> torch.Tensor:
        z = torch.randn(*shape, generator=g, dtype=torch.float64)
        return torch.sign(z) if config.latent == "sign" else z

    def noise(*shape: int) -> torch.Tensor:
        return config.noise * torch.randn(*shape, generator=g, dtype=torch.float64)

    W_Q = torch.randn(d, r, generator=g, dtype=torch.float64) / r**0.5  # (d, r)
    W_K = torch.randn(d, r, generator=g, dtype=torch.float64) / r**0.5  # (d, r)
    N_Q = torch.randn(d, m, generator=g, dtype=torch.float64) / max(m, 1) ** 0.5  # (d, m)
    N_K = torch.randn(d, m, generator=g, dtype=torch.float64) / max(m, 1) ** 0.5  # (d, m)

    def queries(f: torch.Tensor) -> torch.Tensor:
        return f @ W_Q.T + latent(n, m) @ N_Q.T + noise(n, d)  # (n, d)

    f_pos, f_neg = latent(n, r), latent(n, r)  # query features of the two sets, (n, r)
    q_pos, q_neg = queries(f_pos), queries(f_neg)
    u_pos, u_neg = latent(n, m), latent(n, m)  # key nuisances, same distribution in both sets
    k_pos = f_pos @ W_K.T + u_pos @ N_K.T + noise(n, d)  # shares f with its query
    k_neg = latent(n, r) @ W_K.T + u_neg @ N_K.T + noise(n, d)  # independent feature f′
    return PlantedPairs(q_pos, k_pos, q_neg, k_neg, W_Q, W_K)
