"""The book style records each figure's smallest font and dpi in its PNG (what the browser check reads): through
IPython's inline path (print_figure, tight bounding box) and fig.savefig alike; hidden and empty text do not count;
the pixels are unchanged."""

import io

import matplotlib as mpl
import numpy as np

mpl.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from IPython.core.pylabtools import print_figure  # noqa: E402
from PIL import Image  # noqa: E402

from qkcore.plotting.style import DPI, DPI_KEY, FONT_KEY, WIDTH, smallest_font_pt, use_book_style  # noqa: E402


def _info(png: bytes) -> dict:
    with Image.open(io.BytesIO(png)) as image:
        return dict(image.info)


def test_inline_and_savefig_pngs_carry_the_smallest_font_and_dpi():
    with mpl.rc_context():
        use_book_style()
        fig, ax = plt.subplots(figsize=(WIDTH, 3), layout="constrained")
        ax.plot([0, 1], [0, 1])
        ax.set_title("title")
        ax.text(0.5, 0.5, "small", fontsize=7)
        ax.text(0.2, 0.2, "hidden", fontsize=3, visible=False)
        ax.text(0.2, 0.8, "  ", fontsize=2)
        assert smallest_font_pt(fig) == 7
        inline = _info(print_figure(fig, "png", bbox_inches="tight"))
        saved = io.BytesIO()
        fig.savefig(saved, format="png")
        plt.close(fig)
    for info in (inline, _info(saved.getvalue())):
        assert info[FONT_KEY] == "7" and float(info[DPI_KEY]) == DPI


def test_the_metadata_changes_no_pixel():
    with mpl.rc_context():
        use_book_style()
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1], [1, 0])
        with_chunks, without = io.BytesIO(), io.BytesIO()
        fig.savefig(with_chunks, format="png")
        fig.savefig(without, format="png", metadata={FONT_KEY: None, DPI_KEY: None})
        plt.close(fig)
    assert FONT_KEY not in _info(without.getvalue())
    pixels = [np.asarray(Image.open(io.BytesIO(b.getvalue()))) for b in (with_chunks, without)]
    assert np.array_equal(*pixels)
