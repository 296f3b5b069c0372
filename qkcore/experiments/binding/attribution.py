"""Where an attention score comes from (paper Figure 10): split a head's query into an order-ID part, a lexical-ID
part and the rest, and each key's raw logit k·q into the three matching contributions, which add up to it exactly.

With U_o, U_l the orthonormal query bases of the two contrasts (order first):
    q_ord = P_{U_o} q,   q_lex = P_{U_l}(q − q_ord),   q_res = q − q_ord − q_lex,   k·q = k·q_ord + k·q_lex + k·q_res.
Summary per prompt: the explained fraction 1 − ‖res‖²/‖total‖² over the prompt's key positions (the authors' measure).

    P = AttributionParams()                   # 4 pairs; the top head of the scan
    result = run_attribution(P)               # result.example (one prompt's parts), result.fractions (per prompt)
    parts = split_logits(q, K, U_o, U_l)      # q (n, d), K (n, S, d) → LogitParts with (n, S) tensors
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from qkcore.experiments.binding.analysis import (
    BindingAnalysis,
    BindingParams,
    analyse_binding,
    control_decompositions,
    shuffled_draws,
)
from qkcore.experiments.binding.gates import binding_gate
from qkcore.experiments.binding.prompts import encode_binding_prompts
from qkcore.experiments.models import LoadedLM
from qkcore.experiments.tables import r3
from qkcore.experiments.verdicts import Verdict, effect_vs_controls
from qkcore.lm import iter_batches
from qkcore.lm.chat import model_text
from qkcore.lm.gather import gather_qk
from qkcore.lm.layout import head_name
from qkcore.organisms.binding_task import INSTRUCTION, BindingPrompt, sample_prompt
from qkcore.params import require
from qkcore.progress import gathers
from qkcore.subspace import project, random_orthonormal

PARTS = ("order", "lexical", "residual")


@dataclass(frozen=True)
class LogitParts:
    """total (…, S) = order + lexical + residual: raw logits q·k_s and their three contributions (float64)."""

    total: torch.Tensor
    order: torch.Tensor
    lexical: torch.Tensor
    residual: torch.Tensor


def split_query(q: torch.Tensor, U_order: torch.Tensor, U_lex: torch.Tensor):
    """(q_ord, q_lex, q_res) for q (…, d) and orthonormal bases (d, r_o), (d, r_l), in float64; order first."""
    for name, U in (("U_order", U_order), ("U_lex", U_lex)):
        if U.dim() != 2 or U.shape[0] != q.shape[-1]:
            raise ValueError(f"{name} must be (d={q.shape[-1]}, r), got {tuple(U.shape)}")
        gram = U.double().T @ U.double()
        if not torch.allclose(gram, torch.eye(U.shape[1], dtype=torch.float64), atol=1e-6):
            raise ValueError(f"{name} must have orthonormal columns (use decompose(...).query_basis)")
    q = q.double()
    q_ord = project(q, U_order.double())
    q_lex = project(q - q_ord, U_lex.double())
    return q_ord, q_lex, q - q_ord - q_lex


def split_logits(q: torch.Tensor, K: torch.Tensor, U_order: torch.Tensor, U_lex: torch.Tensor) -> LogitParts:
    """q (…, d), K (…, S, d) → the raw logits K q (…, S) and their order / lexical / residual parts."""
    q_ord, q_lex, q_res = split_query(q, U_order, U_lex)
    K = K.double()

    def dot(x):
        return (K @ x[..., :, None])[..., 0]  # (…, S)

    return LogitParts(dot(q.double()), dot(q_ord), dot(q_lex), dot(q_res))


def split_keys(q: torch.Tensor, K: torch.Tensor, V_order: torch.Tensor, V_lex: torch.Tensor) -> LogitParts:
    """The key-side split: each key (…, S, d) into its order-ID part P_{V_o} k, its lexical part beyond order
    P_{V_l}(k − k_ord) and the rest, with orthonormal key bases (d, r_o), (d, r_l); the raw logits q·k (…, S) and
    the three contributions q·k_ord, q·k_lex, q·k_rest (order / lexical / residual fields), which add up exactly."""
    k_ord, k_lex, k_res = split_query(K, V_order, V_lex)
    q = q.double()[..., None, :]  # (…, 1, d)
    return LogitParts((K.double() * q).sum(-1), (k_ord * q).sum(-1), (k_lex * q).sum(-1), (k_res * q).sum(-1))


def mean_query_basis(q: torch.Tensor) -> torch.Tensor:
    """(d, 1) the direction of the mean query: the label-free baseline of the explained fraction (when the queries
    barely vary, this one direction explains nearly every logit whatever the contrasts found)."""
    m = q.double().mean(0)
    return (m / m.norm().clamp_min(1e-300))[:, None]


def explained_fraction(parts: LogitParts, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 − ‖residual‖²/‖total‖² over the key positions where mask (…, S) is True (all when None): (…,)."""
    m = torch.ones_like(parts.total, dtype=torch.bool) if mask is None else mask
    res = (parts.residual.pow(2) * m).sum(-1)
    tot = (parts.total.pow(2) * m).sum(-1).clamp_min(1e-300)
    return 1 - res / tot


@dataclass(frozen=True)
class AttributionParams(BindingParams):
    """BindingParams with the paper's 4 pairs and one head (the top of the scan unless `heads` is given; the first
    of `heads` is plotted); n_attr_prompts fresh prompts for the explained fraction; n_random random subspace pairs;
    example: which fresh prompt is drawn as bars."""

    n_pairs: int = 4
    n_heads: int = 1
    n_attr_prompts: int = 500
    n_random: int = 5
    example: int = 0
    QUICK: ClassVar[dict] = {"n_order_prompts": 200, "n_lexical_prompts": 200, "n_attr_prompts": 200}

    def __post_init__(self):
        super().__post_init__()
        require(self.n_attr_prompts >= 2, f"n_attr_prompts must be ≥ 2, got {self.n_attr_prompts}")
        require(self.n_random >= 1, f"n_random must be ≥ 1, got {self.n_random}")
        require(
            0 <= self.example < self.n_attr_prompts,
            f"example must index one of the n_attr_prompts={self.n_attr_prompts} prompts, got {self.example}",
        )


@dataclass(frozen=True)
class Captured:
    """q (n, d) at the last token and K (n, S, d) at every position of the padded batch (float64), valid (n, S)
    True on the prompt's tokens, keys (n, n_pairs) the columns of the boxes' keys and answer (n,) clause indices."""

    q: torch.Tensor
    K: torch.Tensor
    valid: torch.Tensor
    keys: torch.Tensor
    answer: torch.Tensor


@torch.no_grad()
def capture_head(
    model,
    tokenizer,
    chat: bool,
    prompts: list[BindingPrompt],
    head,
    batch_size: int,
    key_offset: int = 0,
    answer_prefix: str = "",
) -> Captured:
    """The query and all keys of one head, prompts padded to a common length (left padding)."""
    enc = encode_binding_prompts(
        tokenizer, prompts, chat, key_offset, answer_prefix
    )  # one batch layout for all prompts
    qs, ks = [], []
    for idx in gathers(list(iter_batches(len(prompts), batch_size)), "attribution: gather q,k"):
        sub = encode_binding_prompts(tokenizer, [prompts[i] for i in idx], chat, key_offset, answer_prefix)
        # every key; logits=False: the pass stops after the head's layer (no vocabulary logits at every position,
        # 0.6 GB for Qwen's 151,936 tokens per batch), the same vectors bit for bit, and the result can be cached
        got = gather_qk(model, sub.batch, [head], sub.last, key_cols=None, dtype=torch.float64, logits=False)
        pad = enc.batch.input_ids.shape[1] - sub.batch.input_ids.shape[1]  # extra left padding of the full batch
        qs.append(got.q[0])  # (b, d)
        ks.append(torch.nn.functional.pad(got.k[0], (0, 0, pad, 0)))  # (b, seq, d)
    return Captured(torch.cat(qs), torch.cat(ks), enc.batch.attention_mask.bool(), enc.keys, enc.answer)


def selectivity(parts: LogitParts, cap: Captured) -> dict[str, float]:
    """Mean over prompts of (contribution at the answer box's key − mean contribution at the other boxes' keys), per
    part and for the total: which part makes the head prefer the answer's box."""
    rows = torch.arange(cap.q.shape[0])
    out = {}
    for name in ("total", *PARTS):
        at = getattr(parts, name).gather(1, cap.keys)  # (n, P)
        ans = at[rows, cap.answer]
        out[name] = (ans - (at.sum(-1) - ans) / (at.shape[1] - 1)).mean().item()
    return out


def shown_positions(tokenizer, prompt: BindingPrompt, chat: bool) -> tuple[list[int], list[str]]:
    """Prompt positions and token strings of the context and the question (not the instruction, template or BOS),
    as the authors' figure shows them."""
    text, shift = model_text(tokenizer, prompt.text, chat)
    enc = tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
    cut, resume = prompt.text.index(INSTRUCTION), prompt.text.index("Which")
    keep = [(shift, shift + cut), (shift + resume, shift + len(prompt.text))]
    pos = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > s and any(s < b and e > a for a, b in keep)]
    return pos, [text[slice(*enc["offset_mapping"][i])].strip() for i in pos]


@dataclass
class AttributionResult:
    """analysis; head; ranks (order, lexical); example: the plotted prompt's parts at its shown tokens; fractions:
    explained fraction per prompt and condition (DataFrame); fractions_keys: the same over the boxes' keys only;
    selectivity: answer-vs-other-letter contribution per part and condition; "mean query direction" is the label-free
    baseline (the mean query's direction alone as the order part, nothing as lexical). key_fractions /
    key_selectivity: the same from the key-side split (order keys, lexical beyond order, rest) per condition."""

    analysis: BindingAnalysis
    head: tuple[int, int]
    ranks: tuple[int, int]
    example_prompt: BindingPrompt
    example_tokens: list[str]
    example: LogitParts
    fractions: pd.DataFrame
    fractions_keys: pd.DataFrame
    selectivity: pd.DataFrame
    key_fractions: pd.DataFrame
    key_selectivity: pd.DataFrame

    def explained_table(self) -> pd.DataFrame:
        """Mean, spread and quartiles of the explained fraction per condition (all key positions)."""
        return self.fractions.describe(percentiles=[0.25, 0.5, 0.75]).T[["mean", "std", "25%", "50%", "75%"]]


def run_attribution(
    params: AttributionParams, lm: LoadedLM | None = None, analysis: BindingAnalysis | None = None
) -> AttributionResult:
    """The Figure 10 chapter at the first studied head, with controls: random query subspaces of the same ranks,
    shuffled-label subspaces (n_shuffled null draws, averaged per prompt) and the random-init model (both at the
    trained ranks)."""
    analysis = analysis if analysis is not None else analyse_binding(params, lm)
    head = analysis.heads[0]
    g = torch.Generator().manual_seed(params.seed + 5)
    prompts = [sample_prompt(params.n_pairs, g) for _ in range(params.n_attr_prompts)]
    tok, chat, bs = analysis.lm.tokenizer, analysis.lm.chat, params.batch_size
    ko = params.key_offset
    # the control first: after analyse_binding it is the resident one of the two (qkcore.lm.residency), so it is
    # never drawn a second time
    rand = capture_head(analysis.random_model, tok, chat, prompts, head, bs, ko, params.answer_prefix)
    caps = {"trained": capture_head(analysis.lm.model, tok, chat, prompts, head, bs, ko, params.answer_prefix)}
    caps["random init"] = rand
    decs = {w: control_decompositions(analysis, head, w) for w in ("order", "lexical")}
    bases = {
        cond: (decs["order"][cond].query_basis, decs["lexical"][cond].query_basis)
        for cond in ("trained", "random init")
    }
    shuffled = list(zip(shuffled_draws(analysis, head, "order"), shuffled_draws(analysis, head, "lexical")))
    r_o, r_l = bases["trained"][0].shape[1], bases["trained"][1].shape[1]
    d = caps["trained"].q.shape[-1]
    fr, fr_keys, sel = {}, {}, {}
    key_mask = torch.zeros_like(caps["trained"].valid)
    key_mask.scatter_(1, caps["trained"].keys, True)

    def record(name, cap, U_o, U_l):
        parts = split_logits(cap.q, cap.K, U_o, U_l)
        fr[name] = explained_fraction(parts, cap.valid).numpy()
        fr_keys[name] = explained_fraction(parts, key_mask).numpy()
        sel[name] = selectivity(parts, cap)
        return parts

    parts = record("trained", caps["trained"], *bases["trained"])
    null_parts = [split_logits(caps["trained"].q, caps["trained"].K, o.query_basis, l.query_basis) for o, l in shuffled]
    fr["shuffled labels"] = _mean([explained_fraction(p, caps["trained"].valid) for p in null_parts]).numpy()
    fr_keys["shuffled labels"] = _mean([explained_fraction(p, key_mask) for p in null_parts]).numpy()
    sel["shuffled labels"] = _mean_dicts([selectivity(p, caps["trained"]) for p in null_parts])
    record("random init", caps["random init"], *bases["random init"])
    draws = [
        (
            random_orthonormal(d, r_o, g) if r_o else torch.zeros(d, 0, dtype=torch.float64),
            random_orthonormal(d, r_l, g) if r_l else torch.zeros(d, 0, dtype=torch.float64),
        )
        for _ in range(params.n_random)
    ]
    draw_parts = [split_logits(caps["trained"].q, caps["trained"].K, *b) for b in draws]
    fr["random subspaces"] = torch.stack([explained_fraction(p, caps["trained"].valid) for p in draw_parts]).mean(0)
    fr_keys["random subspaces"] = torch.stack([explained_fraction(p, key_mask) for p in draw_parts]).mean(0)
    fr["random subspaces"], fr_keys["random subspaces"] = (
        fr["random subspaces"].numpy(),
        fr_keys["random subspaces"].numpy(),
    )
    mean_dir = mean_query_basis(caps["trained"].q)
    record("mean query direction", caps["trained"], mean_dir, torch.zeros(d, 0, dtype=torch.float64))
    kfr, ksel = {}, {}
    kbases = {
        "trained": [(decs["order"]["trained"].key_basis, decs["lexical"]["trained"].key_basis)],
        "shuffled labels": [(o.key_basis, l.key_basis) for o, l in shuffled],
        "random init": [(decs["order"]["random init"].key_basis, decs["lexical"]["random init"].key_basis)],
    }
    for cond, cap in (
        ("trained", caps["trained"]),
        ("shuffled labels", caps["trained"]),
        ("random init", caps["random init"]),
    ):
        kps = [split_keys(cap.q, cap.K, V_o, V_l) for V_o, V_l in kbases[cond]]  # one per null draw (shuffled)
        kfr[cond] = _mean([explained_fraction(kp, cap.valid) for kp in kps]).numpy()
        ksel[cond] = _mean_dicts([selectivity(kp, cap) for kp in kps])
    draw_sel = [selectivity(p, caps["trained"]) for p in draw_parts]
    sel["random subspaces"] = {k: sum(s[k] for s in draw_sel) / len(draw_sel) for k in draw_sel[0]}
    ex = params.example
    pos, tokens = shown_positions(tok, prompts[ex], chat)
    cols = [int(caps["trained"].valid.shape[1] - caps["trained"].valid[ex].sum()) + p for p in pos]  # left padding
    example = LogitParts(*(getattr(parts, f)[ex, cols] for f in ("total", *PARTS)))
    return AttributionResult(
        analysis,
        head,
        (r_o, r_l),
        prompts[ex],
        tokens,
        example,
        pd.DataFrame(fr),
        pd.DataFrame(fr_keys),
        pd.DataFrame(sel).T,
        pd.DataFrame(kfr),
        pd.DataFrame(ksel).T,
    )


def _mean(xs: list[torch.Tensor]) -> torch.Tensor:
    """Per-prompt values averaged over draws: (n,) each → (n,)."""
    return torch.stack(xs).mean(0)


def _mean_dicts(ds: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(d[k] for d in ds) / len(ds) for k in ds[0]}


def attribution_verdicts(result: AttributionResult) -> list[Verdict]:
    """The Figure 10 claim at the head: gated on the model binding and the head selecting the answer's box; else the
    per-prompt explained fraction of the order and lexical query subspaces against the label-free mean-query
    direction, random subspaces of the same ranks, the shuffled-label subspaces and the random-init copy, by paired
    bootstrap on the same prompts (verdicts.effect_vs_controls)."""
    from qkcore.experiments.binding.interventions import chapter_gates, model_label

    a = result.analysis
    gates = chapter_gates(a)
    name = head_name(result.head)
    claim, split = "attribution: explained fraction", "attribution: key-side split"
    gated = [binding_gate(c, model_label(a), name, gates["model"], gates[name]) for c in (claim, split)]
    if gated[0] is not None:
        return gated
    f = {c: torch.tensor(result.fractions[c].to_numpy().copy()) for c in result.fractions.columns}
    controls = {c: f[c] for c in ("mean query direction", "random subspaces", "shuffled labels", "random init")}
    k = {c: torch.tensor(result.key_fractions[c].to_numpy().copy()) for c in result.key_fractions.columns}
    return [
        effect_vs_controls(claim, model_label(a), name, f["trained"], controls),
        effect_vs_controls(
            split, model_label(a), name, k["trained"], {c: k[c] for c in ("shuffled labels", "random init")}
        ),
    ]


def summary(result: AttributionResult) -> dict[str, object]:
    """The chapter's closing numbers: the ranks, the explained fraction per condition (mean ± sd, median), and the
    answer-vs-other-letter logit difference split into its order, lexical and residual parts."""
    s = result.explained_table()
    a = result.analysis
    out: dict[str, object] = {
        "model": a.lm.description.split(" (")[0],
        "letter accuracy": r3(a.trained.order.accuracy["order prompts"]),
        "chance": r3(1 / a.params.n_pairs),
        "head": head_name(result.head),
        "query ranks (order, lexical)": tuple(int(r) for r in result.ranks),
    }
    for cond in s.index:
        out[f"explained fraction, {cond}"] = (
            f"{r3(s.loc[cond, 'mean']):.3f} ± {r3(s.loc[cond, 'std']):.3f} (median {r3(s.loc[cond, '50%']):.3f})"
        )
    sel = result.selectivity.loc["trained"]
    for part in ("total", "order", "lexical", "residual"):
        out[f"answer-vs-other-letter logit difference, {part}"] = r3(sel[part])
    ksel = result.key_selectivity.loc["trained"]
    for part, label in (("order", "order keys"), ("lexical", "lexical keys beyond order"), ("residual", "rest")):
        out[f"answer-vs-other-letter logit difference, key side: {label}"] = r3(ksel[part])
    out["verdicts"] = [f"{v.head}, {v.claim}: {v.verdict}" for v in attribution_verdicts(result)]
    return out
