"""qkcore: decompose query-key interactions with contrastive covariances.

The executable companion to Lee, Belinkov, Viégas & Wattenberg (2026), *Decomposing Query-Key Feature Interactions
Using Contrastive Covariances*, arXiv 2602.04752.

    from qkcore import ContrastiveCovariance, decompose
    acc = ContrastiveCovariance(d_head=16); acc.add(q_pos, k_pos, positive=True); acc.add(q_neg, k_neg, positive=False)
    dec = decompose(acc.delta())          # dec.rank, dec.query_basis, dec.key_basis
"""

from qkcore.covariance import ContrastiveCovariance, contrastive_covariance
from qkcore.interventions import swap_in_subspace, swap_metrics
from qkcore.subspace import (
    Decomposition,
    combine_bases,
    coordinates,
    decompose,
    principal_angles,
    project,
    random_orthonormal,
    rank_at_energy,
    ranks_at_energy,
)

__all__ = [
    "ContrastiveCovariance",
    "contrastive_covariance",
    "Decomposition",
    "decompose",
    "rank_at_energy",
    "ranks_at_energy",
    "combine_bases",
    "coordinates",
    "project",
    "principal_angles",
    "random_orthonormal",
    "swap_in_subspace",
    "swap_metrics",
]
