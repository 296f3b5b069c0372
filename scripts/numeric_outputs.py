"""When a page's re-executed output still says what its committed output says: the rule `conftest.py` applies before
nbval compares a cell.

Why: float32 sums come out in a different order on a CPU with other vector instructions (torch, MKL and oneDNN each
pick their kernels by instruction set, and MKL picks them by vendor too), so the same code on the same inputs prints
other last digits on another machine: an angle of 79.740 degrees comes out 79.741; a fraction at 0.0695 prints as
0.069 or 0.070. nbval compares strings, so a page executed on one machine failed on a machine of another kind. MKL's
reproducible mode cannot close the gap: its AVX2 branch is honoured on Intel processors only.

The rule: two outputs agree when they are the same text except for decimal numbers (a digit after a point) whose
values differ by at most one unit in their last place, or by at most the cell's declared tolerance (which covers every
number the cell prints). A decimal may be printed with fewer places than its counterpart only as Python prints a
rounded float, trailing zeros dropped ("0.7" for 0.70 beside "0.71"): the two compare at the longer one's places. An
exponent must be the same. Where a decimal moved, the whitespace around the numbers may differ too (a wider number
moves a wrapped line's break or a column's padding); integers (counts, indices, ranks, ids), words, verdicts, the
count of numbers and everything else between them must be identical.

A cell declares a tolerance in its metadata, with the reason, where its numbers are ill-conditioned in a way the page
can name (a toy model trained on this machine: its training trajectory, not only its last sums, follows the kernels):

    "metadata": {"nbval_tolerance": {"absolute": 0.02, "why": "..."}}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

# A decimal number: digits, a point and digits, optionally an exponent ("0.973", "-12.50", "1.6e-273"). Not touching
# a word character, nor a point that joins it to more digits, so the parts of an identifier or of a version string
# "1.2.3" stay text, while a decimal that ends a sentence ("was 0.118.") is a number.
_DECIMAL = re.compile(r"(?<!\w)(?<!\d\.)-?\d+\.(\d+)(?:[eE]([-+]?\d+))?(?!\w|\.\d)")


@dataclass(frozen=True)
class Moved:
    """One decimal that differs within the rule: as committed, and as re-executed."""

    committed: str
    executed: str


def cell_tolerance(metadata: dict) -> float:
    """A cell's declared absolute tolerance (0 when it declares none); a declaration without a reason, or with a
    tolerance that is not a non-negative number, is an error naming what to write."""
    declared = metadata.get("nbval_tolerance")
    if declared is None:
        return 0.0
    example = '{"nbval_tolerance": {"absolute": 0.02, "why": "the reason the numbers move"}}'
    if not isinstance(declared, dict) or not str(declared.get("why", "")).strip():
        raise ValueError(f"nbval_tolerance {declared!r}: declare it with its reason, as {example}")
    absolute = declared.get("absolute")
    number = isinstance(absolute, (int, float)) and not isinstance(absolute, bool)
    if not number or not math.isfinite(absolute) or absolute < 0:
        raise ValueError(f"nbval_tolerance absolute {absolute!r}: a finite non-negative number, as {example}")
    return float(absolute)


def _split(text: str) -> tuple[list[str], list[re.Match]]:
    """The text between decimals (one more piece than decimals) and the decimals themselves."""
    numbers = list(_DECIMAL.finditer(text))
    between, start = [], 0
    for number in numbers:
        between.append(text[start : number.start()])
        start = number.end()
    between.append(text[start:])
    return between, numbers


def _mantissa(number: re.Match) -> Decimal:
    return Decimal(number.group(0).lower().split("e")[0])


def _within(a: re.Match, b: re.Match, tolerance: Decimal) -> bool:
    """Whether two decimals differ by at most one unit in the last place of the one with more places, or by at most
    `tolerance` (plain decimals only: an exponent's scale is not the tolerance's)."""
    if a.group(2) != b.group(2):
        return False  # another exponent: a different number, not a moved digit
    allowed = Decimal(1).scaleb(-max(len(a.group(1)), len(b.group(1))))
    if a.group(2) is None:
        allowed = max(allowed, tolerance)
    return abs(_mantissa(a) - _mantissa(b)) <= allowed


def _layout(text: str) -> str:
    """Text with every run of whitespace as one space: what stays when a line's break or a column's padding moves."""
    return re.sub(r"\s+", " ", text)


def numbers_within(committed: str, executed: str, tolerance: float = 0.0) -> list[Moved] | None:
    """The decimals that differ within the rule, when they are the only difference (an empty list when the texts are
    equal); None when the texts differ otherwise: other words or integers, a number moved further, another count of
    numbers, another exponent, or whitespace that moved with no number moving."""
    if committed == executed:
        return []
    text_c, numbers_c = _split(committed)
    text_e, numbers_e = _split(executed)
    if len(numbers_c) != len(numbers_e):
        return None
    allowed = Decimal(repr(float(tolerance)))
    moved = []
    for c, e in zip(numbers_c, numbers_e):
        if c.group(0) == e.group(0):
            continue
        if not _within(c, e, allowed):
            return None
        moved.append(Moved(c.group(0), e.group(0)))
    if text_c != text_e and (not moved or [_layout(t) for t in text_c] != [_layout(t) for t in text_e]):
        return None
    return moved
