"""Throughput of all-heads ΔC streaming in 1 and 2 processes (torch.distributed, gloo on CPU), and the merge cost.

The same random Llama as benchmarks/capture_overhead.py (hidden 256, 4 layers, GQA 8/2, d_head 32: 32 heads) streams
filter-head style pairs (query = last token, 5 positive and 20 negative keys) from N prompts of ~128 tokens, each
process with one torch thread:
  1 process   stream_delta over all prompts
  2 processes torchrun --nproc_per_node 2: stream_delta_distributed, each rank half the batches, then the all-reduce
              of the float64 sums and rank 0's write of the result file
  merge       ContrastiveCovariance.merge of two all-heads accumulators, and DeltaStreamer.save + load of one

    .venv/bin/python benchmarks/distributed.py                  # about 1 minute on 2 cores (--prompts 128)

Prints prompts/s for each, the 2-process speed-up (ideal 2.0 on 2 free cores) and the merge cost against one batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from qkcore.lm import DeltaStreamer, PromptPairs, stream_delta

CONFIG = dict(
    vocab_size=1024,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=32,
    max_position_embeddings=1024,
)


def workload(n_prompts: int, seed: int = 0):
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**CONFIG)).eval()
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, 1024, (int(n),), generator=g).tolist() for n in torch.randint(120, 136, (n_prompts,))]
    pairs = [PromptPairs(positive=[(-1, list(range(5, 10)))], negative=[(-1, list(range(10, 30)))]) for _ in prompts]
    return model, prompts, pairs


def worker(args) -> None:
    """One rank of the 2-process run (started by torchrun); rank 0 prints its wall time as JSON."""
    import torch.distributed as dist

    from qkcore.lm.distributed import stream_delta_distributed

    torch.set_num_threads(1)
    model, prompts, pairs = workload(args.prompts)
    dist.init_process_group("gloo")
    dist.barrier()
    t0 = time.perf_counter()
    stream_delta_distributed(model, None, prompts, pairs, batch_size=args.batch_size, out=args.out)
    seconds = time.perf_counter() - t0
    if dist.get_rank() == 0:
        print(json.dumps({"seconds": seconds}))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    torch.set_num_threads(1)
    model, prompts, pairs = workload(args.prompts)
    stream_delta(model, None, prompts[:8], pairs[:8], batch_size=args.batch_size)  # warm-up
    t0 = time.perf_counter()
    one = stream_delta(model, None, prompts, pairs, batch_size=args.batch_size)
    t_one = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dc.pt"
        t0 = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
             "--worker", "--prompts", str(args.prompts), "--batch-size", str(args.batch_size), "--out", str(out)],
            capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
        )  # fmt: skip
        t_launch = time.perf_counter() - t0
        if run.returncode != 0:
            sys.exit(run.stderr[-3000:])
        t_two = json.loads(run.stdout.strip().splitlines()[-1])["seconds"]
        two = DeltaStreamer.load(out, model)
    diff = float((two.delta() - one.delta()).abs().max() / one.delta().abs().max())

    a, b = DeltaStreamer(model), DeltaStreamer(model)
    a.load_state_dict(one.state_dict()), b.load_state_dict(one.state_dict())
    repeats = 20
    t0 = time.perf_counter()
    for _ in range(repeats):
        a.acc.merge(b.acc)
    t_merge = (time.perf_counter() - t0) / repeats
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        one.save(Path(tmp) / "dc.pt")
        DeltaStreamer.load(Path(tmp) / "dc.pt", model)
        t_file = time.perf_counter() - t0
    n_batches = -(-args.prompts // args.batch_size)
    per_batch = t_one / n_batches
    n_heads = len(one.heads)
    mib = sum(t.numel() for t in one.acc._tensors().values()) * 8 / 2**20

    print(
        f"all-heads ΔC ({n_heads} heads, d_head 32), {args.prompts} prompts of ~128 tokens, "
        f"batches of {args.batch_size}"
    )
    print(f"  1 process : {t_one:6.2f} s  {args.prompts / t_one:6.1f} prompts/s")
    print(
        f"  2 processes (gloo): {t_two:6.2f} s  {args.prompts / t_two:6.1f} prompts/s  "
        f"speed-up {t_one / t_two:.2f}x  (with torchrun start-up and imports: {t_launch:.1f} s)"
    )
    print(f"  2 processes vs 1: max |ΔC difference| / max |ΔC| = {diff:.1e} (float64 summation order)")
    print(
        f"  merge of two accumulators ({mib:.2f} MiB float64): {t_merge * 1e3:.3f} ms = "
        f"{t_merge / per_batch:.2e} of one batch ({per_batch * 1e3:.0f} ms); save + load {t_file * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
