"""The toy model of the paper's Figures 2–5: one attention head and a linear readout, nothing else.

    q = W_Q x_q,  k_i = W_K x_i,  v_i = W_V x_i              (d_model → d_head, no bias)
    a = softmax_i(q·k_i / √d_head) over the C context positions
    logits = W_O Σ_i a_i v_i                                   (d_head → P payload classes)

No positions, no LayerNorm, no residual: the query token enters only through q, so the answer must be read out of
the attended values. `HeadStack` holds many such heads at once as stacked tensors (tasks × d_head variants) so a
whole grid trains in one batched run; `ToyHead` is one of them, with the explicit q, k, v a chapter analyses.

    head = stack.head(t, g)                       # ToyHead of task t, d_head variant g
    q, k = head.queries(batch.x_q), head.keys(batch.x_ctx)      # (n, d_head), (n, C, d_head)
    a = head.attention(batch.x_q, batch.x_ctx)    # (n, C); head.logits(...) → (n, P)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToyHead:
    """One trained head: W_Q, W_K, W_V (d_head, d_model) and W_O (P, d_head), float32."""

    W_Q: torch.Tensor
    W_K: torch.Tensor
    W_V: torch.Tensor
    W_O: torch.Tensor

    @property
    def d_head(self) -> int:
        return self.W_Q.shape[0]

    def queries(self, x_q: torch.Tensor) -> torch.Tensor:
        """q = W_Q x_q: (..., d_model) → (..., d_head)."""
        return x_q @ self.W_Q.T

    def keys(self, x: torch.Tensor) -> torch.Tensor:
        """k = W_K x: (..., d_model) → (..., d_head)."""
        return x @ self.W_K.T

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """v = W_V x: (..., d_model) → (..., d_head)."""
        return x @ self.W_V.T

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Attention logits q·k_i/√d_head: q (n, d_head), k (n, C, d_head) → (n, C)."""
        return torch.einsum("nh,nch->nc", q, k) / math.sqrt(self.d_head)

    def attention(self, x_q: torch.Tensor, x_ctx: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Attention weights (n, C) for queries x_q (n, d_model) over context x_ctx (n, C, d_model).
        `keys` (n, C, d_head) replaces W_K x_ctx, e.g. keys edited by a swap intervention."""
        k = self.keys(x_ctx) if keys is None else keys
        return torch.softmax(self.scores(self.queries(x_q), k), dim=-1)

    def logits(self, x_q: torch.Tensor, x_ctx: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits (n, P); `keys` as in `attention`."""
        a = self.attention(x_q, x_ctx, keys)  # (n, C)
        out = torch.einsum("nc,nch->nh", a, self.values(x_ctx))  # (n, d_head)
        return out @ self.W_O.T

    def interaction(self) -> torch.Tensor:
        """The bilinear form of the logits in input space, W_Qᵀ W_K: (d_model, d_model), q·k = x_qᵀ (W_QᵀW_K) x."""
        return self.W_Q.T @ self.W_K


class HeadStack(torch.nn.Module):
    """Heads for T tasks × G d_head variants as stacked parameters.

    W_Q, W_K, W_V: (T, G, H, d_model) and W_O: (T, G, P, H) with H = max(d_heads); a variant with a smaller d_head
    uses only its first d_head rows (the rest are zero and masked, so they stay zero under AdamW). Each head is
    initialised like torch.nn.Linear (uniform ±1/√fan_in) from its own generator, so a head's initial weights do
    not depend on which other heads share the stack."""

    def __init__(
        self,
        n_tasks: int,
        d_heads: tuple[int, ...],
        d_model: int,
        n_payloads: int,
        generators: list[list[torch.Generator]],
    ):
        super().__init__()
        if len(generators) != n_tasks or any(len(row) != len(d_heads) for row in generators):
            raise ValueError("need one generator per (task, d_head) pair")
        self.d_heads = tuple(d_heads)
        H = max(d_heads)
        G = len(d_heads)
        mask = torch.zeros(1, G, H)
        for g, dh in enumerate(d_heads):
            mask[0, g, :dh] = 1.0
        self.register_buffer("mask", mask.expand(n_tasks, G, H).clone())  # (T, G, H)
        self.register_buffer("scale", torch.tensor([1 / math.sqrt(dh) for dh in d_heads]))  # (G,)
        weights = {name: torch.zeros(n_tasks, G, H, d_model) for name in ("W_Q", "W_K", "W_V")}
        W_O = torch.zeros(n_tasks, G, n_payloads, H)
        for t in range(n_tasks):
            for g, dh in enumerate(d_heads):
                gen = generators[t][g]
                for name in ("W_Q", "W_K", "W_V"):
                    weights[name][t, g, :dh] = _linear_init(dh, d_model, gen)
                W_O[t, g, :, :dh] = _linear_init(n_payloads, dh, gen)
        self.W_Q = torch.nn.Parameter(weights["W_Q"])
        self.W_K = torch.nn.Parameter(weights["W_K"])
        self.W_V = torch.nn.Parameter(weights["W_V"])
        self.W_O = torch.nn.Parameter(W_O)

    def forward(self, x_q: torch.Tensor, x_ctx: torch.Tensor) -> torch.Tensor:
        """Logits (T, G, n, P) for inputs x_q (T, n, d_model), x_ctx (T, n, C, d_model) (one batch per task,
        shared by its G variants).

        Computed in input space, which is the same function with fewer operations: q·k_i = (W_Kᵀ q)·x_i and
        Σ a_i W_V x_i = W_V Σ a_i x_i; `ToyHead` computes q, k, v explicitly (a test checks both agree)."""
        m = self.mask.unsqueeze(-1)  # (T, G, H, 1)
        W_Q, W_K, W_V = self.W_Q * m, self.W_K * m, self.W_V * m
        W_O = self.W_O * self.mask.unsqueeze(-2)  # (T, G, P, H)
        q = torch.einsum("tnd,tghd->tgnh", x_q, W_Q)  # (T, G, n, H)
        q_in = torch.einsum("tgnh,tghd->tngd", q, W_K)  # (T, n, G, d_model): W_Kᵀ q
        scores = torch.matmul(x_ctx, q_in.transpose(-1, -2)) * self.scale  # (T, n, C, G)
        a = torch.softmax(scores, dim=2)  # over the C context positions
        x_bar = torch.matmul(a.transpose(-1, -2), x_ctx)  # (T, n, G, d_model): attended inputs
        out = torch.einsum("tngd,tghd->tgnh", x_bar, W_V)  # (T, G, n, H)
        return torch.einsum("tgnh,tgph->tgnp", out, W_O)  # (T, G, n, P)

    def head(self, t: int, g: int) -> ToyHead:
        """Head (task t, variant g) as a standalone ToyHead with its true d_head (detached copies)."""
        dh = self.d_heads[g]
        return ToyHead(
            W_Q=self.W_Q[t, g, :dh].detach().clone(),
            W_K=self.W_K[t, g, :dh].detach().clone(),
            W_V=self.W_V[t, g, :dh].detach().clone(),
            W_O=self.W_O[t, g, :, :dh].detach().clone(),
        )


def _linear_init(fan_out: int, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """torch.nn.Linear's default: uniform in ±1/√fan_in, (fan_out, fan_in)."""
    bound = 1 / math.sqrt(fan_in)
    return (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
