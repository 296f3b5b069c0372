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
    for name, x in (("k_orig", k_orig), ("k_target", k_target), ("basis", basis)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{name} must be a real floating-point tensor, got {got}")
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


def _check_columns(cols: torch.Tensor, name: str, n_columns: int) -> None:
    if cols.is_floating_point() or cols.is_complex() or cols.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer column indices, got dtype {cols.dtype}")
    if cols.numel() and (cols.min() < 0 or cols.max() >= n_columns):
        bad = int(cols[(cols < 0) | (cols >= n_columns)][0])
        raise ValueError(f"{name} contains column {bad}, out of range for attention over {n_columns} keys")


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
    n, c = attn_before.shape
    if n == 0:
        raise ValueError("swap_metrics needs at least one trial (n = 0 rows): there is nothing to average")
    if orig.shape != (n,) or target.shape != (n,):
        raise ValueError(f"orig and target must be (n={n},), got {tuple(orig.shape)}, {tuple(target.shape)}")
    _check_columns(orig, "orig", c), _check_columns(target, "target", c)
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
    _check_columns(orig, "orig", attn.shape[-1]), _check_columns(target, "target", attn.shape[-1])
    same = (orig == target) & (k_orig != k_target).any(-1)
    if same.any():
        row = int(same.nonzero()[0])
        raise ValueError(
            f"row {row}: orig and target are the same column {int(orig[row])} but k_orig and k_target differ; a "
            "key cannot be swapped with another key at its own column (give distinct columns)"
        )
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
    """Percentile bootstrap interval of the mean of per-prompt values (n,): resample prompts with replacement.
    values must be finite and non-empty; level in (0, 1); n_boot >= 1."""
    if not isinstance(values, torch.Tensor) or values.dim() != 1 or values.numel() == 0:
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"values must be a non-empty 1-D tensor of per-prompt values (n,), got {got}")
    if not torch.isfinite(values.double()).all():
        raise ValueError("values contains NaN or inf: the mean and its interval would be NaN (drop or fix them)")
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1) (e.g. 0.95), got {level!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"n_boot must be an int >= 1 (resamples), got {n_boot!r}")
    idx = torch.randint(len(values), (n_boot, len(values)), generator=generator)
    means = values.double()[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64))
    return float(lo), float(hi)
