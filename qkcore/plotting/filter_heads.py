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

from qkcore.experiments.filter_heads.analysis import CONDITIONS, FilterHeadsResult, Projection
from qkcore.experiments.filter_heads.keys13 import Keys13Result
from qkcore.lm.layout import head_name
from qkcore.plotting.heads import head_heatmap

COLUMN = 6.3  # inches: the rendered column is 6.5 in at 150 dpi; tight bounding boxes add a little


def plot_head_scan(result: FilterHeadsResult):
    """Layer × head: mean logit gap trace ΔC (over categories) and the last token's attention on the asked items and
    on the others; left column the model (boxes: the studied heads), right its random-init copy, each quantity on
    one colour scale for both columns."""
    fig, axes = plt.subplots(3, 2, figsize=(COLUMN, 7.2), layout="constrained")
    gaps = [s.logit_gap.mean(0).numpy() for s in (result.scan, result.random_scan)]
    lim = max(max(abs(g).max() for g in gaps), 1e-9)
    for col, (scan, gap, label) in enumerate(
        ((result.scan, gaps[0], "model"), (result.random_scan, gaps[1], "random init"))
    ):
        head_heatmap(axes[0, col], gap, f"{label}: logit gap", result.heads, "RdBu_r", -lim, lim)
        head_heatmap(axes[1, col], scan.attn_pos.numpy(), f"{label}: on asked items", result.heads, "viridis", 0, 1)
        head_heatmap(axes[2, col], scan.attn_neg.numpy(), f"{label}: on other items", result.heads, "viridis", 0, 1)
    for ax in axes.flat:
        for text in ax.texts:  # cell labels at the book's smallest size
            text.set_fontsize(9)
    return fig


def plot_category_spectra(result: FilterHeadsResult, heads=None, n_values: int = 8):
    """σᵢ²/Σσ² of each category's ΔC (log scale), model beside its controls; one row per head (default: the studied
    heads); dashed: the 1% the rank rule leaves out."""
    heads = [tuple(h) for h in (heads if heads is not None else result.heads)]
    fig, axes = plt.subplots(len(heads), 3, figsize=(COLUMN, 2.4 * len(heads) + 0.9), sharey=True, squeeze=False)
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
            ax.set(yscale="log", xlabel="index i")
            ax.set_title(f"{head_name(head)}, {condition}", fontsize=10)
        axes[row, 0].set_ylabel("σᵢ² / Σσ²")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / (2.4 * len(heads) + 0.9)))
    fig.legend(handles, [n.split(" (")[0] for n in labels], loc="upper center", ncol=5, fontsize=9, handlelength=1)
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
    ax.set_title(title, fontsize=9)
    ax.set_xticklabels([]), ax.set_yticklabels([]), ax.set_zticklabels([])  # PCs have no units: no overlapping ticks
    ax.set_xlabel("PC1", fontsize=9), ax.set_ylabel("PC2", fontsize=9), ax.set_zlabel("PC3", fontsize=9)


def plot_pca(result: FilterHeadsResult, head: tuple[int, int]):
    """Figure 6 at one head: keys of fresh prompts in the combined category key subspace (colour: category) and
    queries in the query subspace (colour: asked category), then the keys under the two controls."""
    head = tuple(head)
    names = result.scan.categories
    proj: dict[str, Projection] = {c: result.projections[c][head] for c in CONDITIONS}
    fig = plt.figure(figsize=(COLUMN, 6.5))
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
            ax.legend(fontsize=9, loc="upper left", markerscale=2, bbox_to_anchor=(-0.15, 1.0))
    return fig


def plot_keys_13(k13: Keys13Result):
    """The talk's 13-category keys-only view: keys of fresh prompts in the combined key subspace, beside the same
    with one balanced null grouping of the items (for the eye; the tests use the families, plot_keys_13_nulls) and
    on the random-init copy."""
    fig = plt.figure(figsize=(COLUMN, 6.5))
    for i, (p, a, title) in enumerate(
        (
            (k13.projection, k13.analysis, "categories"),
            (k13.null_projection, k13.null_analysis, f"1 of {len(k13.nulls.balanced)} balanced null groupings"),
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
        fontsize=9,
        markerscale=2,
        bbox_to_anchor=(0.95, 0.08),
    )
    return fig


def plot_filter_swaps(swaps: dict):
    """Figure 7: per studied head, Δp (the change of the target's share of attention on {orig, target}) under each
    condition, horizontal bars with 95% bootstrap intervals over prompts, on one shared axis; diamonds: the candidate
    flip rate (the asked item on top among the items before, the target after)."""
    heads = list(swaps)
    fig, axes = plt.subplots(
        len(heads), 1, figsize=(COLUMN, 0.45 * 6 * len(heads) + 1.0), sharex=True, squeeze=False, layout="constrained"
    )
    for ax, h in zip(axes[:, 0], heads):
        s = swaps[h]
        table = s.table()
        names = list(table.index)[::-1]
        y = np.arange(len(names))
        means = table.loc[names, "delta_p"].to_numpy(dtype=float)
        err = np.stack([means - table.loc[names, "delta_p lo"], table.loc[names, "delta_p hi"] - means]).clip(0)
        ax.barh(y, means, xerr=err, color="C0", capsize=2, label="Δp (95% interval)")
        flips = table.loc[names, "flip_candidates"].to_numpy(dtype=float)
        ax.scatter(flips, y, marker="D", color="C1", zorder=3, label="candidate flip")
        ax.set_yticks(y, names)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(f"{head_name(h)} (n = {s.n_prompts})", fontsize=10)
    axes[-1, 0].set_xlabel("Δp  /  flip rate")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside upper center", ncol=2, fontsize=9)
    return fig


def plot_nulls(result: FilterHeadsResult):
    """Per studied head: the category-matching matrix E[q·k | c asked, item in c′] (one colour scale for all heads)
    and the key η² of the null groupings (random; balanced, one item per category in each group) beside the
    categories' own (line)."""
    heads = list(result.heads)
    fig, axes = plt.subplots(
        len(heads), 2, figsize=(COLUMN - 0.5, 3.1 * len(heads)), squeeze=False, layout="constrained"
    )
    lim = max(float(result.nulls[h].matching.matrix.abs().max()) for h in heads)
    for row, h in enumerate(heads):
        _null_row(fig, axes[row], result.nulls[h], result.scan.categories, lim, head_name(h))
    return fig


def plot_keys_13_nulls(k13: Keys13Result):
    """The 13-category view's tests at its head: the matching matrix E[q·k | c asked, item in c′] and the key η² of
    the random and balanced null groupings of the 65 items beside the categories' own (line)."""
    fig, axes = plt.subplots(1, 2, figsize=(COLUMN - 0.3, 3.6), layout="constrained")
    n = k13.nulls
    _null_row(fig, axes, n, k13.categories, float(n.matching.matrix.nan_to_num().abs().max()), head_name(k13.head))
    return fig


def _null_row(fig, axes, n, names, lim: float, label: str) -> None:
    """One head's matching matrix (left) and null-grouping η² histograms (right)."""
    ax = axes[0]
    im = ax.imshow(n.matching.matrix.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
    small = {"fontsize": 7} if len(names) > 8 else {}  # 13 names fit the column in a smaller font
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", **small)
    ax.set_yticks(range(len(names)), names, **small)
    ax.set(xlabel="item's category c′", ylabel="asked c")
    ax.set_title(f"{label}: E[q·k]", fontsize=10)
    ax.grid(False)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax = axes[1]
    bins = np.linspace(0, 1, 41)
    counts = [
        ax.hist([x.eta2 for x in fam], bins=bins, alpha=0.7, label=f"{name} (p = {p:.2g})")[0].max()
        for fam, name, p in ((n.random, "random", n.p_eta[0]), (n.balanced, "balanced", n.p_eta[1]))
    ]
    top = max(counts)
    ax.vlines(n.score.eta2, 0, top, color="k", lw=1.5, label="categories")  # below the legend's band
    ax.set(xlabel="key η²", ylabel="groupings", ylim=(0, 1.75 * top))
    ax.set_title(f"{label}: null groupings", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
