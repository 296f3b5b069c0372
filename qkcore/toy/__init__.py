"""The toy payload-retrieval model of the paper (Figures 2–5): task, single-head model, batched training,
exact ceilings, and ΔC analysis.

API summary (everything deterministic given `seed`; a model trained alone equals the grid's):

    task.py      TaskConfig(r1, r2, kind="binary"|"gaussian", seed=11, context=16, n_payloads=10, d_model=32,
                 noise_std=0.01); PayloadTask(config): A1, A2, B1, B2 (d_model, r), E (P, d_model);
                 .generator(stream) → torch.Generator; .sample(n, gen) → TaskBatch(x_ctx (n, C, d), x_q (n, d),
                 payloads (n, C), target (n,), label (n,), z1 (n, C, r1), z2 (n, C, r2));
                 .sample_contrast(n, "z1"|"z2", gen) → ContrastBatch(x_q, x_pos, x_neg (n, d), z1_q, z1_pos, ...).
    model.py     ToyHead(W_Q, W_K, W_V (d_head, d_model), W_O (P, d_head)): .queries(x_q), .keys(x),
                 .values(x), .scores(q, k) → q·k/√d_head, .attention(x_q, x_ctx, keys=None) → (n, C),
                 .logits(x_q, x_ctx, keys=None) → (n, P) (pass edited keys for swap interventions).
                 HeadStack: the stacked parameters of a grid.
    train.py     train_one(r1, r2, kind, d_head, seed=11, config=ToyTrainConfig()) → TrainedModel (seconds);
                 train_grid(tasks, d_heads=(16, 8), config) → TrainedGrid (.model(r1, r2, kind, d_head),
                 .models()); grid_tasks(seed, latent_dims=(3, 5, 7), kinds) → 18 PayloadTasks.
                 TrainedModel: .task, .head, .d_head, .accuracy, .ceiling, .config (TaskConfig).
    ceiling.py   binary_ceiling(r1, r2) (exact; 0.9742 for 3, 5), task_ceiling(r1, r2, kind),
                 bilinear_head_reference(r1, r2, kind), gaussian_bayes_error_bound(task).
    analysis.py  activations(model, batch) → Activations(q, k, v, scores, attention, logits);
                 factor_delta(model, "z1"|"z2", n_batches=80, batch_size=512) → ΔC (d_head, d_head) float64;
                 analyse_model(model, energy=0.99) → ModelAnalysis(.z1, .z2 Decompositions, .delta[f]);
                 expected_delta(model, f), ground_truth_maps(model, f) → (W_Q B_f, W_K A_f),
                 interaction_matrix(model) → G, subspace_angles(model, analysis),
                 analyse_grid(grid) → (rows, deltas), reference_accuracy(task, n).

    from qkcore.toy import train_one, analyse_model, activations
    model = train_one(3, 5, "binary", 16)                      # ~10 s on one core; accuracy ≈ 0.974
    a = analyse_model(model); V1 = a.z1.key_basis             # (16, 3)
    acts = activations(model, model.task.sample(512, model.task.generator("figure")))
"""

from qkcore.toy.analysis import (
    Activations,
    ModelAnalysis,
    activations,
    analyse_grid,
    analyse_model,
    expected_delta,
    factor_delta,
    grid_factor_deltas,
    ground_truth_maps,
    interaction_matrix,
    reference_accuracy,
    subspace_angles,
)
from qkcore.toy.ceiling import bilinear_head_reference, binary_ceiling, gaussian_bayes_error_bound, task_ceiling
from qkcore.toy.model import HeadStack, ToyHead
from qkcore.toy.task import ContrastBatch, PayloadTask, TaskBatch, TaskConfig
from qkcore.toy.train import ToyTrainConfig, TrainedGrid, TrainedModel, grid_tasks, train_grid, train_one

__all__ = [
    "Activations",
    "ModelAnalysis",
    "activations",
    "analyse_grid",
    "analyse_model",
    "expected_delta",
    "factor_delta",
    "grid_factor_deltas",
    "ground_truth_maps",
    "interaction_matrix",
    "reference_accuracy",
    "subspace_angles",
    "binary_ceiling",
    "bilinear_head_reference",
    "gaussian_bayes_error_bound",
    "task_ceiling",
    "HeadStack",
    "ToyHead",
    "ContrastBatch",
    "PayloadTask",
    "TaskBatch",
    "TaskConfig",
    "TrainedGrid",
    "TrainedModel",
    "ToyTrainConfig",
    "grid_tasks",
    "train_grid",
    "train_one",
]
