"""The book's one verdict module: the words a page may use for a claim, and every rule that picks one, as small
functions with unit tests (tests/experiments/test_verdicts.py). Chapters decide through these and record what they
decided (`record_verdicts`); the results-at-a-glance page prints each verdict beside its rule in words and reads no
notebook text.

    v = effect_vs_controls("filter swap", "SmolLM2", "L22H4", flips, {"random subspace": rand_flips})
    v.verdict, v.rule, v.numbers          # "matched by a control", the rule in words, the deciding numbers
    record_verdicts("filter_heads", [v], P)

The vocabulary, chosen so that no reader can misread a control's result as a finding:

* **reproduced**: the claim's test passes and every control fails it (paired differences, permutation p-values).
* **matched by a control**: the claim's test passes, and a control passes it about as well.
* **a control does better**: a control passes it significantly better than the claim's own subspace or labels.
* **not reproduced**: the test fails.
* **not testable here**: the model cannot do the task (at chance, no selective head), so nothing it does is evidence.
* **undefined (floor)**: the metric cannot move on this model (e.g. the asked item is never the head's argmax, so an
  argmax flip is impossible).
* **implied by query concentration**: a rank-1 ΔC that the estimator itself guarantees (the query barely varies),
  so rank 1 says nothing about the keys.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

REPRODUCED = "reproduced"
MATCHED = "matched by a control"
CONTROL_BETTER = "a control does better"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
UNDEFINED = "undefined (floor)"
IMPLIED = "implied by query concentration"
VOCABULARY = (REPRODUCED, MATCHED, CONTROL_BETTER, NOT_REPRODUCED, NOT_TESTABLE, UNDEFINED, IMPLIED)

# Every claim a chapter may judge, with the paper's claim it belongs to (PAPER.md, "Claims a reproduction checks"):
# the results-at-a-glance page groups verdicts by that number. A Verdict naming another claim is refused.
CLAIMS: dict[str, int] = {
    "toy: rank recovery": 1,
    "toy: analytic form": 2,
    "toy: cube": 3,
    "toy: interaction matrix": 4,
    "toy: causal swap": 5,
    "filter: low rank": 6,
    "filter: keys cluster by category": 6,
    "filter: category matching": 6,
    "filter: category decoding": 6,
    "filter: swap": 7,
    "binding: order-ID low rank": 8,
    "binding: lexical-ID low rank": 8,
    "binding: order-ID view": 8,
    "binding: lexical-ID view": 8,
    "binding: swap, order": 9,
    "binding: swap, lexical": 9,
    "binding: swap, both": 9,
    "attribution: explained fraction": 10,
    "attribution: key-side split": 10,
    "generalisation": 11,
}

ALPHA = 0.05  # every test's level; intervals are the matching 95% percentile bootstrap intervals
BOOTSTRAP_SEED = 0  # the bootstrap's own generator: an interval never shifts a chapter's random draws
N_BOOT = 2000
MIN_DEFINED = 20  # a per-prompt metric defined on fewer prompts than this is a floor, not a measurement


@dataclass(frozen=True)
class Estimate:
    """A mean over prompts with its 95% percentile bootstrap interval; n = prompts where the metric is defined."""

    value: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, per_prompt: torch.Tensor, seed: int = BOOTSTRAP_SEED, n_boot: int = N_BOOT) -> Estimate:
        """Estimate of a (n,) tensor of per-prompt values; NaN entries (metric undefined there) are left out and
        counted out of n. All undefined: value and interval NaN, n = 0."""
        x = _vector(per_prompt, "per_prompt")
        x = x[~torch.isnan(x)]
        if len(x) == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        if not isinstance(n_boot, int) or n_boot < 1:
            raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
        idx = torch.randint(len(x), (n_boot, len(x)), generator=torch.Generator().manual_seed(seed))
        means = x[idx].mean(1)
        lo, hi = torch.quantile(means, torch.tensor([ALPHA / 2, 1 - ALPHA / 2], dtype=torch.float64))
        return cls(float(x.mean()), float(lo), float(hi), len(x))

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    @property
    def half_width(self) -> float:
        """Half the interval's width: the smallest difference this many prompts can resolve (the run's power)."""
        return (self.hi - self.lo) / 2


def _vector(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 1 or not (t.is_floating_point() or t.dtype == torch.bool or not t.is_complex()):
        raise ValueError(f"{name} must be a 1-D tensor of per-prompt values, got shape {tuple(t.shape)}")
    return t.detach().double().cpu()


def paired_difference(a: torch.Tensor, b: torch.Tensor, seed: int = BOOTSTRAP_SEED, n_boot: int = N_BOOT) -> Estimate:
    """Estimate of a − b over the prompts where both are defined: a paired bootstrap on the same prompts, the test
    of a difference between two conditions (two overlapping intervals are not one)."""
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a paired difference needs values on the same prompts: shapes {a.shape} and {b.shape}")
    return Estimate.of(a - b, seed, n_boot)  # NaN in either → NaN → left out


def permutation_p(observed: float, null_draws: Sequence[float], greater: bool = True) -> float:
    """One-sided permutation p-value, (1 + #{null ≥ observed}) / (1 + N) (≤ for greater=False): never 0, so 50 draws
    can say at best p = 1/51."""
    draws = [float(x) for x in null_draws if not math.isnan(float(x))]
    if not draws:
        raise ValueError("permutation_p needs at least one null draw that is not NaN")
    if math.isnan(observed):
        return math.nan
    extreme = sum(x >= observed for x in draws) if greater else sum(x <= observed for x in draws)
    return (1 + extreme) / (1 + len(draws))


def binomial_above_chance(successes: int, n: int, chance: float) -> float:
    """Exact one-sided binomial p-value P(X ≥ successes) for X ~ Bin(n, chance): is an accuracy above chance?"""
    if not (isinstance(n, int) and n >= 1 and isinstance(successes, int) and 0 <= successes <= n):
        raise ValueError(f"need ints 0 ≤ successes ≤ n with n ≥ 1, got successes={successes!r}, n={n!r}")
    if not 0 < chance < 1:
        raise ValueError(f"chance must be in (0, 1), got {chance!r}")
    if successes == 0:
        return 1.0
    # in log space: a term's factors (chance**k, comb(n, k)) underflow or overflow a float long before the term does
    # (464/500 at chance 0.2 is 1.6e-273, yet 0.2**464 is 0 in float64; comb(1100, 500) exceeds the float range)
    log_c, log_not = math.log(chance), math.log1p(-chance)
    logs = [
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_c + (n - k) * log_not
        for k in range(successes, n + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(x - top) for x in logs))


def fmt_p(p: float, digits: int = 2) -> str:
    """A p-value for a reader: "p = 0.054", or "p < 1e-300" where it is 0 in float64 (below about 1e-308: the exact
    binomial tail of 500 right answers out of 500 at chance 0.2 is about 1e-349)."""
    return "p < 1e-300" if p == 0 else f"p = {p:.{digits}g}"


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict for one model (and head): the word, the rule that chose it in words, and the numbers
    that decided it."""

    claim: str
    model: str
    head: str | None
    verdict: str
    rule: str
    numbers: dict[str, object] = field(default_factory=dict)

    def __post_init__(self):
        if self.claim not in CLAIMS:
            raise ValueError(
                f"claim must be one of qkcore.experiments.verdicts.CLAIMS, got {self.claim!r}: {list(CLAIMS)}"
            )
        if self.verdict not in VOCABULARY:
            raise ValueError(f"verdict must be one of {VOCABULARY}, got {self.verdict!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "numbers": {k: _plain(v) for k, v in self.numbers.items()}}

    def sentence(self) -> str:
        at = f" at {self.head}" if self.head else ""
        return f"{self.claim}{at} on {self.model}: **{self.verdict}** ({self.rule})"


def _plain(v):
    if isinstance(v, Estimate):
        return str(v)
    if isinstance(v, float):
        return round(v, 4)
    if hasattr(v, "item"):
        return round(float(v.item()), 4)
    return v


EFFECT_RULE = (
    "reproduced when the effect's 95% interval lies above 0 and its paired difference from every control lies above 0; "
    "a control does better when one paired difference lies below 0; matched by a control when one includes 0; "
    "undefined when fewer than {min_defined} prompts define the metric"
)


def effect_vs_controls(
    claim: str,
    model: str,
    head: str | None,
    effect: torch.Tensor,
    controls: dict[str, torch.Tensor],
    *,
    min_defined: int = MIN_DEFINED,
    floor_reason: str = "",
) -> Verdict:
    """Judge a per-prompt effect (n,) against per-prompt controls measured on the same prompts (NaN = undefined
    there): UNDEFINED below `min_defined` defined prompts; NOT_REPRODUCED when the effect's interval reaches 0;
    then by the paired difference effect − control for each control: CONTROL_BETTER if one lies wholly below 0,
    MATCHED if one includes 0, REPRODUCED if all lie above 0."""
    est = Estimate.of(effect)
    numbers: dict[str, object] = {"effect": est}
    rule = EFFECT_RULE.format(min_defined=min_defined)
    if est.n < min_defined:
        numbers["defined on"] = est.n
        why = f"; {floor_reason}" if floor_reason else ""
        return Verdict(claim, model, head, UNDEFINED, rule + why, numbers)
    if est.lo <= 0:
        for name, c in controls.items():
            numbers[name] = Estimate.of(c)
        return Verdict(claim, model, head, NOT_REPRODUCED, rule, numbers)
    words = []
    for name, c in controls.items():
        diff = paired_difference(effect, c)
        numbers[name] = Estimate.of(c)
        numbers[f"effect − {name}"] = diff
        words.append(CONTROL_BETTER if diff.hi < 0 else MATCHED if diff.lo <= 0 else REPRODUCED)
    verdict = CONTROL_BETTER if CONTROL_BETTER in words else MATCHED if MATCHED in words else REPRODUCED
    return Verdict(claim, model, head, verdict, rule, numbers)


def against_null(
    claim: str,
    model: str,
    head: str | None,
    observed: float,
    null_draws: dict[str, Sequence[float]],
    *,
    alpha: float = ALPHA,
    greater: bool = True,
    statistic: str = "statistic",
) -> Verdict:
    """A statistic of the true labels against null families of draws (e.g. 50 random and 50 balanced groupings):
    REPRODUCED when its permutation p-value is below `alpha` against every family, MATCHED otherwise. Numbers: the
    statistic, and per family its draws' mean, 95th percentile and p."""
    numbers: dict[str, object] = {statistic: observed}
    ps = {}
    for name, draws in null_draws.items():
        ps[name] = permutation_p(observed, draws, greater)
        ok = [float(x) for x in draws if not math.isnan(float(x))]
        numbers[f"{name}: mean of {len(ok)} draws"] = sum(ok) / len(ok)
        numbers[f"{name}: 95th percentile"] = float(torch.quantile(torch.tensor(ok, dtype=torch.float64), 0.95))
        numbers[f"{name}: p"] = ps[name]
    word = REPRODUCED if all(p < alpha for p in ps.values()) else MATCHED
    side = "above" if greater else "below"
    rule = (
        f"reproduced when the true labels' {statistic} lies {side} every null family at permutation p < {alpha}; "
        "matched by a control otherwise"
    )
    return Verdict(claim, model, head, word, rule, numbers)


def rank_verdict(
    claim: str,
    model: str,
    head: str | None,
    rank: int,
    expected: int,
    implied_by_bound: bool,
    numbers: dict[str, object] | None = None,
) -> Verdict:
    """The low-rank claim: IMPLIED when the query-concentration bound guarantees rank ≤ 1 whatever the keys hold;
    else REPRODUCED when rank ≤ expected, NOT_REPRODUCED otherwise."""
    numbers = {"rank": rank, "expected": expected, **(numbers or {})}
    if implied_by_bound and rank <= 1:
        rule = (
            "implied when the bound on ΔC's off-rank-1 energy is under the rank rule's 1%: rank 1 then holds by "
            "construction"
        )
        return Verdict(claim, model, head, IMPLIED, rule, numbers)
    rule = f"reproduced when the 99%-energy rank is at most {expected}"
    return Verdict(claim, model, head, REPRODUCED if rank <= expected else NOT_REPRODUCED, rule, numbers)


def gate(claim: str, model: str, head: str | None, ok: bool, why: str, numbers: dict | None = None) -> Verdict | None:
    """None when the model can be judged on this claim; else a NOT_TESTABLE verdict saying why (its evidence in
    `numbers`). A chapter calls this before any other rule and records the gate's verdict instead of the others."""
    if ok:
        return None
    return Verdict(claim, model, head, NOT_TESTABLE, why, dict(numbers or {}))


def verdict_rows(verdicts: Sequence[Verdict]) -> list[dict]:
    """Plain dicts for JSON (book/results/) and tables."""
    return [v.to_dict() for v in verdicts]


def record_verdicts(chapter: str, verdicts: Sequence[Verdict], params, directory=None) -> list[dict]:
    """Add `verdicts` under "verdicts" to the run's recorded numbers (qkcore.experiments.results), when this is one of
    the book's own runs; returns the rows. Call after `record(...)` of the chapter's numbers."""
    import json
    from pathlib import Path

    from qkcore.experiments.results import RESULTS_DIR, book_run_name

    rows = verdict_rows(verdicts)
    directory = RESULTS_DIR if directory is None else directory
    name = book_run_name(chapter, params, directory)
    if name is not None:
        path = Path(directory) / f"{name}.json"
        numbers = json.loads(path.read_text()) if path.is_file() else {}
        numbers["verdicts"] = rows
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(numbers, indent=1, ensure_ascii=False) + "\n")
    return rows
