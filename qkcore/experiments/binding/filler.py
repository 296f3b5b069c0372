"""Clause index apart from absolute position (issue 14): in the paper's prompts every clause has the same length, so
clause i's box letter always sits at the same token and "which clause" cannot be told from "which position". Filler
words between clauses, a random number per gap, move each clause by a random amount, so that a decoder of the
clause index from the keys can be set beside one of the position alone.

    p = sample_prompt(9, g)
    f = with_filler(p, [0, 2, 1, 0, 3, 0, 0, 1], FILLER_WORDS, g)   # gap i: words after clause i's ","
    f.letter_positions                       # shifted; f.text reads "The egg is in Box A, and only the fan is ..."
    fs = filler_prompts(prompts, max_filler=4, generator=g)        # a random filler per gap and prompt

The filler words come from the binding vocabulary (the organism's word-level tokenizer knows them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from qkcore.organisms.binding_task import BindingPrompt, join_words

FILLER_WORDS = ("and", "only", "one", "word")


def with_filler(
    prompt: BindingPrompt, gaps: Sequence[int], words: Sequence[str], generator: torch.Generator
) -> BindingPrompt:
    """The prompt with gaps[i] filler words (drawn from `words`) after clause i's closing "," (n_pairs − 1 gaps)."""
    n = prompt.n_pairs
    if len(gaps) != n - 1 or any(int(k) < 0 for k in gaps):
        raise ValueError(f"need {n - 1} gap lengths ≥ 0 for {n} clauses, got {list(gaps)}")
    ends = [prompt.letter_positions[i] + 1 for i in range(n - 1)]  # the "," closing clause i
    out: list[str] = []
    new_index = []  # old word index → new word index
    for i, w in enumerate(prompt.words):
        new_index.append(len(out))
        out.append(w)
        if i in ends:
            k = int(gaps[ends.index(i)])
            picks = torch.randint(len(words), (k,), generator=generator).tolist() if k else []
            out += [words[j] for j in picks]
    text, spans = join_words(out)
    letters = tuple(new_index[i] for i in prompt.letter_positions)
    objects = tuple(new_index[i] for i in prompt.object_positions)
    query = new_index[prompt.query_position]
    return replace(
        prompt,
        words=tuple(out),
        text=text,
        letter_positions=letters,
        object_positions=objects,
        query_position=query,
        letter_spans=tuple(spans[i] for i in letters),
        object_spans=tuple(spans[i] for i in objects),
        query_span=spans[query],
    )


def filler_prompts(
    prompts: Sequence[BindingPrompt],
    max_filler: int,
    generator: torch.Generator,
    words: Sequence[str] = FILLER_WORDS,
) -> list[BindingPrompt]:
    """Each prompt with 0…max_filler filler words (uniform, independent) in each gap between clauses."""
    if max_filler < 0:
        raise ValueError(f"max_filler must be ≥ 0, got {max_filler}")
    out = []
    for p in prompts:
        gaps = torch.randint(max_filler + 1, (p.n_pairs - 1,), generator=generator).tolist()
        out.append(with_filler(p, gaps, words, generator))
    return out


def position_alone_accuracy(positions: np.ndarray, clauses: np.ndarray) -> float:
    """How often the clause is the most common clause at its absolute position (in-sample, an upper bound on what
    position alone tells): the bar a decoder of the clause from keys must clear to show order beyond position."""
    positions, clauses = np.asarray(positions), np.asarray(clauses)
    hits = 0
    for pos in np.unique(positions):
        at = clauses[positions == pos]
        hits += np.bincount(at).max()
    return hits / len(clauses)


def remove_position_means(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """x (n, r) minus the mean of x over the rows at the same absolute position: what is left is beyond position."""
    x, positions = np.asarray(x, dtype=float).copy(), np.asarray(positions)
    for pos in np.unique(positions):
        at = positions == pos
        x[at] -= x[at].mean(0)
    return x
