"""Figure 7 at each studied head, on the book's one swap engine (qkcore.experiments.swap_engine): one item of the
asked category (orig) among 20 others and a random other item (target); their key coordinates exchanged inside
the category key subspace, against random subspaces of equal rank (`n_random` draws), the top key-variance
subspace (no labels), the shuffled-label subspace (a balanced grouping: one item of each category per group), the
random-init copy's own category subspace and the whole key (the ceiling), all on the same prompts, orig and target
items (every control of the category subspace's rank). The verdict: verdicts.effect_vs_controls on Δp.

    swaps = swap_experiment(model, tokenizer, result, params)
    swaps[head].result.table(); swaps[head].verdict; swaps[head].power      # power: the paired interval's half-width
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qkcore.experiments import verdicts
from qkcore.experiments.filter_heads.analysis import FilterHeadsParams, FilterHeadsResult
from qkcore.experiments.filter_heads.vectors import filter_tasks
from qkcore.experiments.swap_engine import (
    SwapResult,
    forward_swaps,
    gather_swap_sets,
    recomputed_metrics,
    swap_conditions,
    top_key_variance,
)
from qkcore.lm.layout import head_name
from qkcore.organisms.filter_task import FilterPrompt, FilterTask, FilterTaskConfig

CATEGORY = "category subspace"
RANDOM = "random subspace"
CONTROLS = (RANDOM, "top key-variance subspace", "shuffled-label subspace", "random-init model")
WHOLE = "whole key"
EFFECT = "delta_p"  # the per-prompt metric the verdict is drawn on (defined on every prompt, unlike the flip)


def swap_targets(prompts: Sequence[FilterPrompt], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per prompt: the item index (= candidate index) of the asked category's single item (orig) and of a random
    other item (target), as in the authors' code."""
    orig, target = [], []
    for p in prompts:
        pos = [i for i, flag in enumerate(p.positive) if flag]
        if len(pos) != 1:
            raise ValueError(f"swap prompts need exactly one item of the asked category, got {len(pos)}")
        others = [i for i in range(len(p.items)) if i != pos[0]]
        orig.append(pos[0])
        target.append(others[int(torch.randint(len(others), (), generator=generator))])
    return torch.tensor(orig), torch.tensor(target)


@dataclass
class HeadSwaps:
    """One head: result (the engine's SwapResult, every condition incl. the random-init model's), verdict
    (verdicts.Verdict on Δp), power (half-width of the category − random paired interval at this n), check
    ((max |Δ| between the engine's rebuilt and forward-pass metrics, over its first batch) when swap_method is
    "forward")."""

    result: SwapResult
    verdict: verdicts.Verdict
    power: float
    n_prompts: int
    on_top: dict[str, float]  # condition → share of prompts whose baseline argmax is orig (the flip's domain)
    sink: dict[str, float]  # condition → baseline attention outside the listed items
    check: float | None = None

    def table(self):
        """One row per condition: rank, the share of prompts with orig on top at baseline, the baseline attention
        outside the items, each metric's mean (95% interval, prompts defining it), and the gap fraction's median."""
        t = self.result.table(("flip", "flip_candidates", "delta_p", "gap_fraction"))
        t.insert(1, "orig on top", [self.on_top[c] for c in t.index])
        t.insert(2, "sink share", [self.sink[c] for c in t.index])
        # a per-prompt ratio explodes where q·(k_orig − k_target) is near 0: its median is the readable summary
        t["gap_fraction median"] = [float(self.result.per_prompt[c]["gap_fraction"].nanmedian()) for c in t.index]
        return t


def swap_experiment(model, tokenizer, result: FilterHeadsResult, params: FilterHeadsParams) -> dict:
    """head → HeadSwaps."""
    prompts = FilterTask(FilterTaskConfig(categories=params.categories)).sample_single_positive(
        params.n_swap_prompts, torch.Generator().manual_seed(params.seed + 7)
    )
    orig, target = swap_targets(prompts, torch.Generator().manual_seed(params.seed + 8))
    for net in (model, result.random_model):
        if getattr(net.config, "attn_logit_softcapping", None):
            raise NotImplementedError("rebuilt swap rows assume a plain softmax over q·k; this model soft-caps it")
    tasks = filter_tasks(tokenizer, prompts, params.categories, params.batch_size, params.answer_prefix)
    # the control first: analyse_heads left it resident, so the two models swap memory once (qkcore.lm.residency;
    # each is mapped back from its file); the two gathers are independent
    rand_sets = gather_swap_sets(result.random_model, tasks, result.heads, orig, target)
    sets = gather_swap_sets(model, tasks, result.heads, orig, target)
    out = {}
    for h in result.heads:
        a = result.analyses
        basis = a["model"][h].key_basis
        rank = basis.shape[1]
        g = torch.Generator().manual_seed(params.seed + 9)
        bases = {
            CATEGORY: basis,
            RANDOM: rank,
            CONTROLS[1]: top_key_variance(sets[h], rank),
            CONTROLS[2]: a["shuffled labels"][h].key_span[:, :rank],  # the balanced grouping's top directions
            WHOLE: torch.eye(basis.shape[0], dtype=torch.float64),
        }
        res = swap_conditions(sets[h], bases, g, params.n_random)
        rand = swap_conditions(rand_sets[h], {CONTROLS[3]: a["random init"][h].key_basis}, g, params.n_random)
        res.per_prompt[CONTROLS[3]] = rand.per_prompt[CONTROLS[3]]
        res.ranks[CONTROLS[3]] = rand.ranks[CONTROLS[3]]
        res.per_prompt = {k: res.per_prompt[k] for k in (CATEGORY, *CONTROLS, WHOLE)}
        verdict = verdicts.effect_vs_controls(
            "filter: swap",
            result.model_label,
            head_name(h),
            res.per_prompt[CATEGORY][EFFECT],
            {c: res.per_prompt[c][EFFECT] for c in CONTROLS},
        )
        power = verdicts.paired_difference(res.per_prompt[CATEGORY][EFFECT], res.per_prompt[RANDOM][EFFECT]).half_width
        check = None
        if params.swap_method == "forward":
            n0 = tasks[0].size
            fwd = forward_swaps(model, tasks[:1], h, orig[:n0], target[:n0], basis)
            first = recomputed_metrics(_first_chunk(sets[h]), basis)
            check = max(float((fwd[m] - first[m]).abs().nan_to_num(0).max()) for m in ("delta_p", "attn_target_after"))
        on_top = {c: float(sets[h].orig_on_top.double().mean()) for c in res.per_prompt}
        sink = {c: float(sets[h].sink_share.mean()) for c in res.per_prompt}
        on_top[CONTROLS[3]] = float(rand_sets[h].orig_on_top.double().mean())
        sink[CONTROLS[3]] = float(rand_sets[h].sink_share.mean())
        out[h] = HeadSwaps(res, verdict, power, len(prompts), on_top, sink, check)
    return out


def _first_chunk(swap_set):
    from qkcore.experiments.swap_engine import SwapSet

    return SwapSet(swap_set.head, swap_set.chunks[:1])
