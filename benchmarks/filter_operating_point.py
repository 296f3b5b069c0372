"""The filter chapter's operating point on a chat model: how often the first answer token is in the asked category,
for a few ways of beginning the assistant's answer (the chapter's `answer_prefix`), against a random list item.

The prompts are the chapter's own (qkcore.experiments.filter_heads: the paper's format, 5 categories × 5 items, asked
categories in turn, seed 0), encoded as the chapter encodes them (chat template, then the prefix), scored as it scores
them (`first_answer_accuracy`: the top next token begins an item of the asked category). Also: how often that token
begins the list's first item (a copy-from-the-top bias), and the accuracy on prompts whose first item is not asked.

  .venv/bin/python benchmarks/filter_operating_point.py --model qwen2.5-coder-0.5b-instruct --prompts 40
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch

from qkcore.experiments.filter_heads.analysis import delta_prompts, first_answer_accuracy
from qkcore.experiments.filter_heads.vectors import encode_filter_prompts
from qkcore.lm import iter_batches, load_model
from qkcore.lm.early_exit import last_logits
from qkcore.organisms.filter_task import PAPER_CATEGORY_NAMES

PREFIXES = (
    "",
    "The {plural} in the list are:",
    "The {plural} in the list are:\n-",
    "The {plural} in the list are:\n\n1.",
)


def first_tokens(tokenizer, word: str) -> set[int]:
    """The first token of `word` written alone and after a space."""
    return {ids[0] for ids in (tokenizer(w, add_special_tokens=False)["input_ids"] for w in (word, " " + word)) if ids}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prefixes", nargs="+", default=list(PREFIXES))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    model, tok = load_model(args.model, progress=False)
    prompts = delta_prompts(PAPER_CATEGORY_NAMES, args.prompts, torch.Generator().manual_seed(0))
    chance = sum(p.positive.count(True) for p in prompts) / sum(len(p.items) for p in prompts)
    print(f"{args.model}: {len(prompts)} prompts, chance (a random list item in the asked category) {chance:.2f}")
    for prefix in args.prefixes:
        start = time.perf_counter()
        top = torch.zeros(len(prompts), dtype=torch.long)
        for idx in iter_batches(len(prompts), args.batch_size):
            batch, _ = encode_filter_prompts(tok, [prompts[i] for i in idx], prefix)
            top[list(idx)] = last_logits(model, batch).argmax(-1)  # (b,)
        acc = first_answer_accuracy(top, prompts, tok)
        first_item = [int(top[i]) in first_tokens(tok, p.items[0]) for i, p in enumerate(prompts)]
        any_item = [int(top[i]) in set().union(*(first_tokens(tok, w) for w in p.items)) for i, p in enumerate(prompts)]
        not_first = [i for i, p in enumerate(prompts) if not p.positive[0]]
        acc_nf = first_answer_accuracy(top[not_first], [prompts[i] for i in not_first], tok)
        words = [tok.decode(int(t)) for t in top[:6]]
        print(
            f"prefix {prefix!r}: first answer token in the asked category {acc:.2f} (chance {chance:.2f}); "
            f"begins some list item {sum(any_item) / len(prompts):.2f}; begins the list's first item "
            f"{sum(first_item) / len(prompts):.2f}; right when the first item is not asked {acc_nf:.2f} "
            f"({len(not_first)} prompts); e.g. {words}; {time.perf_counter() - start:.0f} s",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB → GB
    print(f"peak resident memory {peak:.2f} GB; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
