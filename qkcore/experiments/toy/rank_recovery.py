"""The rank-recovery chapter (paper Figure 2): train the toy grid, recover the ranks of ΔC_z₁ and ΔC_z₂.

P = RankRecoveryParams()                 # r₁, r₂ ∈ {3, 5, 7} × binary/gaussian × d_head ∈ {16, 8}, seed 11
result = run_rank_recovery(P)            # result.table: one row per model (pandas DataFrame)
result.table.query("d_head == 16").exact.all()
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import pandas as pd
import torch

from qkcore.experiments.tables import r3
from qkcore.experiments.toy.verdicts import Verdict, rank_verdict
from qkcore.params import check_types, require
from qkcore.toy.analysis import analyse_grid, interaction_matrix
from qkcore.toy.ceiling import binary_ceiling
from qkcore.toy.task import TASK_KINDS, TaskConfig
from qkcore.toy.train import EARLY, UNTRAINED, ToyTrainConfig, TrainedGrid, grid_tasks, train_grid

CONTROLS = (UNTRAINED, EARLY)
N_PAYLOADS = TaskConfig().n_payloads
D_MODEL = TaskConfig().d_model


@dataclass(frozen=True)
class RankRecoveryParams:
    """latent_dims: the values of r₁ and of r₂ (every pair is a task); tasks: "binary" and/or "gaussian";
    d_heads: head widths trained for every task; energy: the rank rule's threshold; contrast_batches ×
    contrast_batch_size: triples per ΔC (authors: 80 × 512); lr, max_steps: training (see qkcore.toy.train);
    early_steps: the early-stopped control is every head after this many steps of the same run (the untrained
    control: at step 0); preset: "quick" trains the 16 models of r₁, r₂ ∈ {3, 5} with shorter training."""

    QUICK: ClassVar[dict] = {"latent_dims": (3, 5), "max_steps": 400, "contrast_batches": 20, "test_size": 4096}

    seed: int = 11
    latent_dims: tuple[int, ...] = (3, 5, 7)
    tasks: tuple[str, ...] = ("binary", "gaussian")
    d_heads: tuple[int, ...] = (16, 8)
    energy: float = 0.99
    contrast_batches: int = 80
    contrast_batch_size: int = 512
    lr: float = 1e-2
    max_steps: int = 1000
    test_size: int = 16384
    early_steps: int = 50
    preset: Literal["full", "quick"] = "full"

    def __post_init__(self):
        check_types(self)
        require(
            1 <= self.early_steps < self.max_steps,
            f"early_steps must be between 1 and max_steps - 1 = {self.max_steps - 1}, got {self.early_steps}",
        )
        require(len(self.latent_dims) > 0, "latent_dims must list at least one latent dimension, e.g. (3, 5, 7)")
        require(all(r >= 1 for r in self.latent_dims), f"latent dims must be >= 1, got {self.latent_dims}")
        require(len(set(self.latent_dims)) == len(self.latent_dims), f"latent_dims repeats a value: {self.latent_dims}")
        biggest = 2 * max(self.latent_dims) + N_PAYLOADS
        require(
            biggest <= D_MODEL,
            f"r1 + r2 + {N_PAYLOADS} payloads must fit in d_model = {D_MODEL}: the largest "
            f"latent dim {max(self.latent_dims)} gives {biggest}; use latent dims <= {(D_MODEL - N_PAYLOADS) // 2}",
        )
        require(
            len(self.tasks) > 0
            and all(t in TASK_KINDS for t in self.tasks)
            and len(set(self.tasks)) == len(self.tasks),
            f"tasks must be distinct names from {TASK_KINDS}, got {self.tasks}",
        )
        require(
            len(self.d_heads) > 0 and all(d >= 1 for d in self.d_heads) and len(set(self.d_heads)) == len(self.d_heads),
            f"d_heads must be distinct positive integers, got {self.d_heads}",
        )
        require(0 < self.energy <= 1, f"energy must be in (0, 1] (the paper uses 0.99), got {self.energy}")
        require(
            self.contrast_batches >= 1 and self.contrast_batch_size >= 1,
            "contrast_batches and contrast_batch_size must be >= 1",
        )
        self.train_config()  # validates lr, max_steps, test_size with their own messages

    def train_config(self) -> ToyTrainConfig:
        return ToyTrainConfig(
            lr=self.lr, max_steps=self.max_steps, test_size=self.test_size, warmup_steps=min(100, self.max_steps // 10)
        )


@dataclass
class RankRecoveryResult:
    grid: TrainedGrid
    table: pd.DataFrame  # one row per model
    deltas: dict[str, torch.Tensor]  # factor → (T, G, H, H)
    train_seconds: float
    analysis_seconds: float


def run_rank_recovery(params: RankRecoveryParams) -> RankRecoveryResult:
    """Train every (task, r₁, r₂, d_head) model in one batched run, then recover the ranks of ΔC_z₁ and ΔC_z₂.

    Table columns: kind, r1, r2, d_head, fits (r₁ + r₂ <= d_head), rank_z1, rank_z2 (recovered), exact (both
    equal r₁, r₂), crosstalk (share of the interaction matrix G's energy that pairs z₁ with z₂, see `crosstalk`),
    accuracy (held-out), ceiling (Bayes), reference (ideal single head on the same test sequences), gap = reference
    − accuracy; and for the controls (UNTRAINED, EARLY): "<control> ranks", "<control> exact", "<control> accuracy",
    "<control> crosstalk"."""
    start = time.perf_counter()
    tasks = grid_tasks(params.seed, params.latent_dims, params.tasks)
    grid = train_grid(tasks, params.d_heads, params.train_config(), early_steps=params.early_steps)
    trained = time.perf_counter()
    rows, deltas = analyse_grid(grid, params.energy, params.contrast_batches, params.contrast_batch_size)
    for i, row in enumerate(rows):
        t, g = divmod(i, len(grid.d_heads))
        r1 = grid.tasks[t].config.r1
        row["crosstalk"] = crosstalk(interaction_matrix(grid.model_at(t, g)), r1)
        for name in CONTROLS:
            row[f"{name} crosstalk"] = crosstalk(interaction_matrix(grid.controls[name].model_at(t, g)), r1)
    done = time.perf_counter()
    table = pd.DataFrame(rows)
    table["fits"] = table.r1 + table.r2 <= table.d_head
    table["exact"] = (table.rank_z1 == table.r1) & (table.rank_z2 == table.r2)
    table["gap"] = table.reference - table.accuracy
    controls = [f"{name} {what}" for name in CONTROLS for what in ("ranks", "exact", "accuracy", "crosstalk")]
    cols = [
        "kind",
        "r1",
        "r2",
        "d_head",
        "fits",
        "rank_z1",
        "rank_z2",
        "exact",
        "crosstalk",
        "accuracy",
        "ceiling",
        "reference",
        "gap",
        *controls,
    ]
    return RankRecoveryResult(
        grid=grid, table=table[cols], deltas=deltas, train_seconds=trained - start, analysis_seconds=done - trained
    )


def ceiling_table(latent_dims: tuple[int, ...], context: int = 16, n_payloads: int = N_PAYLOADS) -> pd.DataFrame:
    """Exact Bayes ceilings of the binary task for every (r₁, r₂): rows r₁, columns r₂."""
    return pd.DataFrame(
        [[binary_ceiling(r1, r2, context, n_payloads) for r2 in latent_dims] for r1 in latent_dims],
        index=pd.Index(latent_dims, name="r1"),
        columns=pd.Index(latent_dims, name="r2"),
    )


def crosstalk(G: torch.Tensor, r1: int) -> float:
    """‖G₁₂‖² + ‖G₂₁‖² over ‖G‖² for G = (W_Q B)ᵀ(W_K A) split at r₁: the share of the head's query-key
    interaction that pairs a z₁ direction with a z₂ direction (0 = clean block-diagonal matching)."""
    total = G.square().sum()
    off = G[:r1, r1:].square().sum() + G[r1:, :r1].square().sum()
    return float(off / total) if total > 0 else 0.0


def _count(mask: pd.Series) -> str:
    """ "k/n" of a boolean column, or "no such cell" when it is empty (never 0/0)."""
    return f"{int(mask.sum())}/{len(mask)}" if len(mask) else "no such cell"


def _median(values: pd.Series) -> float | str:
    return r3(values.median()) if len(values) else "no such cell"


def verdicts(result: RankRecoveryResult) -> list[Verdict]:
    """The chapter's verdict: exact ranks where the factors fit, for the trained heads and for both controls."""
    fit = result.table[result.table.fits]
    controls = {name: (int(fit[f"{name} exact"].sum()), len(fit)) for name in CONTROLS}
    return [rank_verdict((int(fit.exact.sum()), len(fit)), controls)]


def summary(result: RankRecoveryResult) -> dict[str, object]:
    """The chapter's closing numbers, for whatever head widths and latent dims were run: per d_head, exact rank
    recovery in all its cells, where r1 + r2 fits (<= d_head) and where it does not ("no such cell" when none), the
    median crosstalk of each group, the largest shortfall from the ideal-head reference where the factors fit, the
    binary task's distance to its exact ceiling there; the controls' exact counts (the verdict: `verdicts`)."""
    t = result.table
    out: dict[str, object] = {"models": len(t)}
    for d in sorted(t.d_head.unique(), reverse=True):
        td = t[t.d_head == d]
        fit, tight = td[td.fits], td[~td.fits]
        out[f"d_head {d}: exact rank recovery"] = _count(td.exact)
        out[f"d_head {d}, r1 + r2 <= {d}: exact"] = _count(fit.exact)
        out[f"d_head {d}, r1 + r2 > {d}: exact"] = _count(tight.exact)
        out[f"d_head {d}, r1 + r2 <= {d}: median crosstalk"] = _median(fit.crosstalk)
        out[f"d_head {d}, r1 + r2 > {d}: median crosstalk"] = _median(tight.crosstalk)
    fit = t[t.fits]
    out["where r1 + r2 fits: largest shortfall from the reference"] = (
        r3((fit.reference - fit.accuracy).max()) if len(fit) else "no such cell"
    )
    binary = fit[fit.kind == "binary"]
    out["binary, where r1 + r2 fits: largest |accuracy − exact ceiling|"] = (
        r3((binary.ceiling - binary.accuracy).abs().max()) if len(binary) else "no such cell"
    )
    for name in CONTROLS:
        out[f"{name} control, r1 + r2 fits: exact"] = _count(fit[f"{name} exact"])
        out[f"{name} control: largest accuracy"] = r3(t[f"{name} accuracy"].max())
    return out
