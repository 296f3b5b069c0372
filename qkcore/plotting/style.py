"""The book's figure style: figures readable in a chapter's rendered column (about 770 px wide), colour-blind safe.

    from qkcore.plotting.style import WIDTH, use_book_style
    use_book_style()                              # once, in a chapter's import cell
    fig, ax = plt.subplots(figsize=(WIDTH, 3.5), layout="constrained")

How big text shows on screen: a figure WIDTH = 8 in wide is saved at 150 dpi (1,200 px) and the page shrinks it to
the column, so an s-point font shows at about s × 770 / (72 × 8) ≈ 1.3·s px; the smallest text here (9-pt tick
labels) shows at about 12 px. A narrower figure is shown at its own size, so its text is larger still. Keep figures
at most WIDTH wide: put fewer panels in a row rather than shrinking them.

Colours: seaborn's "colorblind" palette for categories (`category_styles` adds markers, so more than its ten
colours stay distinguishable); viridis for magnitudes; RdBu_r centred on 0 for signed values, with one colour scale
shared by panels that are compared (`symmetric_limit`).
"""

from __future__ import annotations

import itertools

import matplotlib as mpl
import numpy as np
import seaborn as sns

WIDTH = 8.0  # inches: the full width of a chapter's column
DPI = 150
CATEGORICAL = "colorblind"  # seaborn palette
SEQUENTIAL = "viridis"
DIVERGING = "RdBu_r"  # signed values, centred on 0 (red positive, blue negative)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")

FONT_SIZES = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 12,
}


def use_book_style() -> None:
    """Set matplotlib's rcParams for the book: seaborn's white-grid theme with the colour-blind palette, 150 dpi,
    fonts of at least 9 pt, viridis as the default map, tight bounding boxes for the inline PNGs."""
    sns.set_theme(context="notebook", style="whitegrid", palette=CATEGORICAL)
    mpl.rcParams.update(
        {
            **FONT_SIZES,
            "figure.dpi": DPI,
            "savefig.dpi": DPI,
            "savefig.bbox": "tight",
            "figure.figsize": (WIDTH, 4.0),
            "image.cmap": SEQUENTIAL,
            "axes.titleweight": "normal",
            "axes.titlepad": 8.0,
            "legend.frameon": False,
            "grid.linewidth": 0.6,
            "lines.markersize": 5.0,
        }
    )


def palette(n: int) -> list[tuple[float, float, float]]:
    """n colours of the categorical palette (its ten colours repeat beyond ten: pair them with `category_styles`)."""
    base = sns.color_palette(CATEGORICAL)
    return [base[i % len(base)] for i in range(n)]


def category_styles(n: int) -> list[tuple[tuple[float, float, float], str]]:
    """(colour, marker) for n categories, every pair distinct: the colour cycles through the palette and the marker
    changes with each round of it, so 13 categories are 10 colours × 2 markers, never two look-alikes."""
    colours, rounds = palette(n), itertools.cycle(MARKERS)
    markers = {r: next(rounds) for r in range((n + 9) // 10)}
    return [(colours[i], markers[i // 10]) for i in range(n)]


def symmetric_limit(*arrays) -> float:
    """The largest |value| over all arrays: vmin = −limit, vmax = +limit gives panels one diverging scale."""
    limit = max(float(np.nanmax(np.abs(np.asarray(a, dtype=float)))) for a in arrays)
    return limit if limit > 0 else 1.0
