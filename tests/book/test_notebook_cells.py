"""No notebook cell holds a control character, and no math holds an escape that Python or JSON ate.

A `\\bar`, `\\approx` or `\\frac` written through a Python string or JSON unescaped becomes a backspace + "ar", a bell
+ "pprox" or a form feed + "rac": invisible in most editors, rendered by MathJax as a red "Math input error" box, and
not noticed by a -W book build. Newlines and tabs are allowed in cells, but not where they stand for an eaten escape
inside markdown math: a tab in `$...$` (from `\\top`, `\\theta`, `\\times`, `\\tau`, `\\text`), which MathJax renders
silently as a wrong formula, or a newline directly followed by the rest of `\\nabla`, `\\neq`, `\\nu`, `\\not`, ….
"""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.S)
EATEN_IN_MATH = re.compile(r"\t|\n(?=(?:abla|eq|u|ot|eg|leq|geq|ewline|mid|subseteq)\b)")


def _where(number: int, cell: dict, char: str, source: str, at: int) -> str:
    context = source[max(0, at - 20) : at + 21]
    return (
        f"cell {number} (index {number - 1}, {cell['cell_type']}): {char!r} (U+{ord(char):04X}) at offset {at} "
        f"in {context!r}"
    )


def control_characters(notebook: dict) -> list[str]:
    """One line per suspect character in any cell's source: cell number (from 1, and its index from 0), cell type,
    the character, its offset and context."""
    found = []
    for number, cell in enumerate(notebook["cells"], start=1):
        source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        for match in CONTROL.finditer(source):
            found.append(_where(number, cell, match.group(), source, match.start()))
        if cell["cell_type"] == "markdown":
            for math in MATH.finditer(source):
                start = math.start(1) if math.group(1) is not None else math.start(2)
                for match in EATEN_IN_MATH.finditer(math.group(1) or math.group(2)):
                    found.append(
                        _where(number, cell, match.group(), source, start + match.start())
                        + " (inside math: an escape such as \\top or \\nu that was read as a tab or newline)"
                    )
    return found


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks under book/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_control_characters_in_cells(path):
    found = control_characters(json.loads(path.read_text()))
    assert not found, f"{path.relative_to(ROOT)}:\n" + "\n".join(found)


def test_the_check_finds_the_binding_chapters_old_errors():
    # binding_subspaces.ipynb's markdown cell 12 (index 11) as it was: "\bar", "\approx", "^\top" eaten by Python.
    old = {
        "cells": [
            {"cell_type": "code", "source": "x = 1\tif y else 2"},  # a tab in code is fine
            {
                "cell_type": "markdown",
                "source": ["mean $|\bar q|^2 \approx 0.12$,\n", "$\\Delta C = \\bar q\\,\\bar k^\top$, and $\\n\nu$"],
            },
        ]
    }
    found = control_characters(old)
    assert [f.split(":")[1].split()[0] for f in found] == ["'\\x08'", "'\\x07'", "'\\t'", "'\\n'"], found
    assert all(f.startswith("cell 2 (index 1, markdown)") for f in found)
    assert "ar q|^2" in found[0] and "inside math" in found[2] and "inside math" in found[3]


def test_plain_newlines_and_tabs_pass():
    fine = {"cells": [{"cell_type": "markdown", "source": "$$\na + b\n$$\n\n| a\t| b |\n\n$\\nu \\neq \\top$"}]}
    assert control_characters(fine) == []
