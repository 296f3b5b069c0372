"""The results at a glance (book/results.ipynb): one row per checkable claim of the paper (PAPER.md, "Claims"), with
the numbers each executed chapter recorded (qkcore.experiments.results) and a verdict in plain words.

    table = claims_table(load_results("results"))      # pandas DataFrame, one row per claim

Verdicts: "reproduced"; "reproduced, but a control shows it too"; "not reproduced"; "not testable here". The toy
claims' verdicts follow from the recorded numbers by the rules in each function's docstring; the language-model
chapters record their own verdicts (their `verdict: …` keys), computed by rules their modules state. A chapter that
has not recorded its numbers gives "not run".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import pandas as pd

from qkcore.params import check_types

REPRODUCED = "reproduced"
SHOWN_BY_CONTROL = "reproduced, but a control shows it too"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
NOT_RUN = "not run"


def _get(results: dict, chapter: str, key: str, default=None):
    return results.get(chapter, {}).get(key, default)


def _fraction(text: str | None) -> tuple[int, int] | None:
    if not isinstance(text, str) or "/" not in text:
        return None
    a, b = text.split("/")
    return int(a), int(b)


def _verdicts(results: dict, chapter: str, prefix: str) -> list[str]:
    return [f"{v}" for k, v in results.get(chapter, {}).items() if k.startswith(f"verdict: {prefix}")]


def _lm_cell(results: dict, chapter: str, keys: list[str]) -> str:
    if chapter not in results:
        return NOT_RUN
    numbers = results[chapter]
    parts = [f"{k}: {_show(numbers[k])}" for k in keys if k in numbers]
    return "; ".join(parts) if parts else "see the chapter"


def _show(value) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _lm_verdict(results: dict, chapters: list[str], prefix: str) -> str:
    """ "organism: …, SmolLM2: …" from the chapters' recorded `verdict: <prefix>…` keys."""
    found = [
        f"{'SmolLM2' if name.endswith('_smollm2') else 'organism'}: {v}"
        for name in chapters
        for v in _verdicts(results, name, prefix)
    ]
    return ", ".join(found) if found else NOT_RUN


def _heads_keys(results: dict, chapter: str, pattern: str) -> list[str]:
    return [k for k in results.get(chapter, {}) if pattern in k]


def page_verdicts(notebook: str | Path) -> list[str]:
    """The verdicts an executed page states in bold ("**Verdict: …**", glued from its own numbers by the binding
    chapters' rules): read from the notebook's outputs, so the glance page repeats them and never retypes them."""
    path = Path(notebook)
    if not path.is_file():
        return []
    return sorted(set(re.findall(r"\*\*Verdict: (.*?)\.\*\*", path.read_text())))


def claims_table(results: dict, pages: str | Path | None = None) -> pd.DataFrame:
    """One row per claim: paper (the paper's setting), book (where the book runs it), figure (the book's numbers),
    controls, verdict, section (a link). Numbers come from `results` ({chapter: numbers}); nothing is retyped. The
    binding chapters' verdicts are read from their executed pages in `pages` (book/) when given."""
    rows = []

    # 1. rank recovery: reproduced when every d_head 16 model recovers (r1, r2) exactly
    exact16 = _fraction(_get(results, "rank_recovery", "d_head 16: exact rank recovery"))
    rows.append(
        {
            "claim": "1. Toy rank recovery",
            "paper": "single-head toy, r1, r2 ∈ {3, 5, 7}, both tasks, d_head 16 (and 8)",
            "book": "the same 36 models (toy)",
            "figure": _lm_cell(
                results,
                "rank_recovery",
                ["d_head 16: exact rank recovery", "d_head 8, r1 + r2 <= 8: exact", "d_head 8, r1 + r2 > 8: exact"],
            ),
            "controls": "d_head 8 with r1 + r2 > 8 is expected to fail (the factors cannot both fit)",
            "verdict": NOT_RUN if exact16 is None else REPRODUCED if exact16[0] == exact16[1] else NOT_REPRODUCED,
            "section": "[Rank recovery](rank_recovery.ipynb)",
        }
    )

    # 2. analytic form: reproduced when the recovered spans lie within 5° of the analytic ones
    angle = _get(results, "why_it_works", "largest principal angle to the analytic spans (deg)")
    rows.append(
        {
            "claim": "2. Analytic form of ΔC (App. B)",
            "paper": "ΔC(z1) ≈ W_Q B₁ Σ A₁ᵀ W_Kᵀ; U, V span W_Q B₁, W_K A₁",
            "book": "toy, r1 = 3, r2 = 5, d_head 16",
            "figure": _lm_cell(
                results,
                "why_it_works",
                ["largest principal angle to the analytic spans (deg)", "relative error of ΔC vs closed form, z1"],
            ),
            "controls": _lm_cell(results, "why_it_works", ["smallest angle to the other factor's spans (deg)"]),
            "verdict": NOT_RUN if angle is None else REPRODUCED if angle < 5 else NOT_REPRODUCED,
            "section": "[Why it works](why_it_works.ipynb)",
        }
    )

    # 3. cube: reproduced when each code's query mean is nearest its own key mean and the edges are even (< 1.5)
    ratio = _get(results, "cube", "key means: edge ratio")
    match = _get(results, "cube", "codes whose query mean is nearest their own key mean")
    rows.append(
        {
            "claim": "3. Toy geometry: a cube",
            "paper": "r1 = 3: key means of the 8 codes on a cube's vertices, queries at the matching vertices",
            "book": "toy, r1 = 3, r2 = 5",
            "figure": _lm_cell(
                results,
                "cube",
                [
                    "key means: edge ratio",
                    "key means: corner angles (deg)",
                    "codes whose query mean is nearest their own key mean",
                ],
            ),
            "controls": "a perfect cube has edge ratio 1 and 90° corners",
            "verdict": NOT_RUN if ratio is None else REPRODUCED if ratio < 1.5 and match == 1.0 else NOT_REPRODUCED,
            "section": "[The cube](cube.ipynb)",
        }
    )

    # 4. interaction matrix: reproduced when less than 5% of G's energy lies off the z1–z1, z2–z2 blocks
    cross = _get(results, "why_it_works", "crosstalk of G")
    rows.append(
        {
            "claim": "4. Interaction matrix G is block-diagonal",
            "paper": "G = (W_Q B)ᵀ(W_K A): z1–z1 and z2–z2 blocks",
            "book": "toy, r1 = 3, r2 = 5, d_head 16",
            "figure": _lm_cell(results, "why_it_works", ["crosstalk of G"]),
            "controls": "—",
            "verdict": NOT_RUN if cross is None else REPRODUCED if cross < 0.05 else NOT_REPRODUCED,
            "section": "[Why it works](why_it_works.ipynb)",
        }
    )

    # 5. toy swap: reproduced when the z1+z2 swap flips more than twice as often as a random 8-d subspace
    both = _get(results, "causal_swaps", "z1+z2 (rank 8): flip rate")
    rand8 = _get(results, "causal_swaps", "random 8-d (rank 8): flip rate")
    rows.append(
        {
            "claim": "5. Toy causal swap",
            "paper": "swap in V₁ ⊕ V₂ moves attention; V₁, V₂ alone partly; random subspaces do not",
            "book": "toy, r1 = 3, r2 = 5, d_head 16",
            "figure": _lm_cell(
                results,
                "causal_swaps",
                ["z1+z2 (rank 8): flip rate", "z1 (rank 3): flip rate", "z2 (rank 5): flip rate"],
            ),
            "controls": _lm_cell(
                results, "causal_swaps", ["random 3-d (rank 3): flip rate", "random 8-d (rank 8): flip rate"]
            ),
            "verdict": NOT_RUN if both is None else REPRODUCED if both > 2 * rand8 else NOT_REPRODUCED,
            "section": "[Causal swaps](causal_swaps.ipynb)",
        }
    )

    lm_filter = ["filter_heads", "filter_heads_smollm2"]
    rows.append(
        {
            "claim": "6. Filter heads: low-rank ΔC, keys cluster by category",
            "paper": "Llama-3.1-8B-Instruct, L16H19, L20H26, L20H14; rank 1 per category; PCA clusters",
            "book": "filter-5x5 organism; SmolLM2-135M-Instruct",
            "figure": "; ".join(
                f"{n}: " + _lm_cell(results, n, _heads_keys(results, n, "key η² (model)")) for n in lm_filter
            ),
            "controls": "; ".join(
                f"{n}: " + _lm_cell(results, n, _heads_keys(results, n, "key η² (shuffled labels)")) for n in lm_filter
            ),
            "verdict": "rank 1 per category: "
            + _lm_verdict(results, lm_filter, "rank 1")
            + ". Keys cluster by category: "
            + _lm_verdict(results, lm_filter, "keys cluster"),
            "section": "[Filter heads](filter_heads.ipynb), [SmolLM2](filter_heads_smollm2.ipynb)",
        }
    )
    rows.append(
        {
            "claim": "7. Filter intervention",
            "paper": "swap in the category key subspace moves attention; random subspace does not",
            "book": "filter-5x5 organism; SmolLM2-135M-Instruct",
            "figure": "; ".join(
                f"{n}: " + _lm_cell(results, n, _heads_keys(results, n, "(category subspace)")) for n in lm_filter
            ),
            "controls": "; ".join(
                f"{n}: "
                + _lm_cell(
                    results, n, [k for k in results.get(n, {}) if "swap flip rate (" in k and "category" not in k]
                )
                for n in lm_filter
            ),
            "verdict": _lm_verdict(results, lm_filter, "swap"),
            "section": "[Filter heads](filter_heads.ipynb), [SmolLM2](filter_heads_smollm2.ipynb)",
        }
    )

    # 8–10: the binding chapters record their numbers and their own verdicts ("verdict: …" keys); the book's two
    # binding models are the organism and SmolLM2 (a negative control: it binds at chance)
    binding = (
        (
            8,
            "Binding subspaces",
            "L16H21, 9 pairs: ΔC_order and ΔC_lex low rank; views order keys by position and separate objects",
            "binding_subspaces",
            ("rank (trained", "kNN"),
            ("rank (trained",),
        ),
        (
            9,
            "Binding intervention",
            "L16H1, L16H19, L17H24: order, lexical, both move attention; random does not",
            "binding_interventions",
            ("flip rate, order", "flip rate, lexical"),
            ("flip rate, random (", "flip rate, top key", "flip rate, shuffled"),
        ),
        (
            10,
            "Attribution",
            "L16H1, 4 boxes: order + lexical + residual = logit; order and lexical explain most",
            "attribution",
            ("explained fraction, trained", "letter accuracy"),
            ("explained fraction, shuffled", "explained fraction, random"),
        ),
    )
    for number, claim, paper, chapter, shown, controls in binding:
        names = [chapter, f"{chapter}_smollm2"]

        def pick(name: str, patterns: tuple[str, ...]) -> str:
            keys = [
                k
                for k in results.get(name, {})
                if any(pat in k for pat in patterns)
                and "shuffled" not in k
                or any(pat in k for pat in patterns if "shuffled" in pat)
            ]
            return f"{name}: " + _lm_cell(results, name, keys[:3])  # the first studied head

        rows.append(
            {
                "claim": f"{number}. {claim}",
                "paper": paper,
                "book": "binding organism (trained with attention hints); SmolLM2-135M-Instruct (binds at chance: a "
                "negative control)",
                "figure": "; ".join(pick(n, shown) for n in names),
                "controls": "; ".join(pick(n, controls) for n in names),
                "verdict": "; ".join(
                    f"{'organism' if n == chapter else 'SmolLM2 (binds at chance)'}: {v}"
                    for n in names
                    for v in (page_verdicts(Path(pages) / f"{n}.ipynb") if pages is not None else [])
                )
                or _lm_verdict(results, names, ""),
                "section": f"[{claim}]({chapter}.ipynb), [SmolLM2]({chapter}_smollm2.ipynb)",
            }
        )

    rows.append(
        {
            "claim": "11. The same on Qwen3-4B-Instruct",
            "paper": "Qwen3-4B-Instruct-2507",
            "book": "—",
            "figure": "—",
            "controls": "—",
            "verdict": NOT_TESTABLE,
            "section": "its weights cannot be fetched where the book is built; `-p model Qwen/Qwen3-4B-Instruct-2507` "
            "runs every language-model chapter on it where they can",
        }
    )
    return pd.DataFrame(rows).set_index("claim")


@dataclass(frozen=True)
class GlanceParams:
    """results_dir: where the chapters recorded their numbers (relative to book/)."""

    results_dir: str = "results"
    preset: Literal["full", "quick"] = "full"
    QUICK: ClassVar[dict] = {"results_dir": "results"}  # nothing to shorten: the page only reads numbers

    def __post_init__(self):
        check_types(self)


def as_html(table: pd.DataFrame) -> str:
    """The table as HTML with the section column's markdown links turned into links to the built pages."""
    out = table.copy()
    if "section" not in out.columns:
        return _fit(out.to_html(escape=False, classes="glance"))
    out["section"] = out["section"].str.replace(
        r"\[([^\]]+)\]\(([\w_]+)\.ipynb\)", r'<a href="\2.html">\1</a>', regex=True
    )
    return _fit(out.to_html(escape=False, classes="glance"))


def _fit(html: str) -> str:
    """A table as wide as the page's column, its long cells wrapped instead of pushing it sideways."""
    return html.replace(
        '<table border="1" class="dataframe glance">',
        '<table border="1" class="dataframe glance" style="table-layout: fixed; width: 100%; '
        'overflow-wrap: anywhere; font-size: 0.85em">',
    )
