"""Figures of the "why it works" chapter (Appendix B / Figure 5): ΔC spectra of the two factors, principal angles to
the analytic spans, and the interaction matrix G.

    fig = plot_factor_spectra(analysis.decomposition, energy, {"z1": 3, "z2": 5})
    fig = plot_interaction(G, r1)                    # G = (W_Q B)ᵀ(W_K A) with its z₁/z₂ blocks marked
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from qkcore.subspace import Decomposition


def plot_factor_spectra(decompositions: dict[str, Decomposition], energy: float, true_ranks: dict[str, int]):
    """Energy fractions σᵢ²/Σσ² of ΔC per factor, the kept ones coloured, with the cumulative energy and the cut."""
    fig, axes = plt.subplots(1, len(decompositions), figsize=(5 * len(decompositions), 3.2), squeeze=False)
    for ax, (factor, dec) in zip(axes[0], decompositions.items()):
        frac = dec.energy_fractions.numpy()
        idx = np.arange(1, len(frac) + 1)
        ax.bar(idx, frac, color=["C0" if i < dec.rank else "0.7" for i in range(len(frac))])
        ax.plot(idx, np.cumsum(frac), "k.-", lw=1)
        ax.axhline(energy, color="C3", ls="--", lw=1)
        ax.set(xlabel="singular value index", ylabel="energy fraction", ylim=(0, 1.05),
               title=f"$\\Delta C_{{{factor}}}$: rank {dec.rank} (true {true_ranks[factor]})")
    fig.tight_layout()
    return fig


def plot_angles(angles: dict[str, torch.Tensor], cross: dict[str, torch.Tensor] | None = None):
    """Principal angles (degrees, log scale) between each recovered basis and its analytic span (and, hatched, the
    other factor's span for contrast)."""
    fig, ax = plt.subplots(figsize=(8, 3.4))
    labels, pos = [], 0.0
    for name, values in angles.items():
        xs = pos + np.arange(len(values))
        ax.bar(xs, values.numpy(), color="C0", width=0.8, label="vs own analytic span" if pos == 0 else None)
        if cross is not None:  # the other factor's span may have fewer dimensions: fewer angles
            ax.bar(xs[: len(cross[name])], cross[name].numpy(), color="none", edgecolor="C3", hatch="//", width=0.8,
                   label="vs the other factor's span" if pos == 0 else None)
        labels.append((pos + (len(values) - 1) / 2, name))
        pos += len(values) + 1.5
    ax.set_xticks([p for p, _ in labels], [n for _, n in labels])
    ax.set_yscale("log")
    ax.set(ylabel="principal angle (degrees, log)", ylim=(1e-3, 180))
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def plot_interaction(G: torch.Tensor, r1: int):
    """Heatmap of G = (W_Q B)ᵀ(W_K A): rows query latents, columns key latents, z₁ | z₂ blocks marked."""
    n = G.shape[0]
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    vmax = float(G.abs().max())
    im = ax.imshow(G.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    for line in (ax.axhline, ax.axvline):
        line(r1 - 0.5, color="k", lw=1.5)
    names = [f"$z_1^{{({i + 1})}}$" for i in range(r1)] + [f"$z_2^{{({i + 1})}}$" for i in range(n - r1)]
    ax.set_xticks(range(n), names, fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set(xlabel="key latent (A columns)", ylabel="query latent (B columns)", title="$G = (W_Q B)^T (W_K A)$")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return fig
