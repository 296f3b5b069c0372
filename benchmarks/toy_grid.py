"""Benchmark: the 36-model toy grid (r₁, r₂ ∈ {3,5,7} × binary/gaussian × d_head ∈ {16, 8}) trained in one batched
run and analysed (ΔC_z₁, ΔC_z₂ from 80 × 512 triples each, ranks), with its untrained and early-stopped controls, as
the rank-recovery chapter runs it. Target (issue 17): at most 40 s wall on 2 idle cores.

    .venv/bin/python benchmarks/toy_grid.py            # --alone 2

Prints seconds per model and in total (wall clock, and CPU time of this process: on a machine shared with other
jobs the CPU time is what the run would take alone), whether every d_head = 16 model recovered (r₁, r₂) exactly
and came within a point of its ceiling, and, for comparison, the time of training `--alone` models one at a time
with the same settings (extrapolated to 36). The heads train on one torch thread, as in the chapters
(qkcore.experiments.chapter says why), while `qkcore.toy.train.SAMPLER_THREADS` (2) threads draw the batches (the
drawing was 60% of the time) and stack them into reused buffers (`StackedPrefetcher`). The load average is printed
beside the times: on a shared machine the wall clock overstates what 2 idle cores would take, and the CPU time (all
threads) bounds it from below at CPU / 2.
"""

import argparse
import os
import time

from qkcore.experiments.chapter import start_chapter
from qkcore.experiments.toy.rank_recovery import RankRecoveryParams, run_rank_recovery
from qkcore.toy.train import train_one


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alone", type=int, default=2, help="models trained one at a time for the comparison")
    args = parser.parse_args()
    start_chapter()  # one thread, as the rank-recovery chapter runs
    params = RankRecoveryParams()
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_rank_recovery(params)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    table = result.table
    n = len(table)
    d16 = table[table.d_head == 16]
    print(
        f"{n} models, {params.max_steps} steps max, batch 256, ΔC from "
        f"{params.contrast_batches} x {params.contrast_batch_size} triples per factor"
    )
    print(f"train    {result.train_seconds:7.1f} s  ({result.train_seconds / n:.2f} s per model)")
    print(f"analyse  {result.analysis_seconds:7.1f} s  ({result.analysis_seconds / n:.2f} s per model)")
    print(
        f"total    {total:7.1f} s wall ({total / n:.2f} s per model; target <= 40 s on 2 idle cores); "
        f"CPU time {cpu:.1f} s, all threads ({cpu / n:.2f} s per model); load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"d_head 16: exact ranks {int(d16.exact.sum())}/{len(d16)}; "
        f"largest gap to the ceiling {(d16.reference - d16.accuracy).max():.4f} "
        f"(binary: exact Bayes ceiling; gaussian: ideal single head)"
    )
    if args.alone:
        start, cpu_start = time.perf_counter(), time.process_time()
        for r1, r2, kind in [(3, 5, "binary"), (7, 7, "gaussian"), (5, 3, "binary")][: args.alone]:
            train_one(r1, r2, kind, 16, seed=params.seed, config=params.train_config())
        alone = (time.perf_counter() - start) / args.alone
        alone_cpu = (time.process_time() - cpu_start) / args.alone
        print(
            f"one at a time: {alone:.1f} s per model (CPU {alone_cpu:.1f} s) -> {36 * alone:.0f} s for 36; "
            f"the batched grid trains {36 * alone / result.train_seconds:.1f}x faster"
        )


if __name__ == "__main__":
    main()
