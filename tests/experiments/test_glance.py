"""The results-at-a-glance table: one row per claim, verdicts from the recorded numbers by the stated rules."""

import json
from pathlib import Path

from qkcore.experiments.glance import (
    NOT_REPRODUCED,
    NOT_RUN,
    NOT_TESTABLE,
    REPRODUCED,
    as_html,
    claims_table,
)

BOOK_RESULTS = Path(__file__).resolve().parents[2] / "book" / "results"


def _toy(exact="18/18", angle=1.2, ratio=1.1, match=1.0, cross=0.01, both=0.97, rand8=0.3) -> dict:
    return {
        "rank_recovery": {"d_head 16: exact rank recovery": exact},
        "why_it_works": {"largest principal angle to the analytic spans (deg)": angle, "crosstalk of G": cross},
        "cube": {"key means: edge ratio": ratio, "codes whose query mean is nearest their own key mean": match},
        "causal_swaps": {"z1+z2 (rank 8): flip rate": both, "random 8-d (rank 8): flip rate": rand8},
    }


def test_eleven_claims_and_the_toy_rules():
    table = claims_table(_toy())
    assert len(table) == 11
    assert list(table.verdict[:5]) == [REPRODUCED] * 5
    assert table.verdict.iloc[-1] == NOT_TESTABLE
    bad = claims_table(_toy(exact="17/18", angle=9.0, ratio=2.0, cross=0.2, both=0.5, rand8=0.3))
    assert list(bad.verdict[:5]) == [NOT_REPRODUCED] * 5


def test_missing_chapters_are_not_run_and_lm_verdicts_are_read_not_made():
    table = claims_table({"filter_heads": {"verdict: swap moves attention (Figure 7)": "not reproduced (at L2H0)"}})
    assert table.verdict.iloc[0] == NOT_RUN
    assert table.loc["7. Filter intervention", "verdict"] == "organism: not reproduced (at L2H0)"


def test_links_point_at_built_pages():
    html = as_html(claims_table(_toy())[["verdict", "section"]])
    assert '<a href="rank_recovery.html">Rank recovery</a>' in html and ".ipynb" not in html


def test_the_committed_results_give_every_toy_claim_a_verdict():
    results = {p.stem: json.loads(p.read_text()) for p in BOOK_RESULTS.glob("*.json")}
    assert NOT_RUN not in set(claims_table(results).verdict[:5])


def test_binding_verdicts_are_read_from_the_executed_pages(tmp_path):
    page = {"cells": [{"outputs": [{"data": {"text/markdown": "**Verdict: not reproduced.** The swap ..."}}]}]}
    (tmp_path / "attribution_smollm2.ipynb").write_text(json.dumps(page))
    table = claims_table({}, pages=tmp_path)
    assert table.loc["10. Attribution", "verdict"] == "SmolLM2 (binds at chance): not reproduced"
