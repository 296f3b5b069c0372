"""The toy chapters' verdicts: one rule per claim, each judged on the trained head AND on its controls.

A toy claim is *reproduced* only when the trained head meets the claim's criterion and neither control does: the
same head at initialisation ("untrained") and after its first optimiser steps ("early-stopped", see
`qkcore.toy.train.train_grid`). When a control meets it too, the claim says something about the estimator or the
task's maps, not about what training built, and the verdict says so. The words are the book's shared vocabulary
(`qkcore/experiments/verdicts.py`); `as_record` writes each one as the book's shared Verdict record.

    v = crosstalk_verdict(0.004, {"untrained": 0.47, "early-stopped": 0.31})
    v.verdict                     # "reproduced"
    v.as_record()                 # {"claim", "verdict", "rule", "numbers"} for results.record(...)["verdicts"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from qkcore.experiments import verdicts as shared
from qkcore.experiments.verdicts import (
    CONTROL_BETTER,
    MATCHED,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    UNDEFINED,
)

VERDICTS = (REPRODUCED, MATCHED, CONTROL_BETTER, NOT_REPRODUCED, NOT_TESTABLE, UNDEFINED)
# Each toy claim's key in the book's claim registry (qkcore.experiments.verdicts.CLAIMS)
CLAIM_KEYS = {
    "ΔC's rank equals r1 and r2 where the factors fit": "toy: rank recovery",
    "U and V span W_Q B₁ and W_K A₁ (App. B)": "toy: analytic form",
    "G is block-diagonal (z1 and z2 do not talk)": "toy: interaction matrix",
    "the z1 key means sit on a cube": "toy: cube",
    "swapping keys in z1+z2 moves the attention": "toy: causal swap",
}
MODEL = "toy single-head model"

# Criteria, fixed before the controls were run (the trained head's numbers at the defaults are in brackets).
CROSSTALK_MAX = 0.05  # G's share of energy in the z1–z2 blocks (trained 0.007; a random G has 2·r1·r2/(r1+r2)²)
CUBE_EDGE_RATIO_MAX = 1.3  # longest / shortest cube edge of the key means (trained 1.15)
CUBE_ANGLE_DEV_MAX = 20.0  # every corner angle within 90° ± this (trained 77°–103°)
ANALYTIC_ANGLE_MAX = 5.0  # largest principal angle (deg) between U, V and span W_Q B_f, W_K A_f (trained 1.2°)
SWAP_FLIP_MIN = 0.5  # flip rate of the z1+z2 swap (trained 0.97)
SWAP_MARGIN_MIN = 0.2  # … above the random subspace of the same rank (trained margin 0.67)


@dataclass(frozen=True)
class Verdict:
    claim: str
    verdict: str
    rule: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def as_record(self) -> dict:
        """The shared verdict's record (qkcore.experiments.verdicts.Verdict.to_dict), the claim under its registry
        key and its words kept in the rule."""
        rule = f"{self.claim}: {self.rule}"
        return shared.Verdict(CLAIM_KEYS[self.claim], MODEL, None, self.verdict, rule, dict(self.numbers)).to_dict()


def judge(
    trained: float,
    controls: Mapping[str, float],
    meets: Callable[[float], bool],
    better: Callable[[float, float], bool],
) -> str:
    """The control rule: "not reproduced" unless the trained score meets the criterion; then "reproduced" if no
    control meets it, "a control does better" if a control meets it and beats the trained score, else "matched by
    a control". `better(a, b)`: score a is strictly better than score b."""
    if not meets(trained):
        return NOT_REPRODUCED
    passing = [value for value in controls.values() if meets(value)]
    if not passing:
        return REPRODUCED
    return CONTROL_BETTER if any(better(value, trained) for value in passing) else MATCHED


def _numbers(trained, controls: Mapping) -> dict:
    return {"trained": trained, **dict(controls)}


def rank_verdict(exact: tuple[int, int], controls: Mapping[str, tuple[int, int]]) -> Verdict:
    """Rank recovery: `exact` = (cells with both ranks exact, cells) over the cells where r1 + r2 fits in d_head."""
    rule = (
        "reproduced if the trained heads recover (r1, r2) exactly in every cell where r1 + r2 fits in d_head and each "
        "control (untrained, early-stopped) misses at least one of those cells"
    )
    claim = "ΔC's rank equals r1 and r2 where the factors fit"
    k, n = exact
    nums = _numbers(f"{k}/{n}", {name: f"{a}/{b}" for name, (a, b) in controls.items()})
    if n == 0:
        return Verdict(claim, NOT_TESTABLE, rule + " (no cell fits here)", nums)
    share = {name: a / b for name, (a, b) in controls.items()}
    verdict = judge(k / n, share, lambda s: s >= 1.0, lambda a, b: a > b)
    return Verdict(claim, verdict, rule, nums)


def analytic_form_verdict(trained: float, controls: Mapping[str, float], limit: float = ANALYTIC_ANGLE_MAX) -> Verdict:
    """App. B's closed form: the largest principal angle (degrees) between the recovered query / key subspaces and the
    analytic spans W_Q B_f, W_K A_f, over both factors, at most `limit`. The closed form holds for any W_Q, W_K, so an
    untrained head is expected to match it: the claim is about the estimator, and the verdict says so. NaN (a control
    whose ΔC has rank 0, so no subspace to compare) does not meet the criterion."""
    rule = (
        f"reproduced if the largest principal angle between the recovered subspaces and the analytic spans is at most "
        f"{limit:.0f}° for the trained head and for neither control; the closed form holds for any weights, so a "
        "control meeting it makes it 'matched by a control'"
    )

    def meets(angle):
        return angle == angle and angle <= limit  # NaN never meets

    verdict = judge(trained, controls, meets, lambda a, b: a < b)
    nums = _numbers(f"{trained:.2f}°", {name: f"{a:.2f}°" for name, a in controls.items()})
    return Verdict("U and V span W_Q B₁ and W_K A₁ (App. B)", verdict, rule, nums)


def crosstalk_verdict(trained: float, controls: Mapping[str, float], limit: float = CROSSTALK_MAX) -> Verdict:
    """G block-diagonal: the crosstalk (share of G's energy pairing z1 with z2) at most `limit`."""
    rule = (
        f"reproduced if the trained head's crosstalk is at most {limit} and neither control's is; a control at "
        f"or below {limit} makes it 'matched by a control'"
    )
    verdict = judge(trained, controls, lambda c: c <= limit, lambda a, b: a < b)
    return Verdict("G is block-diagonal (z1 and z2 do not talk)", verdict, rule, _numbers(trained, controls))


def cube_verdict(trained: tuple[float, float], controls: Mapping[str, tuple[float, float]]) -> Verdict:
    """The key means form a cube: (edge ratio, largest |corner angle − 90°|) within the limits."""
    rule = (
        f"reproduced if the trained head's key means have edge ratio <= {CUBE_EDGE_RATIO_MAX} and every corner "
        f"angle within 90° ± {CUBE_ANGLE_DEV_MAX:.0f}°, and neither control's do"
    )

    def meets(g):
        return g[0] <= CUBE_EDGE_RATIO_MAX and g[1] <= CUBE_ANGLE_DEV_MAX

    def better(a, b):
        return a[0] <= b[0] and a[1] <= b[1] and a != b

    def show(g):
        return {"edge ratio": round(g[0], 3), "max |angle − 90°|": round(g[1], 1)}

    verdict = judge(trained, controls, meets, better)
    nums = _numbers(show(trained), {name: show(g) for name, g in controls.items()})
    return Verdict("the z1 key means sit on a cube", verdict, rule, nums)


def swap_verdict(trained: tuple[float, float], controls: Mapping[str, tuple[float, float]]) -> Verdict:
    """The z1+z2 swap moves the attention: (flip rate of the z1+z2 swap, mean flip rate of random subspaces of the
    same rank)."""
    rule = (
        f"reproduced if swapping in span[V1 V2] flips at least {SWAP_FLIP_MIN} of the trials and at least "
        f"{SWAP_MARGIN_MIN} more than random subspaces of the same rank, for the trained head and for neither control"
    )

    def meets(s):
        return s[0] >= SWAP_FLIP_MIN and s[0] - s[1] >= SWAP_MARGIN_MIN

    def better(a, b):
        return a[0] - a[1] > b[0] - b[1]

    def show(s):
        return {"flip z1+z2": round(s[0], 3), "flip random": round(s[1], 3)}

    verdict = judge(trained, controls, meets, better)
    nums = _numbers(show(trained), {name: show(s) for name, s in controls.items()})
    return Verdict("swapping keys in z1+z2 moves the attention", verdict, rule, nums)


def print_verdicts(found: list[Verdict]) -> None:
    """One block per verdict: the claim and its verdict, the deciding numbers, the rule in words."""
    from qkcore.experiments.tables import print_wrapped

    for v in found:
        print_wrapped(f"{v.claim}: {v.verdict.upper()}")
        for who, value in v.numbers.items():
            print_wrapped(f"  {who}: {value}")
        print_wrapped(f"  rule: {v.rule}")


def record_verdicts(chapter: str, numbers: dict, found: list[Verdict], params) -> dict:
    """`results.record` of the chapter's numbers with its verdicts under "verdicts" (a list of
    {claim, verdict, rule, numbers}); returns the numbers without them, for print_summary."""
    from qkcore.experiments.results import record

    record(chapter, {**numbers, "verdicts": [v.as_record() for v in found]}, params)
    return numbers
