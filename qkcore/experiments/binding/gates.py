"""Binding is judged only where it can be (issue 14): before any binding verdict, the model must pick the right box
above chance, and the head must select the answer's box. Otherwise the verdict is "not testable here" with the
evidence, through the one verdict module (qkcore.experiments.verdicts.gate).

Two gates, each an exact or bootstrap test at level ALPHA:
* **the model binds**: its letter accuracy over n prompts lies above chance 1/n_pairs (exact one-sided binomial).
* **the head is selective**: the answer's box letter is the head's most-attended box letter more often than 1/n_pairs
  (exact binomial), and the raw logit gap q·k(answer box) − mean q·k(other boxes) has a 95% interval above 0.

    ev = model_evidence(scan.correct, n_pairs)                     # {"letter accuracy": …, "p": …, "ok": …}
    hv = head_evidence(scan.top_is_answer[i], scan.gap[i], n_pairs)
    v = binding_gate("binding swaps", "Qwen", "L10H3", ev, hv)     # a NOT_TESTABLE Verdict, or None: go on
"""

from __future__ import annotations

import torch

from qkcore.experiments.verdicts import ALPHA, Estimate, Verdict, binomial_above_chance, fmt_p, gate


def model_evidence(correct: torch.Tensor, n_pairs: int) -> dict[str, object]:
    """Does the model bind? correct (n,) bool: its top letter (among the prompt's) is the answer."""
    correct = torch.as_tensor(correct).bool().flatten()
    n, k = int(correct.numel()), int(correct.sum())
    p = binomial_above_chance(k, n, 1 / n_pairs)
    return {"letter accuracy": k / n, "chance": 1 / n_pairs, "prompts": n, "binomial p": p, "ok": p < ALPHA}


def head_evidence(top_is_answer: torch.Tensor, gap: torch.Tensor, n_pairs: int) -> dict[str, object]:
    """Does the head select the answer's box? top_is_answer (n,) bool, gap (n,) raw logit gaps, per prompt."""
    top = torch.as_tensor(top_is_answer).bool().flatten()
    n, k = int(top.numel()), int(top.sum())
    p = binomial_above_chance(k, n, 1 / n_pairs)
    est = Estimate.of(torch.as_tensor(gap).double().flatten())
    return {
        "answer is top-attended letter": k / n,
        "chance": 1 / n_pairs,
        "binomial p": p,
        "logit gap": est,
        "ok": p < ALPHA and est.lo > 0,
    }


def gate_reason(model: dict[str, object], head: dict[str, object] | None) -> str:
    """Why a claim cannot be judged (empty when it can): the failed gate in words with its numbers."""
    parts = []
    if not model["ok"]:
        parts.append(
            f"the model cannot do the task: letter accuracy {model['letter accuracy']:.3f} over {model['prompts']} "
            f"prompts against chance {model['chance']:.3f} (binomial {fmt_p(model['binomial p'])})"
        )
    if head is not None and not head["ok"]:
        parts.append(
            f"the head does not select the answer's box: top-attended letter is the answer in "
            f"{head['answer is top-attended letter']:.3f} of prompts (chance {head['chance']:.3f}, binomial "
            f"{fmt_p(head['binomial p'])}), logit gap {head['logit gap']}"
        )
    return "; ".join(parts)


def binding_gate(
    claim: str, model_name: str, head_name: str | None, model: dict[str, object], head: dict[str, object] | None
) -> Verdict | None:
    """verdicts.gate on both gates: None when the claim can be judged, else NOT_TESTABLE with the evidence."""
    ok = bool(model["ok"]) and (head is None or bool(head["ok"]))
    numbers = {f"model: {k}": v for k, v in model.items() if k != "ok"}
    if head is not None:
        numbers.update({f"head: {k}": v for k, v in head.items() if k != "ok"})
    return gate(claim, model_name, head_name, ok, "not testable here: " + gate_reason(model, head), numbers)
