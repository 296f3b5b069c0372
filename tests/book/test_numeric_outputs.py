"""The rule nbval's comparison follows (scripts/numeric_outputs.py, installed by the root conftest.py): a decimal may
move by one unit in its last printed place, or by a cell's declared tolerance; nothing else may change."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from scripts.numeric_outputs import Moved, cell_tolerance, numbers_within

ROOT = Path(__file__).resolve().parents[2]


def test_equal_texts_have_nothing_moved():
    assert numbers_within("angle 79.740°, rank 3", "angle 79.740°, rank 3") == []


def test_a_decimal_one_unit_off_in_its_last_place_is_within():
    html = '<td id="T_controls_row20_col7" class="data row20 col7" >{}</td>'
    assert numbers_within(html.format("0.973"), html.format("0.972")) == [Moved("0.973", "0.972")]
    assert numbers_within("gap 0.069 of 0.5", "gap 0.070 of 0.5") == [Moved("0.069", "0.070")]
    assert numbers_within("-0.000", "0.000") == [Moved("-0.000", "0.000")]
    assert numbers_within("p 1.6e-273", "p 1.7e-273") == [Moved("1.6e-273", "1.7e-273")]
    assert numbers_within("It was 0.118.", "It was 0.117.") == [Moved("0.118", "0.117")]  # a sentence's end


def test_a_rounded_float_printed_without_its_trailing_zeros_compares_at_the_longer_places():
    """print_summary prints Python's repr of rounded floats: 0.70 shows as "0.7", and a re-run's 0.71 is one unit
    away; the wrapped line's break may move with the wider number."""
    committed = "kNN (trained, shuffled, random init): (0.7, 0.63,\n    0.82)"
    executed = "kNN (trained, shuffled, random init): (0.71, 0.63, 0.82)"
    assert numbers_within(committed, executed) == [Moved("0.7", "0.71")]
    assert numbers_within("p 0.02", "p 0.021") == [Moved("0.02", "0.021")]
    assert numbers_within("0.1 and 0.2", "0.10 and 0.2") == [Moved("0.1", "0.10")]


@pytest.mark.parametrize(
    "committed, executed, why",
    [
        ("angle 79.740", "angle 79.742", "two units"),
        ("rank 3 of 16", "rank 4 of 16", "an integer"),
        ('<td id="T_row20_col7">0.5</td>', '<td id="T_row21_col7">0.5</td>', "an id"),
        ("**reproduced**: 0.973", "**not reproduced**: 0.973", "a verdict word"),
        ("0.1 and 0.2", "0.12 and 0.2", "two units of the longer places"),
        ("(0.7, 0.6)", "(0.71, 0.6) ", "a space added at the end"),
        ("a  0.5", "a 0.5", "whitespace moved with no number moving"),
        ("rank 3,\n    0.5", "rank 4, 0.5", "an integer, with the break moved"),
        ("σ₂²/Σσ² 4.9e-15", "σ₂²/Σσ² 4.91e-16", "another exponent"),
        ("p 1.6e-273", "p 1.6e-272", "another exponent"),
        ("0.5, 0.6", "0.5, 0.6, 0.7", "another count of numbers"),
        ("torch 2.13.0", "torch 2.13.1", "a version string is text"),
        ("It was 0.118.", "It was 0.121.", "three units, before a full stop"),
    ],
)
def test_anything_else_is_a_difference(committed, executed, why):
    assert numbers_within(committed, executed) is None, why


def test_a_declared_tolerance_widens_plain_decimals_only():
    assert numbers_within("crosstalk 0.044", "crosstalk 0.050", tolerance=0.02) == [Moved("0.044", "0.050")]
    assert numbers_within("crosstalk 0.044", "crosstalk 0.065", tolerance=0.02) is None
    assert numbers_within("crosstalk 0.044", "crosstalk 0.050") is None
    assert numbers_within("p 1.6e-3", "p 4.6e-3", tolerance=0.02) is None  # an exponent's scale is not the tolerance's
    assert numbers_within("rank 3", "rank 4", tolerance=2) is None  # integers stay exact


def test_a_tolerance_is_declared_with_its_reason():
    assert cell_tolerance({}) == 0.0
    assert cell_tolerance({"nbval_tolerance": {"absolute": 0.02, "why": "trained here"}}) == 0.02
    for bad in ({"absolute": 0.02}, {"absolute": 0.02, "why": " "}, 0.02):
        with pytest.raises(ValueError, match="reason"):
            cell_tolerance({"nbval_tolerance": bad})
    for bad in (-0.1, "0.02", True, None, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="non-negative number"):
            cell_tolerance({"nbval_tolerance": {"absolute": bad, "why": "x"}})


def _cell(source: str, committed: str, metadata: dict | None = None):
    cell = nbformat.v4.new_code_cell(source, metadata=metadata or {}, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=committed)]
    return cell


def test_nbval_under_the_root_conftest_applies_the_rule(tmp_path):
    """End to end: nbval, with the root conftest.py, on a notebook whose committed outputs differ from what its cells
    print, within and beyond the rule (a planted integer change and a two-unit move must still fail)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    tolerance = {"nbval_tolerance": {"absolute": 0.01, "why": "a test"}}
    nb.cells = [
        _cell('print("angle 79.741")', "angle 79.740\n"),  # 0: one unit: passes
        _cell('print("angle 79.742")', "angle 79.740\n"),  # 1: two units: fails
        _cell('print("rank 4, 0.5")', "rank 3, 0.5\n"),  # 2: an integer: fails
        _cell('print("crosstalk 0.050")', "crosstalk 0.044\n", tolerance),  # 3: within the tolerance: passes
        _cell('print("crosstalk 0.060")', "crosstalk 0.044\n", tolerance),  # 4: beyond it: fails
    ]
    nbformat.write(nb, tmp_path / "page.ipynb")
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--nbval"]
        + ["--nbval-current-env", "page.ipynb"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = run.stdout + run.stderr
    outcome = {i: ("PASSED" if f"PASSED page.ipynb::Cell {i}" in out else "FAILED") for i in range(5)}
    assert outcome == {0: "PASSED", 1: "FAILED", 2: "FAILED", 3: "PASSED", 4: "FAILED"}, out[-3000:]
    assert "page.ipynb::Cell 0: 79.740 -> 79.741" in out
    assert "page.ipynb::Cell 3: 0.044 -> 0.050" in out
