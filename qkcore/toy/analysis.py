"""ΔC of the toy heads for factors z₁ and z₂, recovered ranks, and their ground truth (Figures 2 and 5).

For factor z₁ the contrast sampler gives triples (x_q, x_pos, x_neg) whose keys share z₂′ and differ in z₁ (the
positive has the query's). With q = W_Q x_q and k = W_K x, ΔC_z₁ = E[q k_posᵀ] − E[q k_negᵀ]; noise, payload and z₂
terms cancel in expectation (all independent of the query, zero mean on the query side), leaving exactly

    E[ΔC_z₁] = W_Q B₁ E[z₁z₁ᵀ] A₁ᵀ W_Kᵀ = W_Q B₁ A₁ᵀ W_Kᵀ      (E[z₁z₁ᵀ] = I for both tasks)

(the paper's Appendix B): rank r₁, column space span(W_Q B₁), row space span(W_K A₁). The authors estimate it from
80 × 512 triples; so do the defaults here.

    a = analyse_model(model)                         # ModelAnalysis: .z1, .z2 Decompositions, .delta["z1"] ...
    a.z1.rank, a.z1.query_basis, a.z1.key_basis      # recovered rank, U_r (d_head, r), V_r (d_head, r)
    rows = analyse_grid(grid)                        # one dict per model: ranks, accuracy, ceilings
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.subspace import Decomposition, decompose, principal_angles, ranks_at_energy
from qkcore.toy.ceiling import reference_correct
from qkcore.toy.model import ToyHead
from qkcore.toy.task import FACTORS, PayloadTask, TaskBatch
from qkcore.toy.train import Prefetcher, TrainedGrid, TrainedModel

AUTHORS_CONTRAST_BATCHES = 80
AUTHORS_CONTRAST_BATCH_SIZE = 512


@dataclass(frozen=True)
class Activations:
    """What one head computes on a batch: q (n, d_head), k and v (n, C, d_head), scores = q·k/√d_head (n, C),
    attention (n, C), logits (n, P)."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scores: torch.Tensor
    attention: torch.Tensor
    logits: torch.Tensor


@torch.no_grad()
def activations(model: TrainedModel | ToyHead, batch: TaskBatch) -> Activations:
    """Queries, keys, values, attention and logits of a head on a task batch (`PayloadTask.sample`)."""
    head = model.head if isinstance(model, TrainedModel) else model
    q, k, v = head.queries(batch.x_q), head.keys(batch.x_ctx), head.values(batch.x_ctx)
    scores = head.scores(q, k)  # (n, C)
    attention = torch.softmax(scores, -1)
    logits = torch.einsum("nc,nch->nh", attention, v) @ head.W_O.T  # (n, P)
    return Activations(q=q, k=k, v=v, scores=scores, attention=attention, logits=logits)


def _check_factor(factor: str) -> None:
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}")


def _check_contrast(n_batches: int, batch_size: int) -> None:
    if n_batches < 1 or batch_size < 1:
        raise ValueError(f"need n_batches >= 1 and batch_size >= 1, got {n_batches}, {batch_size}")


@torch.no_grad()
def factor_delta(
    model: TrainedModel,
    factor: str,
    n_batches: int = AUTHORS_CONTRAST_BATCHES,
    batch_size: int = AUTHORS_CONTRAST_BATCH_SIZE,
) -> torch.Tensor:
    """ΔC (d_head, d_head), float64, for factor "z1" or "z2" from n_batches × batch_size contrast triples drawn
    from the task's "contrast-<factor>" stream (the same triples `grid_factor_deltas` uses for this task)."""
    _check_factor(factor)
    _check_contrast(n_batches, batch_size)
    head, task = model.head, model.task
    acc = ContrastiveCovariance(head.d_head)
    gen = task.generator(f"contrast-{factor}")
    for _ in range(n_batches):
        b = task.sample_contrast(batch_size, factor, gen)
        q = head.queries(b.x_q)  # (n, d_head)
        acc.add(q, head.keys(b.x_pos), positive=True)
        acc.add(q, head.keys(b.x_neg), positive=False)
    return acc.delta()


@torch.no_grad()
def grid_factor_deltas(
    grid: TrainedGrid,
    factor: str,
    n_batches: int = AUTHORS_CONTRAST_BATCHES,
    batch_size: int = AUTHORS_CONTRAST_BATCH_SIZE,
) -> torch.Tensor:
    """ΔC of every head of a grid at once: (T, G, H, H) float64, H = max d_head; a head with a smaller d_head
    has zeros outside its top-left d_head × d_head block. Equal to `factor_delta` per model."""
    return stacks_factor_deltas(grid.tasks, [grid.stack], factor, n_batches, batch_size)[0]


@torch.no_grad()
def stacks_factor_deltas(
    tasks: list[PayloadTask],
    stacks: list,
    factor: str,
    n_batches: int = AUTHORS_CONTRAST_BATCHES,
    batch_size: int = AUTHORS_CONTRAST_BATCH_SIZE,
) -> list[torch.Tensor]:
    """`grid_factor_deltas` for several HeadStacks of the same tasks (a grid and its controls) from one draw of the
    contrast triples, which is what costs: one (T, G, H, H) float64 ΔC per stack."""
    _check_factor(factor)
    _check_contrast(n_batches, batch_size)
    maps, accs = [], []
    for stack in stacks:
        m = stack.mask.unsqueeze(-1)  # (T, G, H, 1)
        maps.append((stack.W_Q * m, stack.W_K * m))  # (T, G, H, d_model) each
        T, G, H = stack.mask.shape
        accs.append(ContrastiveCovariance(H, head_shape=(T, G)))
    gens = [t.generator(f"contrast-{factor}") for t in tasks]
    for bs in Prefetcher(tasks, gens, lambda t, g: t.sample_contrast(batch_size, factor, g), n_batches):
        x_q, x_pos, x_neg = (torch.stack([getattr(b, name) for b in bs]) for name in ("x_q", "x_pos", "x_neg"))
        for (W_Q, W_K), acc in zip(maps, accs):
            q = torch.einsum("tnd,tghd->tgnh", x_q, W_Q)  # (T, G, n, H)
            acc.add(q, torch.einsum("tnd,tghd->tgnh", x_pos, W_K), positive=True)
            acc.add(q, torch.einsum("tnd,tghd->tgnh", x_neg, W_K), positive=False)
    return [acc.delta() for acc in accs]


def expected_delta(model: TrainedModel, factor: str) -> torch.Tensor:
    """The exact expectation of ΔC (noise-free formula above): W_Q B₁ A₁ᵀ W_Kᵀ for z1, W_Q B₂ A₂ᵀ W_Kᵀ for z2,
    (d_head, d_head) float64."""
    _check_factor(factor)
    q_map, k_map = ground_truth_maps(model, factor)
    return q_map @ k_map.T


def ground_truth_maps(model: TrainedModel, factor: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_Q B_f, W_K A_f), each (d_head, r_f) float64: how the factor enters queries and keys."""
    _check_factor(factor)
    head, task = model.head, model.task
    B, A = (task.B1, task.A1) if factor == "z1" else (task.B2, task.A2)
    return (head.W_Q @ B).double(), (head.W_K @ A).double()


def interaction_matrix(model: TrainedModel) -> torch.Tensor:
    """G = (W_Q B)ᵀ (W_K A) with B = [B₁ B₂], A = [A₁ A₂]: (r₁ + r₂, r₁ + r₂) float64, the logit contribution
    z*ᵀ G z_i of a query code z* and a key code z_i (paper Figure 5). Block structure: the z₁–z₁ and z₂–z₂ blocks
    carry the matching, the off-diagonal blocks are near zero."""
    task, head = model.task, model.head
    B = torch.cat([task.B1, task.B2], 1)  # (d_model, r1 + r2)
    A = torch.cat([task.A1, task.A2], 1)
    return ((head.W_Q @ B).T @ (head.W_K @ A)).double()


@dataclass(frozen=True)
class ModelAnalysis:
    """ΔC for z₁ and z₂ of one model and their decompositions at the given energy."""

    delta: dict[str, torch.Tensor]
    decomposition: dict[str, Decomposition]

    @property
    def z1(self) -> Decomposition:
        return self.decomposition["z1"]

    @property
    def z2(self) -> Decomposition:
        return self.decomposition["z2"]


def analyse_model(
    model: TrainedModel,
    energy: float = 0.99,
    n_batches: int = AUTHORS_CONTRAST_BATCHES,
    batch_size: int = AUTHORS_CONTRAST_BATCH_SIZE,
) -> ModelAnalysis:
    """ΔC_z₁, ΔC_z₂ of one model and their SVDs with the energy rank rule."""
    deltas = {f: factor_delta(model, f, n_batches, batch_size) for f in FACTORS}
    return ModelAnalysis(delta=deltas, decomposition={f: decompose(d, energy) for f, d in deltas.items()})


def subspace_angles(model: TrainedModel, analysis: ModelAnalysis) -> dict[str, torch.Tensor]:
    """Principal angles (degrees, ascending) between each recovered basis and its ground truth:
    keys "z1/query" (U_r vs span W_Q B₁), "z1/key" (V_r vs span W_K A₁), "z2/query", "z2/key".
    When the recovered rank is below the true one there are only `rank` angles."""
    out = {}
    for f in FACTORS:
        q_map, k_map = ground_truth_maps(model, f)
        dec = analysis.decomposition[f]
        if dec.rank == 0:
            raise ValueError(f"ΔC_{f} is zero: no recovered subspace to compare")
        out[f"{f}/query"] = principal_angles(dec.query_basis, q_map)
        out[f"{f}/key"] = principal_angles(dec.key_basis, k_map)
    return out


@torch.no_grad()
def reference_accuracy(task: PayloadTask, n: int, stream: str = "test", chunk: int = 2048) -> float:
    """Accuracy of the ideal bilinear head (`qkcore.toy.ceiling.bilinear_head_reference`) on exactly the test
    sequences `qkcore.toy.train.evaluate` draws: for the binary task the Bayes-optimal accuracy on those sequences
    (no sampling gap between a model's accuracy and this reference)."""
    gen = task.generator(stream)
    total = 0.0
    for start in range(0, n, chunk):
        total += reference_correct(task.config.n_payloads, task.sample(min(chunk, n - start), gen))
    return total / n


def analyse_grid(
    grid: TrainedGrid,
    energy: float = 0.99,
    n_batches: int = AUTHORS_CONTRAST_BATCHES,
    batch_size: int = AUTHORS_CONTRAST_BATCH_SIZE,
) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Ranks of ΔC_z₁, ΔC_z₂ for every model of the grid, beside its accuracy and ceilings.

    Returns (rows, deltas): rows are dicts with kind, r1, r2, d_head, rank_z1, rank_z2, accuracy, ceiling (Bayes),
    reference (ideal bilinear head on the same test sequences), and for each control of the grid (`grid.controls`)
    "<control> ranks" (e.g. "3,5") and "<control> accuracy"; deltas[factor] is the trained heads' (T, G, H, H).
    The controls' ΔC come from the same contrast triples."""
    names = list(grid.controls)
    stacks = [grid.stack, *(grid.controls[n].stack for n in names)]
    all_deltas = {f: stacks_factor_deltas(grid.tasks, stacks, f, n_batches, batch_size) for f in FACTORS}
    ranks = [{f: ranks_at_energy(all_deltas[f][i], energy) for f in FACTORS} for i in range(len(stacks))]  # (T, G)
    rows = []
    for t, task in enumerate(grid.tasks):
        c = task.config
        reference = float(grid.reference[t])  # the ideal head on the same test sequences (reference_accuracy)
        for g, dh in enumerate(grid.d_heads):
            m = grid.model_at(t, g)
            row = {
                "kind": c.kind,
                "r1": c.r1,
                "r2": c.r2,
                "d_head": dh,
                "rank_z1": int(ranks[0]["z1"][t, g]),
                "rank_z2": int(ranks[0]["z2"][t, g]),
                "accuracy": m.accuracy,
                "ceiling": m.ceiling,
                "reference": reference,
            }
            for i, name in enumerate(names, start=1):
                row[f"{name} ranks"] = f"{int(ranks[i]['z1'][t, g])},{int(ranks[i]['z2'][t, g])}"
                row[f"{name} exact"] = (int(ranks[i]["z1"][t, g]), int(ranks[i]["z2"][t, g])) == (c.r1, c.r2)
                row[f"{name} accuracy"] = float(grid.controls[name].accuracy[t, g])
            rows.append(row)
    return rows, {f: d[0] for f, d in all_deltas.items()}
