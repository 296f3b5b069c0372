"""The filter task of the paper's filter-head experiments (Figures 6–7; Sen Sharma et al. 2025's "filter heads"):
a list of items from several categories, then a question about one category; the answer is that category's items.

One prompt, walked through (5 categories × 5 items, the paper's format; newlines shown as they are written):

    Here is a list:
    - pear
    - bus
    ... (all 25 items of the 5 categories, shuffled)
    Respond in single words, only the answers and nothing else: What are the fruits in the list? Answer:

and the answer is " pear peach apple grape plum" (the fruits, in list order), then end of sequence. The query vector
is read at the last prompt token (":"), the keys at each item's last token.

    task = FilterTask(FilterTaskConfig(categories=PAPER_CATEGORY_NAMES))
    prompts = task.sample(100, torch.Generator().manual_seed(0))        # list[FilterPrompt]
    ids, labels = task.batch(prompts, tokenizer)                        # (B, T), (B, T) with -100 off the answer
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from qkcore.organisms.vocab import vocabulary_from_texts

# The paper's 5 categories × 5 items (PAPER.md, "Filter heads").
PAPER_CATEGORIES: dict[str, tuple[str, ...]] = {
    "animal": ("cat", "dog", "horse", "cow", "pig"),
    "fruit": ("apple", "pear", "peach", "plum", "grape"),
    "liquid": ("beer", "tea", "soda", "water", "coffee"),
    "vehicle": ("car", "bus", "truck", "bike", "scooter"),
    "country": ("USA", "Canada", "UK", "Australia", "India"),
}
# Eight more for the 13-category variant of the talk (whose categories are not published; these are ours).
EXTRA_CATEGORIES: dict[str, tuple[str, ...]] = {
    "color": ("red", "blue", "green", "yellow", "purple"),
    "vegetable": ("carrot", "potato", "onion", "lettuce", "pea"),
    "instrument": ("piano", "guitar", "violin", "drum", "flute"),
    "tool": ("hammer", "saw", "wrench", "drill", "shovel"),
    "clothing": ("shirt", "hat", "coat", "sock", "scarf"),
    "sport": ("soccer", "tennis", "golf", "hockey", "rugby"),
    "profession": ("doctor", "teacher", "lawyer", "nurse", "pilot"),
    "city": ("Paris", "London", "Tokyo", "Berlin", "Rome"),
}
CATEGORIES: dict[str, tuple[str, ...]] = {**PAPER_CATEGORIES, **EXTRA_CATEGORIES}
PLURALS: dict[str, str] = {
    "animal": "animals",
    "fruit": "fruits",
    "liquid": "liquids",
    "vehicle": "vehicles",
    "country": "countries",
    "color": "colors",
    "vegetable": "vegetables",
    "instrument": "instruments",
    "tool": "tools",
    "clothing": "clothes",
    "sport": "sports",
    "profession": "professions",
    "city": "cities",
}
PAPER_CATEGORY_NAMES: tuple[str, ...] = tuple(PAPER_CATEGORIES)
ALL_CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)

HEADER = "Here is a list:"
INSTRUCTION = "Respond in single words, only the answers and nothing else:"
QUESTION = "What are the {plural} in the list? Answer:"


@dataclass(frozen=True)
class FilterPrompt:
    """One filter prompt: `text` ends with "Answer:"; items[i] belongs to item_categories[i] and occupies characters
    item_spans[i] = (start, end) of `text`; `answer` lists the asked category's items in list order."""

    text: str
    items: tuple[str, ...]
    item_categories: tuple[str, ...]
    item_spans: tuple[tuple[int, int], ...]
    asked: str

    @property
    def answer(self) -> tuple[str, ...]:
        return tuple(i for i, c in zip(self.items, self.item_categories) if c == self.asked)

    @property
    def positive(self) -> tuple[bool, ...]:
        """Per item: does it belong to the asked category (a positive key for ΔC of that category)?"""
        return tuple(c == self.asked for c in self.item_categories)


def render_prompt(items: list[str], categories: list[str], asked: str, instruction: bool = True) -> FilterPrompt:
    """Write the prompt text for a given item order and asked category, recording each item's character span."""
    if asked not in PLURALS:
        raise ValueError(f"unknown category {asked!r}; known: {sorted(PLURALS)}")
    if asked not in categories:
        raise ValueError(f"the asked category {asked!r} has no item in the list")
    text, spans = HEADER, []
    for item in items:
        text += "\n- "
        spans.append((len(text), len(text) + len(item)))
        text += item
    text += "\n" + (INSTRUCTION + " " if instruction else "") + QUESTION.format(plural=PLURALS[asked])
    return FilterPrompt(text, tuple(items), tuple(categories), tuple(spans), asked)


@dataclass(frozen=True)
class FilterTaskConfig:
    """categories: names from CATEGORIES; listed: how many of them appear in one prompt (all by default);
    min_items/max_items: items shown per listed category; full_fraction: share of prompts that show every listed
    category with max_items items (the paper's format); instruction: include the "Respond in single words..."
    sentence. The asked category is drawn uniformly among the listed ones."""

    categories: tuple[str, ...] = PAPER_CATEGORY_NAMES
    listed: int | None = None
    min_items: int = 1
    max_items: int = 5
    full_fraction: float = 0.5
    instruction: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "categories", tuple(self.categories))
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown or len(set(self.categories)) != len(self.categories) or len(self.categories) < 2:
            raise ValueError(f"categories must be ≥ 2 distinct names from {list(CATEGORIES)}; bad: {unknown}")
        listed = len(self.categories) if self.listed is None else self.listed
        if not 2 <= listed <= len(self.categories):
            raise ValueError(f"listed={self.listed} must be in [2, {len(self.categories)}] (or None for all)")
        if not 1 <= self.min_items <= self.max_items <= 5:
            raise ValueError(f"need 1 <= min_items <= max_items <= 5, got {self.min_items}, {self.max_items}")
        if not 0.0 <= self.full_fraction <= 1.0:
            raise ValueError(f"full_fraction must be in [0, 1], got {self.full_fraction}")

    @property
    def n_listed(self) -> int:
        return len(self.categories) if self.listed is None else self.listed

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["categories"] = list(self.categories)
        return d


class FilterTask:
    """Seeded sampler of filter prompts and their training batches (the caller owns the torch.Generator)."""

    def __init__(self, config: FilterTaskConfig):
        self.config = config

    def vocabulary(self) -> list[str]:
        """Every word the task can write: template words, all items, the plurals of the categories."""
        texts = [HEADER, "-", INSTRUCTION, QUESTION.format(plural="x")]
        texts += [PLURALS[c] for c in self.config.categories]
        texts += [item for c in self.config.categories for item in CATEGORIES[c]]
        return [w for w in vocabulary_from_texts(texts) if w != "x"]

    def sample(
        self, n: int, generator: torch.Generator, asked: str | None = None, full: bool | None = None
    ) -> list[FilterPrompt]:
        """n prompts. asked: force the asked category (None = uniform among the listed); full: force the paper's
        format (True: every listed category with max_items items) or a varied list (False); None = draw it."""
        cfg = self.config
        if asked is not None and asked not in cfg.categories:
            raise ValueError(f"asked={asked!r} is not one of this task's categories {cfg.categories}")
        prompts = []
        for _ in range(n):
            is_full = bool(torch.rand((), generator=generator) < cfg.full_fraction) if full is None else full
            others = [c for c in cfg.categories if c != asked]
            order = torch.randperm(len(others), generator=generator).tolist()
            listed = [others[i] for i in order[: cfg.n_listed - (asked is not None)]]
            if asked is not None:
                listed.append(asked)
            which = asked if asked is not None else listed[int(torch.randint(len(listed), (), generator=generator))]
            items, cats = [], []
            for c in listed:
                k = (
                    cfg.max_items
                    if is_full
                    else int(torch.randint(cfg.min_items, cfg.max_items + 1, (), generator=generator))
                )
                chosen = torch.randperm(5, generator=generator)[:k].tolist()
                items += [CATEGORIES[c][j] for j in chosen]
                cats += [c] * k
            perm = torch.randperm(len(items), generator=generator).tolist()
            prompts.append(render_prompt([items[i] for i in perm], [cats[i] for i in perm], which, cfg.instruction))
        return prompts

    def sample_single_positive(self, n: int, generator: torch.Generator, n_others: int = 20) -> list[FilterPrompt]:
        """The intervention prompts of Figure 7: 1 item of the asked category among n_others items of the others
        (drawn without replacement from the other listed categories' items), shuffled."""
        cfg = self.config
        prompts = []
        for _ in range(n):
            order = torch.randperm(len(cfg.categories), generator=generator).tolist()
            listed = [cfg.categories[i] for i in order[: cfg.n_listed]]
            asked, others = listed[0], listed[1:]
            pool = [(item, c) for c in others for item in CATEGORIES[c]]
            if n_others > len(pool):
                raise ValueError(f"n_others={n_others} exceeds the {len(pool)} items of the other listed categories")
            chosen = [pool[i] for i in torch.randperm(len(pool), generator=generator)[:n_others].tolist()]
            chosen.append((CATEGORIES[asked][int(torch.randint(5, (), generator=generator))], asked))
            perm = torch.randperm(len(chosen), generator=generator).tolist()
            prompts.append(
                render_prompt([chosen[i][0] for i in perm], [chosen[i][1] for i in perm], asked, cfg.instruction)
            )
        return prompts

    @staticmethod
    def batch(prompts: list[FilterPrompt], tokenizer: PreTrainedTokenizerBase) -> tuple[torch.Tensor, torch.Tensor]:
        """Training tensors: prompt + " " + answer words + <eos>, right-padded. input_ids (B, T); labels (B, T) =
        input_ids on the answer words and <eos>, -100 elsewhere (prompt and padding)."""
        prompt_ids = tokenizer([p.text for p in prompts], add_special_tokens=True)["input_ids"]
        answer_ids = tokenizer([" ".join(p.answer) for p in prompts], add_special_tokens=False)["input_ids"]
        rows = [(pi, ai + [tokenizer.eos_token_id]) for pi, ai in zip(prompt_ids, answer_ids)]
        width = max(len(pi) + len(ai) for pi, ai in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)  # (B, T)
        for b, (pi, ai) in enumerate(rows):
            ids[b, : len(pi) + len(ai)] = torch.tensor(pi + ai)
            labels[b, len(pi) : len(pi) + len(ai)] = torch.tensor(ai)
        return ids, labels


@torch.no_grad()
def exact_match(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[FilterPrompt], batch_size: int = 100
) -> float:
    """Share of prompts whose whole answer (items in list order, then <eos>) the model gets right. Teacher-forced
    argmax at every answer position: all correct ⇔ greedy decoding writes exactly the answer and stops."""
    if not prompts:
        raise ValueError("exact_match needs at least one prompt")
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(prompts), batch_size):
        ids, labels = FilterTask.batch(prompts[i : i + batch_size], tokenizer)
        logits = model(input_ids=ids).logits  # (B, T, vocab)
        pred = logits[:, :-1].argmax(-1)  # prediction for position t+1
        target = labels[:, 1:]
        ok = (pred == target) | (target == -100)
        correct += int(ok.all(-1).sum())
    model.train(was_training)
    return correct / len(prompts)
