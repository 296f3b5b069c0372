"""The results-at-a-glance page: it prints the verdicts the chapters recorded, grouped by the paper's claims, with
each rule in words; it decides nothing and reads no notebook text."""

import json
from pathlib import Path

import pytest

from qkcore.experiments import verdicts as V
from qkcore.experiments.glance import GlanceParams, glance_html, glance_rows, verdict_counts

BOOK_RESULTS = Path(__file__).resolve().parents[2] / "book" / "results"


def _v(claim, verdict, model="organism", head="L2H0", rule="rule A", **numbers):
    return V.Verdict(claim, model, head, verdict, rule, numbers).to_dict()


def test_rows_are_grouped_by_claim_and_end_with_generalisation():
    results = {
        "filter_heads_smollm2": {"verdicts": [_v("filter: swap", V.MATCHED, "SmolLM2-135M", "L22H4")]},
        "cube": {"verdicts": [_v("toy: cube", V.REPRODUCED, "toy", None, edge_ratio=1.02)]},
        "filter_heads": {"verdicts": [_v("filter: low rank", V.IMPLIED), _v("filter: swap", V.REPRODUCED)]},
    }
    rows = glance_rows(results)
    assert [(r["number"], r["page"]) for r in rows] == [
        (3, "cube"),
        (6, "filter_heads"),
        (7, "filter_heads"),
        (7, "filter_heads_smollm2"),
        (11, None),
    ]
    assert rows[-1]["verdict"] == V.NOT_TESTABLE
    assert verdict_counts(rows)["organism"] == {V.IMPLIED: 1, V.REPRODUCED: 1}


def test_html_has_badges_rules_numbers_and_links():
    rows = glance_rows(
        {
            "binding_interventions_smollm2": {
                "verdicts": [
                    _v("binding: swap, order", V.NOT_TESTABLE, "SmolLM2-135M", None, rule="letter accuracy at chance"),
                ]
            },
            "binding_interventions": {
                "verdicts": [_v("binding: swap, order", V.MATCHED, effect=V.Estimate(0.41, 0.3, 0.5, 100))]
            },
        }
    )
    html = glance_html(rows)
    assert html.count('class="verdict-badge"') == 3
    assert "rule: rule A" in html and "<em>letter accuracy at chance</em>" in html  # a gate's rule on its own row
    assert "effect: 0.410 [0.300, 0.500]" in html
    assert '<a href="binding_interventions.html">' in html and ".ipynb" not in html
    assert "table-layout: fixed; width: 100%" in html


def test_unknown_claims_and_missing_results_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown claim"):
        glance_rows({"x": {"verdicts": [{"claim": "filter swaps", "verdict": V.REPRODUCED}]}})
    with pytest.raises(ValueError, match="holds no recorded results"):
        GlanceParams(results_dir=str(tmp_path / "missing"))


def test_the_committed_results_carry_only_known_claims_and_words():
    results = {p.stem: json.loads(p.read_text()) for p in BOOK_RESULTS.glob("*.json")}
    for r in glance_rows(results):
        assert r["verdict"] in V.VOCABULARY and r["claim"] in V.CLAIMS


def test_comparison_sets_models_side_by_side():
    from qkcore.experiments.glance import comparison_html

    rows = glance_rows(
        {
            "binding_interventions": {"verdicts": [_v("binding: swap, order", V.MATCHED, "organism", "L1H0")]},
            "binding_interventions_qwen": {
                "verdicts": [
                    _v("binding: swap, order", V.REPRODUCED, "Qwen2.5-Coder-0.5B", "L15H3"),
                    _v("binding: swap, order", V.MATCHED, "Qwen2.5-Coder-0.5B", "L16H1"),
                ]
            },
            "filter_heads": {"verdicts": [_v("filter: swap", V.MATCHED)]},
        }
    )
    html = comparison_html(rows, "binding")
    assert "<th>organism</th><th>Qwen2.5-Coder-0.5B</th>" in html and "filter: swap" not in html
    assert html.count('class="verdict-badge"') == 3 and '<a href="binding_interventions_qwen.html">L16H1: </a>' in html
    with pytest.raises(ValueError, match="part must be one of"):
        comparison_html(rows, "toy")


def _row_html(html: str, text: str) -> str:
    """The <tr> of `html` that contains `text`."""
    (row,) = [tr for tr in html.split("<tr>") if text in tr]
    return row


def test_nested_numbers_and_lists_read_as_text_not_python_reprs():
    from qkcore.experiments.glance import comparison_html

    cube = {"edge ratio": 1.145, "max |angle − 90°|": 13.5}
    rows = glance_rows(
        {
            "cube": {"verdicts": [_v("toy: cube", V.REPRODUCED, "toy", None, trained=cube, untrained=cube)]},
            "filter_heads": {
                "verdicts": [
                    _v("filter: low rank", V.REPRODUCED, ranks=[1, 1, 1, 1, 1], spread=[3, 4], gap=float("nan")),
                    _v("filter: swap", V.MATCHED, flips={"category": 0.5, "random": 0.1}, signs=(True, False)),
                ]
            },
        }
    )
    html = glance_html(rows)
    row = _row_html(html, "edge ratio")
    assert "trained: edge ratio 1.15, max |angle − 90°| 13.5°; untrained: edge ratio 1.15" in row
    rank_row = _row_html(html, "ranks")
    assert "ranks: 1 for all 5; spread: 3, 4; gap: undefined" in rank_row
    for r in (row, rank_row, _row_html(html, "flips")):
        assert not any(c in r.split("</td>", 2)[-1] for c in "{}'[]`"), r  # the numbers cell holds no repr
    cell = _row_html(comparison_html(rows, "filter"), "flips")
    assert "flips: category 0.5, random 0.1; signs: yes, no" in cell
    assert not any(c in cell for c in "{}'[]")


def test_each_rule_is_written_once_in_the_claims_header():
    implied = "implied when the bound is under 1%"
    rows = glance_rows(
        {
            "filter_heads": {"verdicts": [_v("filter: low rank", V.REPRODUCED, rule="rank at most 1")]},
            "filter_heads_qwen": {
                "verdicts": [
                    _v("filter: low rank", V.IMPLIED, "Qwen", "L18H1", rule=implied),
                    _v("filter: low rank", V.IMPLIED, "Qwen", "L20H11", rule=implied),
                ]
            },
            "binding_subspaces": {"verdicts": [_v("binding: lexical-ID low rank", V.MATCHED, rule="rank at most 8")]},
            "binding_subspaces_qwen": {
                "verdicts": [_v("binding: lexical-ID low rank", V.MATCHED, "Qwen", rule="rank at most 16")]
            },
        }
    )
    html = glance_html(rows)
    assert html.count(implied) == 1 and html.count("rank at most 1<") == 1
    header = _row_html(html, "rank at most 1<")
    assert implied in header and header.index("rank at most 1") < header.index(implied)  # the claim's rule first
    assert implied not in _row_html(html, "L18H1")
    # thresholds that differ by page: each rule says whose it is
    assert "rule: organism: rank at most 8" in html and "rule: Qwen: rank at most 16" in html


def test_code_in_a_rule_is_code_not_backticks():
    html = glance_html(glance_rows({}))  # the generalisation row: a command to run elsewhere
    assert "`" not in html and "<code>-p model Qwen/Qwen3-4B-Instruct-2507</code>" in html
