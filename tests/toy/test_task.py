"""The toy payload-retrieval task: determinism, shapes, the generative formula, and the contrast sampler."""

import pytest
import torch

from qkcore.toy.task import PayloadTask, TaskConfig, derive_seed


@pytest.fixture(params=["binary", "gaussian"])
def task(request):
    return PayloadTask(TaskConfig(r1=3, r2=5, kind=request.param, seed=11))


def test_same_seed_same_tensors_other_seed_other_tensors(task):
    a = task.sample(64, task.generator("train"))
    b = PayloadTask(task.config).sample(64, PayloadTask(task.config).generator("train"))
    for name in ("x_ctx", "x_q", "payloads", "target", "label", "z1", "z2"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    other = PayloadTask(TaskConfig(r1=3, r2=5, kind=task.config.kind, seed=12))
    assert not torch.equal(other.A1, task.A1)
    assert not torch.equal(task.sample(64, task.generator("val")).x_q, a.x_q)  # streams are independent
    assert derive_seed(11, "train", 3) == derive_seed(11, "train", 3) != derive_seed(11, "train", 5)


def test_shapes_and_label(task):
    c = task.config
    b = task.sample(32, task.generator("train"))
    assert b.x_ctx.shape == (32, 16, 32) and b.x_q.shape == (32, 32)
    assert b.z1.shape == (32, 16, 3) and b.z2.shape == (32, 16, 5)
    assert b.payloads.shape == (32, 16) and b.target.shape == (32,)
    assert int(b.payloads.max()) < c.n_payloads and int(b.target.max()) < c.context
    assert torch.equal(b.label, b.payloads[torch.arange(32), b.target])
    assert (task.A1.shape, task.B2.shape, task.E.shape) == ((32, 3), (32, 5), (10, 32))


def test_inputs_follow_the_generative_formula(task):
    b = task.sample(256, task.generator("train"))
    rows = torch.arange(256)
    clean_ctx = b.z1 @ task.A1.T + b.z2 @ task.A2.T + task.E[b.payloads]
    clean_q = b.z1[rows, b.target] @ task.B1.T + b.z2[rows, b.target] @ task.B2.T  # no payload in the query
    for residual in (b.x_ctx - clean_ctx, b.x_q - clean_q):
        assert abs(residual.std().item() - 0.01) < 0.001 and abs(residual.mean().item()) < 0.001


def test_latent_distributions():
    binary = PayloadTask(TaskConfig(kind="binary"))
    z = binary.latents((20000,), 4, binary.generator("x"))
    assert set(z.unique().tolist()) == {-1.0, 1.0} and abs(z.mean().item()) < 0.02
    gauss = PayloadTask(TaskConfig(kind="gaussian"))
    z = gauss.latents((20000,), 4, gauss.generator("x"))
    assert abs(z.mean().item()) < 0.02 and abs(z.std().item() - 1) < 0.02


@pytest.mark.parametrize("factor", ["z1", "z2"])
def test_contrast_sampler_holds_the_other_factor_shared(task, factor):
    b = task.sample_contrast(4096, factor, task.generator("contrast"))
    same, other = ("z1", "z2") if factor == "z1" else ("z2", "z1")
    q, pos, neg = (getattr(b, f"{same}_{s}") for s in ("q", "pos", "neg"))
    assert torch.equal(pos, q)  # the positive key carries the query's value of the factor
    assert torch.equal(getattr(b, f"{other}_pos"), getattr(b, f"{other}_neg"))  # the other factor is shared
    assert not torch.equal(getattr(b, f"{other}_pos"), getattr(b, f"{other}_q"))  # ... and not the query's
    r = q.shape[1]
    differs = (neg != q).any(-1).double().mean().item()
    expected = 1 - 2.0**-r if task.config.kind == "binary" else 1.0  # a fresh random draw
    assert abs(differs - expected) < 0.03
    clean_pos = b.z1_pos @ task.A1.T + b.z2_pos @ task.A2.T
    residual = b.x_pos - clean_pos  # payload embedding + noise: the keys carry their own payloads
    payload_fit = torch.cdist(residual, task.E).min(-1).values
    assert payload_fit.max() < 0.1


def test_bad_configs_and_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="task kind"):
        TaskConfig(kind="ternary")
    with pytest.raises(ValueError, match="r1 must be a positive integer"):
        TaskConfig(r1=0)
    with pytest.raises(ValueError, match="must not exceed d_model"):
        TaskConfig(r1=12, r2=12)
    task = PayloadTask(TaskConfig())
    with pytest.raises(ValueError, match="factor"):
        task.sample_contrast(8, "z3", task.generator("x"))
    with pytest.raises(ValueError, match="positive integer"):
        task.sample(0, task.generator("x"))
