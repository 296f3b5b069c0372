"""Figures of the toy-model chapters: rank-recovery heatmaps and accuracies (Figure 2), ΔC spectra, principal
angles and the interaction matrix G (Appendix B / Figure 5).

    fig = plot_rank_heatmaps(result.table)           # recovered vs true rank, per task × d_head × factor
    fig = plot_accuracy(result.table)                # held-out accuracy beside the ceilings
    fig = plot_interaction(G, r1)                    # G = (W_Q B)ᵀ(W_K A) with its z₁/z₂ blocks marked
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from qkcore.subspace import Decomposition


def plot_rank_heatmaps(table: pd.DataFrame):
    """One heatmap per (task, d_head, factor): rows r₁, columns r₂, cell = recovered rank; colour = recovered − true
    (white = exact recovery, blue = fewer dimensions than the factor has)."""
    kinds = list(dict.fromkeys(table.kind))
    d_heads = list(dict.fromkeys(table.d_head))
    r1s, r2s = sorted(set(table.r1)), sorted(set(table.r2))
    n_rows, n_cols = len(kinds), 2 * len(d_heads)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.4 * n_cols + 1, 2.4 * n_rows + 0.6), squeeze=False,
                             constrained_layout=True)
    lim = max(1, int(max((table.rank_z1 - table.r1).abs().max(), (table.rank_z2 - table.r2).abs().max())))
    im = None
    for i, kind in enumerate(kinds):
        for j, dh in enumerate(d_heads):
            sub = table[(table.kind == kind) & (table.d_head == dh)].set_index(["r1", "r2"])
            for f, factor in enumerate(("z1", "z2")):
                ax = axes[i, 2 * j + f]
                rec = np.array([[sub.loc[(a, b), f"rank_{factor}"] for b in r2s] for a in r1s])
                true = np.array([[a if factor == "z1" else b for b in r2s] for a in r1s])
                im = ax.imshow(rec - true, cmap="RdBu_r", vmin=-lim, vmax=lim)
                for (a, b), value in np.ndenumerate(rec):
                    ax.text(b, a, f"{value}", ha="center", va="center", fontsize=10,
                            color="k" if rec[a, b] == true[a, b] else "w")
                ax.set_xticks(range(len(r2s)), r2s)
                ax.set_yticks(range(len(r1s)), r1s)
                true_name = "$r_1$" if f == 0 else "$r_2$"
                ax.set_title(f"{kind}, $d_{{head}}$={dh}\nrank $\\Delta C_{{{factor}}}$ (true {true_name})", fontsize=9)
                ax.set_xlabel("$r_2$")
                ax.set_ylabel("$r_1$")
    fig.colorbar(im, ax=axes, shrink=0.6, label="recovered − true rank")
    return fig


def plot_accuracy(table: pd.DataFrame):
    """Held-out accuracy of each model (dots, by d_head) beside the Bayes ceiling (black bar) and the ideal single
    head on the same test sequences (grey bar)."""
    kinds = list(dict.fromkeys(table.kind))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.5 * len(kinds), 3.6), squeeze=False, sharey=False)
    for ax, kind in zip(axes[0], kinds):
        sub = table[table.kind == kind]
        tasks = sub.drop_duplicates(["r1", "r2"])[["r1", "r2", "ceiling", "reference"]].reset_index(drop=True)
        x = np.arange(len(tasks))
        ax.hlines(tasks.ceiling, x - 0.4, x + 0.4, color="k", lw=2, label="Bayes ceiling")
        ax.hlines(tasks.reference, x - 0.4, x + 0.4, color="0.6", lw=2, ls="--", label="ideal single head")
        for n, (dh, group) in enumerate(sub.groupby("d_head", sort=False)):
            pos = [x[(tasks.r1 == a) & (tasks.r2 == b)][0] for a, b in zip(group.r1, group.r2)]
            ax.plot(np.array(pos) + (n - 0.5) * 0.2, group.accuracy, "o", color=f"C{n}", label=f"$d_{{head}}$={dh}")
        ax.set_xticks(x, [f"{a},{b}" for a, b in zip(tasks.r1, tasks.r2)])
        ax.set(xlabel="$r_1, r_2$", ylabel="held-out accuracy", title=f"{kind} task")
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_spectra(decompositions: dict[str, Decomposition], energy: float, true_ranks: dict[str, int]):
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
