"""Figure 7 at each studied head: the category key subspace against a random subspace of equal rank (`n_random`
draws), the top key-variance subspace (no labels), the shuffled-label subspace (a balanced grouping: one item of
each category per group), the random-init copy's own category subspace, and the whole key (the ceiling), all on the
same prompts, orig and target items; differences by paired bootstrap (`rules.effect_vs_controls` on Δp).

    swaps = swap_experiment(model, tokenizer, result, params)
    swaps[head].table; swaps[head].verdict; swaps[head].power      # power: the paired interval's half-width
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from qkcore.experiments.filter_heads import rules
from qkcore.experiments.filter_heads.analysis import FilterHeadsParams, FilterHeadsResult
from qkcore.experiments.filter_heads.swaps import (
    condition_metrics,
    forward_check,
    gather_rows,
    swap_table,
    swap_targets,
)
from qkcore.organisms.filter_task import FilterTask, FilterTaskConfig

CATEGORY = "category subspace"
RANDOM = "random subspace"
CONTROLS = ("top key-variance subspace", "shuffled-label subspace", "random-init model")
WHOLE = "whole key"
PRIMARY = "delta_p"  # the per-prompt metric the verdict is drawn on


@dataclass
class HeadSwaps:
    """One head: table (one row per condition), per_prompt (condition → metric → (n,)), differences
    (condition → (mean, lo, hi) of category − condition on Δp), verdict, power (half-width of the category − random
    interval), check (forward_check's (max |Δ attention|, answer rate) when swap_method="forward")."""

    table: pd.DataFrame
    per_prompt: dict
    differences: dict
    verdict: str
    power: float
    n_prompts: int
    check: tuple[float, float] | None = None


def condition_bases(result: FilterHeadsResult, head) -> dict[str, torch.Tensor | int]:
    a = result.analyses
    basis = a["model"][head].key_basis
    rank, d = basis.shape[1], basis.shape[0]
    return {
        CATEGORY: basis,
        RANDOM: rank,
        CONTROLS[0]: a["model"][head].key_pcs[:, :rank],
        CONTROLS[1]: a["shuffled labels"][head].key_span[:, :rank],  # its top directions, equal rank
        CONTROLS[2]: a["random init"][head].key_basis,
        WHOLE: torch.eye(d, dtype=torch.float64),
    }


def swap_experiment(model, tokenizer, result: FilterHeadsResult, params: FilterHeadsParams) -> dict:
    """head → HeadSwaps."""
    prompts = FilterTask(FilterTaskConfig(categories=params.categories)).sample_single_positive(
        params.n_swap_prompts, torch.Generator().manual_seed(params.seed + 7)
    )
    orig, target = swap_targets(prompts, torch.Generator().manual_seed(params.seed + 8))
    for net in (model, result.random_model):
        if getattr(net.config, "attn_logit_softcapping", None):
            raise NotImplementedError("rebuilt swap rows assume a plain softmax over q·k; this model soft-caps it")
    args = (tokenizer, prompts, result.heads, orig, target, params.batch_size, params.answer_prefix)
    rows = {"model": gather_rows(model, *args), "random init": gather_rows(result.random_model, *args)}
    out = {}
    for h in result.heads:
        g = torch.Generator().manual_seed(params.seed + 9)
        bases = condition_bases(result, h)
        per_prompt = {
            name: condition_metrics(rows["random init" if name == CONTROLS[2] else "model"][h], b, params.n_random, g)
            for name, b in bases.items()
        }
        ranks = {name: b if isinstance(b, int) else b.shape[1] for name, b in bases.items()}
        table = swap_table(per_prompt, ranks)
        verdict, diffs = rules.effect_vs_controls(
            per_prompt[CATEGORY][PRIMARY],
            per_prompt[RANDOM][PRIMARY],
            {c: per_prompt[c][PRIMARY] for c in CONTROLS},
            torch.Generator().manual_seed(params.seed + 10),
        )
        _, lo, hi = diffs["random"]
        check = None
        if params.swap_method == "forward":
            check = forward_check(
                model, tokenizer, prompts, h, bases[CATEGORY], orig, target, rows["model"][h], params.answer_prefix
            )
        out[h] = HeadSwaps(table, per_prompt, diffs, verdict, (hi - lo) / 2, len(prompts), check)
    return out
