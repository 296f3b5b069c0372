"""Figures of the filter-heads chapter (paper Figures 6–7): the head scan, ΔC spectra per category, 3-D PCA of keys
and queries in the category subspace, the 13-category keys-only view, and the key-swap bars. Each figure shows the
model beside its controls (shuffled category labels; a randomly initialised copy).

    fig = plot_head_scan(result); plt.show()        # result = qkcore.experiments.filter_heads.analyse_heads(...)
    fig = plot_pca(result, result.heads[0]); plt.show()
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from qkcore.experiments.filter_heads.analysis import CONDITIONS, FilterHeadsResult, Keys13Result, Projection
from qkcore.lm.layout import head_name
from qkcore.plotting.heads import head_heatmap


def plot_head_scan(result: FilterHeadsResult):
    """Layer × head: mean logit gap trace ΔC (over categories) and the last token's attention on the asked items and
    on the others; top row the model (boxes: the studied heads), bottom row its random-init copy, each quantity on
    one colour scale for both rows."""
    fig, axes = plt.subplots(2, 3, figsize=(10, 7.5), gridspec_kw={"hspace": 0.45, "wspace": 0.45})
    gaps = [s.logit_gap.mean(0).numpy() for s in (result.scan, result.random_scan)]
    lim = max(max(abs(g).max() for g in gaps), 1e-9)
    for row, (scan, gap, label) in enumerate(
        ((result.scan, gaps[0], "model"), (result.random_scan, gaps[1], "random init"))
    ):
        head_heatmap(axes[row, 0], gap, f"{label}:\nlogit gap", result.heads, "RdBu_r", -lim, lim)
        head_heatmap(
            axes[row, 1], scan.attn_pos.numpy(), f"{label}:\nattention on asked items", result.heads, "viridis", 0, 1
        )
        head_heatmap(
            axes[row, 2], scan.attn_neg.numpy(), f"{label}:\nattention on other items", result.heads, "viridis", 0, 1
        )
    return fig


def plot_category_spectra(result: FilterHeadsResult, heads=None, n_values: int = 8):
    """σᵢ²/Σσ² of each category's ΔC (log scale), model beside its controls; one row per head (default: the studied
    heads); dashed: the 1% the rank rule leaves out."""
    heads = [tuple(h) for h in (heads if heads is not None else result.heads)]
    fig, axes = plt.subplots(len(heads), 3, figsize=(10, 3.4 * len(heads)), sharey=True, squeeze=False)
    for row, head in enumerate(heads):
        for ax, condition in zip(axes[row], CONDITIONS):
            a = result.analyses[condition][head]
            k = min(n_values, a.energy_fractions.shape[1])
            for c, name in enumerate(result.scan.categories):
                ax.plot(
                    np.arange(1, k + 1),
                    a.energy_fractions[c, :k].clamp_min(1e-12).numpy(),
                    "o-",
                    ms=3,
                    label=f"{name} (rank {int(a.ranks[c])})",
                )
            ax.axhline(0.01, color="k", ls="--", lw=0.8)
            ax.set(yscale="log", xlabel="index i", title=f"{head_name(head)}, {condition}")
            ax.legend(fontsize=7, handlelength=1)
        axes[row, 0].set_ylabel("σᵢ² / Σσ²")
    fig.tight_layout()
    return fig


# 13 distinguishable colours: tab20's strong shades first, then its light ones (tab20 in order pairs near-twins)
THIRTEEN = ListedColormap([plt.get_cmap("tab20")(i) for i in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 1, 5, 9)])


def _scatter3d(ax, xyz, labels, names, title, cmap="tab10", size=6, means=False):
    colours = plt.get_cmap(cmap) if isinstance(cmap, str) else cmap
    for g, name in enumerate(names):
        pts = xyz[labels == g].numpy()
        if len(pts):
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                pts[:, 2],
                s=size,
                color=colours(g % colours.N),
                label=name,
                alpha=0.6,
                depthshade=False,
            )
            if means:
                m = pts.mean(0)
                ax.scatter(*m, s=60, color=colours(g % colours.N), edgecolor="k", depthshade=False)
    ax.set_title(title, fontsize=10)
    ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])  # PCs have no units: no overlapping ticks
    ax.set_xlabel("PC1", fontsize=8), ax.set_ylabel("PC2", fontsize=8), ax.set_zlabel("PC3", fontsize=8)


def plot_pca(result: FilterHeadsResult, head: tuple[int, int]):
    """Figure 6 at one head: keys of fresh prompts in the combined category key subspace (colour: category) and
    queries in the query subspace (colour: asked category), then the keys under the two controls."""
    head = tuple(head)
    names = result.scan.categories
    proj: dict[str, Projection] = {c: result.projections[c][head] for c in CONDITIONS}
    fig = plt.figure(figsize=(10, 9.5))
    panels = [
        ("model", "keys", "keys (model)"),
        ("model", "queries", "queries by asked category (model)"),
        ("shuffled labels", "keys", "keys in the shuffled-label subspace\n(colour: shuffled groups)"),
        ("random init", "keys", "keys (random-init copy)"),
    ]
    for i, (cond, kind, title) in enumerate(panels):
        ax = fig.add_subplot(2, 2, i + 1, projection="3d")
        p = proj[cond]
        xyz, lab, eta = (
            (p.keys, p.key_labels, p.key_eta2) if kind == "keys" else (p.queries, p.query_labels, p.query_eta2)
        )
        dims = (
            result.analyses[cond][head].key_basis if kind == "keys" else result.analyses[cond][head].query_basis
        ).shape[1]
        _scatter3d(ax, xyz, lab, names, f"{title}\n{dims}-D subspace, η² = {eta:.3f}", means=kind == "keys")
        if i == 0:
            ax.legend(fontsize=7, loc="upper left", markerscale=2)
    return fig


def plot_keys_13(k13: Keys13Result):
    """The talk's 13-category keys-only view: keys of fresh prompts in the combined key subspace, beside the same
    with a null grouping of the items and on the random-init copy."""
    fig = plt.figure(figsize=(10, 9.5))
    for i, (p, a, title) in enumerate(
        (
            (k13.projection, k13.analysis, "categories"),
            (k13.null_projection, k13.null_analysis, "null grouping (shuffled labels)"),
            (k13.random_projection, k13.random_analysis, "random-init copy"),
        )
    ):
        ax = fig.add_subplot(2, 2, i + 1, projection="3d")
        _scatter3d(
            ax,
            p.keys,
            p.key_labels,
            k13.categories,
            f"{title}\n{a.key_basis.shape[1]}-D key subspace, η² = {p.key_eta2:.3f}",
            cmap=THIRTEEN,
            size=4,
            means=True,
        )
    handles, names = fig.axes[0].get_legend_handles_labels()
    fig.legend(
        handles[: len(k13.categories)],
        names[: len(k13.categories)],
        loc="lower right",
        ncol=2,
        fontsize=8,
        markerscale=2,
        bbox_to_anchor=(0.95, 0.08),
    )
    return fig


def plot_filter_swaps(table):
    """Figure 7: attention on orig and target after the swap (black ticks: before), and the flip rate with its 95%
    bootstrap interval, per condition; one panel per studied head (and all heads at once)."""
    groups = list(dict.fromkeys(table.index.get_level_values(0)))
    cols = min(2, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(10, 4.6 * rows), sharey=True, squeeze=False)
    w = 0.27
    for ax, g in zip(axes.flat, groups):
        t = table.loc[g]
        x = np.arange(len(t))
        ax.bar(x - w, t["attn_orig_after"], w, color="C0", label="on orig after")
        ax.bar(x, t["attn_target_after"], w, color="C1", label="on target after")
        err = None
        if "flip_lo" in t.columns:
            err = np.stack([t["flip_rate"] - t["flip_lo"], t["flip_hi"] - t["flip_rate"]]).clip(0)
        ax.bar(x + w, t["flip_rate"], w, color="C2", yerr=err, capsize=2, label="flip rate (95% interval)")
        ax.scatter(x - w, t["attn_orig_before"], marker="_", s=200, color="k", label="before", zorder=3)
        ax.scatter(x, t["attn_target_before"], marker="_", s=200, color="k", zorder=3)
        short = [
            c.replace(" subspace", "")
            .replace(", same rank", "")
            .replace("top key-variance", "top variance")
            .replace("random-init model", "random init")
            for c in t.index
        ]
        ax.set_xticks(x, short, rotation=35, ha="right", fontsize=9)
        ax.set(title=g, ylim=(0, 1.05))
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("attention / rate")
    axes[0, 0].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig
