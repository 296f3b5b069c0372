"""Figures of the method chapter: ΔC beside the planted matrix, its spectrum with the rank rule, convergence.

fig = plot_delta(result)                   # planted W_Q W_Kᵀ, estimated ΔC, their difference: one colour scale
fig = plot_spectrum(result, P.energy)      # singular values (log) and cumulative energy with the 99% cut
fig = plot_convergence(result)             # relative error and recovered rank as pairs accumulate
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from qkcore.experiments.method import MethodResult
from qkcore.plotting.style import DIVERGING, WIDTH, palette, symmetric_limit


def plot_delta(result: MethodResult):
    """Three heatmaps on one diverging scale: the planted W_Q W_Kᵀ, the estimated ΔC and estimate − planted."""
    truth, est = result.pairs.true_delta.numpy(), result.delta.numpy()
    panels = [(truth, "planted $W_Q W_K^\\top$"), (est, "estimated $\\Delta C$"), (est - truth, "estimate − planted")]
    lim = symmetric_limit(truth, est)
    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 3.0), layout="constrained")
    ticks = np.arange(0, truth.shape[0], 5)
    for ax, (m, title) in zip(axes, panels):
        im = ax.imshow(m, cmap=DIVERGING, vmin=-lim, vmax=lim)
        ax.set(title=title, xlabel="key dimension", xticks=ticks, yticks=ticks)
        ax.grid(False)
    axes[0].set_ylabel("query dimension")
    fig.colorbar(im, ax=axes, shrink=0.85, label="entry")
    return fig


def plot_spectrum(result: MethodResult, energy: float):
    """Singular values of ΔC on a log scale (kept ones coloured) and the cumulative energy with the cut."""
    dec = result.decomposition
    s = dec.S.numpy()
    idx = np.arange(1, len(s) + 1)
    kept, dropped = palette(1)[0], "0.7"
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(WIDTH, 3.0), layout="constrained")
    ax.bar(idx, s, color=[kept if i < dec.rank else dropped for i in range(len(s))])
    ax.set(yscale="log", xlabel="index $i$", ylabel="$\\sigma_i$ (log scale)", title="singular values of $\\Delta C$")
    cumulative = torch.cumsum(dec.energy_fractions, 0).numpy()
    ax2.plot(idx, cumulative, "o-", color="k", ms=4)
    ax2.axhline(energy, color=palette(4)[3], ls="--", lw=1.2, label=f"{energy:.0%} of the energy")
    ax2.axvline(dec.rank, color=kept, lw=1.2, label=f"rank $r$ = {dec.rank}")
    ax2.set(
        xlabel="number of singular values kept",
        ylabel="cumulative share of the energy",
        ylim=(0, 1.05),
        title="the rank rule",
    )
    ax2.legend(loc="lower right")
    for a in (ax, ax2):
        a.set_xticks(idx[::3] if len(idx) > 8 else idx)
    return fig


def plot_convergence(result: MethodResult):
    """Relative error of the streamed ΔC against the number of pairs (log-log, with a 1/√n guide), and the rank the
    rule reads at each count."""
    n, err = np.array(result.pair_counts), np.array(result.relative_errors)
    fig, ax = plt.subplots(figsize=(WIDTH * 0.8, 3.4), layout="constrained")
    ax.loglog(n, err, "o-", label="relative error of $\\Delta C_n$")
    ax.loglog(n, err[-1] * np.sqrt(n[-1] / n), "--", color="0.5", lw=1, label="$\\propto 1/\\sqrt{n}$")
    for x, e, r in zip(n, err, result.ranks_at_counts):
        ax.annotate(f"{r}", (x, e), textcoords="offset points", xytext=(0, 7), fontsize=9, ha="center")
    ax.set(
        xlabel="pairs per set $n$",
        ylabel="$\\|\\Delta C_n - W_Q W_K^\\top\\|_F\\ /\\ \\|W_Q W_K^\\top\\|_F$",
        title="error of the estimate (numbers: the rank it gives)",
    )
    ax.legend(loc="lower left")
    return fig
