"""Each check of the browser test fails on a planted defect: a tiny two-page book is built with, on one page, the
binding chapter's old error (`\\bar` and `\\approx` written into the notebook's JSON unescaped, so the math holds a
backspace and a bell character), a 200-character output line, a missing image, links to a missing page and to a
missing anchor, a console error, and three figures: one in the book style (8 in, 9-pt ticks; must pass), one drawn
16 in wide with 5-pt labels and shown shrunk to the column (too small and too wide), and one whose PNG lost its font
metadata (a warning, a failure when strict); the other page is clean and must report nothing. The book carries the
repository's _static/ (click to enlarge), and clicking a figure must open it at full size."""

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib as mpl
import pytest

from tests.book.rendered import MIN_FONT_PX, ROOT_STATIC, check_site

CONFIG = """\
title: planted
author: test
only_build_toc_files: true
execute:
  execute_notebooks: "off"
sphinx:
  extra_extensions:
    - sphinx-mathjax-offline
"""
TOC = "format: jb-book\nroot: intro\nchapters:\n  - file: planted\n"
INTRO = "# Clean\n\nA clean page: $q \\cdot k$ and $\\bar{x} \\approx 1$, and [the planted page](planted.ipynb).\n"
PLANTED_MARKDOWN = [
    "# Planted\n",
    "\n",
    "The binding chapter's old cell: $\bar{x} \approx 1$.\n",  # \b and \a: a backspace and a bell, as in the JSON
    "\n",
    '<img src="nowhere.png" alt="a planted missing image">\n',
    "\n",
    '<a href="missing.html">a missing page</a> and <a href="#no-such-anchor">a missing anchor</a>\n',
    "\n",
    '<script>console.error("planted console error")</script>\n',
]
WIDE_LINE = "flip rates: " + " ".join(f"{i / 100:.3f}" for i in range(40))  # ~ 250 characters


def _figures() -> dict[str, str]:
    """Three base64 PNGs, drawn as a chapter draws them (the book style, Agg, saved as the inline backend saves)."""
    mpl.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from IPython.core.pylabtools import print_figure
    from PIL import Image

    from qkcore.plotting.style import WIDTH, use_book_style

    pngs = {}
    with mpl.rc_context():
        use_book_style()
        fig, ax = plt.subplots(figsize=(WIDTH, 3.0), layout="constrained")
        ax.plot([0, 1, 2], [1, 3, 2], label="a line")
        ax.set(xlabel="step", ylabel="value", title="A readable figure")
        ax.legend()
        pngs["readable"] = print_figure(fig, "png", bbox_inches="tight")
        plt.close(fig)
        fig, axes = plt.subplots(1, 4, figsize=(16, 3), layout="constrained")
        for i, ax in enumerate(axes):
            ax.bar(["first", "second", "third"], [1, 2, i + 1])
            ax.tick_params(labelsize=5)
            ax.set_title(f"panel {i}", fontsize=5)
        pngs["tiny"] = print_figure(fig, "png", bbox_inches="tight")
        plt.close(fig)
    stripped = io.BytesIO()
    with Image.open(io.BytesIO(pngs["readable"])) as image:
        image.save(stripped, "PNG", dpi=image.info["dpi"])  # PIL writes no text chunk unasked: no font metadata
    pngs["unmeasured"] = stripped.getvalue()
    return {name: base64.b64encode(data).decode() for name, data in pngs.items()}


def _figure_cell(name: str, png: str, caption: str | None) -> dict:
    metadata = {"mystnb": {"figure": {"caption": caption, "name": f"fig-{name}"}}} if caption else {}
    return {
        "cell_type": "code",
        "id": f"figure-{name}",
        "metadata": metadata,
        "execution_count": 2,
        "source": [f"draw_{name}()"],
        "outputs": [
            {
                "output_type": "display_data",
                "metadata": {},
                "data": {"image/png": png, "text/plain": [f"<Figure {name}>"]},
            }
        ],
    }


def _notebook() -> dict:
    figures = _figures()
    return {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "cells": [
            {"cell_type": "markdown", "id": "md", "metadata": {}, "source": PLANTED_MARKDOWN},
            {
                "cell_type": "code",
                "id": "code",
                "metadata": {},
                "execution_count": 1,
                "source": ["print(rates)"],
                # an output wider than the column that the book's wrapping style cannot fold (code and text outputs
                # wrap, _static/code-wrap.css): a fixed-width table
                "outputs": [
                    {
                        "output_type": "display_data",
                        "metadata": {},
                        "data": {
                            "text/html": [f'<table style="width: 1400px"><tr><td>{WIDE_LINE}</td></tr></table>'],
                            "text/plain": [WIDE_LINE],
                        },
                    }
                ],
            },
            _figure_cell("readable", figures["readable"], None),
            _figure_cell("tiny", figures["tiny"], "A planted figure: 5-pt labels, drawn 16 in wide."),
            _figure_cell("unmeasured", figures["unmeasured"], "A planted figure whose PNG has no font metadata."),
        ],
    }


def test_every_check_catches_its_planted_defect(chromium, tmp_path):
    (tmp_path / "_config.yml").write_text(CONFIG)
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "intro.md").write_text(INTRO)
    (tmp_path / "planted.ipynb").write_text(json.dumps(_notebook()))
    shutil.copytree(ROOT_STATIC, tmp_path / "_static")  # the book's click-to-enlarge script and style
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(tmp_path), "--all"], check=True, capture_output=True)
    html = tmp_path / "_build" / "html"
    reports = check_site(html, pages=["intro.html", "planted.html"], executable=chromium, strict_fonts=False)
    clean, planted = reports["intro.html"], reports["planted.html"]
    print("\n" + clean.details() + "\n" + planted.details())

    assert clean.ok, clean.details()
    assert clean.math_count == 2 and clean.internal_links > 0
    found = planted.problems
    # The missing image also shows as a failed request and a "Failed to load resource" console error.
    assert set(found) == {
        "math error",
        "wider than its column",
        "missing image",
        "broken link",
        "console error",
        "failed request",
        "figure text too small",
        "figure wider than the column",
    }
    assert set(planted.warnings) == {"figure without font metadata"}
    # MathJax renders the old cell as an error box (merror: "Math input error"), and the source's \b is named.
    assert any("merror" in m and "\\x08ar" in m and "control character" in m for m in found["math error"])
    assert any("output" in m and "flip rates" in m for m in found["wider than its column"])
    assert any("nowhere.png" in m for m in found["missing image"])
    assert sorted("missing.html" in m for m in found["broken link"]) == [False, True]
    assert any("#no-such-anchor" in m for m in found["broken link"])
    assert "planted console error" in found["console error"]
    assert any("nowhere.png" in m for m in found["failed request"])
    # Only the 16-in, 5-pt figure is too small (5 pt x 150/72 x ~768/2400 ~ 3.3 px) and too wide; the readable one
    # (9-pt ticks, 8 in) passes, and the one without metadata is named as a warning.
    (small,) = found["figure text too small"]
    (wide,) = found["figure wider than the column"]
    assert "5-pt labels" in small and "smallest font 5 pt" in small and "5-pt labels" in wide
    shown_px = float(small.split("-> ")[1].split(" px")[0])
    assert shown_px < MIN_FONT_PX / 2
    assert len(planted.figures) == 3
    readable = [f for f in planted.figures if "smallest font 9 pt" in f]
    assert len(readable) == 1 and float(readable[0].split("-> ")[1].split(" px")[0]) >= MIN_FONT_PX
    assert "no font metadata" in planted.warnings["figure without font metadata"][0]

    # Strict (once every chapter is re-executed): the figure without metadata fails.
    strict = check_site(html, pages=["planted.html"], executable=chromium, strict_fonts=True)["planted.html"]
    assert "figure without font metadata" in strict.problems and not strict.warnings
    assert "9-pt text would show at" in strict.problems["figure without font metadata"][0]


def test_a_figure_opens_at_full_size_on_click(chromium, tmp_path):
    """Click to enlarge, offline: the page's figure opens in an overlay at its natural width; Escape closes it."""
    from playwright.sync_api import sync_playwright

    (tmp_path / "_config.yml").write_text(CONFIG)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\n")
    nb = {**_notebook(), "cells": [{"cell_type": "markdown", "id": "md", "metadata": {}, "source": ["# Zoom\n"]}]}
    nb["cells"].append(_figure_cell("tiny", _figures()["tiny"], "A wide figure."))
    (tmp_path / "intro.ipynb").write_text(json.dumps(nb))
    shutil.copytree(ROOT_STATIC, tmp_path / "_static")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(tmp_path), "--all"], check=True, capture_output=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda q: errors.append(q.url))
        page.goto((tmp_path / "_build" / "html" / "intro.html").as_uri(), wait_until="load")
        figure = page.locator("figure img.qk-zoomable")
        natural, shown = figure.evaluate("img => [img.naturalWidth, img.getBoundingClientRect().width]")
        assert shown < natural  # the page shows it shrunk
        figure.click()
        big = page.locator(".qk-zoom img")
        assert big.evaluate("img => img.getBoundingClientRect().width") == pytest.approx(natural, abs=1)
        page.keyboard.press("Escape")
        assert page.locator(".qk-zoom").count() == 0
        browser.close()
    assert [e for e in errors if "THEBE_JS_URL" not in e and "invalid theme mode" not in e] == []
