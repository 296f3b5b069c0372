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

Every PNG saved once `use_book_style` has run (the notebooks' inline figures included) carries two text chunks, so the
book's browser check (tests/book/rendered.py) can measure the size a reader sees: `qkcore:min-font-pt`, the smallest
font of any visible text in the figure, in points, and `qkcore:dpi`, the dpi it was saved at. An s-point font saved
at d dpi is s·d/72 px tall in the PNG and shows at s·d/72 × (shown width / PNG width) px on the page.
"""

from __future__ import annotations

import functools
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
    _record_fonts_in_pngs()


FONT_KEY = "qkcore:min-font-pt"  # PNG text chunk: the smallest font of the figure's visible text, in points
DPI_KEY = "qkcore:dpi"  # PNG text chunk: the dpi the figure was saved at


def smallest_font_pt(fig) -> float | None:
    """The smallest font size (pt) of any visible, non-empty text of `fig`: titles, labels, tick labels, legends,
    annotations, colour-bar labels. None for a figure with no text."""
    from matplotlib.text import Text

    sizes = [
        float(t.get_fontsize())
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and (t.axes is None or t.axes.get_visible())
    ]
    return min(sizes) if sizes else None


def font_metadata(fig) -> dict[str, str]:
    """The PNG text chunks `use_book_style` adds to every saved figure (see the module's docstring)."""
    smallest = smallest_font_pt(fig)
    return {FONT_KEY: "none" if smallest is None else f"{smallest:g}", DPI_KEY: f"{fig.dpi:g}"}


def _record_fonts_in_pngs() -> None:
    """Make every PNG matplotlib writes carry `font_metadata`. IPython's inline backend saves a figure with
    `fig.canvas.print_figure(..., format="png")`, which ends in Agg's `print_png` with the figure's dpi set to the
    saving dpi, and passes no metadata; wrapping that one method covers the inline PNGs and `fig.savefig` alike.
    Metadata a caller passes wins. Installed once; it changes no pixel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    original = FigureCanvasAgg.print_png
    if getattr(original, "_records_fonts", False):
        return

    @functools.wraps(original)
    def print_png(self, filename_or_obj, *, metadata=None, pil_kwargs=None):
        metadata = {**font_metadata(self.figure), **(metadata or {})}
        return original(self, filename_or_obj, metadata=metadata, pil_kwargs=pil_kwargs)

    print_png._records_fonts = True
    FigureCanvasAgg.print_png = print_png


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
