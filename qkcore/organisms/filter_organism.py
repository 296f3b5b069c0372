"""The filter-task model organisms: their specifications, training, and the committed weights (Figures 6–7 on CPU).

Two organisms, each a 3-layer, hidden-128, 4-head LlamaForCausalLM with a word-level tokenizer:
  filter-5x5  the paper's 5 categories × 5 items; half the training prompts list all 25 items (the paper's format),
              half list 1–5 items per category (so the 1-among-20 intervention prompts are in distribution).
  filter-13   13 categories (the paper's 5 + 8 of ours); each prompt lists 5 of them, same item counts as above.

    python -m qkcore.organisms.filter_organism filter-5x5            # retrain into qkcore/organisms/weights/
    model, tokenizer, info = load_organism(organism_dir("filter-5x5"))   # the committed weights (eval, float32)
    info["results"]["exact_match"]                                   # held-out accuracy measured after training
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from qkcore.organisms.filter_task import (
    ALL_CATEGORY_NAMES,
    PAPER_CATEGORY_NAMES,
    FilterTask,
    FilterTaskConfig,
    exact_match,
)
from qkcore.organisms.llama import WEIGHTS_DIR, OrganismConfig, build_model, load_organism, save_organism
from qkcore.organisms.trainer import TrainConfig, train
from qkcore.organisms.vocab import build_word_tokenizer

EVAL_SEED_OFFSET = 10_000  # held-out prompts come from seed + this, never from the training generator


@dataclass(frozen=True)
class FilterOrganismSpec:
    """Everything that determines an organism: task, architecture, optimisation, batch size, seeds."""

    name: str
    task: FilterTaskConfig
    model: OrganismConfig = OrganismConfig()
    train: TrainConfig = TrainConfig()
    batch_size: int = 64
    model_seed: int = 0
    eval_prompts: int = 500

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "task": self.task.to_dict(),
            "model": self.model.to_dict(),
            "train": self.train.to_dict(),
            "batch_size": self.batch_size,
            "model_seed": self.model_seed,
            "eval_prompts": self.eval_prompts,
        }


SPECS: dict[str, FilterOrganismSpec] = {
    "filter-5x5": FilterOrganismSpec(
        name="filter-5x5",
        task=FilterTaskConfig(categories=PAPER_CATEGORY_NAMES),
        train=TrainConfig(steps=1000, lr=3e-3, warmup_steps=100, seed=0, eval_every=500, log_every=100),
    ),
    "filter-13": FilterOrganismSpec(
        name="filter-13",
        task=FilterTaskConfig(categories=ALL_CATEGORY_NAMES, listed=5),
        train=TrainConfig(steps=1500, lr=3e-3, warmup_steps=100, seed=0, eval_every=500, log_every=100),
    ),
}


def held_out_sets(spec: FilterOrganismSpec, n: int | None = None) -> dict[str, list]:
    """Fresh prompts from an independent seed: the paper's full lists, the varied lists of training, and the
    1-item-among-20 intervention prompts."""
    task = FilterTask(spec.task)
    n = spec.eval_prompts if n is None else n
    g = torch.Generator().manual_seed(spec.train.seed + EVAL_SEED_OFFSET)
    return {
        "full": task.sample(n, g, full=True),
        "varied": task.sample(n, g, full=False),
        "single": task.sample_single_positive(n, g),
    }


def evaluate_filter_organism(model, tokenizer, sets: dict[str, list]) -> dict[str, float]:
    """Exact-match accuracy on each held-out set."""
    return {name: exact_match(model, tokenizer, prompts) for name, prompts in sets.items()}


def train_filter_organism(spec: FilterOrganismSpec, log=print):
    """Train one organism from scratch → (model, tokenizer, info). Deterministic for a given thread count."""
    task = FilterTask(spec.task)
    tokenizer = build_word_tokenizer(task.vocabulary())
    model = build_model(spec.model, tokenizer, seed=spec.model_seed)
    sets = held_out_sets(spec)

    def batch_fn(step: int, g: torch.Generator):
        return task.batch(task.sample(spec.batch_size, g), tokenizer)

    start = time.perf_counter()
    history = train(
        model, batch_fn, spec.train, eval_fn=lambda m, s: evaluate_filter_organism(m, tokenizer, sets), log=log
    )
    info = {
        "spec": spec.to_dict(),
        "results": {
            "exact_match": history.final_eval,
            "train_seconds": round(time.perf_counter() - start, 1),
            "threads": torch.get_num_threads(),
            "final_loss": history.losses[-1]["loss"],
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "history": history.to_dict(),
        "regenerate": f"OMP_NUM_THREADS=1 python -m qkcore.organisms.filter_organism {spec.name}",
    }
    return model, tokenizer, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train a filter-task model organism and save its weights.")
    parser.add_argument("name", choices=sorted(SPECS))
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the committed weights')")
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps (trials)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    spec = SPECS[args.name]
    if args.steps is not None:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, steps=args.steps))
    model, tokenizer, info = train_filter_organism(spec)
    out = args.out or WEIGHTS_DIR / args.name
    save_organism(out, model, tokenizer, info, dtype=torch.float16)
    reloaded, tok, _ = load_organism(out)
    after = evaluate_filter_organism(reloaded, tok, held_out_sets(spec))
    print(
        f"saved {out}; held-out exact match in float32 {info['results']['exact_match']}, after the float16 "
        f"round trip {after}; trained in {info['results']['train_seconds']} s"
    )


if __name__ == "__main__":
    main()
