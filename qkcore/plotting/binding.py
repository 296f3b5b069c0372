"""Figures of the binding chapters (paper Figures 8–10): the head scan, ΔC spectra beside the controls, order and
lexical PCA views and the lexical UMAP, the swap bars, and the per-token logit attribution.

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
from qkcore.plotting.heads import head_heatmap

PART_COLOURS = {"order": "#1f77b4", "lexical": "#ff7f0e", "residual": "#2ca02c"}


def plot_scan(analysis: BindingAnalysis):
    """Layer × head, trained model (top) and its random-init copy (bottom): the order-ID logit gap
    E[q·k|answer box] − E[q·k|other box], the last token's attention on the answer box's key and on another box's
    key, and the lexical logit gap. Boxes: the studied heads."""
    fig, axes = plt.subplots(2, 4, figsize=(17, 7), gridspec_kw={"hspace": 0.45, "wspace": 0.35})
    for row, (src, label) in enumerate(((analysis.trained, "trained"), (analysis.random, "random init"))):
        for col, (values, title, cmap) in enumerate(
            (
                (src.order.logit_gap(), "order logit gap", "RdBu_r"),
                (src.scan.attn_answer, "attention on answer key", "viridis"),
                (src.scan.attn_other, "attention on another key", "viridis"),
                (src.lexical.logit_gap(), "lexical logit gap", "RdBu_r"),
            )
        ):
            v = analysis.grid(values.float()).numpy()
            lim = max(float(np.abs(v).max()), 1e-9)
            lo, hi = (-lim, lim) if cmap == "RdBu_r" else (0, max(lim, 1e-3))
            head_heatmap(axes[row, col], v, f"{label}: {title}", analysis.heads, cmap, lo, hi)
    fig.suptitle(f"head scan of {analysis.lm.name}", fontsize=10)
    return fig


def plot_contrast_spectra(analysis: BindingAnalysis, head, n_values: int = 12):
    """σᵢ²/Σσ² of the order and lexical ΔC at one head (log scale) for the three conditions; dashed: 1 − energy."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
    for ax, which in zip(axes, ("order", "lexical")):
        for cond, style in zip(CONDITIONS, ("o-", "s--", "^:")):
            dec = analysis.decomposition(head, which, cond)
            k = min(n_values, dec.S.shape[0])
            frac = dec.energy_fractions[:k].clamp_min(1e-12).numpy()
            ax.plot(np.arange(1, k + 1), frac, style, ms=4, label=f"{cond} (rank {dec.rank})")
        ax.axhline(1 - analysis.params.energy, color="k", ls="--", lw=0.8)
        ax.set(
            yscale="log", xlabel="singular value index i", ylabel="σᵢ² / Σσ²", title=f"{head_name(head)}: {which} ΔC"
        )
        ax.legend(fontsize=8)
    return fig


def plot_views(views: dict, label_name: str, title: str, label_names=None):
    """3-D PCA of keys (dots) and queries (crosses) projected on a subspace, one panel per condition, coloured by
    label (clause index for the order view, queried object for the lexical view)."""
    fig = plt.figure(figsize=(16, 4.8))
    for i, cond in enumerate(CONDITIONS):
        v = views[cond]
        ax = fig.add_subplot(1, 3, i + 1, projection="3d")
        n_k = len(v.keys)
        labels = np.concatenate([v.key_labels, v.query_labels])
        cmap, vals = _colours(labels)
        ax.scatter(*v.pca[:n_k].T, c=cmap(vals[:n_k]), s=6, alpha=0.6, depthshade=False)
        ax.scatter(*v.pca[n_k:].T, c=cmap(vals[n_k:]), s=30, marker="x", depthshade=False)
        ax.set(
            title=f"{title}, {cond} (rank {v.rank})\nkNN {label_name}: keys {v.key_knn:.2f}, queries {v.query_knn:.2f}",
            xticklabels=[],
            yticklabels=[],
            zticklabels=[],
        )
        ax.title.set_fontsize(9)
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
        ncol=min(len(handles), 12),
        fontsize=8,
        title=label_name,
        title_fontsize=8,
        bbox_to_anchor=(0.5, -0.08),
    )


def plot_umap(view, label_names=None, title: str = "lexical subspace, UMAP"):
    """2-D UMAP of keys and queries in the lexical subspace coloured by the queried object."""
    fig, ax = plt.subplots(figsize=(6, 5))
    n_k = len(view.keys)
    labels = np.concatenate([view.key_labels, view.query_labels])
    cmap, vals = _colours(labels)
    ax.scatter(*view.umap[:n_k].T, c=cmap(vals[:n_k]), s=8, alpha=0.7)
    ax.scatter(*view.umap[n_k:].T, c=cmap(vals[n_k:]), s=30, marker="x")
    ax.set(title=f"{title} (rank {view.rank})", xticks=[], yticks=[], xlabel="UMAP 1", ylabel="UMAP 2")
    _legend(fig, labels, label_names, "queried object")
    return fig


def plot_binding_swaps(table: pd.DataFrame, head: str):
    """One head: attention on orig (answer letter) and target after each swap, the unedited values as lines; right:
    flip rate (argmax moves to the target) with its 95% bootstrap interval, and how often the model's answer
    becomes the target's letter (absent when the swaps were recomputed without a forward pass)."""
    t = table.loc[head]
    fig, axes = plt.subplots(1, 2, figsize=(16, 4.2), gridspec_kw={"width_ratios": [2, 1.2]})
    x = np.arange(len(t))
    ax = axes[0]
    ax.bar(x - 0.2, t["attn_orig_after"], 0.4, label="orig (answer) after", color="#1f77b4")
    ax.bar(x + 0.2, t["attn_target_after"], 0.4, label="target after", color="#d62728")
    ax.scatter(x - 0.2, t["attn_orig_before"], marker="_", s=300, color="k", label="before swap")
    ax.scatter(x + 0.2, t["attn_target_before"], marker="_", s=300, color="k")
    ax.set(ylabel="attention from the last token", title=f"{head}: key swaps")
    ax.set_xticks(x, [f"{c}\n(r={r})" for c, r in zip(t.index, t["rank"])], rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    ax = axes[1]
    err = np.stack([t["flip_rate"] - t["flip_lo"], t["flip_hi"] - t["flip_rate"]]).clip(min=0)
    ax.bar(
        x - 0.2, t["flip_rate"], 0.4, yerr=err, capsize=2, label="attention flip rate (95% interval)", color="#9467bd"
    )
    if t["answer_to_target"].notna().any():
        ax.bar(x + 0.2, t["answer_to_target"], 0.4, label="model answers target's letter", color="#8c564b")
    ax.set(ylim=(0, 1), title="flip rates")
    ax.set_xticks(x, list(t.index), rotation=60, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    return fig


def plot_attribution(result):
    """Per-token stacked contributions of the order, lexical and residual query parts to one prompt's raw logits
    k·q at the studied head (positive parts stacked up, negative down); black: the total logit."""
    ex = result.example
    n = len(result.example_tokens)
    x = np.arange(n)
    fig, ax = plt.subplots(figsize=(max(10, 0.32 * n), 3.6))
    up, down = np.zeros(n), np.zeros(n)
    for name in ("order", "lexical", "residual"):
        vals = getattr(ex, name).numpy()
        pos, neg = np.clip(vals, 0, None), np.clip(vals, None, 0)
        ax.bar(x, pos, bottom=up, color=PART_COLOURS[name], label=name)
        ax.bar(x, neg, bottom=down, color=PART_COLOURS[name])
        up, down = up + pos, down + neg
    ax.plot(x, ex.total.numpy(), "o-", color="k", ms=3, lw=0.8, label="raw logit q·k")
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, result.example_tokens, rotation=60, ha="right")
    ax.set(
        xlim=(-0.5, n - 0.5),
        ylabel="logit contribution",
        title=f"{head_name(result.head)}: where the attention logits come from "
        f"(order rank {result.ranks[0]}, lexical rank {result.ranks[1]})",
    )
    ax.legend(ncol=4, fontsize=8, frameon=False)
    return fig


def plot_explained(result):
    """Distribution over prompts of the explained fraction 1 − ‖res‖²/‖total‖², per condition; left: over all key
    positions, right: over the boxes' keys only."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 3.6), sharey=True)
    for ax, (frame, where) in zip(
        axes, ((result.fractions, "all key positions"), (result.fractions_keys, "boxes' keys only"))
    ):
        data = [frame[c].to_numpy() for c in frame.columns]
        ax.boxplot(data, vert=False, showfliers=False)
        ax.set_yticks(np.arange(1, len(data) + 1), list(frame.columns))
        ax.axvline(0, color="k", lw=0.6)
        ax.set(xlabel="explained fraction", title=f"{head_name(result.head)}, {where}", xlim=(-0.5, 1.02))
    return fig
