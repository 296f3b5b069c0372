"""The filter chapter's verdict rules as small functions (issue 14's vocabulary). A stand-in with the names the
book's one verdict module (`qkcore.experiments.verdicts`) is to hold — `gate`, `rank_verdict`,
`effect_vs_controls` — until it lands; the chapter calls only these.

    ok, why = gate(unknown_items=[], successes=84, n=100, chance=0.2)
    word = rank_verdict(all_rank1=True, implied=True)                       # "implied by query concentration"
    word, diffs = effect_vs_controls(per_prompt["category"], per_prompt["random"], controls, generator)
"""

from __future__ import annotations

import math

import torch

REPRODUCED = "reproduced"
MATCHED = "matched by a control"
CONTROL_BETTER = "a control does better"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable here"
UNDEFINED = "undefined (floor)"
IMPLIED = "implied by query concentration"
ALPHA = 0.05


def binomial_p(successes: int, n: int, chance: float) -> float:
    """One-sided P(X ≥ successes) for X ~ Binomial(n, chance)."""
    return float(sum(math.comb(n, j) * chance**j * (1 - chance) ** (n - j) for j in range(successes, n + 1)))


def gate(unknown_items: list[str], successes: int, n: int, chance: float, alpha: float = ALPHA) -> tuple[bool, str]:
    """Can the model read the task? No when its tokenizer maps task items to the unknown token, or when its first
    answer is in the asked category no more often than chance (one-sided binomial test at `alpha`)."""
    if unknown_items:
        shown = ", ".join(unknown_items[:6]) + (" …" if len(unknown_items) > 6 else "")
        return False, f"its tokenizer maps {len(unknown_items)} task items to the unknown token ({shown})"
    p = binomial_p(successes, n, chance)
    if p >= alpha:
        return False, (
            f"its first answer is an item of the asked category in {successes}/{n} prompts, not above chance "
            f"{chance:.2f} (binomial p = {p:.2g})"
        )
    return True, f"first answer right in {successes}/{n} prompts against chance {chance:.2f} (binomial p = {p:.1g})"


def rank_verdict(all_rank1: bool, implied: bool) -> str:
    """Rank 1 per category: implied (the bound from query concentration guarantees it, whatever the keys hold),
    else reproduced / not reproduced as measured."""
    if implied:
        return IMPLIED
    return REPRODUCED if all_rank1 else NOT_REPRODUCED


def paired_difference(a: torch.Tensor, b: torch.Tensor, generator: torch.Generator, n_boot: int = 2000):
    """Mean of a − b over the same prompts and its 95% percentile bootstrap interval (prompts resampled)."""
    diff = (a - b).double()
    idx = torch.randint(len(diff), (n_boot, len(diff)), generator=generator)
    means = diff[idx].mean(1)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(diff.mean()), float(lo), float(hi)


def effect_vs_controls(claim, random, controls: dict, generator: torch.Generator, n_boot: int = 2000):
    """Verdict on a per-prompt effect (n,) against a random baseline and controls, by paired bootstrap on the same
    prompts: not reproduced when the claim − random interval reaches 0; a control does better when some
    control − claim interval lies above 0; matched by a control when some claim − control interval reaches 0;
    reproduced otherwise. Returns (verdict, {name: (mean, lo, hi) of claim − that condition})."""
    diffs = {"random": paired_difference(claim, random, generator, n_boot)}
    for name, values in controls.items():
        diffs[name] = paired_difference(claim, values, generator, n_boot)
    if diffs["random"][1] <= 0:
        return NOT_REPRODUCED, diffs
    if any(hi < 0 for name, (_, _, hi) in diffs.items() if name != "random"):
        return CONTROL_BETTER, diffs
    if any(lo <= 0 for name, (_, lo, _) in diffs.items() if name != "random"):
        return MATCHED, diffs
    return REPRODUCED, diffs


def label_verdict(
    p_random: float, p_balanced: float, category_acc: float, label_free_acc: float, alpha: float = ALPHA
) -> str:
    """Keys sort by category: not reproduced unless the category's key η² beats both null families (permutation
    p < alpha); matched by a control when label-free top-PC decoding reaches the category subspace's."""
    if max(p_random, p_balanced) >= alpha:
        return NOT_REPRODUCED
    if label_free_acc >= category_acc:
        return MATCHED
    return REPRODUCED
