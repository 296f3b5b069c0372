"""The real models side by side (SmolLM2-135M-Instruct, Qwen2.5-Coder-0.5B-Instruct) on CPU: load times, the early-exit
speedup at the layers the chapters read, per-prompt capture time, and whether 1 or 2 torch threads change any bit.

load         load_model(name) from the qkcore cache (median of 2); with --cold also with an empty cache (a temporary
             QKCORE_CACHE: Qwen's six chunks assembled, then dequantised; 2–3 minutes for Qwen)
capture      gather_qk of every head of layer L at each filter prompt's last token (keys at its items), batches of 8,
             left padding, sdpa: full logits at every position / logits_to_keep=1 / logits=False (early exit after
             layer L's attention, no LM head); seconds per prompt, wall and CPU (CPU is steadier on a shared machine)
threads      the same capture (full pass, logits_to_keep=1) and ΔC over all heads (stream_delta) with 1 and with 2 torch
             threads: bit-identical or the largest difference

  .venv/bin/python benchmarks/real_models.py                            # about 4 minutes on 2 cores
  .venv/bin/python benchmarks/real_models.py --models qwen2.5-coder-0.5b-instruct --layers 15 22 --cold
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from real_model import filter_prompts, timed  # noqa: E402  (the filter prompts and timer of the SmolLM2 benchmark)

from qkcore.lm import encode_batch, gather_qk, iter_batches, load_model, stream_delta  # noqa: E402
from qkcore.lm import gguf as gguf_module  # noqa: E402
from qkcore.lm.gather import last_columns  # noqa: E402
from qkcore.lm.layout import attention_layout  # noqa: E402

LAYERS = {"smollm2-135m-instruct": (15, 22, 25), "qwen2.5-coder-0.5b-instruct": (15, 18, 22)}  # chapters' heads


def load_times(name: str, cold: bool) -> str:
    """One line: the cached load (median of 2) and, with `cold`, the load into an empty cache."""
    parts = []
    if cold:
        with tempfile.TemporaryDirectory(prefix="qkcore-bench-") as cache:
            before = os.environ.get(gguf_module.CACHE_ENV)
            os.environ[gguf_module.CACHE_ENV] = cache
            try:
                _, seconds = timed(lambda: load_model(name, progress=False))
            finally:
                if before is None:
                    del os.environ[gguf_module.CACHE_ENV]
                else:
                    os.environ[gguf_module.CACHE_ENV] = before
            parts.append(f"cold {seconds:.1f} s")
    warm = [timed(lambda: load_model(name, progress=False))[1] for _ in range(2)]
    parts.append(f"cached {statistics.median(warm):.2f} s ({', '.join(f'{s:.2f}' for s in warm)})")
    return ", ".join(parts)


def item_columns(batch, pairs) -> torch.Tensor:
    """(b, n) batch columns of every item's last token (the keys of the filter contrast)."""
    keys = [sorted(p.positive[0][1] + p.negative[0][1]) for p in pairs]
    return batch.padded_positions(keys)


def capture(model, batches, heads, **kwargs) -> tuple[list, float, float]:
    """gather_qk over the batches: ([(q, k) per batch], wall seconds, CPU seconds)."""
    cpu = []
    got, wall = timed(lambda: [gather_qk(model, b, heads, last_columns(b), cols, **kwargs) for b, cols in batches], cpu)
    return [(g.q, g.k) for g in got], wall, cpu[0]


def bench_model(name: str, layers, n_prompts: int, batch_size: int, cold: bool) -> None:
    torch.set_num_threads(2)
    print(f"\n== {name}: load {load_times(name, cold)}", flush=True)
    model, tok = load_model(name, progress=False)
    layout = attention_layout(model)
    texts, pairs = filter_prompts(tok, n_prompts)
    batches = []
    for idx in iter_batches(len(texts), batch_size):
        b = encode_batch(tok, [texts[i] for i in idx], padding_side="left")
        batches.append((b, item_columns(b, [pairs[i] for i in idx])))
    n_tok = sum(int(b.attention_mask.sum()) for b, _ in batches) / len(texts)
    print(f"{len(texts)} filter prompts, {n_tok:.0f} tokens each on average, batches of {batch_size}", flush=True)
    capture(model, batches[:1], [(0, 0)], logits=False)  # warm-up
    for layer in layers:
        heads = [(layer, h) for h in range(layout.n_heads)]
        rows = {}
        for label, kwargs in [("full", {}), ("last", {"logits_to_keep": 1}), ("early", {"logits": False})]:
            rows[label] = capture(model, batches, heads, **kwargs)
        full, last, early = rows["full"], rows["last"], rows["early"]
        same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(last[0], early[0]))
        per = {k: (v[1] / len(texts), v[2] / len(texts)) for k, v in rows.items()}
        print(
            f"L{layer} ({layer + 1}/{layout.n_layers} layers), s per prompt wall/CPU: full logits "
            f"{per['full'][0]:.3f}/{per['full'][1]:.3f}, logits_to_keep=1 {per['last'][0]:.3f}/{per['last'][1]:.3f}, "
            f"early exit {per['early'][0]:.3f}/{per['early'][1]:.3f}; early-exit speedup "
            f"{full[1] / early[1]:.2f}× wall ({full[2] / early[2]:.2f}× CPU) vs full logits, {last[1] / early[1]:.2f}× "
            f"({last[2] / early[2]:.2f}× CPU) vs logits_to_keep=1; q, k bit-identical: {same}",
            flush=True,
        )
    threads(model, tok, texts, pairs, batches, layout, layers, batch_size)


def threads(model, tok, texts, pairs, batches, layout, layers, batch_size) -> None:
    """Captured q, k (every head of `layers`) and ΔC (every head) with 1 vs 2 torch threads."""
    heads = [(layer, h) for layer in layers for h in range(layout.n_heads)]
    out = {}
    for n in (1, 2):
        torch.set_num_threads(n)
        qk, wall, _ = capture(model, batches, heads, logits_to_keep=1)
        delta, wall_dc = timed(lambda: stream_delta(model, tok, texts, pairs, "all", batch_size).delta())
        out[n] = (qk, delta, wall, wall_dc)
    torch.set_num_threads(2)
    (qk1, d1, w1, dc1), (qk2, d2, w2, dc2) = out[1], out[2]
    q_diff = max(max((a[0] - b[0]).abs().max().item(), (a[1] - b[1]).abs().max().item()) for a, b in zip(qk1, qk2))
    d_diff = (d1 - d2).abs().max().item()
    q_says = "bit-identical" if q_diff == 0 else f"differ by ≤ {q_diff:.2e}"
    d_says = "bit-identical" if d_diff == 0 else f"differ by ≤ {d_diff:.2e} (max |ΔC| {d1.abs().max().item():.3g})"
    print(
        f"threads 1 vs 2: q, k of {len(heads)} heads {q_says}; "
        f"ΔC of all {layout.n_layers * layout.n_heads} heads {d_says}; "
        f"capture {w1:.1f} s vs {w2:.1f} s ({w1 / w2:.2f}×), ΔC streaming {dc1:.1f} s vs {dc2:.1f} s "
        f"({dc1 / dc2:.2f}×)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(LAYERS))
    parser.add_argument(
        "--layers", type=int, nargs="+", default=None, help="deepest layers to time (default: per model)"
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cold", action="store_true", help="also time a load into an empty cache")
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs", flush=True)
    for name in args.models:
        bench_model(name, args.layers or LAYERS[name], args.prompts, args.batch_size, args.cold)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
