"""The toy payload-retrieval task of the paper's Figures 2–5 (Task 1: ±1 latents; Task 2: Gaussian latents).

A sequence is C = 16 context tokens and one query token, all in ℝ^{d_model}, d_model = 32:

    context i:  x_i = A₁ z₁⁽ⁱ⁾ + A₂ z₂⁽ⁱ⁾ + E[y_i] + ε        (y_i ∈ {0..P−1}, P = 10 payloads)
    query:      x_q = B₁ z₁*   + B₂ z₂*            + ε        ((z₁*, z₂*) = latents of a uniform target i*)

and the label is the target's payload y_{i*}. Task 1 ("binary"): z₁ ∈ {−1,+1}^{r₁}, z₂ ∈ {−1,+1}^{r₂} uniform.
Task 2 ("gaussian"): z₁ ~ N(0, I_{r₁}), z₂ ~ N(0, I_{r₂}). A₁, A₂, B₁, B₂ have entries N(0,1)/√(latent dim), E has
entries N(0,1)/√d_model, ε ~ N(0, 0.01²) per coordinate. Keys and queries use different maps (A vs B), so a head
must learn which query directions match which key directions.

One example, binary task with r₁ = 3, r₂ = 5: position 6 holds z₁ = (+1,−1,+1), z₂ = (−1,−1,+1,+1,−1) and payload 4;
the query is B₁(+1,−1,+1) + B₂(−1,−1,+1,+1,−1) + ε and the answer is 4. With probability ≈ 15/256 another position
carries the same 8 signs: then the answer is ambiguous (see `qkcore.toy.ceiling`).

The contrast sampler (paper: "ΔC for z₁") draws a query, one z₂′ shared by both keys, a positive key with the
query's z₁ and a negative key with a fresh random z₁″; each key has its own payload and noise. z₂ is symmetric.

    task = PayloadTask(TaskConfig(r1=3, r2=5, kind="binary", seed=11))
    batch = task.sample(256, task.generator("train"))           # TaskBatch: x_ctx (256, 16, 32), x_q (256, 32), ...
    pairs = task.sample_contrast(512, "z1", task.generator("contrast-z1"))   # x_q, x_pos, x_neg: (512, 32) each
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

TaskKind = Literal["binary", "gaussian"]
TASK_KINDS = ("binary", "gaussian")
Factor = Literal["z1", "z2"]
FACTORS = ("z1", "z2")


def derive_seed(seed: int, *parts: object) -> int:
    """A stable 63-bit seed from a base seed and labels, e.g. derive_seed(11, "train", "binary", 3, 5).

    Independent streams (task matrices, training batches, validation set, model init, contrast pairs) each get
    their own generator, so that sampling one never shifts another (and a model trained alone sees exactly the
    batches it sees inside the batched grid)."""
    text = "|".join([str(int(seed)), *map(str, parts)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class TaskConfig:
    """One payload-retrieval task. Defaults are the paper's (C = 16, P = 10, d_model = 32, noise 0.01)."""

    r1: int = 3
    r2: int = 5
    kind: TaskKind = "binary"
    seed: int = 11
    context: int = 16
    n_payloads: int = 10
    d_model: int = 32
    noise_std: float = 0.01

    def __post_init__(self):
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task kind must be one of {TASK_KINDS}, got {self.kind!r}")
        for name in ("r1", "r2", "context", "n_payloads", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if isinstance(self.noise_std, bool) or not isinstance(self.noise_std, (int, float)):
            raise ValueError(f"noise_std must be a finite number >= 0, got {self.noise_std!r}")
        if self.r1 + self.r2 + self.n_payloads > self.d_model:
            raise ValueError(
                f"r1 + r2 + n_payloads = {self.r1 + self.r2 + self.n_payloads} must not exceed d_model = "
                f"{self.d_model}: otherwise latents and payloads cannot be told apart in the embeddings"
            )
        if not (self.noise_std >= 0 and math.isfinite(self.noise_std)):
            raise ValueError(f"noise_std must be finite and >= 0, got {self.noise_std}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TaskBatch:
    """A batch of n sequences. Tensors (float32 unless said):
    x_ctx (n, C, d_model), x_q (n, d_model), payloads (n, C) int64, target (n,) int64 = i*, label (n,) int64,
    z1 (n, C, r1), z2 (n, C, r2): the context latents (the query's are z1[arange(n), target])."""

    x_ctx: torch.Tensor
    x_q: torch.Tensor
    payloads: torch.Tensor
    target: torch.Tensor
    label: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor


@dataclass(frozen=True)
class ContrastBatch:
    """n contrast triples for one factor: x_q, x_pos, x_neg (n, d_model); the latents behind them
    z1_q, z1_pos, z1_neg (n, r1) and z2_q, z2_pos, z2_neg (n, r2)."""

    factor: str
    x_q: torch.Tensor
    x_pos: torch.Tensor
    x_neg: torch.Tensor
    z1_q: torch.Tensor
    z1_pos: torch.Tensor
    z1_neg: torch.Tensor
    z2_q: torch.Tensor
    z2_pos: torch.Tensor
    z2_neg: torch.Tensor


class PayloadTask:
    """The fixed random maps of one task (drawn from `config.seed`) and its samplers."""

    def __init__(self, config: TaskConfig):
        self.config = config
        c = config
        g = torch.Generator().manual_seed(derive_seed(c.seed, "task", c.kind, c.r1, c.r2))
        self.A1 = torch.randn(c.d_model, c.r1, generator=g) / math.sqrt(c.r1)  # (d_model, r1): key-side z1 map
        self.A2 = torch.randn(c.d_model, c.r2, generator=g) / math.sqrt(c.r2)  # (d_model, r2): key-side z2 map
        self.B1 = torch.randn(c.d_model, c.r1, generator=g) / math.sqrt(c.r1)  # (d_model, r1): query-side z1 map
        self.B2 = torch.randn(c.d_model, c.r2, generator=g) / math.sqrt(c.r2)  # (d_model, r2): query-side z2 map
        self.E = torch.randn(c.n_payloads, c.d_model, generator=g) / math.sqrt(c.d_model)  # (P, d_model)

    def generator(self, stream: str) -> torch.Generator:
        """A fresh generator for a named stream ("train", "val", "test", "contrast-z1", ...) of this task."""
        c = self.config
        return torch.Generator().manual_seed(derive_seed(c.seed, stream, c.kind, c.r1, c.r2))

    def latents(self, shape: tuple[int, ...], r: int, generator: torch.Generator) -> torch.Tensor:
        """Latent codes (*shape, r): uniform ±1 (binary) or N(0, 1) (gaussian)."""
        if self.config.kind == "binary":
            return torch.randint(0, 2, (*shape, r), generator=generator).float() * 2 - 1
        return torch.randn(*shape, r, generator=generator)

    def key_inputs(
        self, z1: torch.Tensor, z2: torch.Tensor, payloads: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Context embeddings A₁z₁ + A₂z₂ + E[y] (+ ε if a generator is given): (..., d_model)."""
        x = z1 @ self.A1.T + z2 @ self.A2.T + self.E[payloads]
        return x if generator is None else x.add_(self.noise(x.shape, generator))  # in place: no extra copy

    def query_inputs(self, z1: torch.Tensor, z2: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Query embeddings B₁z₁ + B₂z₂ (+ ε if a generator is given): (..., d_model)."""
        x = z1 @ self.B1.T + z2 @ self.B2.T
        return x if generator is None else x.add_(self.noise(x.shape, generator))

    def noise(self, shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        return torch.randn(*shape, generator=generator).mul_(self.config.noise_std)

    def sample(self, n: int, generator: torch.Generator) -> TaskBatch:
        """n fresh sequences (see the module docstring)."""
        _check_n(n)
        c = self.config
        z1 = self.latents((n, c.context), c.r1, generator)  # (n, C, r1)
        z2 = self.latents((n, c.context), c.r2, generator)  # (n, C, r2)
        payloads = torch.randint(0, c.n_payloads, (n, c.context), generator=generator)  # (n, C)
        target = torch.randint(0, c.context, (n,), generator=generator)  # (n,) = i*
        rows = torch.arange(n)
        x_ctx = self.key_inputs(z1, z2, payloads, generator)  # (n, C, d_model)
        x_q = self.query_inputs(z1[rows, target], z2[rows, target], generator)  # (n, d_model)
        return TaskBatch(
            x_ctx=x_ctx, x_q=x_q, payloads=payloads, target=target, label=payloads[rows, target], z1=z1, z2=z2
        )

    def sample_contrast(self, n: int, factor: Factor, generator: torch.Generator) -> ContrastBatch:
        """n (query, positive key, negative key) triples for `factor` ("z1" or "z2").

        factor "z1": the positive key has the query's z₁, the negative a fresh random z₁″ (which may coincide with
        the query's by chance, as in the authors' code); both keys share one random z₂′. "z2" swaps the roles.
        Every key has its own random payload and noise."""
        _check_n(n)
        if factor not in FACTORS:
            raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}")
        c = self.config
        z1_q = self.latents((n,), c.r1, generator)  # (n, r1)
        z2_q = self.latents((n,), c.r2, generator)  # (n, r2)
        x_q = self.query_inputs(z1_q, z2_q, generator)  # (n, d_model)
        if factor == "z1":
            z2_shared = self.latents((n,), c.r2, generator)  # (n, r2): z₂′, one per triple
            z1_pos, z1_neg = z1_q, self.latents((n,), c.r1, generator)
            z2_pos = z2_neg = z2_shared
        else:
            z1_shared = self.latents((n,), c.r1, generator)
            z2_pos, z2_neg = z2_q, self.latents((n,), c.r2, generator)
            z1_pos = z1_neg = z1_shared
        y_pos = torch.randint(0, c.n_payloads, (n,), generator=generator)
        y_neg = torch.randint(0, c.n_payloads, (n,), generator=generator)
        x_pos = self.key_inputs(z1_pos, z2_pos, y_pos, generator)  # (n, d_model)
        x_neg = self.key_inputs(z1_neg, z2_neg, y_neg, generator)  # (n, d_model)
        return ContrastBatch(
            factor=factor,
            x_q=x_q,
            x_pos=x_pos,
            x_neg=x_neg,
            z1_q=z1_q,
            z1_pos=z1_pos,
            z1_neg=z1_neg,
            z2_q=z2_q,
            z2_pos=z2_pos,
            z2_neg=z2_neg,
        )


def _check_n(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"the number of samples must be a positive integer, got {n!r}")
