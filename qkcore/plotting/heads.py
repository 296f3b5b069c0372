"""A layer × head heatmap with the studied heads outlined: the head scans of the language-model chapters."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np


def head_heatmap(ax, values: np.ndarray, title: str, chosen, cmap: str, vmin=None, vmax=None):
    """Draw values (n_layers, n_heads) on ax; annotate cells when the grid is small; box each (layer, head) in
    chosen."""
    im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    n_layers, n_heads = values.shape
    if n_layers * n_heads <= 64:  # numbers in the cells, black on light cells and white on dark ones
        for (i, j), v in np.ndenumerate(values):
            r, g, b, _ = im.cmap(im.norm(v))
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=8, color=ink)
    for layer, head in chosen:
        ax.add_patch(plt.Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, ec="k", lw=2))
    ax.set(title=title, xlabel="head", ylabel="layer")
    ax.set_xticks(range(0, n_heads, max(1, n_heads // 8)))
    ax.set_yticks(range(0, n_layers, max(1, n_layers // 8)))
    plt.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
