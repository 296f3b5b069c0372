"""Binding subspaces (paper Figure 8): the order-ID and lexical-ID contrasts at every head of a model and of its
randomly initialised copy, the heads chosen from the scan, and each studied head's ranks, spectra and logit gaps
beside the controls (shuffled labels; random weights), with ≥ 50 random and ≥ 50 balanced null label draws per
contrast at the studied heads (qkcore.experiments.binding.nulls). The base of the interventions and attribution
chapters.

    P = BindingParams()                       # model="organism"; 9 pairs; heads=None → the top n_heads of the scan
    analysis = analyse_binding(P)             # loads the model, streams both contrasts on it and on a random copy
    analysis.head_table()                     # one row per studied head and condition (pandas DataFrame)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pandas as pd
import torch

from qkcore.experiments.binding.contrasts import Contrast, ScanStats, lexical_contrast, order_contrast
from qkcore.experiments.binding.nulls import MIN_NULL_DRAWS, lexical_nulls, order_nulls
from qkcore.experiments.models import LMChapterParams, LoadedLM, load_chapter_model
from qkcore.lm import attention_layout
from qkcore.lm.layout import head_name
from qkcore.lm.residency import random_init_control
from qkcore.organisms.binding_task import EXTRA_OBJECTS, PAPER_OBJECTS, BindingPrompt, lexical_pairs, order_id_prompts
from qkcore.params import require
from qkcore.subspace import Decomposition, decompose, principal_angles

PAPER_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
PAPER_HEADS = {"views": ((16, 21),), "swaps": ((16, 1), (16, 19), (17, 24)), "attribution": ((16, 1),)}
ORGANISM = "binding"  # the organism a chapter runs on with model="organism" (qkcore/organisms/weights/binding)
CONTROL_SEED_OFFSET = 1_000_003  # the random-init control's seed is seed + this: apart from small model seeds
CONDITIONS = ("trained", "shuffled labels", "random init")


@dataclass(frozen=True)
class BindingParams(LMChapterParams):
    """What every binding chapter takes: LMChapterParams (model="organism": the binding organism; real models read
    the prompt inside their chat template, the organism reads it plain), plus: heads=None → the top n_heads of the
    scan, ranked by
    scan_by: "attention" (last-token attention on the answer box's key minus that on another box's key) or
    "logit_gap" (trace of the order-ID ΔC). key_offset: keys are read this many tokens after each box letter (0 = the
    letter, as in the paper; −4…+1 reach the clause's object … the "," after the letter). Prompt counts: the paper
    uses 3,000 per contrast. n_null_draws: null label draws per family ("random labels", "balanced labels") at each
    studied head, for the permutation p-values (≥ 50: at best p = 1/51); n_shuffled: how many of the balanced draws
    the shuffled-label control of the views, swaps and attribution averages over per prompt (as the random subspaces
    average their n_random draws). preset="quick": each chapter's QUICK values replace the fields left at their
    defaults (qkcore.params.with_preset), so that a class runs the chapter in under a minute."""

    n_heads: int = 3
    scan_by: Literal["attention", "logit_gap"] = "attention"
    key_offset: int = 0
    answer_prefix: str = ""
    n_pairs: int = 9
    query_object: str = "tea"
    n_order_prompts: int = 1000
    n_lexical_prompts: int = 1000
    n_null_draws: int = 50
    n_shuffled: int = 10
    preset: Literal["full", "quick"] = "full"

    def __post_init__(self):
        super().__post_init__()
        require(
            2 <= self.n_pairs <= len(PAPER_OBJECTS),
            f"n_pairs must be in [2, {len(PAPER_OBJECTS)}] (the paper's objects), got {self.n_pairs}",
        )
        require(
            self.query_object in PAPER_OBJECTS,
            f"query_object must be one of the paper's objects {PAPER_OBJECTS}, got {self.query_object!r}",
        )
        for name in ("n_order_prompts", "n_lexical_prompts"):
            require(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")
        require(
            isinstance(self.n_null_draws, int) and self.n_null_draws >= MIN_NULL_DRAWS,
            f"n_null_draws must be an int ≥ {MIN_NULL_DRAWS} (null label draws per family: a permutation p-value "
            f"from N draws is at least 1/(N + 1)), got {self.n_null_draws!r}",
        )
        require(
            isinstance(self.n_shuffled, int) and 1 <= self.n_shuffled <= self.n_null_draws,
            f"n_shuffled must be an int in [1, n_null_draws={self.n_null_draws}], got {self.n_shuffled!r}",
        )
        require(
            -4 <= self.key_offset <= 1,
            "key_offset must be in [-4, 1] (from the clause's object to the token "
            f"after the box letter), got {self.key_offset}",
        )


def load_binding_lm(params: BindingParams) -> LoadedLM:
    """The model of `params.model` ("organism": the binding organism); an answer_prefix needs a chat model."""
    lm = load_chapter_model(params.model, ORGANISM, params.dtype, params.device)
    require(
        lm.chat or not params.answer_prefix,
        f"answer_prefix={params.answer_prefix!r} begins the assistant's answer, but {params.model!r} reads plain "
        'prompts (no chat template): leave answer_prefix = ""',
    )
    return lm


def contrast_prompts(params: BindingParams) -> tuple[list[BindingPrompt], list[tuple[BindingPrompt, BindingPrompt]]]:
    """The order-ID prompts and the lexical (prompt, counterfactual) pairs, from `seed`."""
    g = torch.Generator().manual_seed(params.seed)
    order = order_id_prompts(params.n_order_prompts, params.n_pairs, g, query_object=params.query_object)
    lexical = lexical_pairs(params.n_lexical_prompts, params.n_pairs, g, PAPER_OBJECTS, EXTRA_OBJECTS)
    return order, lexical


@dataclass(frozen=True)
class ModelContrasts:
    """Both contrasts at every head of one model, the attention scan (from the order prompts), and the per-prompt
    vectors kept for the null draws: which → head → OrderVectors / LexicalVectors ({} when none were kept)."""

    order: Contrast
    lexical: Contrast
    scan: ScanStats
    vectors: dict

    def get(self, which: str) -> Contrast:
        require(which in ("order", "lexical"), f'which must be "order" or "lexical", got {which!r}')
        return self.order if which == "order" else self.lexical


def stream_contrasts(model, tokenizer, chat: bool, params: BindingParams, order, lexical, keep=None) -> ModelContrasts:
    """Both contrasts at every head; the per-prompt vectors of the heads in `keep` (None, "all" or a list) kept."""
    kw = dict(
        chat=chat,
        heads="all",
        batch_size=params.batch_size,
        weighting=params.weighting,
        key_offset=params.key_offset,
        answer_prefix=params.answer_prefix,
        keep=keep,
    )
    o, scan, ov = order_contrast(model, tokenizer, order, **kw)
    lex, lv = lexical_contrast(model, tokenizer, lexical, **kw)
    return ModelContrasts(o, lex, scan, {"order": ov, "lexical": lv} if keep is not None else {})


def null_draws(contrasts: ModelContrasts, heads, params: BindingParams) -> dict:
    """head → {"order": NullDraws, "lexical": NullDraws} from the kept vectors. Each contrast's label draws come from
    their own generator (seed + 1, + 2), the same draws at every head: they relabel prompts, not heads."""
    out = {}
    for head in heads:
        go = torch.Generator().manual_seed(params.seed + 1)
        gl = torch.Generator().manual_seed(params.seed + 2)
        out[head] = {
            "order": order_nulls(
                contrasts.vectors["order"][head], params.weighting, params.n_null_draws, go, params.n_shuffled
            ),
            "lexical": lexical_nulls(contrasts.vectors["lexical"][head], params.n_null_draws, gl, params.n_shuffled),
        }
    return out


def scan_score(contrasts: ModelContrasts, scan_by: str) -> torch.Tensor:
    """Per head (H,): attention on the answer box's key minus attention on another box's key ("attention"), or the
    order-ID logit gap E[q·k|answer box] − E[q·k|other box] ("logit_gap")."""
    require(scan_by in ("attention", "logit_gap"), f'scan_by must be "attention" or "logit_gap", got {scan_by!r}')
    if scan_by == "attention":
        return contrasts.scan.attn_answer - contrasts.scan.attn_other
    return contrasts.order.logit_gap()


def scan_heads(contrasts: ModelContrasts, n: int, scan_by: str = "attention") -> tuple[tuple[int, int], ...]:
    """The n heads with the largest scan score."""
    top = torch.argsort(scan_score(contrasts, scan_by), descending=True, stable=True)[:n]
    return tuple(contrasts.order.heads[int(i)] for i in top)


@dataclass
class BindingAnalysis:
    """Both contrasts on the trained model and on its randomly initialised copy (same prompts). heads: the studied
    heads (from the scan unless given); nulls: head → which → NullDraws (the trained model's null label draws)."""

    params: BindingParams
    lm: LoadedLM
    trained: ModelContrasts
    random: ModelContrasts
    random_model: torch.nn.Module
    heads: tuple[tuple[int, int], ...]
    heads_from_scan: bool
    nulls: dict

    def decomposition(self, head, which: str, condition: str = "trained") -> Decomposition:
        """ΔC's SVD and rank at `head` for which = "order" | "lexical" under a condition of CONDITIONS
        ("shuffled labels": the first balanced null draw; `shuffled_decompositions` gives all n_shuffled)."""
        require(condition in CONDITIONS, f"condition must be one of {CONDITIONS}, got {condition!r}")
        if condition == "shuffled labels":
            return self.shuffled_decompositions(head, which)[0]
        source = self.random if condition == "random init" else self.trained
        return source.get(which).decompose(head, self.params.energy)

    def shuffled_decompositions(self, head, which: str) -> list[Decomposition]:
        """The n_shuffled balanced null draws' decompositions at a studied head (each at its own rank)."""
        require(which in ("order", "lexical"), f'which must be "order" or "lexical", got {which!r}')
        head = tuple(head)
        require(head in self.nulls, f"null draws exist at the studied heads {list(self.nulls)} only, not {head}")
        return [decompose(d, self.params.energy) for d in self.nulls[head][which].control_deltas]

    def grid(self, values: torch.Tensor) -> torch.Tensor:
        """Per-head values (H,) in the scan's order → (n_layers, n_heads)."""
        layout = attention_layout(self.lm.model)
        return values.reshape(layout.n_layers, layout.n_heads)

    def head_table(self) -> pd.DataFrame:
        """Per studied head and condition: ranks, logit gaps, query concentration and mean share of both
        contrasts, and the smallest principal angle between the order and lexical key subspaces. The shuffled-label
        row is one null draw (the first balanced one); the permutation tests use all of them (`null_table`)."""
        rows = []
        for head in self.heads:
            for cond in CONDITIONS:
                src = self.random if cond == "random init" else self.trained
                null = cond == "shuffled labels"
                row = {"head": head_name(head), "condition": cond}
                bases = {}
                for which in ("order", "lexical"):
                    c = src.get(which)
                    i = c.index(head)
                    dec = self.decomposition(head, which, cond)
                    bases[which] = dec.key_basis
                    row[f"{which} rank"] = dec.rank
                    row[f"{which} gap"] = (
                        float(torch.diagonal(self.nulls[head][which].control_deltas[0]).sum())
                        if null
                        else float(c.logit_gap()[i])
                    )
                    if not null:
                        row[f"{which} |q̄|²/E|q|²"] = float(c.query_concentration[i])
                        row[f"{which} mean share"] = float(c.mean_share[i])
                angles = (
                    principal_angles(bases["order"], bases["lexical"])
                    if min(b.shape[1] for b in bases.values()) > 0
                    else torch.tensor([float("nan")])
                )
                row["min angle order/lexical keys (°)"] = float(angles.min())
                rows.append(row)
        return pd.DataFrame(rows).set_index(["head", "condition"])

    def null_table(self) -> pd.DataFrame:
        """Per studied head and contrast: the true labels' σ₁(ΔC) and, per null family, its draws' mean, 95th
        percentile and the permutation p-value."""
        rows = [
            {"head": head_name(h), "contrast": w, **self.nulls[h][w].table_row()}
            for h in self.heads
            for w in ("order", "lexical")
        ]
        return pd.DataFrame(rows).set_index(["head", "contrast"])

    def scan_table(self, n: int = 6) -> pd.DataFrame:
        """The top n heads of the scan: score, logit gap, attention on the answer box's key and on another box's
        key, and the attention on each token of the answer's clause, by offset from its letter (where does the head
        read the box from? the column names are the organism's one-word tokens)."""
        from qkcore.experiments.binding.contrasts import CLAUSE_OFFSETS

        src = self.trained
        score = scan_score(src, self.params.scan_by)
        names = {-4: "object", -3: "is", -2: "in", -1: "Box", 0: "letter", 1: "after letter"}  # one token each
        rows = []
        for i in torch.argsort(score, descending=True, stable=True)[:n].tolist():
            row = {
                "head": head_name(src.order.heads[i]),
                "score": float(score[i]),
                "order gap": float(src.order.logit_gap()[i]),
                "attn answer key": float(src.scan.attn_answer[i]),
                "attn other key": float(src.scan.attn_other[i]),
            }
            row.update({f"attn {names[o]}": float(src.scan.clause_attn[i, j]) for j, o in enumerate(CLAUSE_OFFSETS)})
            rows.append(row)
        return pd.DataFrame(rows).set_index("head")

    def accuracy_table(self) -> pd.DataFrame:
        """How often each model's top letter (among the prompt's letters) is the answer."""
        rows = {
            name: {**src.order.accuracy, **{f"lexical {k}": v for k, v in src.lexical.accuracy.items()}}
            for name, src in (("trained", self.trained), ("random init", self.random))
        }
        return pd.DataFrame(rows).T


def analyse_binding(params: BindingParams, lm: LoadedLM | None = None) -> BindingAnalysis:
    """Load the model (unless given), stream both contrasts on it and on a random-init copy, pick the heads."""
    lm = lm if lm is not None else load_binding_lm(params)
    layout = attention_layout(lm.model)
    given = layout.check_heads(params.heads) if params.heads is not None else None  # before any forward pass
    order, lexical = contrast_prompts(params)
    keep = "all" if given is None else given  # the scan picks the heads afterwards: keep every head's vectors
    trained = stream_contrasts(lm.model, lm.tokenizer, lm.chat, params, order, lexical, keep=keep)
    rnd_model = random_init_control(lm.model, seed=params.seed + CONTROL_SEED_OFFSET)  # see qkcore.lm.residency
    rnd = stream_contrasts(rnd_model, lm.tokenizer, lm.chat, params, order, lexical)
    if params.heads is None:
        heads, from_scan = scan_heads(trained, params.n_heads, params.scan_by), True
    else:
        heads, from_scan = given, False
    nulls = null_draws(trained, heads, params)
    trained = ModelContrasts(trained.order, trained.lexical, trained.scan, {})  # the other heads' vectors: freed
    return BindingAnalysis(params, lm, trained, rnd, rnd_model, heads, from_scan, nulls)


def same_rank(dec: Decomposition, rank: int) -> Decomposition:
    """The decomposition truncated (or extended) to `rank` directions: controls are compared at the trained rank."""
    return Decomposition(dec.U, dec.S, dec.V, min(rank, dec.U.shape[1]), dec.energy)


def shuffled_draws(analysis: BindingAnalysis, head, which: str) -> list[Decomposition]:
    """The shuffled-label control's n_shuffled null draws, each at the trained rank."""
    rank = analysis.decomposition(head, which).rank
    return [same_rank(d, rank) for d in analysis.shuffled_decompositions(head, which)]


def control_decompositions(analysis: BindingAnalysis, head, which: str) -> dict[str, Decomposition]:
    """The trained decomposition and, at the trained rank, the shuffled-label (its first draw; `shuffled_draws`
    gives all) and random-init ones."""
    real = analysis.decomposition(head, which)
    return {
        "trained": real,
        "shuffled labels": same_rank(analysis.decomposition(head, which, "shuffled labels"), real.rank),
        "random init": same_rank(analysis.decomposition(head, which, "random init"), real.rank),
    }
