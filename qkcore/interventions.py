"""Swap interventions in a key subspace and their attention metrics (paper Figures 4, 7, 9).

With V an orthonormal basis (d, r) of a feature's key subspace, two keys exchange their coordinates inside span(V)
and keep everything outside it:

    k_orig'   = k_orig   + V (Vᵀk_target − Vᵀk_orig)
    k_target' = k_target + V (Vᵀk_orig   − Vᵀk_target)

If the head reads the feature from that subspace, attention moves from orig to target.

    new_orig, new_target = swap_in_subspace(k_orig, k_target, V)
    m = swap_metrics(attn_before, attn_after, orig_index, target_index)
    row = swapped_attention(attn_row, q, k_orig, k_target, V, scaling, orig, target)   # no forward pass
    lo, hi = bootstrap_interval(per_prompt_flips, generator)                          # the flip rate's spread
"""

from __future__ import annotations

import torch


def swap_in_subspace(
    k_orig: torch.Tensor, k_target: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exchange the span(basis) components of two stacks of keys: (..., d), (..., d), basis (d, r) orthonormal."""
    if k_orig.shape != k_target.shape:
        raise ValueError(f"k_orig {tuple(k_orig.shape)} and k_target {tuple(k_target.shape)} must match")
    if basis.dim() != 2 or basis.shape[0] != k_orig.shape[-1]:
        raise ValueError(f"basis must be (d={k_orig.shape[-1]}, r), got {tuple(basis.shape)}")
    b = basis.to(k_orig.dtype)
    gram = b.T @ b
    if not torch.allclose(gram, torch.eye(b.shape[1], dtype=b.dtype), atol=1e-4):
        raise ValueError("basis must have orthonormal columns (use combine_bases or decompose(...).key_basis)")
    diff = (k_target - k_orig) @ b  # (..., r)
    shift = diff @ b.T  # (..., d)
    return k_orig + shift, k_target - shift


def swap_metrics(
    attn_before: torch.Tensor, attn_after: torch.Tensor, orig: torch.Tensor, target: torch.Tensor
) -> dict[str, float]:
    """Summary of a swap over n trials.

    attn_before, attn_after: (n, C) attention over C key positions; orig, target: (n,) position indices.
    Returns mean attention on orig/target before and after, the mean shift of attention onto the target, and the
    rate at which the argmax lands on the target after the swap (flip rate)."""
    if attn_before.shape != attn_after.shape or attn_before.dim() != 2:
        raise ValueError(
            f"attention tensors must both be (n, C), got {tuple(attn_before.shape)}, {tuple(attn_after.shape)}"
        )
    n = attn_before.shape[0]
    if orig.shape != (n,) or target.shape != (n,):
        raise ValueError(f"orig and target must be (n={n},), got {tuple(orig.shape)}, {tuple(target.shape)}")
    rows = torch.arange(n)
    before_o, before_t = attn_before[rows, orig], attn_before[rows, target]
    after_o, after_t = attn_after[rows, orig], attn_after[rows, target]
    return {
        "attn_orig_before": before_o.mean().item(),
        "attn_target_before": before_t.mean().item(),
        "attn_orig_after": after_o.mean().item(),
        "attn_target_after": after_t.mean().item(),
        "target_shift": (after_t - before_t).mean().item(),
        "flip_rate": (attn_after.argmax(-1) == target).double().mean().item(),
    }


def swapped_attention(
    attn: torch.Tensor,
    q: torch.Tensor,
    k_orig: torch.Tensor,
    k_target: torch.Tensor,
    basis: torch.Tensor,
    scaling: float,
    orig: torch.Tensor,
    target: torch.Tensor,
) -> torch.Tensor:
    """A head's attention row after swapping two keys inside span(basis), rebuilt from the unedited row: only the
    logits at orig and target change (by Δ = (q·k′ − q·k) × scaling), so softmax gives p′_j = p_j e^{Δ_j} / Z with
    Z = 1 + Σ_{o,t} p_j (e^{Δ_j} − 1). Exact for a plain softmax over q·k (no soft-capping), and the row is all that
    changes when the edited head's own layer is the only one edited (nothing upstream of it moves).

    attn (b, S) unedited row; q (b, d); k_orig, k_target (b, d); basis (d, r); orig, target (b,) columns of attn."""
    q, k_o, k_t = q.double(), k_orig.double(), k_target.double()
    new_o, new_t = swap_in_subspace(k_o, k_t, basis.double())
    delta = torch.stack([((new_o - k_o) * q).sum(-1), ((new_t - k_t) * q).sum(-1)], 1) * scaling  # (b, 2)
    rows = torch.arange(attn.shape[0])
    cols = torch.stack([orig, target], 1)  # (b, 2)
    p = attn.double()
    p_ot = p[rows[:, None], cols]  # (b, 2)
    z = 1 + (p_ot * torch.expm1(delta)).sum(1, keepdim=True)  # (b, 1)
    out = p / z
    out[rows[:, None], cols] = p_ot * torch.exp(delta) / z
    return out


def bootstrap_interval(
    values: torch.Tensor, generator: torch.Generator, n_boot: int = 1000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-prompt values (n,): resample prompts with replacement."""
    idx = torch.randint(len(values), (n_boot, len(values)), generator=generator)
    means = values.double()[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)
