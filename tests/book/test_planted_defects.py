"""Each check of the browser test fails on a planted defect: a tiny two-page book is built with, on one page, the
binding chapter's old error (`\\bar` and `\\approx` written into the notebook's JSON unescaped, so the math holds a
backspace and a bell character), a 200-character output line, a missing image, links to a missing page and to a
missing anchor, and a console error; the other page is clean and must report nothing."""

import json
import subprocess
import sys
from pathlib import Path

from tests.book.rendered import check_site

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


def _notebook() -> dict:
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
                "outputs": [{"output_type": "stream", "name": "stdout", "text": [WIDE_LINE + "\n"]}],
            },
        ],
    }


def test_every_check_catches_its_planted_defect(chromium, tmp_path):
    (tmp_path / "_config.yml").write_text(CONFIG)
    (tmp_path / "_toc.yml").write_text(TOC)
    (tmp_path / "intro.md").write_text(INTRO)
    (tmp_path / "planted.ipynb").write_text(json.dumps(_notebook()))
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    subprocess.run([str(jupyter_book), "build", str(tmp_path), "--all"], check=True, capture_output=True)
    reports = check_site(tmp_path / "_build" / "html", pages=["intro.html", "planted.html"], executable=chromium)
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
    }
    # MathJax renders the old cell as an error box (merror: "Math input error"), and the source's \b is named.
    assert any("merror" in m and "\\x08ar" in m and "control character" in m for m in found["math error"])
    assert any("output" in m and "flip rates" in m for m in found["wider than its column"])
    assert any("nowhere.png" in m for m in found["missing image"])
    assert sorted("missing.html" in m for m in found["broken link"]) == [False, True]
    assert any("#no-such-anchor" in m for m in found["broken link"])
    assert "planted console error" in found["console error"]
    assert any("nowhere.png" in m for m in found["failed request"])
