"""A small, seeded, task-agnostic trainer for the model organisms (AdamW, linear warmup, cosine decay).

The task is a function `batch_fn(step, generator) -> (input_ids, labels)` (or `(input_ids, labels, attention_mask)`):
input_ids (B, T) long; labels (B, T) long in Hugging Face's convention (the same positions as input_ids, shifted
inside the model; -100 where there is no loss, e.g. the prompt and right padding). The step lets a task run a
curriculum; the generator (seeded once from TrainConfig.seed) is the task's only source of randomness.

    cfg = TrainConfig(steps=1500, lr=3e-3, warmup_steps=100, seed=0, eval_every=250)
    history = train(model, batch_fn, cfg, eval_fn=lambda model, step: {"accuracy": ...})
    history.final_eval, history.seconds

Same seed, same thread count → the same weights (weights themselves are initialised by `build_model(..., seed)`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

BatchFn = Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
EvalFn = Callable[[torch.nn.Module, int], dict[str, float]]


@dataclass(frozen=True)
class TrainConfig:
    """steps: optimiser steps; lr: peak learning rate; warmup_steps: linear warmup from 0; min_lr_ratio: the cosine
    decays to lr × this at the last step; weight_decay and betas: AdamW's (decay only on matrices, not on norms);
    grad_clip: max global gradient norm (0 = none); seed: the batch generator's seed; eval_every: call eval_fn every
    this many steps and after the last (0 = only after the last); log_every: record the mean loss this often."""

    steps: int = 1500
    lr: float = 3e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    seed: int = 0
    eval_every: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ValueError(f"need steps >= 1 and 0 <= warmup_steps <= steps, got {self.steps}, {self.warmup_steps}")
        if not self.lr > 0 or not (0 <= self.min_lr_ratio <= 1):
            raise ValueError(f"need lr > 0 and min_lr_ratio in [0, 1], got {self.lr}, {self.min_lr_ratio}")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eval_every < 0 or self.log_every < 1:
            raise ValueError("weight_decay, grad_clip, eval_every must be >= 0 and log_every >= 1")
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimiser step `step` (0-based): linear warmup to cfg.lr, then cosine to lr × min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps - 1, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainHistory:
    """What a run recorded: (step, mean loss since the last record, lr) rows, evaluations, wall time."""

    losses: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def final_eval(self) -> dict[str, float]:
        return self.evals[-1] if self.evals else {}

    def to_dict(self) -> dict[str, Any]:
        return {"losses": self.losses, "evals": self.evals, "seconds": self.seconds}


def _unpack(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise ValueError("batch_fn must return (input_ids, labels) or (input_ids, labels, attention_mask)")
    input_ids, labels = batch[0], batch[1]
    mask = batch[2] if len(batch) == 3 else None
    if input_ids.dim() != 2 or labels.shape != input_ids.shape:
        raise ValueError(
            f"input_ids and labels must both be (B, T), got {tuple(input_ids.shape)}, {tuple(labels.shape)}"
        )
    if input_ids.dtype != torch.long or labels.dtype != torch.long:
        raise ValueError("input_ids and labels must be torch.long")
    if (labels != -100).sum() == 0:
        raise ValueError("this batch has no label other than -100: nothing to learn from")
    if mask is not None and mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask must be (B, T) like input_ids, got {tuple(mask.shape)}")
    return input_ids, labels, mask


def train(
    model: torch.nn.Module,
    batch_fn: BatchFn,
    cfg: TrainConfig,
    eval_fn: EvalFn | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainHistory:
    """Train `model` (a Hugging Face causal LM: model(input_ids, labels=...) returns .loss) in place.

    eval_fn(model, step) → metrics is called in eval mode under no_grad every cfg.eval_every steps and after the
    last step; `log` (e.g. print) receives one line per record. Returns the TrainHistory."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=cfg.betas,
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    history = TrainHistory()
    start = time.perf_counter()
    running, count = 0.0, 0

    def evaluate(step: int) -> None:
        if eval_fn is None:
            return
        model.eval()
        with torch.no_grad():
            metrics = {"step": float(step), **{k: float(v) for k, v in eval_fn(model, step).items()}}
        model.train()
        history.evals.append(metrics)
        if log:
            log("eval " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))

    model.train()
    for step in range(cfg.steps):
        input_ids, labels, mask = _unpack(batch_fn(step, generator))
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = model(input_ids=input_ids, labels=labels, attention_mask=mask).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        running, count = running + loss.item(), count + 1
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            row = {"step": float(step + 1), "loss": running / count, "lr": lr}
            history.losses.append(row)
            running, count = 0.0, 0
            if log:
                log(f"step {step + 1} loss {row['loss']:.4f} lr {lr:.2e}")
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 != cfg.steps:
            evaluate(step + 1)
    evaluate(cfg.steps)
    model.eval()
    history.seconds = time.perf_counter() - start
    return history
