"""Figures of the "why it works" chapter (Appendix B / Figure 5): ΔC spectra of the two factors, principal angles to
the analytic spans, and the interaction matrix G.

    fig = plot_factor_spectra(analysis.decomposition, energy, {"z1": 3, "z2": 5})
    fig = plot_angles(result.angles, result.cross_angles)
    fig = plot_interaction(G, r1)                    # G = (W_Q B)ᵀ(W_K A) with its z₁/z₂ blocks marked
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch

from qkcore.plotting.style import DIVERGING, palette, symmetric_limit
from qkcore.plotting.toy import COLUMN
from qkcore.subspace import Decomposition


def plot_factor_spectra(decompositions: dict[str, Decomposition], energy: float, true_ranks: dict[str, int]):
    """Energy fractions σᵢ²/Σσ² of ΔC per factor on a log scale, the kept ones coloured, the largest discarded one
    marked: the gap between them is what makes the rank unambiguous."""
    fig, axes = plt.subplots(
        1, len(decompositions), figsize=(COLUMN, 3.0), squeeze=False, sharey=True, layout="constrained"
    )
    kept_colour = palette(1)[0]
    for ax, (factor, dec) in zip(axes[0], decompositions.items()):
        frac = dec.energy_fractions.numpy()
        idx = np.arange(1, len(frac) + 1)
        ax.bar(idx, frac, color=[kept_colour if i < dec.rank else "0.65" for i in range(len(frac))])
        dropped = frac[dec.rank :]
        note = f"largest dropped: {dropped.max():.0e}" if len(dropped) else "nothing dropped"
        ax.text(
            0.97,
            0.95,
            f"kept: top {dec.rank}\n{note}",
            ha="right",
            va="top",
            transform=ax.transAxes,
            fontsize=9,
        )
        ax.set(
            yscale="log",
            ylim=(1e-12, 3),
            xlabel="singular value index",
            xticks=idx[::3],
            title=f"$\\Delta C_{{{factor}}}$: rank {dec.rank} (planted {true_ranks[factor]})",
        )
    axes[0, 0].set_ylabel("$\\sigma_i^2 / \\sum_j \\sigma_j^2$ (log)")
    return fig


def plot_angles(angles: dict[str, torch.Tensor], cross: dict[str, torch.Tensor] | None = None):
    """Principal angles (degrees, log scale) between each recovered basis and its analytic span (filled) and, for
    contrast, the other factor's span (hatched)."""
    own, other = palette(4)[0], palette(4)[3]
    fig, ax = plt.subplots(figsize=(COLUMN, 3.2), layout="constrained")
    labels, pos = [], 0.0
    for name, values in angles.items():
        xs = pos + np.arange(len(values))
        ax.bar(xs, values.numpy(), color=own, width=0.8, label="vs its own analytic span" if pos == 0 else None)
        if cross is not None:  # the other factor's span may have fewer dimensions: fewer angles
            ax.bar(
                xs[: len(cross[name])],
                cross[name].numpy(),
                color="none",
                edgecolor=other,
                hatch="//",
                width=0.8,
                label="vs the other factor's span" if pos == 0 else None,
            )
        factor, side = name.split("/")
        labels.append((pos + (len(values) - 1) / 2, f"$z_{factor[1:]}$\n{side}"))
        pos += len(values) + 1.5
    ax.set_xticks([p for p, _ in labels], [n for _, n in labels])
    ax.set(yscale="log", ylabel="principal angle (°, log)", ylim=(1e-3, 180))
    ax.set_yticks([1e-3, 1e-2, 1e-1, 1, 10, 90], ["0.001", "0.01", "0.1", "1", "10", "90"])
    ax.grid(axis="x", visible=False)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=1)
    return fig


def plot_interaction(G: torch.Tensor, r1: int):
    """Heatmap of G = (W_Q B)ᵀ(W_K A), every entry written in its cell: rows query latents, columns key latents,
    the z₁ | z₂ blocks marked."""
    n = G.shape[0]
    names = [f"$z_1^{{({i + 1})}}$" for i in range(r1)] + [f"$z_2^{{({i + 1})}}$" for i in range(n - r1)]
    lim = symmetric_limit(G.numpy())
    cell = min(0.42, (COLUMN - 1.8) / n)  # inches per cell: the figure stays within the column
    fig, ax = plt.subplots(figsize=(cell * n + 1.8, cell * n + 1.3), layout="constrained")
    labels = np.vectorize(lambda v: f"{round(v, 1) + 0.0:.1f}")(G.numpy())  # never "−0.0"
    sns.heatmap(
        G.numpy(),
        ax=ax,
        cmap=DIVERGING,
        vmin=-lim,
        vmax=lim,
        annot=labels if cell >= 0.33 else False,  # too small to write 9-pt numbers in: colour only
        fmt="",
        annot_kws={"fontsize": 9},
        xticklabels=names,
        yticklabels=names,
        square=True,
        cbar_kws={"label": "$G_{ab}$", "shrink": 0.8},
    )
    for line in (ax.axhline, ax.axvline):
        line(r1, color="k", lw=1.5)
    ax.tick_params(rotation=0)
    ax.set(
        xlabel="key latent $b$",
        ylabel="query latent $a$",
        title="$G = (W_Q B)^\\top (W_K A)$",
    )
    return fig
