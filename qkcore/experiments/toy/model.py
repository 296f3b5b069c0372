"""The one trained toy head that the cube and causal-swap chapters study (paper Figures 3 and 4), and its ΔC bases.

Both chapters look at the same model: a single attention head trained on the payload-retrieval task with r₁ = 3,
r₂ = 5, d_head = 16, seed 11 (`qkcore.toy`). `ToyModelParams` holds the fields that pick and train it; a chapter's
parameters subclass it and add their own. Training is deterministic and takes seconds, so each chapter re-trains.

    P = ToyModelParams(r1=3, r2=5, task="binary", d_head=16, seed=11)
    model, analysis, controls = train_and_analyse(P)   # TrainedModel; ModelAnalysis (.z1, .z2 Decompositions);
    V1 = analysis.z1.key_basis                          # controls: {"untrained": (model, analysis), "early-stopped": …}

The controls are the same head at initialisation and after `early_steps` optimiser steps of the same run
(`qkcore.toy.train.train_grid`), analysed the same way: every toy claim is judged on the trained head and on them
(`qkcore.experiments.toy.verdicts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from qkcore.params import check_types, require
from qkcore.toy.analysis import ModelAnalysis, analyse_model
from qkcore.toy.task import TASK_KINDS, TaskConfig
from qkcore.toy.train import EARLY, UNTRAINED, ToyTrainConfig, TrainedModel, train_with_controls

CONTROLS = (UNTRAINED, EARLY)
Analysed = tuple[TrainedModel, ModelAnalysis]

N_PAYLOADS = TaskConfig().n_payloads
D_MODEL = TaskConfig().d_model


@dataclass(frozen=True)
class ToyModelParams:
    """r1, r2: latent dims of the two factors; task: "binary" (±1 latents) or "gaussian"; d_head: head width;
    seed: task maps, data and initialisation; energy: the rank rule's threshold (paper 0.99); contrast_batches ×
    contrast_batch_size: triples per ΔC (authors 80 × 512); lr, max_steps: training (see qkcore.toy.train);
    preset: "quick" swaps the QUICK values in for the fields left at their defaults (a class's run in under a minute).
    """

    QUICK: ClassVar[dict] = {"max_steps": 400, "contrast_batches": 20}

    r1: int = 3
    r2: int = 5
    task: str = "binary"
    d_head: int = 16
    seed: int = 11
    energy: float = 0.99
    contrast_batches: int = 80
    contrast_batch_size: int = 512
    lr: float = 1e-2
    max_steps: int = 1000
    early_steps: int = 50
    preset: Literal["full", "quick"] = "full"

    def __post_init__(self):
        check_types(self)
        require(
            1 <= self.early_steps < self.max_steps,
            f"early_steps must be between 1 and max_steps - 1 = {self.max_steps - 1}, got {self.early_steps}",
        )
        require(self.task in TASK_KINDS, f"task must be one of {TASK_KINDS}, got {self.task!r}")
        require(self.r1 >= 1 and self.r2 >= 1, f"latent dims must be >= 1, got r1={self.r1}, r2={self.r2}")
        require(
            self.r1 + self.r2 + N_PAYLOADS <= D_MODEL,
            f"r1 + r2 + {N_PAYLOADS} payloads must fit in d_model = {D_MODEL}, got r1 + r2 = {self.r1 + self.r2}",
        )
        require(self.d_head >= 1, f"d_head must be >= 1, got {self.d_head}")
        require(0 < self.energy <= 1, f"energy must be in (0, 1] (the paper uses 0.99), got {self.energy}")
        require(
            self.contrast_batches >= 1 and self.contrast_batch_size >= 1,
            f"contrast_batches and contrast_batch_size must be >= 1, got {self.contrast_batches}, "
            f"{self.contrast_batch_size}",
        )
        self.train_config()  # validates lr and max_steps with their own messages

    def train_config(self) -> ToyTrainConfig:
        return ToyTrainConfig(lr=self.lr, max_steps=self.max_steps, warmup_steps=min(100, self.max_steps // 10))


def train_and_analyse(
    params: ToyModelParams, trained: tuple | None = None
) -> tuple[TrainedModel, ModelAnalysis, dict[str, Analysed]]:
    """Train the head (deterministic, seconds on one core) with its two controls, and decompose ΔC_z₁ and ΔC_z₂ of
    each. Returns (model, analysis, {UNTRAINED: (model, analysis), EARLY: (model, analysis)}).

    `trained` = the result of an earlier call with the same model fields skips the work (tests, or two experiments
    on one model); a model whose task or d_head differs from `params` is an error."""
    if trained is not None:
        model, analysis, controls = trained
        c = model.config
        have = (c.r1, c.r2, c.kind, c.seed, model.d_head)
        want = (params.r1, params.r2, params.task, params.seed, params.d_head)
        if have != want:
            raise ValueError(
                f"the trained model has (r1, r2, task, seed, d_head) = {have} but the parameters ask "
                f"for {want}; pass trained=None to train the model the parameters describe"
            )
        return model, analysis, controls
    model, controls = train_with_controls(
        params.r1, params.r2, params.task, params.d_head, params.seed, params.train_config(), params.early_steps
    )

    def analyse(m: TrainedModel) -> ModelAnalysis:
        return analyse_model(m, params.energy, params.contrast_batches, params.contrast_batch_size)

    return model, analyse(model), {name: (controls[name], analyse(controls[name])) for name in CONTROLS}
