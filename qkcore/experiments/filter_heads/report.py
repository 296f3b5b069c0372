"""Tables and key numbers of the filter-heads chapter (paper Figures 6–7): the top of the head scan, each category's
ΔC at a studied head beside the controls, the combined category subspaces, and the summary set beside the paper.

    scan_table(result, n=6); category_table(result, result.heads[0]); subspace_table(result)
    summary(result, swaps, k13)          # a flat dict of rounded numbers for the closing cell (k13: keys13's view)
"""

from __future__ import annotations

import pandas as pd
import torch

from qkcore.experiments import verdicts
from qkcore.experiments.filter_heads.analysis import CONDITIONS, FilterHeadsResult
from qkcore.experiments.filter_heads.keys13 import Keys13Result, keys13_finding, keys13_summary, keys13_verdict
from qkcore.experiments.tables import r3
from qkcore.lm.chat import model_text, uses_chat_template
from qkcore.lm.layout import head_name
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
    device = next(model.parameters()).device
    out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)  # one pass, then one token at a time
    new: list[int] = []
    for _ in range(max_new_tokens):
        token = int(out.logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
        out = model(
            input_ids=torch.tensor([[token]], device=device), past_key_values=out.past_key_values, use_cache=True
        )
    return (prefix + tokenizer.decode(new, skip_special_tokens=True)).strip()


def category_table(result: FilterHeadsResult, head: tuple[int, int]):
    """Per category at one head, the model beside its controls: rank of ΔC, σ₂²/Σσ², the bound on the off-rank-1
    energy that query concentration alone implies (nulls.RankBound; ≤ 0.01 guarantees rank 1 at 99%), the logit
    gap trace ΔC, and |q̄|²/E|q|²."""
    a = {c: result.analyses[c][tuple(head)] for c in CONDITIONS}
    bounds = result.nulls[tuple(head)].bounds if result.nulls else None
    short = {"model": "model", "shuffled labels": "shuffled", "random init": "random init"}
    cols = {}
    for c in CONDITIONS:
        cols[("rank", short[c])] = a[c].ranks.tolist()
    for c in CONDITIONS:
        cols[("σ₂²/Σσ²", short[c])] = a[c].energy_fractions[:, 1].tolist()
    if bounds:
        for c in CONDITIONS:
            cols[("bound", short[c])] = [b.bound for b in bounds[c]]
    for c in CONDITIONS:
        cols[("logit gap", short[c])] = a[c].logit_gap.tolist()
    for c in ("model", "random init"):  # the shuffled condition has the model's queries
        cols[("|q̄|²/E|q|²", short[c])] = a[c].query_concentration.tolist()
    table = pd.DataFrame(cols, index=pd.Index(result.scan.categories, name="category"))
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def null_table(result: FilterHeadsResult) -> pd.DataFrame:
    """Per head: the categories' key η² and leave-one-item-out decoding beside the null groupings' (mean and 95th
    percentile of the random and of the balanced groupings), the permutation p-values, the null subspaces' mean
    overlap with the category subspace, and the category-matching statistic with its p-value."""
    rows = {}
    for h in result.heads:
        rows.update(_null_rows(result.nulls[h], head_name(h)))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["head", "score"])
    return table


def null_table_13(k13: Keys13Result) -> pd.DataFrame:
    """null_table's rows for the 13-category view at its head."""
    table = pd.DataFrame.from_dict(_null_rows(k13.nulls, head_name(k13.head)), orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["head", "score"])
    return table


def _null_rows(n, name: str) -> dict:
    """One head's rows of null_table, from its nulls.NullTests."""
    rows = {}
    for what, true, key, p in (
        ("key η²", n.score.eta2, "eta2", n.p_eta),
        ("decoding", n.score.decoding, "decoding", n.p_decoding),
        ("overlap", 1.0, "overlap", (float("nan"), float("nan"))),
    ):
        r = torch.tensor([getattr(s, key) for s in n.random], dtype=torch.float64)
        b = torch.tensor([getattr(s, key) for s in n.balanced], dtype=torch.float64)
        rows[(name, what)] = {
            "categories": true,
            "random: mean": float(r.nanmean()),
            "random: 95th": float(torch.nanquantile(r, 0.95)),
            "balanced: mean": float(b.nanmean()),
            "balanced: 95th": float(torch.nanquantile(b, 0.95)),
            "p (random)": p[0],
            "p (balanced)": p[1],
        }
    m = n.matching
    rows[(name, "matching diag − off")] = {
        "categories": m.statistic,
        "random: mean": float(m.null.nanmean()),
        "random: 95th": float(torch.nanquantile(m.null.double(), 0.95)),
        "balanced: mean": float("nan"),
        "balanced: 95th": float("nan"),
        "p (random)": m.p_value,
        "p (balanced)": float("nan"),
    }
    return rows


def decoding_table(result: FilterHeadsResult) -> pd.DataFrame:
    """Per head: leave-one-item-out decoding of the category in the category subspace, in the top-r key PCs (no
    labels) and in random r-d subspaces (mean, 95th percentile), and chance."""
    rows = {}
    for h in result.heads:
        d = result.nulls[h].decoding
        rows[head_name(h)] = {
            "dims": d.dims,
            "category subspace": d.category,
            "top key PCs": d.top_pcs,
            "random: mean": d.random_mean,
            "random: 95th": d.random_hi,
            "chance": d.chance,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


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


def _f(x: float, digits: int = 2) -> str:
    return "undefined (floor)" if x != x else f"{x:.{digits}f}"


CLAIMS = (
    "filter: low rank",
    "filter: keys cluster by category",
    "filter: category matching",
    "filter: category decoding",
    "filter: swap",
)


def decoding_verdict(model: str, head: str, d) -> verdicts.Verdict:
    """Leave-one-item-out decoding of the category: not reproduced unless the category subspace decodes above the
    95th percentile of random subspaces of its dimension; then by the paired difference (category − top key PCs)
    over the held-out items: a control does better when it lies below 0, matched when it includes 0."""
    diff = verdicts.paired_difference(d.category_hits, d.pcs_hits)
    numbers = {
        "category subspace": d.category,  # accuracies over keys; the paired difference is over items
        "top key PCs": d.top_pcs,
        "category − PCs": diff,
        "random: 95th": d.random_hi,
        "chance": d.chance,
        "dims": d.dims,
    }
    rule = (
        "not reproduced unless the category subspace decodes the held-out items' category above the 95th percentile "
        "of random subspaces of its dimension; then a control does better / matched by a control / reproduced when "
        "the paired difference from the label-free top key PCs (bootstrap over the held-out items) lies below / "
        "includes / lies above 0"
    )
    word = (
        verdicts.NOT_REPRODUCED
        if d.category <= d.random_hi
        else verdicts.CONTROL_BETTER
        if diff.hi < 0
        else verdicts.MATCHED
        if diff.lo <= 0
        else verdicts.REPRODUCED
    )
    return verdicts.Verdict("filter: category decoding", model, head, word, rule, numbers)


def head_verdicts(result: FilterHeadsResult, swaps: dict) -> dict[tuple[int, int], dict[str, verdicts.Verdict]]:
    """Per studied head, one verdicts.Verdict per claim (CLAIMS): every one "not testable here" when the model cannot
    read the task (the gate); else rank (rank_verdict, implied when the query-concentration bound guarantees
    rank 1), keys (key η² against the random and the balanced groupings), matching (diagonal − off-diagonal against
    the random groupings), decoding (decoding_verdict), swap (effect_vs_controls on Δp)."""
    out = {}
    ok, why = result.gate
    model = result.model_label
    for h in result.heads:
        name = head_name(h)
        if not ok:
            out[h] = {c: verdicts.gate(c, model, name, False, f"the model cannot read the task: {why}") for c in CLAIMS}
            continue
        n, a = result.nulls[h], result.analyses["model"][h]
        bound = max(b.bound for b in n.bounds["model"])
        out[h] = {
            CLAIMS[0]: verdicts.rank_verdict(
                CLAIMS[0],
                model,
                name,
                int(a.ranks.max()),
                1,
                n.implied(),
                {
                    "ranks": a.ranks.tolist(),
                    "bound (max over categories)": bound,
                    "σ₂²/Σσ² (max)": float(a.energy_fractions[:, 1].max()),
                },
            ),
            CLAIMS[1]: verdicts.against_null(
                CLAIMS[1],
                model,
                name,
                n.score.eta2,
                {"random groupings": [x.eta2 for x in n.random], "balanced groupings": [x.eta2 for x in n.balanced]},
                statistic="key η²",
            ),
            CLAIMS[2]: verdicts.against_null(
                CLAIMS[2],
                model,
                name,
                n.matching.statistic,
                {"random groupings": n.matching.null.tolist()},
                statistic="diagonal − off-diagonal E[q·k]",
            ),
            CLAIMS[3]: decoding_verdict(model, name, n.decoding),
            CLAIMS[4]: swaps[h].verdict,
        }
    return out


def summary(result: FilterHeadsResult, swaps: dict, k13: Keys13Result | None) -> dict[str, object]:
    """The chapter's closing numbers, rounded to 3 decimals, and one verdict per claim and head ("verdict: …")."""
    out: dict[str, object] = {"model": result.model_label, "task readable": result.gate[1]}
    if result.accuracy:
        out["first-answer accuracy (model, chance)"] = [
            r3(result.accuracy["model"]),
            r3(result.accuracy["chance (a random list item)"]),
        ]
    per_head = head_verdicts(result, swaps)
    for h in result.heads:
        name = head_name(h)
        a, n, s = result.analyses["model"][h], result.nulls[h], swaps[h]
        out[f"{name} ΔC ranks (model)"] = a.ranks.tolist()
        out[f"{name} σ₂²/Σσ² max (model)"] = r3(a.energy_fractions[:, 1].max())
        out[f"{name} rank-1 bound max (model, shuffled, random init)"] = [
            r3(max(b.bound for b in n.bounds[c])) for c in CONDITIONS
        ]
        out[f"{name} key η² (model)"] = r3(n.score.eta2)
        out[f"{name} key η² (shuffled labels)"] = r3(sum(x.eta2 for x in n.balanced) / len(n.balanced))
        out[f"{name} key η² p (random, balanced groupings)"] = [r3(x) for x in n.p_eta]
        out[f"{name} decoding (category, top PCs, random)"] = [
            r3(n.decoding.category),
            r3(n.decoding.top_pcs),
            r3(n.decoding.random_mean),
        ]
        out[f"{name} matching diag − off (p)"] = [r3(n.matching.statistic), r3(n.matching.p_value)]
        t = s.table()
        for cond in t.index:
            out[f"{name} swap Δp ({cond})"] = r3(t.loc[cond, "delta_p"])
            out[f"{name} swap flip rate ({cond})"] = r3(t.loc[cond, "flip"])
        out[f"{name} swap gap fraction median (category subspace)"] = r3(
            t.loc["category subspace", "gap_fraction median"]
        )
        out[f"{name} swap orig on top, sink share"] = [
            r3(s.on_top["category subspace"]),
            r3(s.sink["category subspace"]),
        ]
        out[f"{name} swap power (± half-width, n)"] = [r3(s.power), s.n_prompts]
        for claim, v in per_head[h].items():
            out[f"verdict: {claim.removeprefix('filter: ')}, {name}"] = f"{v.verdict} (at {name})"
    if k13 is not None:
        out.update(keys13_summary(k13))  # its verdict permutation-tested like the 5-category part's
    return out


def all_verdicts(result: FilterHeadsResult, swaps: dict, k13: Keys13Result | None = None) -> list[verdicts.Verdict]:
    """Every verdict of the page, for verdicts.record_verdicts: per studied head and claim, then the 13-category
    view's (keys cluster by category) when it ran."""
    out = [v for per in head_verdicts(result, swaps).values() for v in per.values()]
    return out + ([keys13_verdict(k13)] if k13 is not None else [])


def findings(result: FilterHeadsResult, swaps: dict, k13: Keys13Result | None = None) -> dict[str, str]:
    """Markdown strings for the page, each computed from this run: model, accuracy (the gate), ranks, nulls, swap,
    verdict, keys13 (the 13-category view, or why it did not run)."""
    acc = result.accuracy or {}
    ok, why = result.gate
    out = {"model": f"**{result.model_label}**"}
    out["accuracy"] = (
        f"the model can read the task: {why}"
        if ok
        else f"**the model cannot read the task here**: {why}. Every verdict below is *{verdicts.NOT_TESTABLE}*; "
        "the numbers are shown for what they are"
    )
    if acc:
        out["accuracy"] += f" (random-init copy {acc['random init']:.2f})"
    per_head = head_verdicts(result, swaps)
    rank_parts, null_parts, swap_parts = [], [], []
    for h in result.heads:
        name, a, n, s = head_name(h), result.analyses["model"][h], result.nulls[h], swaps[h]
        bound = max(b.bound for b in n.bounds["model"])
        ctl = [c for c in CONDITIONS[1:] if n.implied(c)]
        rank_parts.append(
            f"At {name} the ranks are {a.ranks.tolist()}, σ₂²/Σσ² at most {a.energy_fractions[:, 1].max():.1e}; "
            f"the bound from query concentration alone allows at most {bound:.1e} off rank 1 "
            + ("(≤ 0.01: rank 1 is **implied**, whatever the keys hold)" if n.implied() else "(> 0.01: not implied)")
            + (f"; the bound implies rank 1 for the {' and '.join(ctl)} too." if ctl else ".")
        )
        r_eta = sum(x.eta2 for x in n.random) / len(n.random)
        b_eta = sum(x.eta2 for x in n.balanced) / len(n.balanced)
        r_ov = sum(x.overlap for x in n.random) / len(n.random)
        b_ov = sum(x.overlap for x in n.balanced) / len(n.balanced)
        d = n.decoding
        null_parts.append(
            f"At {name}: key η² {n.score.eta2:.2f} against {r_eta:.2f} for {len(n.random)} random groupings "
            f"(p = {n.p_eta[0]:.2g}) and {b_eta:.2f} for {len(n.balanced)} balanced ones (p = {n.p_eta[1]:.2g}); "
            f"the null subspaces share {r_ov:.2f} (random) and {b_ov:.2f} (balanced) of the category subspace. "
            f"Leave-one-item-out decoding: {d.category:.2f} in the category subspace, {d.top_pcs:.2f} in the top "
            f"{d.dims} key PCs (no labels), {d.random_mean:.2f} in random {d.dims}-d subspaces "
            f"(chance {d.chance:.2f}). "
            f"Matching: diagonal minus off-diagonal {n.matching.statistic:.2f} (p = {n.matching.p_value:.2g}), "
            f"diagonal the row maximum in {n.matching.diagonal_max_rows} of {len(n.matching.matrix)} rows."
        )
        t = s.table()
        diff = verdicts.paired_difference(
            s.result.per_prompt["category subspace"]["delta_p"], s.result.per_prompt["random subspace"]["delta_p"]
        )
        better = [
            k.removeprefix("effect − ") for k, v in s.verdict.numbers.items() if k.startswith("effect − ") and v.hi < 0
        ]
        others = [c for c in t.index if c not in ("category subspace", "random subspace")]
        swap_parts.append(
            f"At {name}: Δp {t.loc['category subspace', 'delta_p']:.2f} in the category subspace against "
            f"{t.loc['random subspace', 'delta_p']:.2f} in random ones (paired difference {diff}; "
            f"power: ± {s.power:.2f} at n = {s.n_prompts}); "
            + ", ".join(f"{c} {t.loc[c, 'delta_p']:.2f}" for c in others)
            + f". The authors' flip: {_f(t.loc['category subspace', 'flip'])} (defined where orig is on top at "
            f"baseline: {s.on_top['category subspace']:.2f} of prompts; baseline attention outside the items "
            f"{s.sink['category subspace']:.2f}); candidate flip {_f(t.loc['category subspace', 'flip_candidates'])}."
            + (f" Doing better than the category subspace: {', '.join(better)}." if better else "")
        )
    out["ranks"] = " ".join(rank_parts)
    out["nulls"] = " ".join(null_parts)
    out["swap"] = " ".join(swap_parts)
    out["verdict"] = "\n".join(
        f"- **{head_name(h)}**: " + "; ".join(f"{c.removeprefix('filter: ')}: *{v.verdict}*" for c, v in vs.items())
        for h, vs in per_head.items()
    )
    if k13 is not None:
        out["verdict"] += f"\n- **{k13.head_label}** of {k13.model_label}: keys cluster by category: "
        out["verdict"] += f"*{keys13_verdict(k13).verdict}*"
    skipped = "The 13-category view did not run on this page (keys_13=False)."
    out["keys13"] = keys13_finding(k13) if k13 is not None else skipped
    return out
