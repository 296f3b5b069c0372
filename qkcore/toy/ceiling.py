"""The best accuracy the toy task allows (the ceiling beside each model's accuracy in Figure 2's chapter).

Binary task (exact). The query reveals the target's full code (z₁*, z₂*) but not its position. Each of the C − 1
other context tokens carries the same r₁ + r₂ signs with probability p = 2^−(r₁+r₂), independently, so the set of
matching positions has size m = 1 + Binomial(C − 1, p). Given the inputs, i* is uniform over those m positions
(noise 0.01 cannot make a code differing in one sign look like a match), so the Bayes-optimal answer is the most
frequent payload among them and is right with probability (max count)/m. The m payloads are i.i.d. uniform over
P classes, hence

    ceiling = Σ_m P(m) · E[max count of m balls in P boxes] / m,

computed in exact rational arithmetic: P(max ≤ t) = #{ways to put m labelled balls in P boxes, at most t per box}
/ P^m, counted box by box with binomial coefficients. r₁ = 3, r₂ = 5, C = 16, P = 10 gives 0.97415…

Gaussian task. Two tokens share a code with probability 0, so the Bayes ceiling is 1 up to the chance that noise
ε ~ N(0, 0.01²) makes two codes indistinguishable; `gaussian_bayes_error_bound` bounds that chance (below 2e-4
for every task of the grid, seed 11). But a single head cannot reach it: its logit q·k_i = x_qᵀ W_QᵀW_K x_i is
bilinear, so it ranks context tokens by an inner product z*ᵀ M z_i and can never prefer "equal to z*" over
"further along z*" — no ‖z_i‖² term exists. `bilinear_head_reference` estimates the accuracy of the ideal such
head (M = I, zero temperature: attend to the top inner products, answer the most attended payload) by Monte
Carlo. M = I is the natural choice, not a proven optimum; the trained heads land within a few tenths of a point
of it. For the binary task that head is exactly Bayes-optimal (all codes have norm √r, so z*·z_i is maximal only
for exact matches).

    binary_ceiling(3, 5)                         # 0.97415... (float); binary_ceiling_fraction(3, 5) exact
    bilinear_head_reference(3, 3, "gaussian")    # ≈ 0.78: what the best single head can reach
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import torch

from qkcore.toy.task import TASK_KINDS, PayloadTask, derive_seed


@cache
def max_count_distribution(m: int, n_classes: int) -> tuple[Fraction, ...]:
    """Exact law of the largest class count when m balls fall uniformly into n_classes boxes:
    a tuple whose entry t is P(max count = t), t = 0..m."""
    if m < 0 or n_classes < 1:
        raise ValueError(f"need m >= 0 and n_classes >= 1, got m={m}, n_classes={n_classes}")
    if m == 0:
        return (Fraction(1),)
    cdf = []  # P(max ≤ t) for t = 0..m
    for t in range(m + 1):
        # ways[k] = number of ways to put k labelled balls into the boxes seen so far, at most t per box
        ways = [1] + [0] * m
        for _ in range(n_classes):
            ways = [sum(math.comb(k, j) * ways[k - j] for j in range(min(t, k) + 1)) for k in range(m + 1)]
        cdf.append(Fraction(ways[m], n_classes**m))
    return tuple(cdf[t] - (cdf[t - 1] if t else 0) for t in range(m + 1))


def expected_max_share(m: int, n_classes: int) -> Fraction:
    """E[max count / m]: the Bayes accuracy when the target is uniform among m candidates with i.i.d. payloads."""
    if m < 1:
        raise ValueError(f"need at least one candidate, got m={m}")
    law = max_count_distribution(m, n_classes)
    return sum((Fraction(t) * p for t, p in enumerate(law)), Fraction(0)) / m


def binary_ceiling_fraction(r1: int, r2: int, context: int = 16, n_payloads: int = 10) -> Fraction:
    """Exact Bayes-optimal accuracy of the binary task, as a Fraction (see the module docstring)."""
    for name, value in (("r1", r1), ("r2", r2), ("context", context), ("n_payloads", n_payloads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    p = Fraction(1, 2 ** (r1 + r2))
    others = context - 1
    total = Fraction(0)
    for k in range(others + 1):
        prob = math.comb(others, k) * p**k * (1 - p) ** (others - k)
        total += prob * expected_max_share(k + 1, n_payloads)
    return total


def binary_ceiling(r1: int, r2: int, context: int = 16, n_payloads: int = 10) -> float:
    """`binary_ceiling_fraction` as a float."""
    return float(binary_ceiling_fraction(r1, r2, context, n_payloads))


def gaussian_bayes_error_bound(task: PayloadTask, z_sigmas: float = 6.0) -> float:
    """A (union-bound) estimate of 1 − Bayes accuracy for a Gaussian task: tiny, so its ceiling is 1.

    The inputs pin down every code up to the noise: x_q = B z* + ε gives z* to within σ/s_B and each context
    token gives its z_j to within σ/s_A (s_B, s_A = smallest singular values of B = [B₁ B₂] and of [A₁ A₂ E],
    σ = noise_std), so in latent space two codes are told apart with noise of scale σ_z = σ(1/s_B + 1/s_A).
    A wrong position j can win only if ‖z_j − z*‖ ≤ 2·z_sigmas·σ_z or the noise exceeds z_sigmas standard
    deviations (probability ≤ Q(z_sigmas) ≈ 1e-9 for 6). With Δ = z_j − z* ~ N(0, 2I_r), r = r₁ + r₂, whose
    density is at most (4π)^{−r/2}, a union bound over the C − 1 other positions gives
        error ≤ (C − 1) · [vol(ball_r(2·z_sigmas·σ_z)) · (4π)^{−r/2} + Q(z_sigmas)]."""
    c = task.config
    if c.kind != "gaussian":
        raise ValueError("gaussian_bayes_error_bound is for the Gaussian task; the binary ceiling is exact")
    s_b = torch.linalg.svdvals(torch.cat([task.B1, task.B2], 1).double()).min().item()
    s_a = torch.linalg.svdvals(torch.cat([task.A1, task.A2, task.E.T], 1).double()).min().item()
    sigma_z = c.noise_std * (1 / s_b + 1 / s_a)
    radius = 2 * z_sigmas * sigma_z
    r = c.r1 + c.r2
    ball = math.pi ** (r / 2) * radius**r / math.gamma(r / 2 + 1)
    tail = 0.5 * math.erfc(z_sigmas / math.sqrt(2))
    return min(1.0, (c.context - 1) * (ball * (4 * math.pi) ** (-r / 2) + tail))


def bilinear_head_reference(
    r1: int, r2: int, kind: str, n_samples: int = 200_000, context: int = 16, n_payloads: int = 10, seed: int = 0
) -> float:
    """Monte-Carlo accuracy of the ideal single head: scores z*·z_i (identity interaction), uniform attention
    on the positions with the top score (exact ties only), answer = the payload with the most attention.

    Binary: equals `binary_ceiling` in expectation (the top score r₁ + r₂ is reached exactly by the matches).
    Gaussian: the practical ceiling of a bilinear head (see the module docstring). Deterministic given `seed`."""
    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
    g = torch.Generator().manual_seed(derive_seed(seed, "bilinear-reference", kind, r1, r2))
    r = r1 + r2
    correct = 0.0
    chunk = 20_000
    done = 0
    while done < n_samples:
        n = min(chunk, n_samples - done)
        if kind == "binary":
            z = torch.randint(0, 2, (n, context, r), generator=g, dtype=torch.float64) * 2 - 1  # (n, C, r)
        else:
            z = torch.randn(n, context, r, generator=g, dtype=torch.float64)
        payloads = torch.randint(0, n_payloads, (n, context), generator=g)  # (n, C)
        target = torch.randint(0, context, (n,), generator=g)
        rows = torch.arange(n)
        scores = torch.einsum("nr,ncr->nc", z[rows, target], z)  # (n, C)
        top = scores >= scores.max(-1, keepdim=True).values - 1e-9  # (n, C) attended positions
        votes = torch.zeros(n, n_payloads, dtype=torch.float64).scatter_add_(1, payloads, top.double())
        best = votes == votes.max(-1, keepdim=True).values  # ties: a uniform pick among the best payloads
        correct += (best[rows, payloads[rows, target]].double() / best.sum(-1)).sum().item()
        done += n
    return correct / n_samples


def task_ceiling(r1: int, r2: int, kind: str, context: int = 16, n_payloads: int = 10) -> float:
    """The Bayes ceiling of the task: exact for "binary"; 1.0 for "gaussian" (error below
    `gaussian_bayes_error_bound`, far under the resolution of any accuracy measured here)."""
    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
    if kind == "binary":
        return binary_ceiling(r1, r2, context, n_payloads)
    return 1.0


@torch.no_grad()
def reference_correct(n_payloads: int, batch) -> float:
    """Expected number of correct answers of the ideal bilinear head (`bilinear_head_reference`) on a TaskBatch:
    it scores every context token by z*·z_i, attends to the top score(s) and answers their most frequent payload,
    a tie counted as its share of the winners."""
    rows = torch.arange(batch.label.shape[0])
    z = torch.cat([batch.z1, batch.z2], -1).double()  # (n, C, r1 + r2)
    scores = torch.einsum("nr,ncr->nc", z[rows, batch.target], z)
    top = scores >= scores.max(-1, keepdim=True).values - 1e-9  # (n, C)
    votes = torch.zeros(len(rows), n_payloads, dtype=torch.float64)
    votes.scatter_add_(1, batch.payloads, top.double())
    best = votes == votes.max(-1, keepdim=True).values
    return (best[rows, batch.label].double() / best.sum(-1)).sum().item()
