"""Figures of the cube chapter (paper Figure 3): queries and keys in the z₁ subspace, 3-D PCA, code means joined
along the cube's edges.

    fig = plot_cube_points(result)     # every query and target key, coloured by z₁ code, with the key-mean cube
    fig = plot_cube_means(result)      # only the code means: the key cube and the query cube
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from qkcore.experiments.toy.cube import CubeResult, code_label, hypercube_edges
from qkcore.plotting.style import SEQUENTIAL, palette
from qkcore.plotting.toy import COLUMN


def _code_colours(r: int):
    """The colour-blind palette for up to 10 codes (a cube's 8); a sequential map for a hypercube's 16 or more."""
    n = 2**r
    if n <= 10:
        return palette(n)
    cmap = plt.get_cmap(SEQUENTIAL)
    return [cmap(c / (n - 1)) for c in range(n)]


def _draw_edges(ax, means, r: int, **style):
    for a, b in hypercube_edges(r):
        ax.plot(*[[means[a, i], means[b, i]] for i in range(3)], **style)


def _axes3d(fig, position, result: CubeResult, elev: float, azim: float):
    """A 3-D axes with the PCA axes named and no tick labels (PCA coordinates have no unit; labels would overlap)."""
    ax = fig.add_subplot(position, projection="3d")
    var = result.pca_variance.tolist()
    ax.view_init(elev=elev, azim=azim)
    for i, axis in enumerate((ax.xaxis, ax.yaxis, ax.zaxis)):
        axis.set_ticklabels([])
        axis.set_label_text(f"PC{i + 1} ({var[i]:.0%})", fontsize=9)
        axis.labelpad = -8
    ax.set_box_aspect(None, zoom=0.92)
    return ax


def _legend(fig, r: int, colours, extra: list[Line2D]):
    handles = []
    if 2**r <= 10:
        handles = [
            Line2D([], [], marker="o", ls="", ms=7, color=colours[c], label=code_label(c, r)) for c in range(2**r)
        ]
    fig.legend(handles=handles + extra, title="$z_1$ code" if handles else None, loc="center right", borderaxespad=0.2)


def plot_cube_points(result: CubeResult, elev: float = 22, azim: float = -55):
    """Every query Uᵀq (triangles) and target key Vᵀk (dots) in the 3-D PCA frame, coloured by z₁ code, with the key
    means (large dots) joined along the cube's edges."""
    r, n = result.r1, result.n_points
    colours = _code_colours(r)
    pts = result.pca_coords.numpy()
    q_pts, k_pts = pts[:n], pts[n:]
    point_colours = [colours[c] for c in result.codes.tolist()]
    km = result.key_means_3d.numpy()
    fig = plt.figure(figsize=(COLUMN, 4.0))
    ax = _axes3d(fig, 111, result, elev, azim)
    ax.scatter(*q_pts.T, c=point_colours, marker="^", s=9, alpha=0.35, depthshade=False)
    ax.scatter(*k_pts.T, c=point_colours, marker="o", s=7, alpha=0.3, depthshade=False)
    _draw_edges(ax, km, r, color="k", lw=1.3)
    ax.scatter(*km.T, c=colours, s=90, edgecolors="k", depthshade=False)
    extra = [
        Line2D([], [], marker="^", ls="", color="0.4", label="query $U^\\top q$"),
        Line2D([], [], marker="o", ls="", color="0.4", label="key $V^\\top k_{i^*}$"),
        Line2D([], [], marker="o", ls="-", ms=9, color="k", mfc="w", label="key mean"),
    ]
    _legend(fig, r, colours, extra)
    fig.subplots_adjust(left=0.0, right=0.7, bottom=0.02, top=0.98)
    return fig


def plot_cube_means(result: CubeResult, elev: float = 22, azim: float = -55):
    """Only the code means in the same frame: the key cube (solid, dots) and the query cube (dashed, triangles)."""
    r = result.r1
    colours = _code_colours(r)
    km, qm = result.key_means_3d.numpy(), result.query_means_3d.numpy()
    fig = plt.figure(figsize=(COLUMN, 4.0))
    ax = _axes3d(fig, 111, result, elev, azim)
    _draw_edges(ax, km, r, color="k", lw=1.5)
    _draw_edges(ax, qm, r, color="0.35", lw=1.1, ls="--")
    ax.scatter(*km.T, c=colours, s=100, edgecolors="k", depthshade=False)
    ax.scatter(*qm.T, c=colours, s=70, marker="^", edgecolors="0.2", depthshade=False)
    extra = [
        Line2D([], [], marker="o", ls="-", ms=8, color="k", mfc="w", label="key means"),
        Line2D([], [], marker="^", ls="--", ms=8, color="0.35", mfc="w", label="query means"),
    ]
    _legend(fig, r, colours, extra)
    fig.subplots_adjust(left=0.0, right=0.7, bottom=0.02, top=0.98)
    return fig
