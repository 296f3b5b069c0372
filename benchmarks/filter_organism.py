"""Speed of the filter-heads pieces on this machine: training an organism, and the chapter's default run.

    python benchmarks/filter_organism.py                       # time 100 training steps of each organism and
                                                               # project the full run; time the chapter's stages
    python benchmarks/filter_organism.py --full-training       # train filter-5x5 completely (into a tmp folder)
    python benchmarks/filter_organism.py --threads 2 --skip-training

Targets: an organism trains in at most 10 minutes on 2 cores; the chapter's default run takes under 5 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from qkcore.experiments.filter_heads.analysis import FilterHeadsParams, analyse_heads, load_filter_model
from qkcore.experiments.filter_heads.intervention import swap_experiment
from qkcore.experiments.filter_heads.keys13 import run_keys_13
from qkcore.organisms.filter_organism import SPECS, train_filter_organism


def time_training(name: str, steps: int | None) -> None:
    spec = SPECS[name]
    full_steps = spec.train.steps
    if steps is not None:
        warmup = min(spec.train.warmup_steps, steps)
        spec = dataclasses.replace(
            spec, train=dataclasses.replace(spec.train, steps=steps, warmup_steps=warmup, eval_every=0), eval_prompts=20
        )
    _, _, info = train_filter_organism(spec, log=None)
    seconds = info["results"]["train_seconds"]
    per_step = seconds / spec.train.steps
    line = f"{name}: {spec.train.steps} steps in {seconds:.1f} s ({per_step:.3f} s/step)"
    if steps is not None:
        line += f"; projected full run ({full_steps} steps): {per_step * full_steps / 60:.1f} min"
    else:
        line += f"; held-out exact match {info['results']['exact_match']}"
    print(line, flush=True)


def time_chapter() -> None:
    P = FilterHeadsParams()
    stages = {}
    t = time.perf_counter()
    lm = load_filter_model(P)
    model, tok, label = lm.model, lm.tokenizer, lm.name
    stages["load"] = time.perf_counter() - t
    t = time.perf_counter()
    result = analyse_heads(model, tok, P, label)
    stages["scan + analyses + controls + PCA"] = time.perf_counter() - t
    t = time.perf_counter()
    swap_experiment(model, tok, result, P)
    stages["swaps"] = time.perf_counter() - t
    t = time.perf_counter()
    run_keys_13(P, model, tok, label)
    stages["13 categories"] = time.perf_counter() - t
    for name, s in stages.items():
        print(f"chapter stage {name:34s} {s:7.1f} s", flush=True)
    total = sum(stages.values())
    print(
        f"chapter total (without notebook start-up and plots): {total:.1f} s = {total / 60:.2f} min "
        f"(target < 5 min; ratio {total / 300:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="training steps to time per organism")
    parser.add_argument("--full-training", action="store_true", help="train filter-5x5 completely")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-chapter", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    if not args.skip_training:
        if args.full_training:
            time_training("filter-5x5", None)
        else:
            for name in SPECS:
                time_training(name, args.steps)
    if not args.skip_chapter:
        time_chapter()


if __name__ == "__main__":
    main()
