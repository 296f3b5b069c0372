"""ΔC over many processes with torch.distributed: each rank streams its share of the batches, the float64 sums and
the counts are all-reduced (summed), and rank 0 writes the result to one file.

Launch one process per device with torchrun; on CPUs use the gloo backend, on GPUs NCCL (one GPU per rank, the
model on `cuda:<local rank>`; the sums live on the model's device, where NCCL reduces them):

    # torchrun --nproc_per_node 2 my_capture.py
    torch.distributed.init_process_group("gloo")     # "nccl" on GPUs, after torch.cuda.set_device(local_rank)
    st = stream_delta_distributed(model, tok, prompts, pairs, heads="all", batch_size=8, out="dc.pt")
    st.delta()      # on every rank: the ΔC of all prompts, as one process would give

Batches are the same as in one process (batch i holds the same prompts) and rank r runs batches r, r + W, …, so every
batch gives the same q and k as in a one-process run; only the order of the float64 additions differs (equal to
float64 rounding, ~1e-16 relative). `checkpoint=` makes each rank's share resumable (one file per rank).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

from qkcore.covariance import Weighting
from qkcore.lm.identity import contrast_definition
from qkcore.lm.layout import HeadSpec
from qkcore.lm.resume import stream_batches
from qkcore.lm.streaming import DeltaStreamer, PromptPairs, iter_batches


def all_reduce_streamer(streamer: DeltaStreamer, group=None) -> DeltaStreamer:
    """Sum every rank's sums and counts into every rank's `streamer` (in place; returns it)."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "torch.distributed is not initialised: launch with torchrun and call "
            "torch.distributed.init_process_group('gloo') (CPU) or ('nccl') (GPUs) first"
        )
    for acc in streamer.accumulators():  # one, or one per layer (each on its layer's device)
        for t in acc._tensors().values():  # float64, on the accumulator's device
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
        counts = torch.tensor(
            [acc.pairs[True], acc.pairs[False], acc.prompts[True], acc.prompts[False], streamer.prompts_seen],
            dtype=torch.int64,
            device=acc.sums[True].device,
        )
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        acc.pairs[True], acc.pairs[False], acc.prompts[True], acc.prompts[False], seen = (
            int(c) for c in counts.tolist()
        )
    streamer.prompts_seen = seen
    return streamer


def stream_delta_distributed(
    model: nn.Module,
    tokenizer,
    prompts: Sequence,
    pairs: Sequence[PromptPairs],
    heads: HeadSpec = "all",
    batch_size: int = 8,
    padding_side: str = "left",
    weighting: Weighting = "pair_mean",
    add_special_tokens: bool = True,
    progress: bool | str = False,
    out=None,
    checkpoint=None,
    checkpoint_every: int = 10,
    contrast: dict | None = None,
    group=None,
) -> DeltaStreamer:
    """`stream_delta` split over the ranks of `group` (default: the whole world). Every rank must pass the same
    prompts and pairs (checked by fingerprint). Returns, on every rank, the streamer holding all prompts' sums;
    rank 0 also writes it to `out` (a file path, with the model's identity and the contrast's definition).
    checkpoint: a path; rank r keeps its share's checkpoint at "<checkpoint>.rank<r>-of-<W>"."""
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "stream_delta_distributed: torch.distributed is not initialised; launch with torchrun and call "
            "torch.distributed.init_process_group('gloo') (CPU) or ('nccl') (GPUs) first, or use stream_delta"
        )
    if len(prompts) != len(pairs):
        raise ValueError(f"{len(prompts)} prompts but {len(pairs)} PromptPairs: give one per prompt")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    streamer = DeltaStreamer(model, heads, weighting)
    definition = contrast_definition(
        prompts,
        pairs,
        label=contrast,
        heads=[list(h) for h in streamer.heads],
        batch_size=batch_size,
        padding_side=padding_side,
        weighting=weighting,
        add_special_tokens=add_special_tokens,
    )
    seen = [None] * world
    dist.all_gather_object(seen, definition, group=group)
    if any(d != definition for d in seen):
        bad = next(r for r, d in enumerate(seen) if d != definition)
        raise ValueError(
            f"rank {bad} was given other prompts, pairs or settings than rank {rank}: every rank must pass the "
            "same prompts and pairs (the batches are split between ranks here)"
        )
    ranges = list(iter_batches(len(prompts), batch_size))[rank::world]
    shard = None
    if checkpoint is not None:
        shard = f"{checkpoint}.rank{rank}-of-{world}"
    shard_definition = {**definition, "shard": [rank, world]}
    stream_batches(
        streamer,
        tokenizer,
        prompts,
        pairs,
        ranges,
        padding_side,
        add_special_tokens,
        progress if rank == 0 else False,
        shard,
        checkpoint_every,
        shard_definition if shard is not None else None,
    )
    all_reduce_streamer(streamer, group)
    if out is not None and rank == 0:
        streamer.save(out, definition, extra={"world_size": world})
    dist.barrier(group=group)
    return streamer
