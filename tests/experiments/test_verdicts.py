"""The one verdict module: each rule picks each word it can pick, and only on the evidence it states."""

import math

import pytest
import torch

from qkcore.experiments import verdicts as V


def _flips(rate: float, n: int = 400, seed: int = 0) -> torch.Tensor:
    return (torch.rand(n, generator=torch.Generator().manual_seed(seed)) < rate).double()


def test_estimate_drops_undefined_prompts_and_covers_the_mean():
    x = torch.cat([_flips(0.5, 300), torch.full((100,), float("nan"), dtype=torch.float64)])
    e = V.Estimate.of(x)
    assert e.n == 300 and e.lo < e.value < e.hi and e.hi - e.lo < 0.15
    assert V.Estimate.of(torch.full((5,), float("nan"))).n == 0


def test_effect_vs_controls_words():
    base = torch.rand(400, generator=torch.Generator().manual_seed(1))
    effect = (base < 0.6).double()
    low = (base < 0.1).double()  # same prompts, paired: the control flips a subset of the effect's prompts
    same = (base < 0.6).double()
    high = (base < 0.9).double()
    assert V.effect_vs_controls("filter: swap", "m", "L0H0", effect, {"random": low}).verdict == V.REPRODUCED
    assert (
        V.effect_vs_controls("filter: swap", "m", "L0H0", effect, {"random": low, "labels": same}).verdict == V.MATCHED
    )
    assert (
        V.effect_vs_controls("filter: swap", "m", "L0H0", effect, {"random": low, "top": high}).verdict
        == V.CONTROL_BETTER
    )
    assert (
        V.effect_vs_controls("filter: swap", "m", None, torch.zeros(400), {"random": low}).verdict == V.NOT_REPRODUCED
    )
    floor = torch.full((400,), float("nan"), dtype=torch.float64)
    floor[:5] = 1.0
    v = V.effect_vs_controls("filter: swap", "m", None, floor, {"random": low}, floor_reason="orig is never on top")
    assert v.verdict == V.UNDEFINED and "never on top" in v.rule and v.numbers["defined on"] == 5


def test_paired_difference_needs_the_same_prompts():
    with pytest.raises(ValueError, match="same prompts"):
        V.paired_difference(torch.zeros(3), torch.zeros(4))
    d = V.paired_difference(_flips(0.7, seed=2), _flips(0.7, seed=2))
    assert d.value == 0 and d.lo == 0 and d.hi == 0


def test_permutation_p_and_against_null():
    assert V.permutation_p(1.0, [0.0] * 50) == pytest.approx(1 / 51)
    assert V.permutation_p(0.0, [0.0] * 50) == 1.0
    assert V.permutation_p(0.1, [0.5, 0.6], greater=False) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="null draw"):
        V.permutation_p(1.0, [])
    draws = {"random groupings": [0.1] * 50, "balanced groupings": [0.2] * 50}
    assert V.against_null("filter: swap", "m", None, 0.8, draws, statistic="η²").verdict == V.REPRODUCED
    v = V.against_null("filter: swap", "m", None, 0.15, draws, statistic="η²")
    assert v.verdict == V.MATCHED and v.numbers["balanced groupings: p"] == 1.0


def _exact_tail(successes, n, chance):
    from fractions import Fraction

    c = Fraction(chance).limit_denominator(10**6)
    return sum(math.comb(n, k) * c**k * (1 - c) ** (n - k) for k in range(successes, n + 1))


@pytest.mark.parametrize(
    "successes, n, chance",
    [(30, 40, 0.2), (32, 32, 1 / 9), (464, 500, 0.2), (340, 400, 1 / 9), (500, 1100, 0.2), (5, 10, 0.5)],
)
def test_the_binomial_tail_is_exact_where_its_factors_leave_the_float_range(successes, n, chance):
    """0.2**464 is 0 in float64 and comb(1100, 500) is beyond it, yet those tails are ordinary floats: each must
    match the exact rational tail to 1e-9, and "p < 1e-300" is printed only below that."""
    exact = _exact_tail(successes, n, chance)
    p = V.binomial_above_chance(successes, n, chance)
    assert p == pytest.approx(float(exact), rel=1e-9)
    assert (V.fmt_p(p) == "p < 1e-300") == (exact < 1e-300)


def test_binomial_above_chance():
    assert V.binomial_above_chance(49, 50, 1 / 9) < 1e-30
    assert V.binomial_above_chance(0, 50, 0.25) == pytest.approx(1.0)
    assert V.binomial_above_chance(13, 50, 0.25) > 0.3  # 0.26 at chance 0.25: no evidence
    with pytest.raises(ValueError):
        V.binomial_above_chance(51, 50, 0.25)


def test_rank_verdict_and_gate():
    assert V.rank_verdict("filter: low rank", "m", None, 1, 1, implied_by_bound=True).verdict == V.IMPLIED
    assert V.rank_verdict("filter: low rank", "m", None, 1, 1, implied_by_bound=False).verdict == V.REPRODUCED
    assert V.rank_verdict("filter: low rank", "m", None, 3, 1, implied_by_bound=False).verdict == V.NOT_REPRODUCED
    assert V.gate("filter: swap", "m", None, True, "ok") is None
    g = V.gate("filter: swap", "m", None, False, "letter accuracy at chance", {"accuracy": 0.26})
    assert g.verdict == V.NOT_TESTABLE and g.to_dict()["numbers"]["accuracy"] == 0.26


def test_verdict_refuses_words_outside_the_vocabulary():
    with pytest.raises(ValueError, match="verdict must be one of"):
        V.Verdict("filter: swap", "m", None, "reproduced, but a control shows it too", "rule")
    assert not any(w.startswith("reproduced") for w in V.VOCABULARY if w != V.REPRODUCED)
    with pytest.raises(ValueError, match="claim must be one of"):
        V.Verdict("filter swaps", "m", None, V.REPRODUCED, "rule")


def test_record_verdicts_adds_to_the_runs_numbers(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class P:
        n: int = 1

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "ch.json").write_text('{"a": 1}')
    v = V.Verdict("filter: swap", "m", "L0H0", V.MATCHED, "rule", {"effect": V.Estimate(0.5, 0.4, 0.6, 100)})
    V.record_verdicts("ch", [v], P(), tmp_path / "results")
    import json

    got = json.loads((tmp_path / "results" / "ch.json").read_text())
    assert got["a"] == 1 and got["verdicts"][0]["numbers"]["effect"] == "0.500 [0.400, 0.600]"
    V.record_verdicts("ch", [v], P(n=2), tmp_path / "results")  # not a book run: nothing written
    assert math.isclose(json.loads((tmp_path / "results" / "ch.json").read_text())["a"], 1)
