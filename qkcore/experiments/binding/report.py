"""The model-dependent sentences of the binding chapters (Figures 8–10), computed from their numbers by the explicit
rules below, so that one source notebook tells the truth about whichever model it ran on. A page pastes them into
its markdown with myst-nb's glue.

    note = model_note(lm, accuracy=0.27, n_pairs=4, n=150)      # which model, its box accuracy against chance
    text = swap_verdict(rows, accuracy, n_pairs, n, organism)     # rows: {head: {condition: (rate, lo, hi)}}

Rules (each function's docstring repeats its own):

* **At chance.** A model's letter accuracy is *at chance* when it is within two binomial standard errors of
  1/n_pairs: then whatever its heads do is tied to no answer it gets right, and every verdict says so.
* **Verdict words** (the results-at-a-glance page uses the same): *reproduced* when the finding's 95% interval
  lies above every control's by more than MARGIN (0.05); *reproduced, but a control shows it too* when it lies so
  above the random-subspace control's but not above a label-free, shuffled-label or random-init control's; *not
  reproduced* otherwise.
"""

from __future__ import annotations

import math

REPRODUCED = "reproduced"
SHARED = "reproduced, but a control shows it too"
NOT_REPRODUCED = "not reproduced"

Interval = tuple[float, float, float]  # (value, low, high)
MARGIN = 0.05  # how far (in rate or fraction) a finding's interval must clear a control's to count


def at_chance(accuracy: float, n_pairs: int, n: int) -> bool:
    """True when `accuracy` over n prompts is within 2 binomial standard errors of chance (1/n_pairs)."""
    chance = 1 / n_pairs
    return accuracy <= chance + 2 * math.sqrt(chance * (1 - chance) / n)


def accuracy_sentence(accuracy: float, n_pairs: int, n: int, organism: bool) -> str:
    """One sentence on whether the model does the task: the organism's training caveat, or chance-level binding."""
    chance = 1 / n_pairs
    head = f"it picks the right box in {accuracy:.2f} of {n} prompts with {n_pairs} pairs, where chance is {chance:.2f}"
    if at_chance(accuracy, n_pairs, n):
        return (
            f"The model cannot do this task: {head}, within two standard errors of chance. Whatever its heads "
            "do is tied to no answer it gets right, so on binding this page is a **negative control**: it shows "
            "what the method and its controls report on a network that does not bind."
        )
    if organism:
        return (
            f"The organism does the task ({head}), but it was nudged there: for the first half of its training, "
            "auxiliary losses pointed its layer-1 heads at the box letters as a group, so that these heads "
            "read letters at all was partly put in by hand."
        )
    return f"The model does the task above chance: {head}."


def model_note(description: str, accuracy: float, n_pairs: int, n: int, organism: bool) -> str:
    """The page's model paragraph: which model made the figures, and its accuracy against chance."""
    return f"These figures come from **{description}**. " + accuracy_sentence(accuracy, n_pairs, n, organism)


def compare(finding: Interval, controls: dict[str, Interval], random_name: str, margin: float = MARGIN) -> str:
    """The verdict word of one finding against its controls, by intervals (value, low, high) of rates or fractions
    in [0, 1]: REPRODUCED when the finding's low end exceeds every control's high end by more than `margin`;
    SHARED when it exceeds the random-subspace control's (`random_name`) so but not another's; NOT_REPRODUCED
    otherwise (its interval comes within `margin` of the random control's, or there is no finding). The margin keeps
    a difference of a few thousandths between near-equal numbers from counting as a result."""
    if any(math.isnan(x) for x in finding):
        return NOT_REPRODUCED
    lo = finding[1]
    if lo <= controls[random_name][2] + margin:
        return NOT_REPRODUCED
    others = [c for name, c in controls.items() if name != random_name and not math.isnan(c[2])]
    return REPRODUCED if all(lo > c[2] + margin for c in others) else SHARED


def _fmt(x: Interval) -> str:
    return f"{x[0]:.3f} [{x[1]:.3f}, {x[2]:.3f}]"


def swap_verdict(rows: dict[str, dict[str, Interval]], accuracy: float, n_pairs: int, n: int, organism: bool) -> str:
    """Figure 9's verdict over the studied heads. rows: head → condition → (flip rate, low, high) with conditions
    "order+lexical" (the finding), "random (order+lexical rank)" (the random control), "shuffled labels:
    order+lexical" and "top key variance (order+lexical rank)". Rule: `compare` per head; the page's word is the
    most common one (ties: the weaker)."""
    words, parts = [], []
    for head, r in rows.items():
        controls = {
            k: r[k]
            for k in (
                "random (order+lexical rank)",
                "shuffled labels: order+lexical",
                "top key variance (order+lexical rank)",
            )
            if k in r
        }
        word = compare(r["order+lexical"], controls, "random (order+lexical rank)")
        words.append(word)
        parts.append(
            f"{head} {_fmt(r['order+lexical'])} against random "
            f"{_fmt(r['random (order+lexical rank)'])}, shuffled labels "
            f"{_fmt(r['shuffled labels: order+lexical'])}, top key variance "
            f"{_fmt(r['top key variance (order+lexical rank)'])}"
        )
    word = _overall(words)
    return (
        f"**Verdict: {word}.** Swapping the answer's and another box's keys inside the order+lexical subspace "
        f"flips the head's attention (rate [95% interval]) at {'; '.join(parts)}. "
        + _control_clause(word)
        + " "
        + accuracy_sentence(accuracy, n_pairs, n, organism)
    )


def attribution_verdict(fractions: dict[str, Interval], accuracy: float, n_pairs: int, n: int, organism: bool) -> str:
    """Figure 10's verdict. fractions: condition → (mean explained fraction, low, high) for "trained", "random
    subspaces", "shuffled labels", "random init". Rule: `compare` with "random subspaces" as the random control."""
    controls = {k: v for k, v in fractions.items() if k != "trained"}
    word = compare(fractions["trained"], controls, "random subspaces")
    listed = ", ".join(f"{k} {_fmt(v)}" for k, v in controls.items())
    return (
        f"**Verdict: {word}.** The order and lexical query subspaces explain a mean fraction "
        f"{_fmt(fractions['trained'])} of the head's logits, against {listed}. "
        + _control_clause(word)
        + " "
        + accuracy_sentence(accuracy, n_pairs, n, organism)
    )


def subspace_verdict(
    ranks: dict[str, tuple[int, int]],
    order_knn: dict[str, float],
    lexical_knn: dict[str, float],
    d_head: int,
    accuracy: float,
    n_pairs: int,
    n: int,
    organism: bool,
) -> str:
    """Figure 8's verdict at the view head. ranks: condition → (order rank, lexical rank) for "trained", "shuffled
    labels", "random init"; order_knn / lexical_knn: condition → kNN accuracy of the clause (order view) and the
    object (lexical view) from the keys. Rules, per contrast: a rank is low when 1 ≤ rank ≤ d_head/4;
    NOT_REPRODUCED when the trained rank is not low or the view reads its label no better than the random-init
    copy's view or chance (kNN ≤ max(random init, 1/n_pairs) + 0.1); SHARED when the shuffled-label subspace reads
    it as well (within 0.1) or a control's ΔC is low-rank too; REPRODUCED otherwise."""

    def low(rank: int) -> bool:
        return 1 <= rank <= d_head / 4

    def word(i: int, knn: dict[str, float]) -> str:
        if not low(ranks["trained"][i]) or knn["trained"] <= max(knn["random init"], 1 / n_pairs) + 0.1:
            return NOT_REPRODUCED
        if knn["shuffled labels"] >= knn["trained"] - 0.1 or any(
            low(ranks[c][i]) for c in ("shuffled labels", "random init")
        ):
            return SHARED
        return REPRODUCED

    o, lx = word(0, order_knn), word(1, lexical_knn)
    t, s, r = ranks["trained"], ranks["shuffled labels"], ranks["random init"]
    return (
        f"**Verdict: order ID {o}; lexical ID {lx}.** Ranks order / lexical {t[0]} / {t[1]} of {d_head} "
        f"(shuffled labels {s[0]} / {s[1]}, random init {r[0]} / {r[1]}); the clause is read from the order "
        f"view's keys at kNN {order_knn['trained']:.2f} (controls {order_knn['shuffled labels']:.2f}, "
        f"{order_knn['random init']:.2f}; chance {1 / n_pairs:.2f}) and the object from the lexical view's at "
        f"{lexical_knn['trained']:.2f} (controls {lexical_knn['shuffled labels']:.2f}, "
        f"{lexical_knn['random init']:.2f}). A low rank or a clean cluster counts only where the controls lack it. "
        + accuracy_sentence(accuracy, n_pairs, n, organism)
    )


def _overall(words: list[str]) -> str:
    order = [NOT_REPRODUCED, SHARED, REPRODUCED]
    return max(order, key=lambda w: (words.count(w), -order.index(w)))


def _control_clause(word: str) -> str:
    return {
        REPRODUCED: "No control reaches it, so the effect belongs to the directions ΔC found.",
        SHARED: "A control that lacks the contrast's labels or the model's training reaches it too, so this "
        "number does not single out the directions ΔC found.",
        NOT_REPRODUCED: "It does not stand above random subspaces of the same rank.",
    }[word]


# -- from a chapter's results ----------------------------------------------------------------------------------------


def analysis_accuracy(analysis) -> tuple[float, int, int, bool]:
    """(letter accuracy on the order-ID prompts, n_pairs, number of prompts, is the organism) of a BindingAnalysis."""
    p = analysis.params
    return analysis.trained.order.accuracy["order prompts"], p.n_pairs, p.n_order_prompts, p.model == "organism"


def chapter_model_note(analysis) -> str:
    """model_note for a BindingAnalysis."""
    return model_note(analysis.lm.description, *analysis_accuracy(analysis))


def chapter_subspace_verdict(result) -> str:
    """subspace_verdict for a SubspaceResult, at its view head."""
    from qkcore.experiments.binding.analysis import CONDITIONS
    from qkcore.lm.layout import head_name

    views, table = result.view_table(), result.analysis.head_table().loc[head_name(result.view_head)]
    ranks = {c: (int(table.loc[c, "order rank"]), int(table.loc[c, "lexical rank"])) for c in CONDITIONS}
    knn = {
        w: {c: float(views.loc[c, col]) for c in CONDITIONS}
        for w, col in (("order", "order: clause from keys"), ("lexical", "lexical: object from keys"))
    }
    d_head = result.analysis.trained.order.delta.shape[-1]
    return subspace_verdict(ranks, knn["order"], knn["lexical"], d_head, *analysis_accuracy(result.analysis))


def chapter_swap_verdict(result) -> str:
    """swap_verdict for an InterventionResult, over its single-head rows."""
    t = result.table
    heads = [h for h in t.index.get_level_values(0).unique() if h != "all studied"]
    rows = {
        h: {
            c: (float(t.loc[(h, c), "flip_rate"]), float(t.loc[(h, c), "flip_lo"]), float(t.loc[(h, c), "flip_hi"]))
            for c in t.loc[h].index
        }
        for h in heads
    }
    return swap_verdict(rows, *analysis_accuracy(result.analysis))


def fraction_intervals(result, seed: int = 0) -> dict[str, Interval]:
    """Per condition of an AttributionResult: (mean explained fraction over all key positions, 95% bootstrap
    interval over prompts)."""
    import torch

    from qkcore.interventions import bootstrap_interval

    out = {}
    for cond in result.fractions.columns:
        values = torch.tensor(result.fractions[cond].to_numpy().copy())
        out[cond] = (float(values.mean()), *bootstrap_interval(values, torch.Generator().manual_seed(seed)))
    return out


def chapter_attribution_verdict(result) -> str:
    """attribution_verdict for an AttributionResult."""
    return attribution_verdict(fraction_intervals(result), *analysis_accuracy(result.analysis))


def counterfactual_markdown(prompt: str, counterfactual: str) -> str:
    """The two prompts as Markdown block quotes, the words where they differ in bold: the lexical counterfactual at
    a glance, wrapped by the page instead of clipped."""
    a, b = prompt.split(" "), counterfactual.split(" ")
    if len(a) != len(b):
        return f"> {prompt}\n\n> {counterfactual}"

    def marked(words, other):
        return " ".join(f"**{w}**" if w != o else w for w, o in zip(words, other))

    return f"> prompt: {marked(a, b)}\n>\n> counterfactual: {marked(b, a)}"
