"""Figures of the binding chapters (paper Figures 8–10): the head scan, ΔC spectra beside the controls, the null
label draws' σ₁ beside the true labels', order and lexical PCA views and the lexical UMAP, the swap bars, and the
per-token logit attribution.

    fig = plot_scan(analysis); plt.show()                  # analysis = qkcore.experiments.binding.analysis...
    fig = plot_views(result.order_views, "clause index", "order ID"); plt.show()
    fig = plot_binding_swaps(result.table, "L2H1"); fig = plot_attribution(attr); fig = plot_explained(attr)
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from qkcore.experiments.binding.analysis import CONDITIONS, BindingAnalysis
from qkcore.lm.layout import head_name

PART_COLOURS = {"order": "#0173b2", "lexical": "#de8f05", "residual": "#029e73"}  # the colour-blind palette
FIG_WIDTH = 6.5  # inches: the rendered column at 150 dpi (issue 18: every figure at most this wide)


def _heatmap(ax, values: np.ndarray, title: str, chosen, cmap: str, vmin: float, vmax: float):
    """values (n_layers, n_heads) on ax with a shared colour scale (vmin, vmax); numbers in the cells of a small
    grid (9 pt); each studied head boxed."""
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    n_layers, n_heads = values.shape
    if n_layers * n_heads <= 32:
        for (i, j), v in np.ndenumerate(values):
            r, g, b, _ = im.cmap(im.norm(v))
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=9, color=ink)
    for layer, head in chosen:
        ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, ec="k", lw=1.5))
    ax.set(title=title, xlabel="head", ylabel="layer")
    ax.set_xticks(range(0, n_heads, max(1, n_heads // 6)))
    ax.set_yticks(range(0, n_layers, max(1, n_layers // 6)))
    ax.grid(False)
    return im


def plot_scan(analysis: BindingAnalysis):
    """Layer × head, trained model (top) and its random-init copy (bottom): the order-ID logit gap
    E[q·k|answer box] − E[q·k|other box], and the scan score (the last token's attention on the answer box's key
    minus that on another box's key). One colour scale per column, shared by the model and its copy. Boxes: the
    studied heads."""
    fig, axes = plt.subplots(2, 2, figsize=(FIG_WIDTH, 5.6), layout="constrained")
    srcs = ((analysis.trained, "trained"), (analysis.random, "random init"))
    cols = (
        ("order logit gap", "RdBu_r", lambda s: s.order.logit_gap()),
        ("attention: answer − other key", "RdBu_r", lambda s: s.scan.attn_answer - s.scan.attn_other),
    )
    for col, (title, cmap, f) in enumerate(cols):
        grids = [analysis.grid(f(src).float()).numpy() for src, _ in srcs]
        lim = max(float(np.abs(np.concatenate([g.ravel() for g in grids])).max()), 1e-9)
        for row, ((_src, label), v) in enumerate(zip(srcs, grids)):
            im = _heatmap(axes[row, col], v, f"{label}:\n{title}", analysis.heads, cmap, -lim, lim)
        fig.colorbar(im, ax=axes[:, col], shrink=0.6)
    fig.suptitle(f"head scan of {analysis.lm.name}")
    return fig


def plot_contrast_spectra(analysis: BindingAnalysis, head, n_values: int = 12):
    """σᵢ²/Σσ² of the order and lexical ΔC at one head (log scale) for the three conditions; dashed: 1 − energy."""
    fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH, 3.4), sharey=True, layout="constrained")
    for ax, which in zip(axes, ("order", "lexical")):
        for cond, style in zip(CONDITIONS, ("o-", "s--", "^:")):
            dec = analysis.decomposition(head, which, cond)
            k = min(n_values, dec.S.shape[0])
            frac = dec.energy_fractions[:k].clamp_min(1e-12).numpy()
            ax.plot(np.arange(1, k + 1), frac, style, ms=4, label=f"{cond} (rank {dec.rank})")
        ax.axhline(1 - analysis.params.energy, color="k", ls="--", lw=0.8)
        ax.set(yscale="log", xlabel="index i", ylabel="σᵢ² / Σσ²", title=f"{head_name(head)}: {which} ΔC")
        ax.legend(fontsize=9, loc="upper right")
    return fig


def plot_null_draws(analysis: BindingAnalysis):
    """The permutation test of the low-rank claim: per studied head (rows) and contrast (panels), σ₁(ΔC) of every
    null label draw (dots: random labels above, balanced labels below) and of the true labels (red bar), log scale."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    heads = analysis.heads
    fig, axes = plt.subplots(1, 2, figsize=(FIG_WIDTH, 1.5 + 0.75 * len(heads)), sharey=True, layout="constrained")
    rng = np.random.default_rng(0)  # vertical jitter only
    for ax, which in zip(axes, ("order", "lexical")):
        for i, head in enumerate(heads):
            n = analysis.nulls[head][which]
            for j, (fam, colour) in enumerate(zip(n.families, ("#0173b2", "#029e73"))):
                x = n.families[fam].numpy()
                y = i + (-0.15 if j == 0 else 0.15) + rng.uniform(-0.07, 0.07, len(x))
                ax.scatter(x, y, s=8, color=colour, alpha=0.6, label=fam if i == 0 else None)
            label = "true labels" if i == 0 else None
            ax.plot([n.observed] * 2, [i - 0.35, i + 0.35], color="#d55e00", lw=2.5, label=label)
        ax.set(xscale="log", xlabel="σ₁(ΔC)", title=f"{which} ID")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_yticks(range(len(heads)), [head_name(h) for h in heads])
    axes[0].set_ylim(len(heads) - 0.5, -0.5)  # the first studied head on top
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=9)
    return fig


def plot_views(views: dict, label_name: str, title: str, label_names=None):
    """3-D PCA of keys (dots) and queries (crosses) projected on a subspace, one panel per condition, coloured by
    label (clause index for the order view, queried object for the lexical view)."""
    fig = plt.figure(figsize=(FIG_WIDTH, 3.2))
    for i, cond in enumerate(CONDITIONS):
        v = views[cond]
        ax = fig.add_subplot(1, 3, i + 1, projection="3d")
        n_k = len(v.keys)
        labels = np.concatenate([v.key_labels, v.query_labels])
        cmap, vals = _colours(labels)
        ax.scatter(*v.pca[:n_k].T, c=cmap(vals[:n_k]), s=6, alpha=0.6, depthshade=False)
        ax.scatter(*v.pca[n_k:].T, c=cmap(vals[n_k:]), s=30, marker="x", depthshade=False)
        ax.set(
            title=f"{cond} (rank {v.rank})\nkNN keys {v.key_knn:.2f}\nqueries {v.query_knn:.2f}",
            xticklabels=[],
            yticklabels=[],
            zticklabels=[],
        )
        ax.title.set_fontsize(9)
    fig.suptitle(f"{title}: keys (dots) and queries (crosses) by {label_name}", fontsize=10)
    _legend(fig, labels, label_names, label_name)
    return fig


def _colours(labels: np.ndarray):
    uniq = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(uniq) <= 10 else "tab20")
    index = {u: i for i, u in enumerate(uniq)}
    return cmap, np.array([index[x] for x in labels])


def _legend(fig, labels, names, label_name):
    uniq = np.unique(labels)
    cmap, _ = _colours(labels)
    handles = [
        plt.Line2D([], [], ls="", marker="o", color=cmap(i), label=str(names[u]) if names is not None else str(u))
        for i, u in enumerate(uniq)
    ]
    handles += [
        plt.Line2D([], [], ls="", marker="o", color="grey", label="key"),
        plt.Line2D([], [], ls="", marker="x", color="grey", label="query"),
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=min(len(handles), 6),
        fontsize=9,
        title=label_name,
        title_fontsize=9,
        bbox_to_anchor=(0.5, -0.25),
    )


def plot_umap(view, label_names=None, title: str = "lexical subspace, UMAP"):
    """2-D UMAP of keys and queries in the lexical subspace coloured by the queried object."""
    fig, ax = plt.subplots(figsize=(4.8, 4.0))
    n_k = len(view.keys)
    labels = np.concatenate([view.key_labels, view.query_labels])
    cmap, vals = _colours(labels)
    ax.scatter(*view.umap[:n_k].T, c=cmap(vals[:n_k]), s=8, alpha=0.7)
    ax.scatter(*view.umap[n_k:].T, c=cmap(vals[n_k:]), s=30, marker="x")
    ax.set(title=f"{title} (rank {view.rank})", xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    _legend(fig, labels, label_names, "queried object")
    return fig


def plot_binding_swaps(table: pd.DataFrame, heads: list[str]):
    """Horizontal bars, one row per condition and one panel per head: the authors' flip (the answer's key is the
    head's argmax before and the target's after) with its 95% interval, "undefined" where no prompt could flip;
    open markers: Δp (the target's share of the attention on {answer, target}, after − before). One x scale (0–1)
    for every panel."""
    heads = [heads] if isinstance(heads, str) else list(heads)
    conds = list(dict.fromkeys(table.loc[heads[0]].index))
    fig, axes = plt.subplots(
        1, len(heads), figsize=(FIG_WIDTH, 0.32 * len(conds) + 1.4), sharey=True, squeeze=False, layout="constrained"
    )
    y = np.arange(len(conds))[::-1]
    for ax, head in zip(axes[0], heads):
        t = table.loc[head].loc[conds]
        flip = t["flip"].to_numpy(dtype=float)
        err = np.stack([flip - t["flip lo"], t["flip hi"] - flip]).clip(min=0)
        ax.barh(y, np.nan_to_num(flip), 0.6, xerr=np.nan_to_num(err), capsize=2, color="#0173b2", label="flip")
        ax.scatter(t["delta_p"], y, marker="o", facecolors="none", edgecolors="#d55e00", label="Δp", zorder=3)
        for yi, f in zip(y, flip):
            if np.isnan(f):
                ax.text(0.02, yi, "undefined", va="center", fontsize=9, color="#555555")
        ax.set(xlim=(-0.05, 1.1), title=head, xlabel="rate")
        ax.axvline(0, color="k", lw=0.6)
    axes[0, 0].set_yticks(y, [f"{c} (r={r})" for c, r in zip(conds, table.loc[heads[0]].loc[conds, "rank"])])
    axes[0, -1].legend(loc="lower right", fontsize=9)
    return fig


def plot_attribution(result):
    """Per-token contributions of the order, lexical and residual query parts to one prompt's raw logits k·q at the
    studied head (horizontal bars, tokens top to bottom; positive parts stacked right, negative left); black: the
    total logit."""
    ex = result.example
    n = len(result.example_tokens)
    y = np.arange(n)[::-1]
    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.2 * n + 1.2), layout="constrained")
    right, left = np.zeros(n), np.zeros(n)
    for name in ("order", "lexical", "residual"):
        vals = getattr(ex, name).numpy()
        pos, neg = np.clip(vals, 0, None), np.clip(vals, None, 0)
        ax.barh(y, pos, left=right, color=PART_COLOURS[name], label=name)
        ax.barh(y, neg, left=left, color=PART_COLOURS[name])
        right, left = right + pos, left + neg
    ax.plot(ex.total.numpy(), y, "o", color="k", ms=3, label="raw logit q·k")
    ax.axvline(0, color="k", lw=0.6)
    ax.set_yticks(y, result.example_tokens, fontsize=9)
    ax.set(
        ylim=(-0.7, n - 0.3),
        xlabel="logit contribution",
        title=f"{head_name(result.head)}: order rank {result.ranks[0]}, lexical rank {result.ranks[1]}",
    )
    ax.legend(ncol=2, fontsize=9, loc="lower right")
    return fig


def plot_explained(result):
    """Distribution over prompts of the explained fraction 1 − ‖res‖²/‖total‖², per condition (outliers shown);
    top: over all key positions, bottom: over the boxes' keys only. One x scale for both."""
    fig, axes = plt.subplots(2, 1, figsize=(FIG_WIDTH, 4.6), sharex=True, layout="constrained")
    for ax, (frame, where) in zip(
        axes, ((result.fractions, "all key positions"), (result.fractions_keys, "boxes' keys only"))
    ):
        data = [frame[c].to_numpy() for c in frame.columns]
        ax.boxplot(data, orientation="horizontal", showfliers=True, flierprops={"markersize": 3})
        ax.set_yticks(np.arange(1, len(data) + 1), list(frame.columns))
        ax.axvline(0, color="k", lw=0.6)
        ax.axvline(1, color="k", lw=0.6, ls=":")
        ax.set(title=f"{head_name(result.head)}, {where}")
    axes[-1].set_xlabel("explained fraction 1 − ‖res‖²/‖total‖²")
    return fig
