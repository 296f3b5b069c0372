"""The stacked heads: the batched forward equals each head's explicit q·k/√d attention, and a head trained inside
the batched grid equals the same head trained alone."""

import math

import pytest
import torch

from qkcore.toy.model import HeadStack
from qkcore.toy.task import PayloadTask, TaskConfig
from qkcore.toy.train import ToyTrainConfig, grid_tasks, train_grid, train_one

SHORT = ToyTrainConfig(max_steps=60, warmup_steps=10, val_every=20, val_size=256, test_size=512)


def random_stack(tasks, d_heads):
    gens = [[torch.Generator().manual_seed(10 * t + g) for g in range(len(d_heads))] for t in range(len(tasks))]
    return HeadStack(len(tasks), d_heads, 32, 10, gens)


def test_stacked_forward_equals_each_heads_explicit_attention():
    tasks = [PayloadTask(TaskConfig(r1=3, r2=5, kind="binary")), PayloadTask(TaskConfig(r1=7, r2=3, kind="gaussian"))]
    stack = random_stack(tasks, (16, 8))
    with torch.no_grad():
        stack.W_Q.mul_(4)  # sharper attention, so a wrong scale or mask would show
    batches = [t.sample(64, t.generator("test")) for t in tasks]
    logits = stack(torch.stack([b.x_q for b in batches]), torch.stack([b.x_ctx for b in batches]))  # (T, G, n, P)
    for t, b in enumerate(batches):
        for g, dh in enumerate((16, 8)):
            head = stack.head(t, g)
            assert head.d_head == dh
            q, k, v = head.queries(b.x_q), head.keys(b.x_ctx), head.values(b.x_ctx)
            a = torch.softmax((q[:, None, :] * k).sum(-1) / math.sqrt(dh), -1)  # (n, C), written out
            explicit = (a[..., None] * v).sum(1) @ head.W_O.T
            torch.testing.assert_close(logits[t, g], explicit, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(head.logits(b.x_q, b.x_ctx), explicit, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(head.attention(b.x_q, b.x_ctx), a, atol=1e-6, rtol=1e-5)


def test_head_trained_in_the_grid_equals_the_head_trained_alone():
    tasks = grid_tasks(seed=5, latent_dims=(3, 5), kinds=("binary",))  # 4 tasks × 2 d_heads
    grid = train_grid(tasks, (16, 8), SHORT)
    for r1, r2, d_head in [(3, 5, 8), (5, 3, 16)]:
        alone = train_one(r1, r2, "binary", d_head, seed=5, config=SHORT)
        in_grid = grid.model(r1, r2, "binary", d_head)
        for name in ("W_Q", "W_K", "W_V", "W_O"):
            torch.testing.assert_close(getattr(in_grid.head, name), getattr(alone.head, name), atol=2e-5, rtol=1e-4)
        assert abs(in_grid.accuracy - alone.accuracy) <= 2 / SHORT.test_size
        assert in_grid.best_step == alone.best_step


def test_masked_rows_of_narrow_heads_stay_zero_and_training_learns():
    tasks = grid_tasks(seed=5, latent_dims=(3,), kinds=("binary",))
    before = train_grid(
        tasks, (16, 8), ToyTrainConfig(max_steps=2, warmup_steps=1, val_every=1, val_size=256, test_size=2048)
    )
    grid = train_grid(tasks, (16, 8), ToyTrainConfig(max_steps=300, warmup_steps=30, val_size=1024, test_size=2048))
    s = grid.stack
    for W in (s.W_Q, s.W_K, s.W_V):
        assert torch.count_nonzero(W[0, 1, 8:]) == 0
    assert torch.count_nonzero(s.W_O[0, 1, :, 8:]) == 0
    assert before.accuracy.max() < 0.3 < 0.85 < grid.accuracy.min()  # from chance (0.1) to near the 0.90 ceiling


def test_bad_training_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="lr"):
        ToyTrainConfig(lr=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        ToyTrainConfig(max_steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="kind"):
        train_one(3, 3, "ternary", 16)
    with pytest.raises(ValueError, match="d_heads"):
        train_grid(grid_tasks(latent_dims=(3,)), (16, 16))
    grid = train_grid(grid_tasks(latent_dims=(3,), kinds=("binary",)), (8,), SHORT)
    with pytest.raises(KeyError, match="no model"):
        grid.model(5, 5, "binary", 8)


def test_prefetched_draws_equal_inline_draws():
    from qkcore.toy.train import Prefetcher

    tasks = grid_tasks(seed=2, latent_dims=(3, 5), kinds=("binary", "gaussian"))[:5]
    inline_gens = [t.generator("train") for t in tasks]
    inline = [[t.sample(8, g) for t, g in zip(tasks, inline_gens)] for _ in range(4)]
    drawn = list(Prefetcher(tasks, [t.generator("train") for t in tasks], lambda t, g: t.sample(8, g), 4, workers=2))
    assert len(drawn) == 4
    for step_inline, step_drawn in zip(inline, drawn):
        for a, b in zip(step_inline, step_drawn):
            assert torch.equal(a.x_ctx, b.x_ctx) and torch.equal(a.label, b.label)


def test_stacked_prefetched_batches_equal_inline_stacks_while_the_consumer_holds_them():
    """The workers write ahead into reused buffers: a step the consumer holds must not change under it, however far
    ahead they run (the consumer sleeps before reading), and every step equals stacking the inline draws."""
    import time

    from qkcore.toy.train import PREFETCH, StackedPrefetcher, _stack_batches

    tasks = grid_tasks(seed=2, latent_dims=(3, 5), kinds=("binary", "gaussian"))[:5]
    inline_gens = [t.generator("train") for t in tasks]
    steps = 3 * (PREFETCH + 2) + 1  # every buffer reused more than twice
    drawn = StackedPrefetcher(tasks, [t.generator("train") for t in tasks], 8, steps, workers=2)
    for _ in range(steps):
        held = drawn.next()
        time.sleep(0.02)  # the workers fill the queue and write the next buffer meanwhile
        expected = _stack_batches([t.sample(8, g) for t, g in zip(tasks, inline_gens)])
        for a, b in zip(expected, held):
            assert a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    drawn.close()


def test_controls_come_from_the_same_run():
    from qkcore.toy.train import EARLY, UNTRAINED

    tasks = grid_tasks(seed=5, latent_dims=(3,), kinds=("binary",))
    grid = train_grid(tasks, (8,), SHORT, early_steps=20)
    assert set(grid.controls) == {UNTRAINED, EARLY}
    untrained, early = grid.controls[UNTRAINED], grid.controls[EARLY]
    fresh = random_stack(tasks, (8,))  # a different init: the untrained control must be this grid's own init
    assert not torch.equal(untrained.stack.W_Q, fresh.W_Q)
    assert not torch.equal(untrained.stack.W_Q, early.stack.W_Q) and not torch.equal(early.stack.W_Q, grid.stack.W_Q)
    assert early.steps_run == 20 and untrained.steps_run == 0
    assert untrained.accuracy.max() < 0.3 and grid.reference is not None
    with pytest.raises(ValueError, match="early_steps"):
        train_grid(tasks, (8,), SHORT, early_steps=SHORT.max_steps)
