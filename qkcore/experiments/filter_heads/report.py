"""Tables and key numbers of the filter-heads chapter (paper Figures 6–7): the top of the head scan, each category's
ΔC at a studied head beside the controls, the combined category subspaces, and the summary set beside the paper.

    scan_table(result, n=6); category_table(result, result.heads[0]); subspace_table(result)
    summary(result, swaps, k13)          # a flat dict of rounded numbers for the closing cell
"""

from __future__ import annotations

import pandas as pd
import torch

from qkcore.experiments.filter_heads.analysis import CONDITIONS, FilterHeadsResult, Keys13Result
from qkcore.experiments.tables import r3
from qkcore.lm import pad_batch, run_model
from qkcore.lm.chat import model_text, uses_chat_template
from qkcore.lm.layout import head_name, head_names
from qkcore.organisms.filter_task import PLURALS, FilterPrompt
from qkcore.subspace import principal_angles


def scan_table(result: FilterHeadsResult, n: int = 6) -> pd.DataFrame:
    """The top n heads of the scan (ranked as the chapter's scan_by says), with their mean logit gap, their attention
    on the asked items and on the others, ‖ΔC‖_F, and the same numbers for the random-init copy's head there."""
    rows = {}
    for layer, head in result.scan.ranking(result.scan_by)[:n]:
        rows[head_name((layer, head))] = {
            "logit gap": float(result.scan.logit_gap[:, layer, head].mean()),
            "attention on +": float(result.scan.attn_pos[layer, head]),
            "attention on −": float(result.scan.attn_neg[layer, head]),
            "‖ΔC‖_F": float(result.scan.delta_norm[:, layer, head].mean()),
            "random init: gap": float(result.random_scan.logit_gap[:, layer, head].mean()),
            "random init: attention on +": float(result.random_scan.attn_pos[layer, head]),
            "studied": (layer, head) in result.heads,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@torch.no_grad()
def greedy_answer(model, tokenizer, prompt: FilterPrompt, max_new_tokens: int = 8, answer_prefix: str = "") -> str:
    """The model's greedy continuation of one prompt, up to end of sequence (what it answers), after the answer's
    begun prefix if any (see encode_filter_prompts)."""
    prefix = answer_prefix.format(plural=PLURALS[prompt.asked])
    text, _ = model_text(tokenizer, prompt.text, uses_chat_template(tokenizer), prefix)
    ids = tokenizer(text, add_special_tokens=not uses_chat_template(tokenizer))["input_ids"]
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(run_model(model, pad_batch([ids + new])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return (prefix + tokenizer.decode(new, skip_special_tokens=True)).strip()


def category_table(result: FilterHeadsResult, head: tuple[int, int]):
    """Per category at one head, the model beside its controls: rank of ΔC, share of σ₁², logit gap trace ΔC,
    attention on the asked items, |q̄|²/E|q|², and the share of ΔC that q̄ dᵀ explains."""
    a = {c: result.analyses[c][tuple(head)] for c in CONDITIONS}
    short = {"model": "model", "shuffled labels": "shuffled", "random init": "random init"}
    cols = {}
    for c in CONDITIONS:
        cols[("rank", short[c])] = a[c].ranks.tolist()
        cols[("σ₁² share", short[c])] = a[c].energy_fractions[:, 0].tolist()
    for c in CONDITIONS:
        cols[("logit gap", short[c])] = a[c].logit_gap.tolist()
    for c in CONDITIONS:
        cols[("attention on +", short[c])] = a[c].attn_pos.tolist()
    for c in ("model", "random init"):  # the shuffled condition has the model's queries
        cols[("|q̄|²/E|q|²", short[c])] = a[c].query_concentration.tolist()
        cols[("q̄dᵀ share", short[c])] = a[c].mean_share.tolist()
    table = pd.DataFrame(cols, index=pd.Index(result.scan.categories, name="category"))
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def subspace_table(result: FilterHeadsResult):
    """Per head and condition: dimension of the combined query / key subspace (QR of the per-category bases, as in
    the paper), the rank of the stacked bases at `energy`, the closure ‖Σ d_c‖/Σ‖d_c‖ of the key contrasts, how
    purely the fresh prompts' keys / queries sort by category inside the subspace (η²), and the principal angles
    between the condition's key subspace (`key_span`, of dimension key rank) and the model's."""
    rows = {}
    for h in result.heads:
        model_keys = result.analyses["model"][h].key_span
        for c in CONDITIONS:
            a, p = result.analyses[c][h], result.projections[c][h]
            same_model = c != "random init"  # angles between two models' subspaces mean nothing
            rows[(head_name(h), c)] = {
                "query dims (QR)": a.query_basis.shape[1],
                "key dims (QR)": a.key_basis.shape[1],
                "query rank": a.query_rank,
                "key rank": a.key_rank,
                "closure": a.closure,
                "key η²": p.key_eta2,
                "query η²": p.query_eta2,
                "angles to model's keys (°)": (
                    principal_angles(a.key_span, model_keys).round().int().tolist() if same_model else "n/a"
                ),
            }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["head", "condition"])
    return table


def summary(result: FilterHeadsResult, swaps: pd.DataFrame, k13: Keys13Result | None) -> dict[str, object]:
    """The chapter's closing numbers, rounded to 3 decimals: per studied head the ranks, |q̄|²/E|q|², subspace
    dimensions, η² and the swap's flip rates, each beside its controls."""
    out: dict[str, object] = {"model": result.model_label}
    for h in result.heads:
        name = head_name(h)
        a = {c: result.analyses[c][h] for c in CONDITIONS}
        out[f"{name} attention on asked items"] = r3(a["model"].attn_pos.mean())
        for c in CONDITIONS:
            out[f"{name} ΔC ranks ({c})"] = a[c].ranks.tolist()
            out[f"{name} query/key rank ({c})"] = (a[c].query_rank, a[c].key_rank)
            out[f"{name} key η² ({c})"] = r3(result.projections[c][h].key_eta2)
        out[f"{name} |q̄|²/E|q|² min (model)"] = r3(a["model"].query_concentration.min())
        for cond in swaps.loc[name].index:
            out[f"{name} swap flip rate ({cond})"] = r3(swaps.loc[(name, cond), "flip_rate"])
            if "flip_lo" in swaps.columns:
                row = swaps.loc[(name, cond)]
                out[f"{name} swap flip rate 95% interval ({cond})"] = [r3(row["flip_lo"]), r3(row["flip_hi"])]
    out.update(verdicts(result, swaps))
    if k13 is None:
        return out
    out["13 categories: head"] = head_name(k13.head)
    out["13 categories: ΔC ranks"] = k13.analysis.ranks.tolist()
    out["13 categories: key rank (dims)"] = (k13.analysis.key_rank, k13.analysis.key_basis.shape[1])
    out["13 categories: key rank, random init"] = k13.random_analysis.key_rank
    out["13 categories: key η² (model, null grouping, random init)"] = (
        r3(k13.projection.key_eta2),
        r3(k13.null_projection.key_eta2),
        r3(k13.random_projection.key_eta2),
    )
    return out


# -- verdicts: the page's findings in words, computed from its own numbers (pasted into the prose with myst-nb glue) --
REPRODUCED = "reproduced"
SHOWN_BY_CONTROL = "reproduced, but a control shows it too"
NOT_REPRODUCED = "not reproduced"


def swap_verdict(swaps: pd.DataFrame, head_label: str) -> tuple[str, str]:
    """(verdict, sentence) for the Figure 7 swap at one head, by these rules on the flip rate's 95% intervals:
    not reproduced when the category subspace's interval reaches down into the random subspace's; reproduced, but
    a control shows it too, when a label-free or wrong-label subspace (top key variance, shuffled labels) flips at
    least as often or its interval overlaps the category subspace's; reproduced otherwise."""
    t = swaps.loc[head_label]

    def cell(cond: str) -> str:
        row = t.loc[cond]
        return f"{row.flip_rate:.2f} [{row.flip_lo:.2f}, {row.flip_hi:.2f}]"

    cat, rnd = t.loc["category subspace"], t.loc["random subspace, same rank"]
    controls = [c for c in ("top key-variance subspace, same rank", "shuffled-label subspace") if c in t.index]
    shown = [c for c in controls if t.loc[c].flip_hi >= cat.flip_lo or t.loc[c].flip_rate >= cat.flip_rate]
    if cat.flip_lo <= rnd.flip_hi:
        verdict = NOT_REPRODUCED
    elif shown:
        verdict = SHOWN_BY_CONTROL
    else:
        verdict = REPRODUCED
    sentence = (
        f"At {head_label}, swapping inside the category subspace moves the head's top attention to the "
        f"target in {cell('category subspace')} of prompts (95% bootstrap interval), against "
        f"{cell('random subspace, same rank')} for random subspaces of the same rank; "
        + "; ".join(f"the {c} {cell(c)}" for c in controls)
        + "."
    )
    return verdict, sentence


def verdicts(result: FilterHeadsResult, swaps: pd.DataFrame) -> dict[str, str]:
    """The chapter's verdicts, for the results-at-a-glance page, by stated rules: "rank 1 per category" is shown by
    a control when a control's ΔCs are rank 1 too; keys cluster by category (reproduced) when the model's key η²
    exceeds both controls' by 0.1 at a studied head; the swap by `swap_verdict` at the head where the category
    subspace flips most."""
    a = result.analyses
    out = {}
    model_rank1 = all(bool((a["model"][h].ranks == 1).all()) for h in result.heads)
    control_rank1 = any(bool((a[c][h].ranks == 1).all()) for c in CONDITIONS[1:] for h in result.heads)
    out["verdict: rank 1 per category"] = (
        SHOWN_BY_CONTROL if model_rank1 and control_rank1 else REPRODUCED if model_rank1 else NOT_REPRODUCED
    )
    eta = {c: [result.projections[c][h].key_eta2 for h in result.heads] for c in CONDITIONS}
    clusters = any(m > max(s, r) + 0.1 for m, s, r in zip(eta["model"], eta["shuffled labels"], eta["random init"]))
    out["verdict: keys cluster by category (Figure 6)"] = REPRODUCED if clusters else NOT_REPRODUCED
    if "flip_lo" in swaps.columns:
        labels = [head_name(h) for h in result.heads]
        best = max(labels, key=lambda h: swaps.loc[(h, "category subspace"), "flip_rate"])
        out["verdict: swap moves attention (Figure 7)"] = f"{swap_verdict(swaps, best)[0]} (at {best})"
    return out


def findings(result: FilterHeadsResult, swaps: pd.DataFrame, k13: Keys13Result | None) -> dict[str, str]:
    """Markdown strings for the page, each true for the model that ran: `model` (which model, and its answer
    accuracy), `ranks`, `geometry`, `swap`, and `verdict` (the chapter's closing paragraph)."""
    acc = result.accuracy or {}
    a = result.analyses
    out = {
        "model": f"**{result.model_label}**",
        "accuracy": "the answer accuracy was not measured",
        "verdict": "The swap was not run with bootstrap intervals, so no verdict is drawn here.",
    }
    if acc:
        out["accuracy"] = (
            f"its first answer token is an item of the asked category in {acc['model']:.2f} of the "
            f"ΔC prompts (random-init copy {acc['random init']:.2f}; a random list item "
            f"{acc['chance (a random list item)']:.2f})"
        )
    rank_one = all(bool((a[c][h].ranks == 1).all()) for c in CONDITIONS for h in result.heads)
    conc = min(float(a["model"][h].query_concentration.min()) for h in result.heads)
    out["ranks"] = (
        (
            "Every category's ΔC is rank 1 at the studied heads, **and so is every control's** (shuffled labels, "
            f"random init): the last token's query hardly varies (|q̄|²/E|q|² ≥ {conc:.2f}), so rank 1 follows from "
            "the construction and says nothing yet about the head."
        )
        if rank_one
        else (
            "The per-category ranks at the studied heads are "
            + "; ".join(f"{head_name(h)}: {a['model'][h].ranks.tolist()}" for h in result.heads)
            + " (controls in the tables above)."
        )
    )
    eta = {c: [result.projections[c][h].key_eta2 for h in result.heads] for c in CONDITIONS}
    out["geometry"] = (
        "Keys of fresh prompts sort by category inside the category subspace: key η² "
        + ", ".join(f"{x:.2f}" for x in eta["model"])
        + " at "
        + head_names(result.heads)
        + " (shuffled labels "
        + ", ".join(f"{x:.2f}" for x in eta["shuffled labels"])
        + "; random init "
        + ", ".join(f"{x:.2f}" for x in eta["random init"])
        + ")."
    )
    per_head = {head_name(h): swap_verdict(swaps, head_name(h)) for h in result.heads if "flip_lo" in swaps.columns}
    best = max(per_head, key=lambda h: swaps.loc[(h, "category subspace"), "flip_rate"]) if per_head else None
    out["swap"] = " ".join(s for _, s in per_head.values())
    rules = verdicts(result, swaps)
    clusters = rules["verdict: keys cluster by category (Figure 6)"] == REPRODUCED
    rank_shown = rules["verdict: rank 1 per category"] == SHOWN_BY_CONTROL
    first = (
        f"On {result.model_label}, keys {'do' if clusters else 'do not'} sort by category inside the category "
        "subspace (η² above the controls'), "
        + ("but the rank-1 finding is shared by the controls." if rank_shown else "and the ranks are as listed.")
    )
    if best is not None:
        out["swap_verdict"] = per_head[best][0]
        out["verdict"] = (
            f"{first} The swap at the clearest head ({best}) is **{per_head[best][0]}**: {per_head[best][1]} "
            "What would settle it: a control that reaches the category subspace's flip rate (as a label-free "
            "top-variance subspace can) means the head reads its keys' dominant directions and that these carry "
            "the category; only a gap over every control credits ΔC with finding something a label-free method "
            "could not."
        )
    return out
