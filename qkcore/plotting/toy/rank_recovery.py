"""Figures of the rank-recovery chapter (Figure 2): recovered ranks per model, and accuracies beside the ceilings.

fig = plot_rank_heatmaps(result.table)           # one panel per task × d_head; cells r₁ × r₂
fig = plot_accuracy(result.table)                # held-out accuracy beside the ceilings
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from qkcore.plotting.style import DIVERGING, MARKERS, palette
from qkcore.plotting.toy import COLUMN


def plot_rank_heatmaps(table: pd.DataFrame):
    """One heatmap per (task, d_head): rows r₁, columns r₂; a cell reads "rank ΔC_z₁, rank ΔC_z₂" and its colour is
    the total shortfall (recovered − planted, summed over both factors; white = exact), on one scale for all panels.
    A black line fences off the cells where r₁ + r₂ exceeds d_head."""
    kinds = list(dict.fromkeys(table.kind))
    d_heads = list(dict.fromkeys(table.d_head))
    r1s, r2s = sorted(set(table.r1)), sorted(set(table.r2))
    off = (table.rank_z1 - table.r1) + (table.rank_z2 - table.r2)
    lim = max(1, int(off.abs().max()))
    n_rows, n_cols = len(kinds), len(d_heads)
    cell = min(0.6, (COLUMN - 1.4) / (n_cols * len(r2s)))  # inches per cell; the colour bar and labels need 1.4
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        squeeze=False,
        layout="constrained",
        figsize=(COLUMN, max(2.4, cell * n_rows * len(r1s) + 0.9 * n_rows)),
    )
    for i, kind in enumerate(kinds):
        for j, dh in enumerate(d_heads):
            sub = table[(table.kind == kind) & (table.d_head == dh)].set_index(["r1", "r2"])
            ax = axes[i, j]
            rank1 = np.array([[sub.loc[(a, b), "rank_z1"] for b in r2s] for a in r1s])
            rank2 = np.array([[sub.loc[(a, b), "rank_z2"] for b in r2s] for a in r1s])
            planted = np.array([[a + b for b in r2s] for a in r1s])
            labels = np.array([[f"{x}, {y}" for x, y in zip(u, v)] for u, v in zip(rank1, rank2)])
            sns.heatmap(
                rank1 + rank2 - planted,
                ax=ax,
                cmap=DIVERGING,
                vmin=-lim,
                vmax=lim,
                fmt="",
                annot=labels if cell >= 0.4 else False,
                annot_kws={"fontsize": 9},
                cbar=False,
                linewidths=0.5,
                linecolor="0.85",
                xticklabels=r2s,
                yticklabels=r1s,
                square=True,
            )
            _fence(ax, planted > dh)
            ax.set(title=f"{kind}, $d_{{head}}$={dh}", xlabel="$r_2$", ylabel="$r_1$")
            ax.tick_params(rotation=0)
    fig.colorbar(axes[0, 0].collections[0], ax=axes, shrink=0.6, label="recovered − planted")
    return fig


def _fence(ax, outside: np.ndarray) -> None:
    """Draw the border between cells where `outside` is False and cells where it is True."""
    rows, cols = outside.shape
    for a in range(rows):
        for b in range(cols):
            if b + 1 < cols and outside[a, b] != outside[a, b + 1]:
                ax.plot([b + 1, b + 1], [a, a + 1], color="k", lw=2)
            if a + 1 < rows and outside[a, b] != outside[a + 1, b]:
                ax.plot([b, b + 1], [a + 1, a + 1], color="k", lw=2)


def plot_accuracy(table: pd.DataFrame):
    """Held-out accuracy of each model (markers, by d_head) beside the Bayes ceiling (black bar) and the ideal single
    head on the same test sequences (grey dashed bar); one panel per task, stacked."""
    kinds = list(dict.fromkeys(table.kind))
    d_heads = list(dict.fromkeys(table.d_head))
    colours = palette(len(d_heads))
    fig, axes = plt.subplots(
        len(kinds), 1, figsize=(COLUMN, 2.4 * len(kinds) + 0.8), squeeze=False, layout="constrained"
    )
    for ax, kind in zip(axes[:, 0], kinds):
        sub = table[table.kind == kind]
        tasks = sub.drop_duplicates(["r1", "r2"])[["r1", "r2", "ceiling", "reference"]].reset_index(drop=True)
        x = np.arange(len(tasks))
        ax.hlines(tasks.ceiling, x - 0.4, x + 0.4, color="k", lw=2.5, label="Bayes ceiling")
        ax.hlines(tasks.reference, x - 0.4, x + 0.4, color="0.55", lw=2, ls="--", label="ideal single head")
        for n, dh in enumerate(d_heads):
            group = sub[sub.d_head == dh]
            pos = [x[(tasks.r1 == a) & (tasks.r2 == b)][0] for a, b in zip(group.r1, group.r2)]
            ax.plot(
                np.array(pos) + (n - (len(d_heads) - 1) / 2) * 0.22,
                group.accuracy,
                ls="",
                marker=MARKERS[n % len(MARKERS)],
                ms=6,
                color=colours[n],
                label=f"model, $d_{{head}}$ = {dh}",
            )
        ax.set_xticks(x, [f"{a},{b}" for a, b in zip(tasks.r1, tasks.r2)])
        ax.set(xlabel="$r_1, r_2$", ylabel="held-out accuracy", title=f"{kind} task")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=2)
    return fig
