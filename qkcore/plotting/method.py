"""Figures of the method chapter: a ΔC heatmap beside the truth, the spectrum with the rank rule, convergence."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from qkcore.experiments.method import MethodResult


def plot_delta_and_spectrum(result: MethodResult, energy: float):
    """Left: true W_Q W_Kᵀ; middle: estimated ΔC; right: singular values with the cumulative energy and the cut."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), gridspec_kw={"wspace": 0.35})
    truth, est = result.pairs.true_delta, result.delta
    vmax = float(max(truth.abs().max(), est.abs().max()))
    for ax, m, title in [(axes[0], truth, "planted $W_Q W_K^T$"), (axes[1], est, r"estimated $\Delta C$")]:
        im = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set(title=title, xlabel="key dimension")
    axes[0].set_ylabel("query dimension")
    fig.colorbar(im, ax=axes[:2], shrink=0.8)
    dec = result.decomposition
    s = dec.S.numpy()
    ax = axes[2]
    ax.bar(range(1, len(s) + 1), s, color=["C0" if i < dec.rank else "0.7" for i in range(len(s))])
    ax.set(xlabel="index i", ylabel=r"$\sigma_i$", title=f"spectrum: rank {dec.rank} at {energy:.0%} energy")
    twin = ax.twinx()
    twin.plot(range(1, len(s) + 1), torch.cumsum(dec.energy_fractions, 0).numpy(), "k.-", lw=1)
    twin.axhline(energy, color="C3", ls="--", lw=1)
    twin.set(ylim=(0, 1.05), ylabel="cumulative energy")
    return fig


def plot_convergence(result: MethodResult):
    """Relative error of the streamed ΔC and its rank as pairs accumulate."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.loglog(result.pair_counts, result.relative_errors, "o-")
    ax.set(xlabel="pairs per set", ylabel=r"$\|\Delta C_n - W_Q W_K^T\|_F / \|W_Q W_K^T\|_F$",
           title="the streamed estimate converges like $1/\\sqrt{n}$")
    for n, e, r in zip(result.pair_counts, result.relative_errors, result.ranks_at_counts):
        ax.annotate(f"r={r}", (n, e), textcoords="offset points", xytext=(0, 6), fontsize=7, ha="center")
    return fig
