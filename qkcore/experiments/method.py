"""The method chapter: ΔC, its spectrum and the rank rule on the planted bilinear example (qkcore.planted).

P = MethodParams()
result = run_method(P)          # decomposition, principal angles, the error as the number of pairs grows
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar, Literal

import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.params import check_types, require
from qkcore.planted import PlantedConfig, PlantedPairs, planted_pairs
from qkcore.subspace import Decomposition, decompose, principal_angles


@dataclass(frozen=True)
class MethodParams(PlantedConfig):
    """The planted example's fields (qkcore.planted.PlantedConfig) plus the rank rule's energy threshold; preset
    "quick" draws fewer pairs (the chapter runs in seconds either way)."""

    QUICK: ClassVar[dict] = {"n_pairs": 5000}

    energy: float = 0.99
    preset: Literal["full", "quick"] = "full"

    def __post_init__(self):
        check_types(self)
        super().__post_init__()
        require(0 < self.energy <= 1, f"energy must be in (0, 1], got {self.energy}")

    def planted(self) -> PlantedConfig:
        fields = {k: v for k, v in asdict(self).items() if k not in ("energy", "preset")}
        return PlantedConfig(**fields)


@dataclass(frozen=True)
class MethodResult:
    pairs: PlantedPairs
    delta: torch.Tensor  # (d_head, d_head) estimated ΔC
    decomposition: Decomposition
    query_angles: torch.Tensor  # (feature_rank,) degrees, recovered U_r vs span(W_Q)
    key_angles: torch.Tensor  # (feature_rank,) degrees, recovered V_r vs span(W_K)
    pair_counts: list[int]  # numbers of pairs at which the streaming estimate was read
    relative_errors: list[float]  # ‖ΔC_n − W_Q W_Kᵀ‖_F / ‖W_Q W_Kᵀ‖_F at each count
    ranks_at_counts: list[int]


def run_method(params: MethodParams) -> MethodResult:
    """Stream the planted pairs into ΔC in chunks, reading the estimate as it converges, then decompose it."""
    pairs = planted_pairs(params.planted())
    truth = pairs.true_delta
    acc = ContrastiveCovariance(params.d_head)
    counts, errors, ranks = [], [], []
    edges = sorted({min(params.n_pairs, 2**i) for i in range(4, 40) if 2 ** (i - 1) < params.n_pairs})
    lo = 0
    for hi in edges:
        acc.add(pairs.q_pos[lo:hi], pairs.k_pos[lo:hi], positive=True)
        acc.add(pairs.q_neg[lo:hi], pairs.k_neg[lo:hi], positive=False)
        lo = hi
        delta = acc.delta()
        counts.append(hi)
        errors.append(((delta - truth).norm() / truth.norm()).item())
        ranks.append(decompose(delta, params.energy).rank)
    dec = decompose(delta, params.energy)
    r = params.feature_rank
    return MethodResult(
        pairs=pairs,
        delta=delta,
        decomposition=dec,
        query_angles=principal_angles(dec.U[:, :r], pairs.query_map),
        key_angles=principal_angles(dec.V[:, :r], pairs.key_map),
        pair_counts=counts,
        relative_errors=errors,
        ranks_at_counts=ranks,
    )


def summary(result: MethodResult, params: MethodParams) -> dict[str, object]:
    """The chapter's closing numbers: planted vs recovered rank, the largest principal angles to the planted maps,
    and the relative error of ΔC with all pairs."""
    return {
        "planted rank": params.feature_rank,
        "recovered rank": result.decomposition.rank,
        "largest principal angle, query side (deg)": round(float(result.query_angles.max()), 2),
        "largest principal angle, key side (deg)": round(float(result.key_angles.max()), 2),
        f"relative error of ΔC with {params.n_pairs} pairs": round(result.relative_errors[-1], 3),
    }
