"""Null label draws for the binding contrasts at the studied heads (issue 14): ≥ 50 "random" and ≥ 50 "balanced"
relabellings of the same stored vectors, each scored exactly like the true labels, giving permutation p-values for
the low-rank claim of paper Figure 8 and the draws that the shuffled-label controls average over.

Two families per contrast (both with E[ΔC_null] = 0: the labels carry nothing about the prompt):
* order ID, "random labels": each prompt's null answer is a uniformly random clause (it is the true answer 1/n_pairs of
  the time, which is what makes the expectation exactly 0; a null that never picked the true answer would be −1/(P−1)
  times the real ΔC). "balanced labels": a stratified permutation, every clause the null answer equally often over the
  prompts (⌊n/P⌋ or ⌈n/P⌉ times when P does not divide n), so no clause's mean key leaks into the null.
* lexical ID, "random labels": a fair coin per (prompt, counterfactual) pair says which of the two is called positive;
  "balanced labels": exactly ⌊n/2⌋ pairs swapped.

The statistic is ΔC's top singular value σ₁: the strength of the rank-1 component that every low-rank claim rests
on. Because the query barely varies, a null ΔC is as low-rank as the true one (q̄ times a noise key direction), so
comparing ranks can never fail; σ₁ asks whether the true labels put more into that structure than relabelled noise
does, and fails where the labels carry nothing. (tr ΔC, the logit gap, reads only ΔC's component along the identity
and can be small for a real subspace; ‖ΔC‖_F adds the off-rank energy the rank rule discards.)

    v = order_vectors(q, k, answer)                                   # one head: q (n, d), k (n, P, d), answer (n,)
    nulls = order_nulls(v, "pair_mean", n_draws=50, generator=g)      # NullDraws: observed σ₁ and both families
    nulls.p_values()                                                  # {"random labels": p, "balanced labels": p}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qkcore.experiments.verdicts import permutation_p

FAMILIES = ("random labels", "balanced labels")
CONTROL_FAMILY = "balanced labels"  # the draws the shuffled-label controls (views, swaps, attribution) average over
MIN_NULL_DRAWS = 50


def order_label_draws(n: int, n_pairs: int, n_draws: int, balanced: bool, generator: torch.Generator) -> torch.Tensor:
    """(n_draws, n) null answer clauses: uniform per prompt, or a random permutation of a balanced label vector
    (clause c at ⌊n/P⌋ or ⌈n/P⌉ prompts, the clauses holding the extra one chosen at random)."""
    if not balanced:
        return torch.randint(n_pairs, (n_draws, n), generator=generator)
    out = []
    for _ in range(n_draws):
        base = torch.randperm(n_pairs, generator=generator).repeat(n // n_pairs + 1)[:n]  # (n,) balanced counts
        out.append(base[torch.randperm(n, generator=generator)])
    return torch.stack(out)


def lexical_flip_draws(n: int, n_draws: int, balanced: bool, generator: torch.Generator) -> torch.Tensor:
    """(n_draws, n) bool, True: the pair's counterfactual is called positive. A fair coin each, or exactly ⌊n/2⌋."""
    if not balanced:
        return torch.rand(n_draws, n, generator=generator) < 0.5
    return torch.stack([torch.randperm(n, generator=generator) < n // 2 for _ in range(n_draws)])


def order_deltas(q: torch.Tensor, k: torch.Tensor, labels: torch.Tensor, weighting: str) -> torch.Tensor:
    """ΔC for each row of labels (D, n): (D, d, d) float64. q (n, d), k (n, P, d). The positive key of prompt p is
    k[p, label]; its negatives are the other P − 1 keys, averaged ("pair_mean") or summed ("prompt_sum"):
    ΔC = (1/n) Σ_p q_p Δ_pᵀ, which equals qkcore.covariance.ContrastiveCovariance on the same pairs."""
    q, k = q.double(), k.double()
    n, P, _ = k.shape
    k_pos = k[torch.arange(n), labels]  # (D, n, d)
    k_neg = k.sum(1) - k_pos  # (D, n, d) sum of the negatives
    if weighting == "pair_mean":
        k_neg = k_neg / (P - 1)
    elif weighting != "prompt_sum":
        raise ValueError(f'weighting must be "pair_mean" or "prompt_sum", got {weighting!r}')
    return torch.einsum("nd,Dne->Dde", q, k_pos - k_neg) / n


def lexical_deltas(qp, kp, qc, kc, flips: torch.Tensor) -> torch.Tensor:
    """ΔC for each row of flips (D, n): (D, d, d) float64; qp, kp, qc, kc (n, d) the prompt's and counterfactual's
    query and answer key. Unflipped pair: (prompt +, counterfactual −); flipped: the reverse."""
    s = 1.0 - 2.0 * flips.double()  # (D, n) ±1
    n = qp.shape[0]
    return (
        torch.einsum("Dn,nd,ne->Dde", s, qp.double(), kp.double())
        - torch.einsum("Dn,nd,ne->Dde", s, qc.double(), kc.double())
    ) / n


def top_singular(deltas: torch.Tensor) -> torch.Tensor:
    """σ₁ of each ΔC (..., d, d) → (...)."""
    return torch.linalg.svdvals(deltas.double())[..., 0]


@dataclass(frozen=True)
class OrderVectors:
    """One head's order-ID vectors: q (n, d) at the last token, k (n, P, d) at the box keys, answer (n,)."""

    q: torch.Tensor
    k: torch.Tensor
    answer: torch.Tensor


@dataclass(frozen=True)
class LexicalVectors:
    """One head's lexical-ID vectors, (n, d) each: query and answer key of each prompt (qp, kp) and of its
    counterfactual (qc, kc)."""

    qp: torch.Tensor
    kp: torch.Tensor
    qc: torch.Tensor
    kc: torch.Tensor


@dataclass(frozen=True)
class NullDraws:
    """The true labels' σ₁ and, per family of FAMILIES, the σ₁ of each null draw (n_draws,); control_deltas
    (n_control, d, d): the first draws of CONTROL_FAMILY, the shuffled-label control's subspaces."""

    observed: float
    families: dict[str, torch.Tensor]
    control_deltas: torch.Tensor
    statistic: str = "σ₁(ΔC)"

    def p_values(self) -> dict[str, float]:
        """One-sided permutation p per family (verdicts.permutation_p: (1 + #{null ≥ true}) / (1 + n_draws))."""
        return {f: permutation_p(self.observed, x.tolist()) for f, x in self.families.items()}

    def table_row(self) -> dict[str, float]:
        """The true σ₁, and per family its draws' mean, 95th percentile and the p-value."""
        row = {"true σ₁": self.observed}
        for f, x in self.families.items():
            row[f"{f}: mean"] = float(x.mean())
            row[f"{f}: 95th pct"] = float(torch.quantile(x.double(), 0.95))
            row[f"{f}: p"] = permutation_p(self.observed, x.tolist())
        return row


def _draws(n_draws: int, n_control: int, make, deltas, observed: torch.Tensor) -> NullDraws:
    if not isinstance(n_draws, int) or n_draws < MIN_NULL_DRAWS:
        raise ValueError(f"n_null_draws must be an int ≥ {MIN_NULL_DRAWS} for a permutation p-value, got {n_draws!r}")
    if not 1 <= n_control <= n_draws:
        raise ValueError(f"n_control must be in [1, n_draws={n_draws}], got {n_control}")
    families, control = {}, None
    for fam in FAMILIES:
        d = deltas(make(fam == "balanced labels"))  # (D, d, d)
        families[fam] = top_singular(d)
        if fam == CONTROL_FAMILY:
            control = d[:n_control].clone()
    return NullDraws(float(top_singular(observed)), families, control)


def order_nulls(
    v: OrderVectors, weighting: str, n_draws: int, generator: torch.Generator, n_control: int = 10
) -> NullDraws:
    """Both families of null answer labels for one head's order-ID vectors (random family drawn first)."""
    n, P, _ = v.k.shape
    return _draws(
        n_draws,
        n_control,
        lambda balanced: order_label_draws(n, P, n_draws, balanced, generator),
        lambda labels: order_deltas(v.q, v.k, labels, weighting),
        order_deltas(v.q, v.k, v.answer[None], weighting)[0],
    )


def lexical_nulls(v: LexicalVectors, n_draws: int, generator: torch.Generator, n_control: int = 10) -> NullDraws:
    """Both families of null pair flips for one head's lexical-ID vectors (random family drawn first)."""
    n = v.qp.shape[0]
    return _draws(
        n_draws,
        n_control,
        lambda balanced: lexical_flip_draws(n, n_draws, balanced, generator),
        lambda flips: lexical_deltas(v.qp, v.kp, v.qc, v.kc, flips),
        lexical_deltas(v.qp, v.kp, v.qc, v.kc, torch.zeros(1, n, dtype=torch.bool))[0],
    )
