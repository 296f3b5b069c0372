"""What the binding pages say about their own run, glued into their markdown: the model paragraph (does the model do
the task? the gate's numbers), the verdict table (from qkcore.experiments.verdicts, whose rules these pages never
restate), and the counterfactual pair as quoted text. No verdict word or rule lives here.

    note = chapter_model_note(analysis)            # which model, its letter accuracy against chance (binomial test)
    md = verdict_markdown(result.verdicts)         # one row per head and claim: verdict, rule, deciding numbers
"""

from __future__ import annotations

from collections.abc import Sequence

from qkcore.experiments.binding.gates import fmt_p, model_evidence
from qkcore.experiments.verdicts import ALPHA, Verdict


def accuracy_sentence(evidence: dict, organism: bool) -> str:
    """One sentence on whether the model does the task, from gates.model_evidence."""
    e = evidence
    head = (
        f"it picks the right box in {e['letter accuracy']:.2f} of {e['prompts']} prompts, where chance is "
        f"{e['chance']:.2f} (exact binomial {fmt_p(e['binomial p'])})"
    )
    if not e["ok"]:
        return (
            f"The model cannot do this task: {head}, not above chance at level {ALPHA}. Whatever its heads do is "
            "tied to no answer it gets right, so every binding verdict on this page is **not testable here**; the "
            "page shows what the method and its controls report on a network that does not bind."
        )
    if organism:
        return (
            f"The organism does the task ({head}), but it was nudged there: for the first half of its training, "
            "auxiliary losses pointed its layer-1 heads at the box letters as a group."
        )
    return f"The model does the task above chance: {head}."


def chapter_model_note(analysis) -> str:
    """The page's model paragraph for a BindingAnalysis (letter accuracy over its order-ID prompts)."""
    ev = model_evidence(analysis.trained.scan.correct, analysis.params.n_pairs)
    organism = analysis.params.model == "organism"
    return f"These figures come from **{analysis.lm.description}**. " + accuracy_sentence(ev, organism)


def _numbers(v: Verdict, keep: int = 4) -> str:
    items = [f"{k} {x}" if not isinstance(x, float) else f"{k} {x:.3g}" for k, x in list(v.numbers.items())[:keep]]
    return "; ".join(items)


def verdict_markdown(verdicts: Sequence[Verdict]) -> str:
    """A Markdown table, one row per verdict: head, claim, the verdict in bold, its deciding numbers; the rules
    (each stated once) under it."""
    rows = ["| head | claim | verdict | deciding numbers |", "|---|---|---|---|"]
    rules: list[str] = []
    for v in verdicts:
        rows.append(f"| {v.head or '–'} | {v.claim} | **{v.verdict}** | {_numbers(v)} |")
        if v.rule not in rules:
            rules.append(v.rule)
    return "\n".join(rows) + "\n\n" + "\n".join(f"* Rule: {r}." for r in rules)


def counterfactual_markdown(prompt: str, counterfactual: str) -> str:
    """The two prompts as Markdown block quotes, the words where they differ in bold: the lexical counterfactual at
    a glance, wrapped by the page instead of clipped."""
    a, b = prompt.split(" "), counterfactual.split(" ")
    if len(a) != len(b):
        return f"> {prompt}\n\n> {counterfactual}"

    def marked(words, other):
        return " ".join(f"**{w}**" if w != o else w for w, o in zip(words, other))

    return f"> prompt: {marked(a, b)}\n>\n> counterfactual: {marked(b, a)}"
