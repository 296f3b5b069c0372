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
from qkcore.params import check_types, require
from qkcore.toy.analysis import analyse_grid, interaction_matrix
from qkcore.toy.ceiling import binary_ceiling
from qkcore.toy.task import TASK_KINDS, TaskConfig
from qkcore.toy.train import ToyTrainConfig, TrainedGrid, grid_tasks, train_grid

N_PAYLOADS = TaskConfig().n_payloads
D_MODEL = TaskConfig().d_model


@dataclass(frozen=True)
class RankRecoveryParams:
    """latent_dims: the values of r₁ and of r₂ (every pair is a task); tasks: "binary" and/or "gaussian";
    d_heads: head widths trained for every task; energy: the rank rule's threshold; contrast_batches ×
    contrast_batch_size: triples per ΔC (authors: 80 × 512); lr, max_steps: training (see qkcore.toy.train);
    preset: "quick" trains the 16 models of r₁, r₂ ∈ {3, 5} with shorter training (about 20 s instead of 60 s)."""

    QUICK: ClassVar[dict] = {"latent_dims": (3, 5), "max_steps": 600, "contrast_batches": 20, "test_size": 4096}

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
    preset: Literal["full", "quick"] = "full"

    def __post_init__(self):
        check_types(self)
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

    Table columns: kind, r1, r2, d_head, rank_z1, rank_z2 (recovered), exact (both equal r₁, r₂), crosstalk
    (share of the interaction matrix G's energy that pairs z₁ with z₂, see `crosstalk`), accuracy (held-out),
    ceiling (Bayes), reference (ideal single head on the same test sequences), gap = reference − accuracy."""
    start = time.perf_counter()
    tasks = grid_tasks(params.seed, params.latent_dims, params.tasks)
    grid = train_grid(tasks, params.d_heads, params.train_config())
    trained = time.perf_counter()
    rows, deltas = analyse_grid(grid, params.energy, params.contrast_batches, params.contrast_batch_size)
    for row, model in zip(rows, grid.models()):
        row["crosstalk"] = crosstalk(interaction_matrix(model), model.config.r1)
    done = time.perf_counter()
    table = pd.DataFrame(rows)
    table["exact"] = (table.rank_z1 == table.r1) & (table.rank_z2 == table.r2)
    table["gap"] = table.reference - table.accuracy
    cols = [
        "kind",
        "r1",
        "r2",
        "d_head",
        "rank_z1",
        "rank_z2",
        "exact",
        "crosstalk",
        "accuracy",
        "ceiling",
        "reference",
        "gap",
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


def summary(result: RankRecoveryResult) -> dict[str, object]:
    """The chapter's closing numbers: exact rank recovery per head width (d_head 8 split by whether r1 + r2 fits),
    the largest shortfall from the ideal-head reference, and the binary task's distance to its exact ceiling."""
    t = result.table
    d16, d8 = t[t.d_head == 16], t[t.d_head == 8]
    fits = (d8.r1 + d8.r2) <= 8
    binary16 = d16[d16.kind == "binary"]
    return {
        "d_head 16: exact rank recovery": f"{int(d16.exact.sum())}/{len(d16)}",
        "d_head 8, r1 + r2 <= 8: exact": f"{int(d8[fits].exact.sum())}/{int(fits.sum())}",
        "d_head 8, r1 + r2 > 8: exact": f"{int(d8[~fits].exact.sum())}/{int((~fits).sum())}",
        "d_head 16: largest shortfall from the reference": r3((d16.reference - d16.accuracy).max()),
        "binary, d_head 16: largest |accuracy − exact ceiling|": r3((binary16.ceiling - binary16.accuracy).abs().max()),
        "median crosstalk, d_head 16": r3(d16.crosstalk.median()),
        "median crosstalk, d_head 8 with r1 + r2 > 8": r3(d8[~fits].crosstalk.median()),
    }
