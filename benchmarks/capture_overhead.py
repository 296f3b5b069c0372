"""Cost of streaming every head's ΔC (qkcore.lm) against the bare forward pass and the eager output_attentions route.

Three ways through the same batches (filter-head style pairs: query = last token, 5 positive and 20 negative keys):
  bare     model(input_ids, attention_mask, position_ids) with sdpa, no capture
  capture  DeltaStreamer(model, heads="all").add(batch, pairs): the same forward + every head's pairs into ΔC
  eager    the same forward with attn_implementation="eager" and output_attentions=True
Targets: capture ≤ 1.15× bare on CPU, ≤ 1.2× bare on GPU. All three modes pass logits_to_keep=1 (ΔC needs no
logits), so each is the same forward pass.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/capture_overhead.py            # CPU (about 1 minute on 1 core)
    .venv/bin/python benchmarks/capture_overhead.py --gpu                         # also Llama-3.1-8B-shaped, bf16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from qkcore.lm import DeltaStreamer, PromptPairs, pad_batch
from qkcore.lm.batching import run_model

# Llama-3.1-8B's published config (meta-llama/Llama-3.1-8B-Instruct, config.json); weights random here.
LLAMA31_8B = dict(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=131072,
    rms_norm_eps=1e-5,
    hidden_act="silu",
    tie_word_embeddings=False,
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=128000,
    eos_token_id=128009,
    rope_parameters={
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
)
CPU_LLAMA = dict(
    vocab_size=1024,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=1024,
)


def make_batches(n_batches: int, batch_size: int, length: int, vocab: int, seed: int = 0):
    """Random prompts of `length` ± 10% tokens (so that padding occurs) with 5 positive and 20 negative keys each."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        lengths = torch.randint(int(length * 0.9), int(length * 1.1) + 1, (batch_size,), generator=g)
        prompts = [torch.randint(0, vocab, (int(n),), generator=g).tolist() for n in lengths]
        pairs = []
        for n in lengths.tolist():
            keys = torch.randperm(n - 1, generator=g)[:25].tolist()
            pairs.append(PromptPairs(positive=[(-1, keys[:5])], negative=[(-1, keys[5:])]))
        out.append((pad_batch(prompts, "left"), pairs))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def clock(device) -> float:
    """GPU: wall time. CPU: this process's CPU time, which other jobs on a shared machine do not inflate (the
    benchmark runs single-threaded by default, so CPU time is the compute time)."""
    return time.perf_counter() if device.type == "cuda" else time.process_time()


def time_modes(modes: dict, batches, device, repeats: int) -> dict:
    """Median seconds per pass through all batches for each mode; modes interleaved so that drift hits all alike."""
    times = {name: [] for name in modes}
    for fn, setup in modes.values():  # warm-up
        setup()
        fn(batches[0])
    peaks = {}
    for _ in range(repeats):
        for name, (fn, setup) in modes.items():
            setup()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t0 = clock(device)
            for b in batches:
                fn(b)
            sync(device)
            times[name].append(clock(device) - t0)
            if device.type == "cuda":
                peaks[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return {**{name: statistics.median(t) for name, t in times.items()}, **peaks}


def bench(config: dict, dtype, device, n_batches: int, batch_size: int, length: int, repeats: int) -> dict:
    cfg = transformers.LlamaConfig(**config)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa", dtype=dtype).eval()
    batches = make_batches(n_batches, batch_size, length, cfg.vocab_size)
    batches = [(b.to(device), p) for b, p in batches]
    streamer = DeltaStreamer(model, heads="all")

    def sdpa():
        model.set_attn_implementation("sdpa")

    def eager_impl():
        model.set_attn_implementation("eager")

    modes = {
        "bare": (lambda bp: run_model(model, bp[0], logits_to_keep=1), sdpa),
        "capture": (lambda bp: streamer.add(*bp), sdpa),
        "eager": (lambda bp: run_model(model, bp[0], logits_to_keep=1, output_attentions=True), eager_impl),
    }
    result = {
        "heads": len(streamer.heads),
        "prompts": n_batches * batch_size,
        **time_modes(modes, batches, device, repeats),
    }
    assert torch.isfinite(streamer.delta()).all()
    return result


def report(title: str, r: dict, target: float) -> None:
    n = r["prompts"]
    unit = "s wall" if "bare_peak_gib" in r else "s CPU "
    print(f"\n{title}: {n} prompts per pass, capture of all {r['heads']} heads into ΔC")
    for mode in ("bare", "capture", "eager"):
        mem = f"   peak {r[mode + '_peak_gib']:.1f} GiB" if mode + "_peak_gib" in r else ""
        print(f"  {mode:8s} {r[mode]:8.3f} {unit} {n / r[mode]:8.1f} prompts/s   {r[mode] / r['bare']:.3f}× bare{mem}")
    ratio = r["capture"] / r["bare"]
    print(f"  capture / bare = {ratio:.3f} (target ≤ {target}): {'met' if ratio <= target else 'NOT met'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gpu", action="store_true", help="also run the Llama-3.1-8B-shaped GPU benchmark")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} CPU thread(s)")
    cpu = bench(
        CPU_LLAMA, torch.float32, torch.device("cpu"), n_batches=4, batch_size=8, length=128, repeats=args.repeats
    )
    report("CPU, random Llama (hidden 256, 4 layers, 8 heads / 2 KV heads, fp32), 128-token prompts", cpu, 1.15)
    if not args.gpu:
        return
    if not torch.cuda.is_available():
        print(
            "\nGPU benchmark skipped: no CUDA device here (torch.cuda.is_available() is False). Run this "
            "script with --gpu on a GPU machine with about 40 GiB free."
        )
        return
    gpu = bench(
        LLAMA31_8B, torch.bfloat16, torch.device("cuda"), n_batches=4, batch_size=16, length=300, repeats=args.repeats
    )
    report(f"GPU ({torch.cuda.get_device_name()}), random Llama-3.1-8B config, bf16, 16 × ~300-token prompts", gpu, 1.2)


if __name__ == "__main__":
    main()
