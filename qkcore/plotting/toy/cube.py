"""Figure of the cube chapter (paper Figure 3): queries and keys in the z₁ subspace, 3-D PCA, key means joined
along the cube's edges.

    fig = plot_cube(result)          # result = qkcore.experiments.toy.cube.run_cube(P)
    plt.show()
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from qkcore.experiments.toy.cube import CubeResult, code_label, hypercube_edges


def _code_colours(r: int):
    cmap = plt.get_cmap("tab10" if 2**r <= 10 else "viridis")
    return [cmap(c if 2**r <= 10 else c / (2**r - 1)) for c in range(2**r)]


def _draw_edges(ax, means, r: int, **style):
    for a, b in hypercube_edges(r):
        ax.plot(*[[means[a, i], means[b, i]] for i in range(3)], **style)


def plot_cube(result: CubeResult, elev: float = 22, azim: float = -55):
    """Left: every query (triangles) and target key (dots) in the 3-D PCA frame, coloured by z₁ code, with the key
    means joined along the cube's edges. Right: only the means: the key cube (solid) and the query cube (dashed)."""
    r, n = result.r1, result.n_points
    colours = _code_colours(r)
    pts = result.pca_coords.numpy()
    q_pts, k_pts = pts[:n], pts[n:]
    point_colours = [colours[c] for c in result.codes.tolist()]
    km, qm = result.key_means_3d.numpy(), result.query_means_3d.numpy()
    var = result.pca_variance.tolist()

    fig = plt.figure(figsize=(13, 6))
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    ax.scatter(*q_pts.T, c=point_colours, marker="^", s=6, alpha=0.35, depthshade=False)
    ax.scatter(*k_pts.T, c=point_colours, marker="o", s=5, alpha=0.25, depthshade=False)
    _draw_edges(ax, km, r, color="k", lw=1.2)
    ax.scatter(*km.T, c=colours, s=70, edgecolors="k", depthshade=False)
    ax.set_title(f"queries $U^Tq$ (▲) and target keys $V^Tk$ (●), {n} sequences each")
    ax2 = fig.add_subplot(1, 2, 2, projection="3d")
    _draw_edges(ax2, km, r, color="k", lw=1.4)
    _draw_edges(ax2, qm, r, color="0.45", lw=1.0, ls="--")
    ax2.scatter(*km.T, c=colours, s=80, edgecolors="k", depthshade=False)
    ax2.scatter(*qm.T, c=colours, s=50, marker="^", edgecolors="0.3", depthshade=False)
    ax2.set_title("code means: keys (solid cube), queries (dashed)")
    for a in (ax, ax2):
        a.view_init(elev=elev, azim=azim)
        a.set(xlabel=f"PC1 ({var[0]:.0%})", ylabel=f"PC2 ({var[1]:.0%})", zlabel=f"PC3 ({var[2]:.0%})")
    if 2**r <= 10:
        handles = [Line2D([], [], marker="o", ls="", color=colours[c], label=code_label(c, r)) for c in range(2**r)]
        fig.subplots_adjust(left=0.02, right=0.9, wspace=0.1)
        fig.legend(handles=handles, title="z₁ code", loc="center right")
    return fig
