"""Training the toy heads: the whole grid of Figure 2 in one batched run (stacked parameters, one optimizer).

Every task (r₁, r₂, binary/gaussian) draws its own batches from its own generator; its d_head variants (16 and 8)
see the same batches. All heads' parameters are stacked in one `HeadStack`; the loss is the sum of the heads' mean
cross-entropies, so each head gets exactly its own gradient, and AdamW acts element-wise, so a head trains as it
would alone (tests/test_toy_train.py checks this against a run with that head alone).

Differences from the authors' script (AdamW lr 1e-4, weight decay 1e-2, batch 256, up to 50,000 steps, early
stopping with patience 5 on a 10,240-sequence validation set checked every 200 steps): that costs minutes per model on
a 2-core CPU. Here lr is 1e-2 (100×) with a 100-step linear warm-up and a cosine decay over at most 1,000 steps,
and validation (4,096 sequences) runs every 100 steps with patience 5, keeping each head's best validation state
as theirs does. Weight decay, batch size and the loss are theirs. With these settings every d_head = 16 head ends
within a point of the best accuracy its task allows (the rank-recovery chapter prints the table).

    grid = train_grid(grid_tasks(seed=11), d_heads=(16, 8))       # TrainedGrid: 18 tasks × 2 variants
    m = grid.model(r1=3, r2=5, kind="binary", d_head=16)           # TrainedModel: .head, .task, .accuracy
    m = train_one(3, 5, "binary", 16, seed=11)                     # the same model, trained alone (seconds)
"""

from __future__ import annotations

import copy
import math
import queue
import threading
from dataclasses import asdict, dataclass, field

import torch

from qkcore.progress import steps
from qkcore.toy.ceiling import reference_correct, task_ceiling
from qkcore.toy.model import HeadStack, ToyHead
from qkcore.toy.task import TASK_KINDS, PayloadTask, TaskBatch, TaskConfig, derive_seed

GRID_LATENT_DIMS = (3, 5, 7)
# Thread count: the toy tensors are small (a batch is 256 × 16 × 32 per task), so extra intra-op threads only add
# synchronisation (measured on a busy 2-core machine: 100 grid steps took 18 s with 1 thread, 320 s with 2). The caller
# sets the threads: the chapters through qkcore.experiments.chapter.start_chapter (one thread), the benchmarks too.
GRID_D_HEADS = (16, 8)
# The training batches are drawn on a second Python thread while the heads train on the first (torch releases the
# GIL inside its kernels, so the two use two cores). Drawing was 60% of the grid's time (measured: 37 s of 61 s).
# Each task's generator is used by one thread only and in step order, so the batches are bit-identical to drawing
# them inline (tests/toy/test_train.py checks it).
PREFETCH = 3  # steps drawn ahead
SAMPLER_THREADS = 2  # threads drawing batches (one core each while the training thread waits or computes)
# The controls every toy chapter sets beside a trained head: the same head at initialisation ("untrained") and after
# its first few optimiser steps ("early-stopped"), both taken from the one training run.
UNTRAINED = "untrained"
EARLY = "early-stopped"


@dataclass(frozen=True)
class ToyTrainConfig:
    """Optimisation settings (see the module docstring for how they differ from the authors')."""

    lr: float = 1e-2
    weight_decay: float = 1e-2
    batch_size: int = 256
    max_steps: int = 1000
    warmup_steps: int = 100
    val_every: int = 100
    patience: int = 5
    min_delta: float = 1e-4
    val_size: int = 4096
    test_size: int = 16384

    def __post_init__(self):
        for name in ("batch_size", "max_steps", "warmup_steps", "val_every", "patience", "val_size", "test_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
        for name in ("lr", "weight_decay", "min_delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        for name in ("batch_size", "max_steps", "val_every", "patience", "val_size", "test_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (0 <= self.warmup_steps < self.max_steps):
            raise ValueError(f"warmup_steps must be in [0, max_steps), got {self.warmup_steps}")

    def learning_rate(self, step: int) -> float:
        """Linear warm-up then cosine decay to 0 at max_steps (step counts from 0)."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return self.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@dataclass(frozen=True)
class TrainedModel:
    """One trained head with its task and its held-out scores."""

    task: PayloadTask
    head: ToyHead
    d_head: int
    accuracy: float  # held-out accuracy on test_size fresh sequences
    ceiling: float  # Bayes ceiling of the task (`qkcore.toy.ceiling.task_ceiling`)
    best_step: int  # step of the best validation loss (the state kept)
    best_val_loss: float
    train_config: ToyTrainConfig

    @property
    def config(self) -> TaskConfig:
        return self.task.config

    def describe(self) -> dict:
        return {
            **self.config.to_dict(),
            "d_head": self.d_head,
            "accuracy": self.accuracy,
            "ceiling": self.ceiling,
            "best_step": self.best_step,
            "train": asdict(self.train_config),
        }


@dataclass
class TrainedGrid:
    """Heads of several tasks × d_head variants, trained together."""

    tasks: list[PayloadTask]
    d_heads: tuple[int, ...]
    stack: HeadStack
    accuracy: torch.Tensor  # (T, G)
    best_step: torch.Tensor  # (T, G)
    best_val_loss: torch.Tensor  # (T, G)
    steps_run: int
    train_config: ToyTrainConfig
    controls: dict[str, TrainedGrid] = field(default_factory=dict)  # UNTRAINED, EARLY → the same heads then
    reference: torch.Tensor | None = None  # (T,) the ideal single head's accuracy on the same test sequences
    _models: dict = field(default_factory=dict, repr=False)

    def index(self, r1: int, r2: int, kind: str, d_head: int) -> tuple[int, int]:
        """(t, g) of a model in the stack; a clear error if the grid does not hold it."""
        for t, task in enumerate(self.tasks):
            c = task.config
            if (c.r1, c.r2, c.kind) == (r1, r2, kind) and d_head in self.d_heads:
                return t, self.d_heads.index(d_head)
        have = sorted({(t.config.r1, t.config.r2, t.config.kind) for t in self.tasks})
        raise KeyError(
            f"no model (r1={r1}, r2={r2}, kind={kind!r}, d_head={d_head}) in this grid; it holds tasks "
            f"{have} with d_heads {self.d_heads}"
        )

    def model(self, r1: int, r2: int, kind: str, d_head: int) -> TrainedModel:
        t, g = self.index(r1, r2, kind, d_head)
        return self.model_at(t, g)

    def model_at(self, t: int, g: int) -> TrainedModel:
        if (t, g) not in self._models:
            task = self.tasks[t]
            c = task.config
            self._models[(t, g)] = TrainedModel(
                task=task,
                head=self.stack.head(t, g),
                d_head=self.d_heads[g],
                accuracy=float(self.accuracy[t, g]),
                ceiling=task_ceiling(c.r1, c.r2, c.kind, c.context, c.n_payloads),
                best_step=int(self.best_step[t, g]),
                best_val_loss=float(self.best_val_loss[t, g]),
                train_config=self.train_config,
            )
        return self._models[(t, g)]

    def models(self) -> list[TrainedModel]:
        """All models, task-major (tasks in the given order, then d_heads)."""
        return [self.model_at(t, g) for t in range(len(self.tasks)) for g in range(len(self.d_heads))]


def grid_tasks(
    seed: int = 11, latent_dims: tuple[int, ...] = GRID_LATENT_DIMS, kinds: tuple[str, ...] = TASK_KINDS
) -> list[PayloadTask]:
    """The paper's grid of tasks: r₁, r₂ ∈ latent_dims × kinds (18 tasks by default)."""
    return [
        PayloadTask(TaskConfig(r1=r1, r2=r2, kind=kind, seed=seed))
        for kind in kinds
        for r1 in latent_dims
        for r2 in latent_dims
    ]


def _stack_batches(batches: list[TaskBatch]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x_q = torch.stack([b.x_q for b in batches])  # (T, n, d_model)
    x_ctx = torch.stack([b.x_ctx for b in batches])  # (T, n, C, d_model)
    label = torch.stack([b.label for b in batches])  # (T, n)
    return x_q, x_ctx, label


def _check_tasks(tasks: list[PayloadTask], d_heads: tuple[int, ...]) -> None:
    if not tasks:
        raise ValueError("need at least one task")
    shapes = {(t.config.context, t.config.d_model, t.config.n_payloads) for t in tasks}
    if len(shapes) != 1:
        raise ValueError(f"tasks trained together must share context, d_model and n_payloads, got {shapes}")
    keys = [(t.config.r1, t.config.r2, t.config.kind, t.config.seed) for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError("the same task appears twice in the list")
    if not d_heads or any((not isinstance(d, int)) or d < 1 for d in d_heads) or len(set(d_heads)) != len(d_heads):
        raise ValueError(f"d_heads must be distinct positive integers, got {d_heads}")


def _per_model_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per head: logits (T, G, n, P), label (T, n) → (T, G)."""
    logp = torch.log_softmax(logits, dim=-1)
    G = logits.shape[1]
    picked = logp.gather(-1, label[:, None, :, None].expand(-1, G, -1, 1)).squeeze(-1)  # (T, G, n)
    return -picked.mean(-1)


def train_grid(
    tasks: list[PayloadTask],
    d_heads: tuple[int, ...] = GRID_D_HEADS,
    config: ToyTrainConfig = ToyTrainConfig(),
    early_steps: int | None = None,
) -> TrainedGrid:
    """Train one head per (task, d_head) in a single batched run; returns each head's best-validation state.

    With `early_steps`, the grid also carries two controls from the same run (`grid.controls`): every head at its
    initialisation (UNTRAINED) and after `early_steps` optimiser steps (EARLY), each evaluated on the same test
    sequences."""
    d_heads = tuple(d_heads)
    _check_tasks(tasks, d_heads)
    if early_steps is not None and not (
        isinstance(early_steps, int) and not isinstance(early_steps, bool) and 1 <= early_steps < config.max_steps
    ):
        raise ValueError(f"early_steps must be an int in [1, max_steps = {config.max_steps}), got {early_steps!r}")
    return _train_grid(tasks, d_heads, config, early_steps)


class Prefetcher:
    """Per-task draws for `steps` steps, made on `workers` background threads (each owns a fixed slice of the tasks
    and uses their generators in step order, so the draws equal drawing inline), `PREFETCH` steps ahead.

        for per_task in Prefetcher(tasks, gens, lambda t, g: t.sample(256, g), steps=1000): ...   # list of T draws
    """

    def __init__(self, tasks: list, gens: list, draw, steps: int, workers: int = SAMPLER_THREADS):
        workers = max(1, min(workers, len(tasks)))
        bounds = [round(w * len(tasks) / workers) for w in range(workers + 1)]
        self._bounds = bounds
        self._steps = steps
        self._stop = threading.Event()
        self._queues = [queue.Queue(maxsize=PREFETCH) for _ in range(workers)]
        self._threads = [
            threading.Thread(
                target=self._run, args=(w, tasks[a:b], gens[a:b], draw, steps, q), daemon=True, name=f"toy-sampler-{w}"
            )
            for w, (a, b, q) in enumerate(zip(bounds, bounds[1:], self._queues))
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, worker: int, tasks, gens, draw, steps, out: queue.Queue):
        try:
            for step in range(steps):
                item = self._finish(worker, step, [draw(t, g) for t, g in zip(tasks, gens)])
                while not self._stop.is_set():
                    try:
                        out.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as error:  # handed to the consuming thread, which raises it
            out.put(error)

    def _finish(self, worker: int, step: int, draws: list):
        """What worker `worker` queues for `step`, given its tasks' draws (on its own thread): the draws."""
        return draws

    def next(self) -> list:
        items = []
        for q in self._queues:
            part = q.get()
            if isinstance(part, BaseException):
                raise part
            items.extend(part)
        return items

    def __iter__(self):
        try:
            for _ in range(self._steps):
                yield self.next()
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


class StackedPrefetcher(Prefetcher):
    """A Prefetcher of training batches that arrive stacked, as `_stack_batches` gives them: x_q (T, n, d_model),
    x_ctx (T, n, C, d_model), label (T, n). Each worker writes its own tasks' rows into one of PREFETCH + 2 step
    buffers allocated once, so the training thread neither copies nor allocates per step (that copy took 3.3 s of
    the training thread's 35 s in the 36-model grid, measured with cProfile). The same numbers as stacking inline.

    A step's tensors are valid until the next call to `next()`: a worker runs at most PREFETCH + 1 steps ahead of the
    step the consumer holds (PREFETCH queued, one being written), so it never writes that step's buffer."""

    def __init__(self, tasks: list, gens: list, batch_size: int, steps: int, workers: int = SAMPLER_THREADS):
        c = tasks[0].config
        self._buffers = [
            (
                torch.empty(len(tasks), batch_size, c.d_model),  # x_q (T, n, d_model)
                torch.empty(len(tasks), batch_size, c.context, c.d_model),  # x_ctx (T, n, C, d_model)
                torch.empty(len(tasks), batch_size, dtype=torch.long),  # label (T, n)
            )
            for _ in range(PREFETCH + 2)
        ]
        self._taken = 0
        super().__init__(tasks, gens, lambda t, g: t.sample(batch_size, g), steps, workers)

    def _finish(self, worker: int, step: int, draws: list):
        a, b = self._bounds[worker], self._bounds[worker + 1]
        x_q, x_ctx, label = self._buffers[step % len(self._buffers)]
        torch.stack([d.x_q for d in draws], out=x_q[a:b])
        torch.stack([d.x_ctx for d in draws], out=x_ctx[a:b])
        torch.stack([d.label for d in draws], out=label[a:b])
        return step

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for q in self._queues:  # every worker has written its rows of this step
            part = q.get()
            if isinstance(part, BaseException):
                raise part
        slot = self._buffers[self._taken % len(self._buffers)]
        self._taken += 1
        return slot


def _train_grid(
    tasks: list[PayloadTask], d_heads: tuple[int, ...], config: ToyTrainConfig, early_steps: int | None = None
) -> TrainedGrid:
    c0 = tasks[0].config
    inits = [
        [
            torch.Generator().manual_seed(
                derive_seed(t.config.seed, "init", t.config.kind, t.config.r1, t.config.r2, dh)
            )
            for dh in d_heads
        ]
        for t in tasks
    ]
    stack = HeadStack(len(tasks), d_heads, c0.d_model, c0.n_payloads, inits)
    snapshots = {}
    if early_steps is not None:
        snapshots[UNTRAINED] = {k: v.detach().clone() for k, v in stack.named_parameters()}
    train_gens = [t.generator("train") for t in tasks]
    val = _stack_batches([t.sample(config.val_size, t.generator("val")) for t in tasks])
    batches = StackedPrefetcher(tasks, train_gens, config.batch_size, config.max_steps)
    opt = torch.optim.AdamW(stack.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    T, G = len(tasks), len(d_heads)
    best_loss = torch.full((T, G), math.inf)
    best_step = torch.zeros(T, G, dtype=torch.long)
    best_state = {k: v.detach().clone() for k, v in stack.named_parameters()}
    patience = torch.full((T, G), config.patience)
    step = 0
    try:
        for step in steps(range(config.max_steps), "train toy heads", unit="step"):  # stops early: see patience
            for group in opt.param_groups:
                group["lr"] = config.learning_rate(step)
            x_q, x_ctx, label = batches.next()  # (T, n, d_model), (T, n, C, d_model), (T, n); valid for this step
            loss = _per_model_loss(stack(x_q, x_ctx), label)  # (T, G)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            if step + 1 == early_steps:
                snapshots[EARLY] = {k: v.detach().clone() for k, v in stack.named_parameters()}
            if not ((step + 1) % config.val_every == 0 or step + 1 == config.max_steps):
                continue
            with torch.no_grad():
                val_loss = _per_model_loss(stack(val[0], val[1]), val[2])  # (T, G)
            active = patience > 0
            improved = (val_loss < best_loss - config.min_delta) & active
            best_loss = torch.where(improved, val_loss, best_loss)
            best_step = torch.where(improved, torch.full_like(best_step, step + 1), best_step)
            for name, p in stack.named_parameters():
                best_state[name][improved] = p.detach()[improved]
            patience = torch.where(
                improved, torch.full_like(patience, config.patience), torch.where(active, patience - 1, patience)
            )
            if not (patience > 0).any():
                break
    finally:
        batches.close()
    if early_steps is not None and EARLY not in snapshots:  # every head stopped before early_steps
        snapshots[EARLY] = {k: v.detach().clone() for k, v in stack.named_parameters()}
    control_stacks = {}
    for name, state in snapshots.items():
        control_stacks[name] = copy.deepcopy(stack)
        with torch.no_grad():
            for key, p in control_stacks[name].named_parameters():
                p.copy_(state[key])
    with torch.no_grad():
        for name, p in stack.named_parameters():
            p.copy_(best_state[name])
    # one pass over the test sequences scores the heads, their controls and the ideal head
    accuracy, *control_accuracy, reference = evaluate_heads(
        [stack, *control_stacks.values()], tasks, config.test_size, reference=True
    )
    controls = {}
    for (name, control), acc in zip(control_stacks.items(), control_accuracy):
        at = 0 if name == UNTRAINED else min(early_steps, step + 1)
        controls[name] = TrainedGrid(
            tasks=list(tasks),
            d_heads=d_heads,
            stack=control,
            accuracy=acc,
            best_step=torch.full((len(tasks), len(d_heads)), at, dtype=torch.long),
            best_val_loss=torch.full((len(tasks), len(d_heads)), math.nan),
            steps_run=at,
            train_config=config,
            reference=reference,
        )
    return TrainedGrid(
        tasks=list(tasks),
        d_heads=d_heads,
        stack=stack,
        accuracy=accuracy,
        best_step=best_step,
        best_val_loss=best_loss,
        steps_run=step + 1,
        train_config=config,
        controls=controls,
        reference=reference,
    )


@torch.no_grad()
def evaluate_heads(
    stacks: HeadStack | list[HeadStack],
    tasks: list[PayloadTask],
    n: int,
    stream: str = "test",
    chunk: int = 2048,
    reference: bool = False,
):
    """Accuracy (T, G) of every head on n fresh sequences per task from the task's `stream` generator (drawn in
    chunks of `chunk`, so memory stays small and the numbers do not depend on the stack).

    A list of stacks is scored on the same sequences, drawn once: returns a list of (T, G); with reference=True
    the list ends with the ideal single head's accuracy (T,) on them (`qkcore.toy.ceiling.reference_correct`)."""
    several = isinstance(stacks, (list, tuple))
    stacks = list(stacks) if several else [stacks]
    gens = [t.generator(stream) for t in tasks]
    correct = [torch.zeros(len(tasks), len(s.d_heads)) for s in stacks]
    ideal = torch.zeros(len(tasks), dtype=torch.float64)
    sizes = [min(chunk, n - start) for start in range(0, n, chunk)]
    drawn = Prefetcher(tasks, gens, lambda t, g: t.sample(sizes[0], g), len(sizes)) if len(set(sizes)) == 1 else None
    for size in sizes:
        batches = drawn.next() if drawn else [t.sample(size, g) for t, g in zip(tasks, gens)]
        x_q, x_ctx, label = _stack_batches(batches)
        for s, c in zip(stacks, correct):
            c += (s(x_q, x_ctx).argmax(-1) == label[:, None, :]).sum(-1)
        if reference:
            ideal += torch.tensor([reference_correct(t.config.n_payloads, b) for t, b in zip(tasks, batches)])
    if drawn:
        drawn.close()
    out = [c / n for c in correct]
    if reference:
        out.append(ideal / n)
    return out if several or reference else out[0]


def train_one(
    r1: int, r2: int, kind: str, d_head: int, seed: int = 11, config: ToyTrainConfig = ToyTrainConfig()
) -> TrainedModel:
    """Train one head alone: the same model the grid holds for these settings (same batches, same init)."""
    return train_with_controls(r1, r2, kind, d_head, seed, config)[0]


def train_with_controls(
    r1: int,
    r2: int,
    kind: str,
    d_head: int,
    seed: int = 11,
    config: ToyTrainConfig = ToyTrainConfig(),
    early_steps: int | None = None,
) -> tuple[TrainedModel, dict[str, TrainedModel]]:
    """`train_one`, and with `early_steps` its controls from the same run: {UNTRAINED: …, EARLY: …}."""
    if kind not in TASK_KINDS:
        raise ValueError(f"kind must be one of {TASK_KINDS}, got {kind!r}")
    task = PayloadTask(TaskConfig(r1=r1, r2=r2, kind=kind, seed=seed))
    grid = train_grid([task], (d_head,), config, early_steps)
    return grid.model_at(0, 0), {name: g.model_at(0, 0) for name, g in grid.controls.items()}
