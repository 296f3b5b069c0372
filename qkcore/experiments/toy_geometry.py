"""The why-it-works chapter (paper Appendix B, Figure 5): recovered subspaces against the analytic ones.

ΔC_z₁ = W_Q B₁ A₁ᵀ W_Kᵀ in expectation, so its top-r₁ left/right singular vectors should span W_Q B₁ and W_K A₁;
the interaction matrix G = (W_Q B)ᵀ(W_K A) should be block-diagonal.

    P = WhyItWorksParams(r1=3, r2=5, task="binary", d_head=16, seed=11)
    result = run_why_it_works(P)   # angles, G, estimated vs expected ΔC
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qkcore.params import check_types, require
from qkcore.subspace import principal_angles
from qkcore.toy.analysis import (ModelAnalysis, analyse_model, expected_delta, ground_truth_maps,
                                 interaction_matrix, reference_accuracy, subspace_angles)
from qkcore.toy.task import FACTORS, TASK_KINDS, TaskConfig
from qkcore.toy.train import ToyTrainConfig, TrainedModel, train_one

N_PAYLOADS = TaskConfig().n_payloads
D_MODEL = TaskConfig().d_model


@dataclass(frozen=True)
class WhyItWorksParams:
    """One toy model: latent dims r1, r2; task "binary" or "gaussian"; head width d_head; seed (task, data and
    init); energy: the rank rule's threshold; contrast_batches × contrast_batch_size triples per ΔC (authors:
    80 × 512); lr, max_steps: training (see qkcore.toy.train)."""

    r1: int = 3
    r2: int = 5
    task: str = "binary"
    d_head: int = 16
    seed: int = 11
    energy: float = 0.99
    contrast_batches: int = 80
    contrast_batch_size: int = 512
    lr: float = 1e-2
    max_steps: int = 1000

    def __post_init__(self):
        check_types(self)
        require(self.task in TASK_KINDS, f"task must be one of {TASK_KINDS}, got {self.task!r}")
        require(self.r1 >= 1 and self.r2 >= 1, f"latent dims must be >= 1, got r1={self.r1}, r2={self.r2}")
        require(self.r1 + self.r2 + N_PAYLOADS <= D_MODEL,
                f"r1 + r2 + {N_PAYLOADS} payloads must fit in d_model = {D_MODEL}, got r1 + r2 = {self.r1 + self.r2}")
        require(self.d_head >= 1, f"d_head must be >= 1, got {self.d_head}")
        require(self.r1 + self.r2 <= self.d_head,
                f"r1 + r2 = {self.r1 + self.r2} does not fit in d_head = {self.d_head}: the head cannot hold both "
                "factors, so there is no clean subspace to compare (the rank-recovery chapter shows what happens); "
                "raise d_head or lower r1, r2")
        require(0 < self.energy <= 1, f"energy must be in (0, 1] (the paper uses 0.99), got {self.energy}")
        require(self.contrast_batches >= 1 and self.contrast_batch_size >= 1,
                "contrast_batches and contrast_batch_size must be >= 1")
        self.train_config()

    def train_config(self) -> ToyTrainConfig:
        return ToyTrainConfig(lr=self.lr, max_steps=self.max_steps, warmup_steps=min(100, self.max_steps // 10))


@dataclass(frozen=True)
class WhyItWorksResult:
    model: TrainedModel
    analysis: ModelAnalysis
    angles: dict[str, torch.Tensor]  # "z1/query", "z1/key", ... → degrees, recovered vs analytic
    cross_angles: dict[str, torch.Tensor]  # "z1/query" → recovered z₁ basis vs the *other* factor's map
    relative_error: dict[str, float]  # ‖ΔC_est − E[ΔC]‖_F / ‖E[ΔC]‖_F per factor
    G: torch.Tensor  # (r1 + r2, r1 + r2) interaction matrix
    reference: float  # accuracy of the ideal single head on the model's test sequences


def run_why_it_works(params: WhyItWorksParams) -> WhyItWorksResult:
    """Train (or re-train: deterministic, seconds) the model, estimate ΔC_z₁, ΔC_z₂ and compare with the analytic
    subspaces span(W_Q B_f), span(W_K A_f)."""
    model = train_one(params.r1, params.r2, params.task, params.d_head, params.seed, params.train_config())
    analysis = analyse_model(model, params.energy, params.contrast_batches, params.contrast_batch_size)
    cross = {}
    for f, other in zip(FACTORS, reversed(FACTORS)):
        q_map, k_map = ground_truth_maps(model, other)
        dec = analysis.decomposition[f]
        cross[f"{f}/query"] = principal_angles(dec.query_basis, q_map)
        cross[f"{f}/key"] = principal_angles(dec.key_basis, k_map)
    errors = {}
    for f in FACTORS:
        truth = expected_delta(model, f)
        errors[f] = float((analysis.delta[f] - truth).norm() / truth.norm())
    return WhyItWorksResult(model=model, analysis=analysis, angles=subspace_angles(model, analysis),
                            cross_angles=cross, relative_error=errors, G=interaction_matrix(model),
                            reference=reference_accuracy(model.task, model.train_config.test_size))
