"""The results at a glance (book/results.ipynb): one short row per claim of the paper and model, with the verdict each
executed chapter recorded through qkcore.experiments.verdicts, the rule that chose it in words, the numbers that
decided it and a link to the page. This module decides nothing: every verdict was decided by its chapter, by the
one verdict module; nothing is read from notebook text.

    rows = glance_rows(load_results("results"))       # one dict per (claim, model, head) verdict
    html = glance_html(rows)                           # the page's table, as wide as the column

A claim of the paper that no page judged on a model the book runs gets no row; claim 11 (Qwen3-4B) is listed as
"not testable here" (its weights cannot be fetched where the book is built).
"""

from __future__ import annotations

import html as _html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from qkcore.experiments.verdicts import (
    CLAIMS,
    CONTROL_BETTER,
    IMPLIED,
    MATCHED,
    NOT_REPRODUCED,
    NOT_TESTABLE,
    REPRODUCED,
    UNDEFINED,
)
from qkcore.params import check_types

# The paper's claims (PAPER.md, "Claims a reproduction checks"): number → (short title, the paper's setting).
PAPER_CLAIMS: dict[int, tuple[str, str]] = {
    1: ("Toy rank recovery", "rank(ΔC_z1) = r1, rank(ΔC_z2) = r2 for r1, r2 ∈ {3, 5, 7}, d_head 16"),
    2: ("Analytic form of ΔC", "U, V span W_Q B₁, W_K A₁ (App. B)"),
    3: ("Toy geometry: a cube", "r1 = 3: the 8 codes' key means on a cube, queries at the matching corners"),
    4: ("Interaction matrix", "G = (W_Q B)ᵀ(W_K A) is block-diagonal"),
    5: ("Toy causal swap", "a swap in V₁ ⊕ V₂ moves attention; random subspaces do not"),
    6: ("Filter heads: subspaces", "Llama-3.1-8B L16H19, L20H26, L20H14: rank 1 per category; keys cluster"),
    7: ("Filter intervention", "a swap in the category key subspace moves attention; a random one does not"),
    8: ("Binding subspaces", "L16H21, 9 pairs: order-ID and lexical ΔC low rank; views order and separate"),
    9: ("Binding intervention", "L16H1, L16H19, L17H24: order, lexical, both move attention; random does not"),
    10: ("Attribution", "L16H1, 4 boxes: order and lexical parts explain the answer box's logit"),
    11: ("Generalisation", "the same findings on Qwen3-4B-Instruct"),
}

# Badge colours (background, text) by verdict: green only for a result that no control matches.
BADGES = {
    REPRODUCED: ("#1a7f37", "#ffffff"),
    MATCHED: ("#bf8700", "#ffffff"),
    CONTROL_BETTER: ("#bc4c00", "#ffffff"),
    NOT_REPRODUCED: ("#cf222e", "#ffffff"),
    NOT_TESTABLE: ("#6e7781", "#ffffff"),
    UNDEFINED: ("#6e7781", "#ffffff"),
    IMPLIED: ("#8250df", "#ffffff"),
}

# One name per model on the glance and comparison pages, whichever way a chapter recorded it (a registry name, the
# organism's folder, a description).
MODEL_NAMES = {
    "filter-5x5": "organism (filter-5x5)",
    "filter-13": "organism (filter-13)",
    "model organism binding": "organism (binding)",
    "smollm2-135m-instruct": "SmolLM2-135M-Instruct",
    "qwen2.5-coder-0.5b-instruct": "Qwen2.5-Coder-0.5B-Instruct",
}


def model_name(recorded: str) -> str:
    """The display name of a recorded model label."""
    return MODEL_NAMES.get(recorded, MODEL_NAMES.get(recorded.lower(), recorded))


GENERALISATION = {
    "claim": "generalisation",
    "number": 11,
    "model": "Qwen3-4B-Instruct",
    "head": None,
    "verdict": NOT_TESTABLE,
    "rule": "its weights cannot be fetched where the book is built; `-p model Qwen/Qwen3-4B-Instruct-2507` runs "
    "every language-model chapter on it elsewhere",
    "numbers": {},
    "page": None,
}


def glance_rows(results: dict[str, dict]) -> list[dict]:
    """Every recorded verdict ({page: numbers} from load_results), ordered by claim number, claim, page, head; plus
    claim 11. Each row: claim, number, model, head, verdict, rule, numbers, page (the page that recorded it)."""
    rows = []
    for page, numbers in results.items():
        for v in numbers.get("verdicts", []):
            if v.get("claim") not in CLAIMS:
                raise ValueError(f"{page}.json records a verdict on an unknown claim {v.get('claim')!r}")
            rows.append({**v, "model": model_name(v["model"]), "number": CLAIMS[v["claim"]], "page": page})
    claim_order = {c: i for i, c in enumerate(CLAIMS)}
    rows.sort(key=lambda r: (r["number"], claim_order[r["claim"]], r["page"], r["head"] or ""))
    return rows + [GENERALISATION]


def badge(verdict: str) -> str:
    bg, fg = BADGES[verdict]
    return (
        f'<span class="verdict-badge" style="background:{bg};color:{fg};border-radius:0.6em;padding:0 0.45em">'
        f"{_html.escape(verdict)}</span>"
    )


def _value(key: str, v) -> str:
    """One recorded number as a reader reads it (plain text, no Python repr): floats to 3 significant digits (an
    angle with its °), an interval as Estimate writes it, 0.412 [0.301, 0.520] (the one style of the book), a nested
    dict as "name value, name value", a list as its items (or "1 for all 5" when they are equal), NaN as
    "undefined"."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "undefined"
        return f"{v:.3g}" + ("°" if "angle" in key else "")
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(k, x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        items = [_value(key, x) for x in v]
        if len(items) > 1 and len(set(items)) == 1:
            return f"{items[0]} for all {len(items)}"
        return ", ".join(items) or "none"
    if v is None:
        return "—"
    text = str(v)  # an int, an Estimate or an interval recorded as its text
    return "undefined" if text.startswith("nan [") else text


def _numbers(numbers: dict, limit: int = 4) -> str:
    """The deciding numbers, at most `limit`, as "name: value; …" (see _value), HTML-escaped."""
    return _html.escape("; ".join(f"{k}: {_value(k, v)}" for k, v in list(numbers.items())[:limit]))


def _text(words: str) -> str:
    """A rule or reason in words, HTML-escaped, with `code` written as code (no literal backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _html.escape(words))


def _reason(row: dict) -> str:
    """Why a "not testable here" row has no verdict, without repeating the badge's words."""
    prefix = f"{NOT_TESTABLE}: "
    return row["rule"][len(prefix) :] if row["rule"].startswith(prefix) else row["rule"]


def _claim_rules(rows: list[dict]) -> list[str]:
    """The rules in words of one claim's rows, each once, for the claim's header: the general rules (a "not testable
    here" row's rule is its own reason, shown on its row), the implied-by-query-concentration rule last. Where the
    pages of a claim apply different thresholds, each rule names the models it applies to."""
    by_rule: dict[str, list[dict]] = {}
    for r in rows:
        if r["verdict"] != NOT_TESTABLE:
            by_rule.setdefault(r["rule"], []).append(r)
    implied = [rule for rule, rs in by_rule.items() if all(r["verdict"] == IMPLIED for r in rs)]
    general = [rule for rule in by_rule if rule not in implied]
    out = []
    for rule in general:
        models = ", ".join(dict.fromkeys(r["model"] for r in by_rule[rule]))
        out.append(f"{_html.escape(models)}: {_text(rule)}" if len(general) > 1 else _text(rule))
    return out + [_text(rule) for rule in implied]


def glance_html(rows: list[dict]) -> str:
    """The table: per claim a header row (the paper's claim and setting), then one row per verdict with its model
    (and head), badge, deciding numbers and link; the rule in words once per claim where the pages share it."""
    out = [
        '<table class="glance" style="table-layout: fixed; width: 100%; overflow-wrap: anywhere; font-size: 0.85em">',
        '<colgroup><col style="width: 24%"><col style="width: 20%"><col style="width: 56%"></colgroup>',
        "<thead><tr><th>model, head</th><th>verdict</th><th>deciding numbers</th></tr></thead><tbody>",
    ]
    current = None
    for r in rows:
        if (r["number"], r["claim"]) != current:
            current = (r["number"], r["claim"])
            title, setting = PAPER_CLAIMS[r["number"]]
            rules = _claim_rules([x for x in rows if (x["number"], x["claim"]) == current])
            out.append(
                f'<tr><th colspan="3" style="text-align:left">{r["number"]}. {_html.escape(title)}: '
                f"{_html.escape(r['claim'])}<br><small>paper: {_html.escape(setting)}</small>"
                + "".join(f"<br><small>rule: {rule}</small>" for rule in rules)
                + "</th></tr>"
            )
        who = _html.escape(r["model"]) + (f", {_html.escape(r['head'])}" if r["head"] else "")
        if r["page"]:
            who = f'<a href="{r["page"]}.html">{who}</a>'
        # a "not testable here" row: its reason (which states its numbers); any other: its deciding numbers
        detail = f"<em>{_text(_reason(r))}</em>" if r["verdict"] == NOT_TESTABLE else _numbers(r["numbers"])
        out.append(f"<tr><td>{who}</td><td>{badge(r['verdict'])}</td><td>{detail}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def verdict_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """{model: {verdict: count}} over all rows: the page's one-line summary per model."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        counts = out.setdefault(r["model"], {})
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    return out


@dataclass(frozen=True)
class GlanceParams:
    """results_dir: where the chapters recorded their numbers (relative to book/); it must exist and hold them."""

    results_dir: str = "results"
    preset: Literal["full", "quick"] = "full"
    QUICK: ClassVar[dict] = {"results_dir": "results"}  # nothing to shorten: the page only reads numbers

    def __post_init__(self):
        check_types(self)
        path = Path(self.results_dir)
        if not path.is_dir() or not any(path.glob("*.json")):
            raise ValueError(
                f"results_dir {self.results_dir!r} holds no recorded results (resolved to {path.resolve()}): give the "
                "folder the chapters wrote with `record(...)` (book/results, relative to book/), or run the chapters"
            )


PARTS = {"filter": ("filter:",), "binding": ("binding:", "attribution:")}


def comparison_html(rows: list[dict], part: str) -> str:
    """One part of the book (filter or binding) with its models side by side: a row per claim, a column per model,
    each cell the verdict of every head that model's pages studied with its first deciding numbers. Models in the
    order their pages were recorded (organism, then the real models)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {list(PARTS)}, got {part!r}")
    mine = [r for r in rows if r["claim"].startswith(PARTS[part])]
    models = list(dict.fromkeys(r["model"] for r in mine))
    width = 76 // max(1, len(models))
    out = [
        '<table class="glance" style="table-layout: fixed; width: 100%; overflow-wrap: anywhere; font-size: 0.85em">',
        '<colgroup><col style="width: 24%">' + f'<col style="width: {width}%">' * len(models) + "</colgroup>",
        "<thead><tr><th>claim</th>" + "".join(f"<th>{_html.escape(m)}</th>" for m in models) + "</tr></thead><tbody>",
    ]
    for claim in dict.fromkeys(r["claim"] for r in mine):
        cells = []
        for m in models:
            parts = []
            for r in (r for r in mine if r["claim"] == claim and r["model"] == m):
                head = f"{_html.escape(r['head'])}: " if r["head"] else ""
                link = f'<a href="{r["page"]}.html">{head or "page"}</a> ' if r["page"] else head
                parts.append(f"{link}{badge(r['verdict'])}<br><small>{_numbers(r['numbers'], 2)}</small>")
            cells.append("<br>".join(parts) or "—")
        number = CLAIMS[claim]
        out.append(f"<tr><td>{number}. {_html.escape(claim)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)
