"""Numbers and tables as the chapters print them: rounded, and never "−0.000" (a sign that float noise can flip
between runs, which nbval would report as a change).

    print(num(0.12345))            # "0.123"
    print(rounded(frame).to_string())
"""

from __future__ import annotations

import textwrap


def num(x: float, digits: int = 3) -> str:
    """A number for printing: rounded to `digits`, never "−0.000"."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"


def rounded(frame, digits: int = 3):
    """A DataFrame's float columns rounded for printing, −0.0 turned into 0.0."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f":
            out[col] = out[col].round(digits) + 0.0
    return out


def r3(x) -> float:
    """A float rounded to 3 decimals for a chapter summary (−0.0 → 0.0)."""
    return round(float(x), 3) + 0.0


WIDTH = 86  # characters: what a chapter's output column shows without scrolling


def print_wrapped(text: str, width: int = WIDTH) -> None:
    """Print text wrapped to the page's column (continuation lines indented)."""
    print(textwrap.fill(str(text), width=width, subsequent_indent="    "))


def print_summary(numbers: dict) -> None:
    """One line per closing number of a chapter's summary(), wrapped to the page's column."""
    for key, value in numbers.items():
        print_wrapped(f"{key}: {value}")
