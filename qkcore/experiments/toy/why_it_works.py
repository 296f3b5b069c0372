"""The why-it-works chapter (paper Appendix B, Figure 5): recovered subspaces against the analytic ones.

ΔC_z₁ = W_Q B₁ A₁ᵀ W_Kᵀ in expectation, so its top-r₁ left/right singular vectors should span W_Q B₁ and W_K A₁;
the interaction matrix G = (W_Q B)ᵀ(W_K A) should be block-diagonal.

    P = WhyItWorksParams(r1=3, r2=5, task="binary", d_head=16, seed=11)
    result = run_why_it_works(P)   # angles, G, estimated vs expected ΔC
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qkcore.experiments.tables import r3
from qkcore.experiments.toy.model import CONTROLS, ToyModelParams, train_and_analyse
from qkcore.experiments.toy.verdicts import Verdict, analytic_form_verdict, crosstalk_verdict
from qkcore.params import require
from qkcore.subspace import principal_angles
from qkcore.toy.analysis import (
    ModelAnalysis,
    expected_delta,
    ground_truth_maps,
    interaction_matrix,
    reference_accuracy,
    subspace_angles,
)
from qkcore.toy.task import FACTORS
from qkcore.toy.train import TrainedModel


@dataclass(frozen=True)
class WhyItWorksParams(ToyModelParams):
    """One toy model (the fields of ToyModelParams), which must hold both factors: r1 + r2 <= d_head."""

    def __post_init__(self):
        super().__post_init__()
        require(
            self.r1 + self.r2 <= self.d_head,
            f"r1 + r2 = {self.r1 + self.r2} does not fit in d_head = {self.d_head}: the head cannot hold both "
            "factors, so there is no clean subspace to compare (the rank-recovery chapter shows what happens); "
            "raise d_head or lower r1, r2",
        )


@dataclass(frozen=True)
class WhyItWorksResult:
    model: TrainedModel
    analysis: ModelAnalysis
    angles: dict[str, torch.Tensor]  # "z1/query", "z1/key", ... → degrees, recovered vs analytic
    cross_angles: dict[str, torch.Tensor]  # "z1/query" → recovered z₁ basis vs the *other* factor's map
    relative_error: dict[str, float]  # ‖ΔC_est − E[ΔC]‖_F / ‖E[ΔC]‖_F per factor
    G: torch.Tensor  # (r1 + r2, r1 + r2) interaction matrix
    reference: float  # accuracy of the ideal single head on the model's test sequences
    controls: dict[str, dict]  # "untrained", "early-stopped" → accuracy, ranks, largest angle, G, crosstalk


def run_why_it_works(params: WhyItWorksParams) -> WhyItWorksResult:
    """Train (or re-train: deterministic, seconds) the model, estimate ΔC_z₁, ΔC_z₂ and compare with the analytic
    subspaces span(W_Q B_f), span(W_K A_f)."""
    from qkcore.experiments.toy.rank_recovery import crosstalk

    model, analysis, trained_controls = train_and_analyse(params)
    controls = {}
    for name in CONTROLS:
        m, a = trained_controls[name]
        G = interaction_matrix(m)
        angles = subspace_angles(m, a) if a.z1.rank and a.z2.rank else {}
        controls[name] = {
            "accuracy": m.accuracy,
            "ranks": (a.z1.rank, a.z2.rank),
            "largest angle": max((float(v.max()) for v in angles.values()), default=float("nan")),
            "G": G,
            "crosstalk": crosstalk(G, params.r1),
        }
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
    return WhyItWorksResult(
        model=model,
        analysis=analysis,
        angles=subspace_angles(model, analysis),
        cross_angles=cross,
        relative_error=errors,
        G=interaction_matrix(model),
        reference=reference_accuracy(model.task, model.train_config.test_size),
        controls=controls,
    )


def verdicts(result: WhyItWorksResult) -> list[Verdict]:
    """App. B's analytic form (largest principal angle to the analytic spans) and G's block structure, each judged
    on the trained head and its controls: [analytic form, interaction matrix]."""
    from qkcore.experiments.toy.rank_recovery import crosstalk

    angle = max(float(v.max()) for v in result.angles.values())
    trained = round(crosstalk(result.G, result.model.config.r1), 4)
    return [
        analytic_form_verdict(angle, {n: c["largest angle"] for n, c in result.controls.items()}),
        crosstalk_verdict(trained, {n: round(c["crosstalk"], 4) for n, c in result.controls.items()}),
    ]


def summary(result: WhyItWorksResult) -> dict[str, object]:
    """The chapter's closing numbers: recovered ranks, angles to the analytic spans and to the other factor's, the
    relative error of ΔC against its closed form, and the crosstalk of G."""
    from qkcore.experiments.toy.rank_recovery import crosstalk

    a, c = result.analysis, result.model.config
    return {
        "recovered ranks": f"{a.z1.rank}, {a.z2.rank} (true {c.r1}, {c.r2})",
        "accuracy": r3(result.model.accuracy),
        "largest principal angle to the analytic spans (deg)": round(
            max(float(v.max()) for v in result.angles.values()), 2
        ),
        "smallest angle to the other factor's spans (deg)": round(
            min(float(v.min()) for v in result.cross_angles.values()), 1
        ),
        "relative error of ΔC vs closed form, z1": r3(result.relative_error["z1"]),
        "relative error of ΔC vs closed form, z2": r3(result.relative_error["z2"]),
        "crosstalk of G": round(crosstalk(result.G, c.r1), 4),
        **{f"{n} control: crosstalk of G": round(ctl["crosstalk"], 4) for n, ctl in result.controls.items()},
        **{
            f"{n} control: ranks, largest angle to the analytic spans (deg)": (
                f"{ctl['ranks'][0]}, {ctl['ranks'][1]}; {ctl['largest angle']:.2f}"
            )
            for n, ctl in result.controls.items()
        },
        **{f"{n} control: accuracy": r3(ctl["accuracy"]) for n, ctl in result.controls.items()},
    }
