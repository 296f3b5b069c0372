"""Resumable streaming: run a list of batches into a DeltaStreamer, saving its sums every N batches.

A checkpoint is one accumulator file (qkcore.accumulator_file) holding the streamer's sums, the model's identity, the
contrast's definition (prompts, pairs and batch settings, fingerprinted) and how many of the run's batches it
contains. Written atomically after whole batches only, so a run killed at any moment resumes from the last file
with every batch in it counted once: batches after it are run again, none before it. A resumed run performs the
same float64 additions in the same order as an uninterrupted one, so its ΔC is bit-for-bit the same.

    streamer = stream_batches(streamer, tok, prompts, pairs, ranges, "left", True, False,
                              checkpoint="run.pt", every=10, definition=contrast_definition(...))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qkcore import accumulator_file
from qkcore.lm.identity import model_identity


def _resume(streamer, checkpoint: Path, definition: dict, n_batches: int) -> int:
    """Load `checkpoint` into `streamer` when it exists; return how many batches it already holds."""
    if not checkpoint.exists():
        return 0
    found = accumulator_file.read(
        checkpoint, "DeltaStreamer", model=model_identity(streamer.model), contrast=definition
    )
    extra = found["extra"] or {}
    done = extra.get("batches_done")
    if not isinstance(done, int) or extra.get("n_batches") != n_batches or not 0 <= done <= n_batches:
        raise ValueError(
            f"checkpoint {checkpoint} records {done} of {extra.get('n_batches')} batches, this run has {n_batches}: "
            "delete it to start over"
        )
    streamer.load_state_dict(found["state"])
    return done


def stream_batches(
    streamer,
    tokenizer,
    prompts: Sequence,
    pairs: Sequence,
    ranges: Sequence[range],
    padding_side: str,
    add_special_tokens: bool,
    progress: bool | str = False,
    checkpoint=None,
    every: int = 10,
    definition: dict | None = None,
):
    """Add the prompts of each range in `ranges` (one batch each) to `streamer`; with `checkpoint`, resume from
    it and save to it every `every` batches and after the last. Returns the streamer."""
    from qkcore.lm.streaming import make_batch

    if checkpoint is not None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"checkpoint_every must be an int >= 1 (batches between saves), got {every!r}")
        checkpoint = accumulator_file._as_path(checkpoint, "checkpoint")
    start = _resume(streamer, checkpoint, definition, len(ranges)) if checkpoint is not None else 0
    todo = range(start, len(ranges))
    if progress:  # a bar (qkcore.progress: off under QKCORE_PROGRESS=0) over the batches still to run
        from qkcore.progress import steps

        todo = steps(todo, progress if isinstance(progress, str) else "batches")
    for i in todo:
        idx = ranges[i]
        batch = make_batch(tokenizer, [prompts[j] for j in idx], padding_side, add_special_tokens)
        streamer.add(batch, [pairs[j] for j in idx])
        done = i + 1
        if checkpoint is not None and (done % every == 0 or done == len(ranges)):
            streamer.save(checkpoint, definition, extra={"batches_done": done, "n_batches": len(ranges)})
    return streamer
