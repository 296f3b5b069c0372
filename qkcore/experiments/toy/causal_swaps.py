"""The causal-swap chapter (paper Figure 4): exchange two keys' coordinates inside a subspace, watch the attention.

For each sequence, i_orig = i* (the target, whose z₁ and z₂ the query carries) and i_target = a random context
position whose z₁ code AND z₂ code both differ from the query's. The two keys swap their components inside a
subspace (`qkcore.interventions.swap_in_subspace`); attention and the predicted payload are recomputed with the
values untouched. Conditions: none; span(V₁) of ΔC_z₁; span(V₂) of ΔC_z₂; both (QR of [V₁ V₂]); and random
orthonormal subspaces of the same three ranks, averaged over several seeded draws.

    P = SwapParams()                       # r1=3, r2=5, binary, d_head=16, seed 11; 2000 trials; 10 random draws
    result = run_causal_swaps(P)                  # result.table: one row per condition (pandas DataFrame)
    result.table.loc["z1+z2", "flip_rate"]
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import pandas as pd
import torch

from qkcore.experiments.tables import r3
from qkcore.experiments.toy.model import CONTROLS, ToyModelParams, train_and_analyse
from qkcore.experiments.toy.verdicts import Verdict, swap_verdict
from qkcore.interventions import swap_in_subspace, swap_metrics
from qkcore.params import require
from qkcore.subspace import combine_bases, random_orthonormal
from qkcore.toy.analysis import ModelAnalysis
from qkcore.toy.model import ToyHead
from qkcore.toy.task import TaskBatch
from qkcore.toy.train import TrainedModel

FACTOR_CONDITIONS = ("z1", "z2", "z1+z2")
METRIC_COLUMNS = (
    "attn_orig_before",
    "attn_target_before",
    "attn_orig_after",
    "attn_target_after",
    "target_shift",
    "flip_rate",
    "follows_target",
    "follows_orig",
)


@dataclass(frozen=True)
class SwapParams(ToyModelParams):
    """The toy model's fields (see ToyModelParams); n_trials: sequences swapped per condition; n_random: random
    subspaces drawn per rank (their metrics are averaged)."""

    QUICK: ClassVar[dict] = {**ToyModelParams.QUICK, "n_trials": 500, "n_random": 3}

    n_trials: int = 2000
    n_random: int = 10

    def __post_init__(self):
        super().__post_init__()
        require(
            self.r1 + self.r2 <= self.d_head,
            f"r1 + r2 = {self.r1 + self.r2} does not fit in d_head = {self.d_head}: the z1+z2 subspace and its "
            "random baseline of equal rank need room; raise d_head or lower r1, r2",
        )
        require(self.n_trials >= 1, f"n_trials must be >= 1, got {self.n_trials}")
        require(self.n_random >= 1, f"n_random must be >= 1 (random subspaces per rank), got {self.n_random}")


def choose_targets(batch: TaskBatch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sequence, a uniformly random position whose z₁ and z₂ codes both differ from the target's.
    Returns (target_index (n,), has_target (n,) bool); where no position qualifies has_target is False."""
    n, C = batch.payloads.shape
    rows = torch.arange(n)
    z1_q, z2_q = batch.z1[rows, batch.target], batch.z2[rows, batch.target]  # (n, r1), (n, r2)
    eligible = (batch.z1 != z1_q[:, None]).any(-1) & (batch.z2 != z2_q[:, None]).any(-1)  # (n, C)
    u = torch.rand(n, C, generator=generator)  # uniform choice among eligible positions
    u[~eligible] = -1.0
    return u.argmax(-1), eligible.any(-1)


@dataclass(frozen=True)
class SwapOutcome:
    """One swap on n trials: attention after (n, C) and the predicted payload (n,)."""

    attention: torch.Tensor
    prediction: torch.Tensor


@torch.no_grad()
def swap_keys(
    head: ToyHead, batch: TaskBatch, orig: torch.Tensor, target: torch.Tensor, basis: torch.Tensor | None
) -> SwapOutcome:
    """Swap the keys at `orig` and `target` (n,) inside span(basis) (d_head, r) and recompute attention and the
    readout; basis None means no swap."""
    keys = head.keys(batch.x_ctx)  # (n, C, d_head)
    if basis is not None:
        rows = torch.arange(keys.shape[0])
        new_orig, new_target = swap_in_subspace(keys[rows, orig], keys[rows, target], basis)  # (n, d_head) each
        keys = keys.clone()
        keys[rows, orig], keys[rows, target] = new_orig, new_target
    attention = head.attention(batch.x_q, batch.x_ctx, keys=keys)  # (n, C)
    prediction = head.logits(batch.x_q, batch.x_ctx, keys=keys).argmax(-1)  # (n,)
    return SwapOutcome(attention=attention, prediction=prediction)


def subspace_overlap(basis: torch.Tensor | None, reference: torch.Tensor) -> float:
    """Share of span(reference) (d, r_ref) that span(basis) (d, r) captures: ‖basisᵀ reference‖²_F / r_ref
    (1 when it contains the reference subspace, r/d on average for a random one, 0 for no basis)."""
    if basis is None:
        return 0.0
    return float((basis.double().T @ reference.double()).pow(2).sum() / reference.shape[1])


def outcome_metrics(
    before: torch.Tensor, outcome: SwapOutcome, batch: TaskBatch, orig: torch.Tensor, target: torch.Tensor
) -> dict[str, float]:
    """`swap_metrics` plus whether the predicted payload follows the attention: follows_target / follows_orig =
    share of trials, among those whose two payloads differ, where the model predicts the target's / orig's payload."""
    rows = torch.arange(orig.shape[0])
    y_orig, y_target = batch.payloads[rows, orig], batch.payloads[rows, target]
    distinct = y_orig != y_target
    m = swap_metrics(before, outcome.attention, orig, target)
    m["follows_target"] = (outcome.prediction == y_target)[distinct].double().mean().item()
    m["follows_orig"] = (outcome.prediction == y_orig)[distinct].double().mean().item()
    return m


@dataclass
class SwapResult:
    model: TrainedModel
    analysis: ModelAnalysis
    bases: dict[str, torch.Tensor]  # "z1", "z2", "z1+z2" → orthonormal key bases (d_head, r)
    table: pd.DataFrame  # index: condition; columns: rank, overlap (with span V₁₂), METRIC_COLUMNS, *_sd (draws)
    random_draws: pd.DataFrame  # one row per random draw: rank, draw, overlap, METRIC_COLUMNS
    n_trials: int  # trials used (sequences with an eligible i_target)
    n_without_target: int  # sequences left out: no position differs from the query in both z1 and z2
    n_distinct_payloads: int  # trials whose orig and target payloads differ (the base of follows_*)
    controls: dict[str, dict]  # "untrained", "early-stopped" → accuracy, rank, flip rates on the same trials


def run_causal_swaps(params: SwapParams, trained: tuple[TrainedModel, ModelAnalysis] | None = None) -> SwapResult:
    """Train and analyse the model (or reuse `trained`, see `train_and_analyse`), draw trials, and run every
    condition on the same trials."""
    model, analysis, trained_controls = train_and_analyse(params, trained)
    head, task = model.head, model.task
    require(analysis.z1.rank >= 1 and analysis.z2.rank >= 1, "ΔC_z1 or ΔC_z2 is zero: nothing to swap")
    bases = {"z1": analysis.z1.key_basis, "z2": analysis.z2.key_basis}
    bases["z1+z2"] = combine_bases([bases["z1"], bases["z2"]])

    batch = task.sample(params.n_trials, task.generator("swaps"))
    target, has_target = choose_targets(batch, task.generator("swap-targets"))
    keep = has_target.nonzero().flatten()
    require(len(keep) > 0, "no sequence has a position whose z1 and z2 both differ from the query's; raise n_trials")
    batch = TaskBatch(**{f.name: getattr(batch, f.name)[keep] for f in fields(batch)})
    orig, target = batch.target, target[keep]
    before = swap_keys(head, batch, orig, target, None).attention

    rows = []
    for name, basis in [("none", None), *bases.items()]:
        outcome = swap_keys(head, batch, orig, target, basis)
        rank = 0 if basis is None else basis.shape[1]
        rows.append(
            {
                "condition": name,
                "rank": rank,
                "overlap": subspace_overlap(basis, bases["z1+z2"]),
                **outcome_metrics(before, outcome, batch, orig, target),
            }
        )
    draws = []
    gen = task.generator("swap-random-subspaces")
    for rank in dict.fromkeys(bases[f].shape[1] for f in FACTOR_CONDITIONS):  # distinct ranks, in order
        for draw in range(params.n_random):
            basis = random_orthonormal(head.d_head, rank, gen)  # (d_head, rank)
            outcome = swap_keys(head, batch, orig, target, basis)
            draws.append(
                {
                    "condition": f"random {rank}-d",
                    "rank": rank,
                    "draw": draw,
                    "overlap": subspace_overlap(basis, bases["z1+z2"]),
                    **outcome_metrics(before, outcome, batch, orig, target),
                }
            )
    random_draws = pd.DataFrame(draws)
    table = pd.DataFrame(rows).set_index("condition")
    grouped = random_draws.groupby("condition", sort=False)
    random_mean = grouped[["rank", "overlap", *METRIC_COLUMNS]].mean()
    random_sd = grouped[list(METRIC_COLUMNS)].std().fillna(0.0)  # sd over draws (0 for one draw)
    table = pd.concat([table, random_mean])
    for col in ("target_shift", "flip_rate", "follows_target"):
        table[f"{col}_sd"] = random_sd[col].reindex(table.index).fillna(0.0)
    table["rank"] = table["rank"].astype(int)
    controls = {
        name: _control_swaps(*trained_controls[name], batch, orig, target, params.n_random) for name in CONTROLS
    }
    rows_all = torch.arange(len(keep))
    distinct = int((batch.payloads[rows_all, orig] != batch.payloads[rows_all, target]).sum())
    return SwapResult(
        model=model,
        analysis=analysis,
        bases=bases,
        table=table,
        random_draws=random_draws,
        n_trials=len(keep),
        n_without_target=params.n_trials - len(keep),
        n_distinct_payloads=distinct,
        controls=controls,
    )


def _control_swaps(
    model: TrainedModel, analysis: ModelAnalysis, batch: TaskBatch, orig: torch.Tensor, target: torch.Tensor, n: int
) -> dict:
    """A control head on the same trials: baseline argmax on orig, the flip rate of its own z1+z2 swap, and the
    mean flip rate of `n` random subspaces of the same rank."""
    head = model.head
    before = swap_keys(head, batch, orig, target, None).attention
    out = {
        "accuracy": model.accuracy,
        "rank": 0,
        "argmax on orig before": float((before.argmax(-1) == orig).double().mean()),
        "flip z1+z2": 0.0,
        "flip random": 0.0,
    }
    if analysis.z1.rank == 0 or analysis.z2.rank == 0:
        return out
    basis = combine_bases([analysis.z1.key_basis, analysis.z2.key_basis])
    gen = model.task.generator("swap-random-subspaces")
    randoms = [
        swap_metrics(
            before,
            swap_keys(head, batch, orig, target, random_orthonormal(head.d_head, basis.shape[1], gen)).attention,
            orig,
            target,
        )["flip_rate"]
        for _ in range(n)
    ]
    after = swap_keys(head, batch, orig, target, basis).attention
    out.update(
        rank=basis.shape[1],
        **{"flip z1+z2": swap_metrics(before, after, orig, target)["flip_rate"], "flip random": sum(randoms) / n},
    )
    return out


def verdicts(result: SwapResult) -> list[Verdict]:
    """The z1+z2 swap, judged on the trained head and its controls (each with its own ΔC bases)."""
    t = result.table
    rank = int(t.loc["z1+z2", "rank"])
    trained = (float(t.loc["z1+z2", "flip_rate"]), float(t.loc[f"random {rank}-d", "flip_rate"]))
    controls = {n: (c["flip z1+z2"], c["flip random"]) for n, c in result.controls.items()}
    return [swap_verdict(trained, controls)]


def summary(result: SwapResult) -> dict[str, object]:
    """The chapter's closing numbers: flip rate and whether the prediction follows the target, per condition."""
    out: dict[str, object] = {"accuracy": r3(result.model.accuracy), "trials": result.n_trials}
    for name, row in result.table.iterrows():
        out[f"{name} (rank {int(row['rank'])}): flip rate"] = r3(row.flip_rate)
        out[f"{name}: attention orig → target after the swap"] = (
            f"{row.attn_orig_after:.3f} → {row.attn_target_after:.3f}"
        )
        out[f"{name}: predicts the target's payload"] = r3(row.follows_target)
    for name, c in result.controls.items():
        out[f"{name} control: accuracy"] = r3(c["accuracy"])
        out[f"{name} control: flip rate z1+z2 (rank {c['rank']}), random"] = (
            f"{c['flip z1+z2']:.3f}, {c['flip random']:.3f}"
        )
    return out
