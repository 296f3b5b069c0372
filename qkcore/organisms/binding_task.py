"""The boxes binding task of the paper's Figures 8–10, as seeded prompt generators with token positions.

A prompt binds n objects to n box letters, then asks for one object's box (PAPER.md, "Binding"):

    The egg is in Box A, the fan is in Box B, and the tea is in Box C. Respond in one word, only the answer and
    nothing else: Which box is the tea in? Box        → answer "C"

Every prompt records where its box letters and objects are, both as word indices (the organism's word-level tokens,
before <bos>) and as character spans of `text` (for any tokenizer, through its offset mapping). The two contrasts:
- order ID (`order_id_prompts`): the queried object is always the same word, at a uniformly random clause; positive
  key = the answer box letter, negatives = the other box letters of the same prompt.
- lexical ID (`lexical_pairs`): a prompt and its counterfactual, in which the queried object (in its clause and in
  the question) is replaced by an object the prompt does not use; the box letters and positions stay the same.

    gen = torch.Generator().manual_seed(0)
    p = sample_prompt(9, gen)                       # p.text, p.answer, p.letter_positions, p.letter_spans
    pairs = lexical_pairs(100, 9, gen)              # [(prompt, counterfactual), ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# The paper's objects and boxes (9 pairs), and further household words that prompts can use or leave "unused".
PAPER_OBJECTS = ("egg", "fan", "tea", "engine", "plate", "gift", "wire", "watch", "cross")
EXTRA_OBJECTS = (
    "cup",
    "lamp",
    "book",
    "spoon",
    "fork",
    "knife",
    "bowl",
    "chair",
    "clock",
    "key",
    "coin",
    "ring",
    "sock",
    "shoe",
    "hat",
    "brush",
    "comb",
    "soap",
    "towel",
    "pillow",
    "blanket",
    "candle",
    "mirror",
    "vase",
    "bottle",
    "jar",
    "pen",
    "pencil",
    "stamp",
    "battery",
    "bulb",
    "radio",
    "phone",
    "camera",
    "ball",
    "doll",
    "kite",
    "map",
    "shell",
    "stone",
    "rope",
    "glove",
    "scarf",
    "belt",
    "wallet",
    "ticket",
    "button",
    "needle",
    "hammer",
    "nail",
    "tape",
    "bell",
    "basket",
    "bucket",
    "kettle",
    "pan",
    "mug",
    "tray",
    "sponge",
    "broom",
    "ladder",
)
OBJECTS = PAPER_OBJECTS + EXTRA_OBJECTS
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
INSTRUCTION = "Respond in one word, only the answer and nothing else:"
TEMPLATE_WORDS = (
    "The",
    "the",
    "is",
    "in",
    "Box",
    ",",
    "and",
    ".",
    "Respond",
    "one",
    "word",
    "only",
    "answer",
    "nothing",
    "else",
    ":",
    "Which",
    "box",
    "?",
)
VOCABULARY = TEMPLATE_WORDS + OBJECTS + LETTERS  # every word a binding prompt can contain (organism tokenizer)

_NO_SPACE_BEFORE = {",", ".", ":", "?"}


@dataclass(frozen=True)
class BindingPrompt:
    """One prompt. `objects[i]` is in box `letters[i]`; the question asks for clause `query`.

    words: the prompt as words and punctuation marks (one organism token each; the tokenizer adds <bos> in front).
    letter_positions / object_positions: word index of each clause's box letter / object; query_position: word index
    of the object named in the question (the last word is "Box", index len(words) - 1). *_spans: the same as
    [start, end) character spans of `text`."""

    objects: tuple[str, ...]
    letters: tuple[str, ...]
    query: int
    words: tuple[str, ...]
    text: str
    letter_positions: tuple[int, ...]
    object_positions: tuple[int, ...]
    query_position: int
    letter_spans: tuple[tuple[int, int], ...]
    object_spans: tuple[tuple[int, int], ...]
    query_span: tuple[int, int]

    @property
    def n_pairs(self) -> int:
        return len(self.objects)

    @property
    def answer(self) -> str:
        """The box letter of the queried object (the word the model should say next)."""
        return self.letters[self.query]

    @property
    def query_object(self) -> str:
        return self.objects[self.query]


def context_words(objects: Sequence[str], letters: Sequence[str]) -> list[str]:
    """'The egg is in Box A , the fan is in Box B , and the cross is in Box C .' as words."""
    n = len(objects)
    words: list[str] = []
    for i, (obj, letter) in enumerate(zip(objects, letters)):
        if i == n - 1 and n > 1:
            words.append("and")
        words += ["The" if i == 0 else "the", obj, "is", "in", "Box", letter, "." if i == n - 1 else ","]
    return words


def question_words(obj: str) -> list[str]:
    """'Which box is the tea in ? Box' as words: the answer letter is the next word."""
    return ["Which", "box", "is", "the", obj, "in", "?", "Box"]


def join_words(words: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """Text with single spaces between words and none before , . : ? — and each word's [start, end) span."""
    text, spans = "", []
    for w in words:
        if text and w not in _NO_SPACE_BEFORE:
            text += " "
        spans.append((len(text), len(text) + len(w)))
        text += w
    return text, spans


def make_prompt(objects: Sequence[str], letters: Sequence[str], query: int) -> BindingPrompt:
    """The prompt that puts objects[i] in box letters[i] and asks for objects[query]."""
    objects, letters = tuple(objects), tuple(letters)
    n = len(objects)
    if n < 1 or len(letters) != n:
        raise ValueError(f"need as many letters as objects (at least 1), got {n} objects and {len(letters)} letters")
    if len(set(objects)) != n or len(set(letters)) != n:
        raise ValueError(f"objects and letters must be distinct within a prompt, got {objects} and {letters}")
    unknown = [w for w in objects if w not in OBJECTS] + [w for w in letters if w not in LETTERS]
    if unknown:
        raise ValueError(f"{unknown} are not binding objects/letters; use words from OBJECTS and LETTERS")
    if not 0 <= query < n:
        raise ValueError(f"query must index a clause (0..{n - 1}), got {query}")
    ctx = context_words(objects, letters)
    words = ctx + INSTRUCTION.replace(",", " ,").replace(":", " :").split() + question_words(objects[query])
    text, spans = join_words(words)
    clause_starts = [i for i, w in enumerate(ctx) if w in ("The", "the")]
    object_positions = tuple(s + 1 for s in clause_starts)
    letter_positions = tuple(s + 5 for s in clause_starts)
    query_position = len(words) - 4
    return BindingPrompt(
        objects=objects,
        letters=letters,
        query=query,
        words=tuple(words),
        text=text,
        letter_positions=letter_positions,
        object_positions=object_positions,
        query_position=query_position,
        letter_spans=tuple(spans[i] for i in letter_positions),
        object_spans=tuple(spans[i] for i in object_positions),
        query_span=spans[query_position],
    )


def _choose(pool: Sequence[str], k: int, generator: torch.Generator) -> list[str]:
    """k distinct items of pool in random order."""
    if k > len(pool):
        raise ValueError(f"cannot draw {k} distinct items from a pool of {len(pool)}")
    return [pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist()]


def _check(n_pairs: int, object_pool: Sequence[str], letter_pool: Sequence[str]) -> None:
    if not isinstance(n_pairs, int) or not 1 <= n_pairs <= min(len(object_pool), len(letter_pool)):
        raise ValueError(
            f"n_pairs={n_pairs!r} must be an int between 1 and the pool sizes "
            f"({len(object_pool)} objects, {len(letter_pool)} letters)"
        )


def sample_prompt(
    n_pairs: int,
    generator: torch.Generator,
    object_pool: Sequence[str] = PAPER_OBJECTS,
    letter_pool: Sequence[str] | None = None,
) -> BindingPrompt:
    """A prompt in the paper's style: n_pairs objects drawn from object_pool and n_pairs box letters drawn from
    letter_pool (default: the first n_pairs letters, A–I for 9 pairs), both shuffled; a uniformly random query."""
    letter_pool = LETTERS[:n_pairs] if letter_pool is None else letter_pool
    _check(n_pairs, object_pool, letter_pool)
    objects = _choose(object_pool, n_pairs, generator)
    letters = _choose(letter_pool, n_pairs, generator)
    query = int(torch.randint(n_pairs, (1,), generator=generator))
    return make_prompt(objects, letters, query)


def order_id_prompts(
    n_prompts: int,
    n_pairs: int,
    generator: torch.Generator,
    query_object: str = "tea",
    object_pool: Sequence[str] = PAPER_OBJECTS,
    letter_pool: Sequence[str] | None = None,
) -> list[BindingPrompt]:
    """Prompts for the order-ID contrast: each asks for `query_object`, placed at a uniformly random clause; the other
    objects come from object_pool without it, letters as in `sample_prompt`."""
    letter_pool = LETTERS[:n_pairs] if letter_pool is None else letter_pool
    others = [o for o in object_pool if o != query_object]
    if query_object not in OBJECTS:
        raise ValueError(f"query_object={query_object!r} is not one of OBJECTS")
    _check(n_pairs, [query_object, *others], letter_pool)
    prompts = []
    for _ in range(n_prompts):
        objects = _choose(others, n_pairs - 1, generator)
        query = int(torch.randint(n_pairs, (1,), generator=generator))
        objects.insert(query, query_object)
        prompts.append(make_prompt(objects, _choose(letter_pool, n_pairs, generator), query))
    return prompts


def counterfactual(prompt: BindingPrompt, replacement: str) -> BindingPrompt:
    """The same prompt with the queried object replaced by `replacement` in its clause and in the question."""
    if replacement in prompt.objects:
        raise ValueError(f"replacement {replacement!r} is already in the prompt; choose an unused object")
    objects = list(prompt.objects)
    objects[prompt.query] = replacement
    return make_prompt(objects, prompt.letters, prompt.query)


def lexical_pairs(
    n_pairs_of_prompts: int,
    n_pairs: int,
    generator: torch.Generator,
    object_pool: Sequence[str] = PAPER_OBJECTS,
    unused_pool: Sequence[str] = EXTRA_OBJECTS,
    letter_pool: Sequence[str] | None = None,
) -> list[tuple[BindingPrompt, BindingPrompt]]:
    """(prompt, counterfactual) pairs for the lexical contrast: the counterfactual's queried object is an object from
    unused_pool that the prompt does not contain; everything else (letters, positions, other objects) is equal."""
    pairs = []
    for _ in range(n_pairs_of_prompts):
        prompt = sample_prompt(n_pairs, generator, object_pool, letter_pool)
        free = [o for o in unused_pool if o not in prompt.objects]
        if not free:
            raise ValueError("unused_pool has no object outside the prompt; give more unused objects")
        pairs.append((prompt, counterfactual(prompt, _choose(free, 1, generator)[0])))
    return pairs
