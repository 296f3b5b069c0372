"""Figures of the rank-recovery chapter (Figure 2): recovered-rank heatmaps and accuracies beside the ceilings.

    fig = plot_rank_heatmaps(result.table)           # recovered vs true rank, per task × d_head × factor
    fig = plot_accuracy(result.table)                # held-out accuracy beside the ceilings
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


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
