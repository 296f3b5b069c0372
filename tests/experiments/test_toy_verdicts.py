"""The toy verdict rules: each word is reachable, a control that meets the criterion never leaves "reproduced", and
the chapters' verdict functions read the right numbers."""

import math

import pytest

from qkcore.experiments.toy import verdicts as v


def test_judge_covers_every_outcome():
    def meets(x):
        return x >= 1

    def better(a, b):
        return a > b

    assert v.judge(0.5, {"untrained": 0.0}, meets, better) == v.NOT_REPRODUCED
    assert v.judge(1.0, {"untrained": 0.5, "early-stopped": 0.9}, meets, better) == v.REPRODUCED
    assert v.judge(1.0, {"untrained": 1.0}, meets, better) == v.MATCHED
    assert v.judge(1.0, {"untrained": 2.0}, meets, better) == v.CONTROL_BETTER


def test_rank_verdict():
    assert v.rank_verdict((18, 18), {"untrained": (16, 18), "early-stopped": (17, 18)}).verdict == v.REPRODUCED
    assert v.rank_verdict((18, 18), {"untrained": (18, 18), "early-stopped": (17, 18)}).verdict == v.MATCHED
    assert v.rank_verdict((17, 18), {"untrained": (18, 18)}).verdict == v.NOT_REPRODUCED
    none_fit = v.rank_verdict((0, 0), {"untrained": (0, 0)})
    assert none_fit.verdict == v.NOT_TESTABLE and "no cell fits" in none_fit.rule


def test_crosstalk_cube_and_swap_verdicts():
    assert v.crosstalk_verdict(0.007, {"untrained": 0.55, "early-stopped": 0.52}).verdict == v.REPRODUCED
    assert v.crosstalk_verdict(0.007, {"untrained": 0.003}).verdict == v.CONTROL_BETTER
    assert v.crosstalk_verdict(0.2, {"untrained": 0.5}).verdict == v.NOT_REPRODUCED
    assert v.cube_verdict((1.15, 13.5), {"untrained": (1.46, 37.5)}).verdict == v.REPRODUCED
    assert v.cube_verdict((1.15, 13.5), {"untrained": (1.2, 15.0)}).verdict == v.MATCHED
    assert v.cube_verdict((1.15, 13.5), {"untrained": (math.inf, 90.0)}).verdict == v.REPRODUCED
    assert v.cube_verdict((1.6, 9.0), {}).verdict == v.NOT_REPRODUCED
    assert v.swap_verdict((0.97, 0.30), {"untrained": (0.04, 0.07)}).verdict == v.REPRODUCED
    assert v.swap_verdict((0.97, 0.30), {"early-stopped": (0.99, 0.1)}).verdict == v.CONTROL_BETTER
    assert v.swap_verdict((0.6, 0.5), {}).verdict == v.NOT_REPRODUCED  # margin below 0.2


def test_analytic_form_verdict_says_an_untrained_head_matches_it():
    # App. B's closed form holds for any weights: an untrained head within the angle limit matches the trained one
    assert v.analytic_form_verdict(1.2, {"untrained": 1.5, "early-stopped": 1.4}).verdict == v.MATCHED
    assert v.analytic_form_verdict(1.2, {"untrained": 40.0}).verdict == v.REPRODUCED
    assert v.analytic_form_verdict(1.2, {"untrained": 0.5}).verdict == v.CONTROL_BETTER
    assert v.analytic_form_verdict(9.0, {"untrained": 1.0}).verdict == v.NOT_REPRODUCED
    assert v.analytic_form_verdict(1.2, {"untrained": math.nan}).verdict == v.REPRODUCED  # rank 0: no subspace
    assert v.analytic_form_verdict(1.2, {}).as_record()["claim"] == "toy: analytic form"


def test_records_use_the_shared_words_and_state_their_rule():
    found = v.crosstalk_verdict(0.007, {"untrained": 0.55})
    record = found.as_record()
    assert set(record) == {"claim", "model", "head", "verdict", "rule", "numbers"}
    assert record["claim"] == "toy: interaction matrix"  # the registry's key: the glance page groups by it
    assert record["verdict"] in v.VERDICTS and "control" in record["rule"]
    with pytest.raises(ValueError, match="verdict must be one of"):
        v.Verdict("c", "reproduced, but a control shows it too", "r")
