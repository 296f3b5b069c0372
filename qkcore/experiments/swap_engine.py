"""The book's one swap engine (paper Figures 7 and 9): at one head, exchange the key coordinates of two candidate
tokens (orig, target) inside a key subspace and read where the query's attention goes, with every metric the
authors report and the book's stronger ones. It knows columns, heads and bases, never a task's prompts: the filter
and binding chapters encode their prompts as `EncodedTask`s and choose orig and target; the engine does the rest.

    tasks = [encode(...) for batch in ...]                          # EncodedTask per batch
    sets = gather_swap_sets(model, tasks, heads, orig, target)      # one forward pass per batch, all heads
    result = swap_conditions(sets[head], {"category": V, "random": V.shape[1]}, generator, n_random=50)
    result.table()                                                  # one row per condition: metric, 95% interval, n
    result.per_prompt["category"]["flip"]                           # (n,), NaN where undefined

Two methods, checked against each other in tests/experiments/test_swap_engine.py: `swap_conditions` rebuilds the
edited row from the gathered unedited row (`qkcore.interventions.swapped_attention`, exact for one edited head with a
plain softmax), and `forward_swaps` edits the head inside a forward pass (`qkcore.lm.edit_attention`).

Per-prompt metrics (NaN where undefined):
  flip             the authors' flip: the head's argmax over the whole row is orig before AND target after;
                   undefined where the baseline argmax is not orig (such a prompt cannot flip)
  flip_candidates  the same among the candidate columns only (list items, box letters): orig on top of the
                   candidates before, target on top of them after
  flip_any         the argmax of the whole row is target after the swap (the book's earlier flip; no baseline)
  delta_p          the target's share of the attention on {orig, target}, after minus before (the authors' Δp)
  gap_fraction     the fraction of the logit gap q·(k_orig − k_target) that lies in the subspace (per prompt; the
                   table reports the ratio of the means, Σ in-subspace / Σ gap, which a near-zero gap cannot blow up)
  logit_gap, gap_in_subspace   its numerator and denominator
  attn_{orig,target}_{before,after}
SwapSet.sink_share: the baseline attention outside the candidates (sinks such as a chat template's first token).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import torch

from qkcore.experiments.verdicts import Estimate
from qkcore.interventions import swap_in_subspace, swapped_attention
from qkcore.lm import KeySwap, edit_attention, run_model
from qkcore.lm.batching import EncodedBatch
from qkcore.lm.gather import gather_qk
from qkcore.lm.residency import resident
from qkcore.progress import gathers, steps
from qkcore.subspace import random_orthonormal

METRICS = (
    "flip",
    "flip_candidates",
    "flip_any",
    "delta_p",
    "gap_fraction",
    "logit_gap",
    "gap_in_subspace",
    "attn_orig_before",
    "attn_orig_after",
    "attn_target_before",
    "attn_target_after",
)


@dataclass(frozen=True)
class EncodedTask:
    """One encoded batch of a task, as every language-model chapter hands it to the engine and the contrasts:
    batch (left padded); query (b,) the query token's column; candidates (b, m) the candidate keys' columns (list
    items' last sub-token, box letters); labels (b, m) each candidate's feature label (category id, clause index)."""

    batch: EncodedBatch
    query: torch.Tensor
    candidates: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.batch, EncodedBatch):
            raise TypeError(f"batch must be an EncodedBatch, got {type(self.batch).__name__}")
        b = self.batch.size
        if tuple(self.query.shape) != (b,):
            raise ValueError(f"query must be (batch={b},) columns, got {tuple(self.query.shape)}")
        if self.candidates.dim() != 2 or self.candidates.shape[0] != b or self.labels.shape != self.candidates.shape:
            raise ValueError(
                f"candidates and labels must both be (batch={b}, m), got {tuple(self.candidates.shape)} and "
                f"{tuple(self.labels.shape)}"
            )

    @property
    def size(self) -> int:
        return self.batch.size


@dataclass
class SwapSet:
    """One head's gathered swap prompts, in batches (rows may differ in length between batches): per batch the
    unedited attention row attn (b, S), the query q (b, d), the candidates' keys (b, m, d) and columns (b, m), the
    orig and target candidate indices (b,), and the head's logit scale."""

    head: tuple[int, int]
    chunks: list[dict] = field(default_factory=list)

    @property
    def n(self) -> int:
        return sum(len(c["orig"]) for c in self.chunks)

    @property
    def d(self) -> int:
        return int(self.chunks[0]["q"].shape[-1])

    @property
    def sink_share(self) -> torch.Tensor:
        """(n,) baseline attention outside the candidate columns."""
        return torch.cat([1 - c["attn"].gather(1, c["cand"]).sum(1) for c in self.chunks])

    @property
    def orig_on_top(self) -> torch.Tensor:
        """(n,) whether the baseline argmax of the whole row is orig (else the authors' flip is undefined)."""
        return torch.cat([c["attn"].argmax(-1) == _col(c, "orig") for c in self.chunks])

    @property
    def orig_on_top_of_candidates(self) -> torch.Tensor:
        """(n,) whether orig has the most attention among the candidates before the swap."""
        return torch.cat([c["attn"].gather(1, c["cand"]).argmax(-1) == c["orig"] for c in self.chunks])

    def keys(self) -> torch.Tensor:
        """(n·m, d) every candidate key, for label-free controls (the top key-variance subspace)."""
        return torch.cat([c["keys"].flatten(0, 1) for c in self.chunks]).double()


def _col(chunk: dict, which: str) -> torch.Tensor:
    """(b,) the batch column of each row's orig or target candidate."""
    return chunk["cand"].gather(1, chunk[which][:, None])[:, 0]


def _check_indices(orig: torch.Tensor, target: torch.Tensor, n: int, m: int) -> None:
    for name, t in (("orig", orig), ("target", target)):
        if tuple(t.shape) != (n,) or t.is_floating_point():
            raise ValueError(f"{name} must be an integer tensor (n={n},) of candidate indices, got {tuple(t.shape)}")
        if n and (int(t.min()) < 0 or int(t.max()) >= m):
            raise ValueError(f"{name} indexes the {m} candidates: values must be in 0..{m - 1}")
    if n and bool((orig == target).any()):
        raise ValueError("orig and target must differ in every prompt (a swap of a key with itself does nothing)")


@torch.no_grad()
def gather_swap_sets(
    model: torch.nn.Module,
    tasks: Iterable[EncodedTask],
    heads: Sequence[tuple[int, int]],
    orig: torch.Tensor,
    target: torch.Tensor,
) -> dict[tuple[int, int], SwapSet]:
    """One forward pass per task batch (only the last position's logits): for every head its SwapSet. orig, target
    (n,): per prompt, the candidate index of the key that holds the feature (orig) and of the one it is swapped with."""
    heads = [tuple(h) for h in heads]
    sets = {h: SwapSet(h) for h in heads}
    start = 0
    orig, target = torch.as_tensor(orig).long(), torch.as_tensor(target).long()
    for task in gathers(tasks, "swaps: gather q,k"):
        b, m = task.candidates.shape
        o, t = orig[start : start + b], target[start : start + b]
        _check_indices(o, t, b, m)
        cols = torch.arange(task.batch.input_ids.shape[1]).expand(b, -1)  # (b, S) every column
        got = gather_qk(model, task.batch, heads, task.query, key_cols=task.candidates, attn_cols=cols, logits=False)
        for i, h in enumerate(heads):
            sets[h].chunks.append(
                {
                    "attn": got.attn[i].double(),  # (b, S)
                    "q": got.q[i].double(),  # (b, d)
                    "keys": got.k[i].double(),  # (b, m, d)
                    "cand": task.candidates.long(),  # (b, m)
                    "orig": o,
                    "target": t,
                    "scale": got.scaling[i],
                }
            )
        start += b
    if start != len(orig):
        raise ValueError(f"orig and target have {len(orig)} entries for {start} prompts")
    return sets


def prompt_metrics(chunk: dict, after: torch.Tensor, basis: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-prompt metrics of one batch: the unedited row chunk["attn"] (b, S) against the edited row `after`."""
    a0, a1 = chunk["attn"], after.double()
    rows = torch.arange(a0.shape[0])
    co, ct = _col(chunk, "orig"), _col(chunk, "target")
    nan = torch.full((len(rows),), float("nan"), dtype=torch.float64)
    c0, c1 = a0.gather(1, chunk["cand"]), a1.gather(1, chunk["cand"])  # (b, m) attention on the candidates
    o0, t0, o1, t1 = a0[rows, co], a0[rows, ct], a1[rows, co], a1[rows, ct]
    k = chunk["keys"]
    k_o, k_t = k[rows, chunk["orig"]], k[rows, chunk["target"]]  # (b, d)
    gap = (chunk["q"] * (k_o - k_t)).sum(-1)  # (b,) logit gap q·(k_o − k_t), unscaled
    b = basis.double()
    in_sub = (chunk["q"] @ b * ((k_o - k_t) @ b)).sum(-1)  # (b,) its part inside span(basis)
    return {
        "flip": torch.where(a0.argmax(-1) == co, (a1.argmax(-1) == ct).double(), nan),
        "flip_candidates": torch.where(
            c0.argmax(-1) == chunk["orig"], (c1.argmax(-1) == chunk["target"]).double(), nan
        ),
        "flip_any": (a1.argmax(-1) == ct).double(),
        "delta_p": t1 / (t1 + o1).clamp_min(1e-300) - t0 / (t0 + o0).clamp_min(1e-300),
        "gap_fraction": torch.where(gap.abs() > 1e-9, in_sub / gap, nan),
        "logit_gap": gap,
        "gap_in_subspace": in_sub,
        "attn_orig_before": o0,
        "attn_orig_after": o1,
        "attn_target_before": t0,
        "attn_target_after": t1,
    }


def recomputed_metrics(swap_set: SwapSet, basis: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-prompt metrics (n,) of one basis (d, r), rows rebuilt from the gathered pass (no forward pass)."""
    out = {m: [] for m in METRICS}
    for c in swap_set.chunks:
        k = c["keys"]
        rows = torch.arange(len(c["orig"]))
        after = swapped_attention(
            c["attn"],
            c["q"],
            k[rows, c["orig"]],
            k[rows, c["target"]],
            basis,
            c["scale"],
            _col(c, "orig"),
            _col(c, "target"),
        )  # (b, S)
        for name, v in prompt_metrics(c, after, basis).items():
            out[name].append(v)
    return {name: torch.cat(v) for name, v in out.items()}


@dataclass
class SwapResult:
    """Per condition: its rank and per-prompt metrics (n,); random conditions are the per-prompt means over draws."""

    head: tuple[int, int]
    ranks: dict[str, int]
    per_prompt: dict[str, dict[str, torch.Tensor]]
    sink_share: torch.Tensor
    n_random: int

    def estimate(self, condition: str, metric: str = "flip") -> Estimate:
        return Estimate.of(self.per_prompt[condition][metric])

    def table(self, metrics: Sequence[str] = ("flip", "flip_candidates", "delta_p", "gap_fraction")) -> pd.DataFrame:
        """One row per condition: rank, and for each metric its mean, 95% interval and the prompts defining it."""
        rows = {}
        for cond, per in self.per_prompt.items():
            row: dict[str, object] = {"rank": self.ranks[cond]}
            for m in metrics:
                e = (
                    ratio_of_means(per["gap_in_subspace"], per["logit_gap"])
                    if m == "gap_fraction"
                    else Estimate.of(per[m])
                )
                row.update({m: e.value, f"{m} lo": e.lo, f"{m} hi": e.hi, f"{m} n": e.n})
            rows[cond] = row
        return pd.DataFrame.from_dict(rows, orient="index")


def ratio_of_means(num: torch.Tensor, den: torch.Tensor, seed: int = 0, n_boot: int = 2000) -> Estimate:
    """Σ num / Σ den over prompts with a percentile bootstrap interval (prompts resampled together)."""
    keep = ~(torch.isnan(num) | torch.isnan(den))
    num, den = num[keep].double(), den[keep].double()
    if len(num) == 0 or float(den.sum()) == 0.0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    idx = torch.randint(len(num), (n_boot, len(num)), generator=torch.Generator().manual_seed(seed))
    ratios = num[idx].sum(1) / den[idx].sum(1)
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return Estimate(float(num.sum() / den.sum()), float(lo), float(hi), len(num))


def swap_conditions(
    swap_set: SwapSet,
    bases: dict[str, torch.Tensor | int | list | None],
    generator: torch.Generator,
    n_random: int = 50,
) -> SwapResult:
    """Every condition at one head. bases: name → a (d, r) orthonormal key basis, or an int r: `n_random` random
    orthonormal subspaces of rank r (the one meaning of "random subspace" in the book), their per-prompt metrics
    averaged over the draws, or a list of (d, r) bases (e.g. several shuffled-label draws), averaged the same way
    (its rank: the first basis's).
    None or rank 0: the condition is reported with NaN metrics (nothing to swap)."""
    if not isinstance(n_random, int) or n_random < 1:
        raise ValueError(f"n_random must be an int ≥ 1, got {n_random!r}")
    n, d = swap_set.n, swap_set.d
    per_prompt, ranks = {}, {}
    for name, basis in bases.items():
        if isinstance(basis, int):  # n_random random subspaces, drawn when used
            rank, draws = basis, (random_orthonormal(d, basis, generator) for _ in range(n_random))
        elif isinstance(basis, list):
            rank, draws = (int(basis[0].shape[1]) if basis else 0), basis
        else:
            rank, draws = (0 if basis is None else int(basis.shape[1])), None
        ranks[name] = rank
        if rank == 0:
            per_prompt[name] = {m: torch.full((n,), float("nan"), dtype=torch.float64) for m in METRICS}
        elif draws is None:
            per_prompt[name] = recomputed_metrics(swap_set, basis)
        else:
            got = [recomputed_metrics(swap_set, b) for b in draws]
            per_prompt[name] = {m: torch.stack([x[m] for x in got]).mean(0) for m in METRICS}
    return SwapResult(swap_set.head, ranks, per_prompt, swap_set.sink_share, n_random)


@torch.no_grad()
def forward_swaps(
    model: torch.nn.Module,
    tasks: Sequence[EncodedTask],
    head: tuple[int, int],
    orig: torch.Tensor,
    target: torch.Tensor,
    basis: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The same per-prompt metrics as `recomputed_metrics`, from an edited forward pass per batch
    (qkcore.lm.edit_attention with a KeySwap): the reference the recomputed rows are checked against, and the path
    for heads whose logits are not a plain softmax of q·k."""
    head = tuple(head)
    sets = gather_swap_sets(model, tasks, [head], orig, target)[head]
    out = {m: [] for m in METRICS}
    for task, c in steps(list(zip(tasks, sets.chunks)), "swaps: edited forward passes"):
        rows = torch.arange(task.size)
        swap = KeySwap(
            head[0], head[1], basis.float(), _col(c, "orig").tolist(), _col(c, "target").tolist(), task.query.tolist()
        )
        with edit_attention(resident(model), [swap]) as ed:  # a parked model (qkcore.lm.residency) restored
            run_model(model, task.batch, logits_to_keep=1)
        after = ed.attention(*head)[rows, task.query].double().cpu()  # (b, S)
        for name, v in prompt_metrics(c, after, basis).items():
            out[name].append(v)
    return {name: torch.cat(v) for name, v in out.items()}


def top_key_variance(swap_set: SwapSet, rank: int) -> torch.Tensor:
    """(d, rank) the candidates' keys' top principal directions (centred): the label-free control subspace."""
    k = swap_set.keys()
    return torch.linalg.svd(k - k.mean(0), full_matrices=False).Vh[:rank].T


__all__ = [
    "METRICS",
    "EncodedTask",
    "SwapResult",
    "SwapSet",
    "forward_swaps",
    "gather_swap_sets",
    "prompt_metrics",
    "recomputed_metrics",
    "swap_conditions",
    "swap_in_subspace",
    "top_key_variance",
]
