"""The binding model organism (paper Figures 8–10 on a CPU): its training recipe, entry point and evaluation.

A 2-layer, hidden-128, 4-head LlamaForCausalLM with the word-level tokenizer, trained from scratch on the boxes task
(`binding_task.py`). Each training sequence is one context of n pairs (2–9 objects of 70, box letters drawn from
A–Z), the paper's instruction, then n − 1 of its questions, each answered ("... Which box is the tea in? Box C.
Which box is the egg in? Box A"); the loss is on the answer letters only. Evaluation uses the paper's single
question.

Why the recipe has attention hints. In our trials on the task loss alone (up to 1,600 steps, 2–4 pairs) accuracy
stayed at chance: the first layer learns to copy every box letter into the question (loss ≈ ln n) and the second
layer's heads collapse onto punctuation, where they get no gradient. Two auxiliary losses on attention patterns,
used only during the first `hint_steps` steps and then switched off, remove that trap without naming the answer:
  - query routing: from each answer position ("Box" after "?"), layer 0's heads attend to the queried object of
    that question (3 tokens back);
  - letter reading: from the same positions, the last layer's heads put their attention on the context's box
    letters, as a group (which letter is left to the task loss).
With them accuracy goes from chance to 100% between steps 1,500 and 2,000. With the first hint alone the model
learned the task but read the binding from the token after the box letter (the comma) instead of the letter. The
loss that `train` logs includes the hints while they act.

    python -m qkcore.organisms.binding_organism                # retrain into qkcore/organisms/weights/binding
    model, tokenizer, info = load_organism(organism_dir("binding"))   # committed weights, eval, float32
    binding_accuracy(model, tokenizer, n_pairs=9)           # held-out accuracy, the paper's format
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from qkcore.organisms.binding_task import (
    INSTRUCTION,
    LETTERS,
    OBJECTS,
    PAPER_OBJECTS,
    VOCABULARY,
    context_words,
    question_words,
    sample_prompt,
)
from qkcore.organisms.llama import WEIGHTS_DIR as ORGANISMS_DIR
from qkcore.organisms.llama import OrganismConfig, build_model, load_organism, save_organism
from qkcore.organisms.trainer import TrainConfig, train
from qkcore.organisms.vocab import build_word_tokenizer

WEIGHTS_DIR = ORGANISMS_DIR / "binding"
EVAL_SEED = 10_000  # held-out prompts come from this seed (+ n_pairs), never from the training generator
INSTRUCTION_WORDS = INSTRUCTION.replace(",", " ,").replace(":", " :").split()


@dataclass(frozen=True)
class BindingRecipe:
    """Everything that determines the organism. Pairs per context are uniform in `early_pairs` for the first
    `early_steps` steps, then in `pairs`; the hint losses (weight `hint_weight`) act for the first `hint_steps`."""

    model: OrganismConfig = OrganismConfig(n_layers=2, hidden=128, n_heads=4, n_kv_heads=4, intermediate=256)
    train: TrainConfig = TrainConfig(
        steps=4000,
        lr=1e-3,
        warmup_steps=100,
        min_lr_ratio=0.1,
        weight_decay=0.01,
        betas=(0.9, 0.98),
        grad_clip=1.0,
        seed=0,
        eval_every=500,
        log_every=100,
    )
    batch_size: int = 32
    model_seed: int = 0
    early_pairs: tuple[int, int] = (2, 4)
    pairs: tuple[int, int] = (2, 9)
    early_steps: int = 1500
    hint_steps: int = 2000
    hint_weight: float = 1.0
    eval_prompts: int = 500

    def __post_init__(self) -> None:
        for name in ("early_pairs", "pairs"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi <= 20:
                raise ValueError(f"{name}={getattr(self, name)} must be (low, high) with 1 <= low <= high <= 20")
        if self.batch_size < 1 or self.eval_prompts < 1 or self.early_steps < 0 or self.hint_steps < 0:
            raise ValueError("batch_size and eval_prompts must be >= 1, early_steps and hint_steps >= 0")
        if self.hint_weight < 0:
            raise ValueError(f"hint_weight must be >= 0, got {self.hint_weight}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["model"], d["train"] = self.model.to_dict(), self.train.to_dict()
        return d


def training_words(objects: Sequence[str], letters: Sequence[str], asked: Sequence[int]) -> list[str]:
    """Context, instruction, then one answered question per index in `asked`, joined by '.'."""
    words = context_words(objects, letters) + INSTRUCTION_WORDS
    for j, i in enumerate(asked):
        words += (["."] if j else []) + question_words(objects[i]) + [letters[i]]
    return words


def training_batch(
    n_pairs: int, batch_size: int, generator: torch.Generator, vocab: dict[str, int], bos_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels), each (batch_size, T): contexts of n_pairs pairs (objects from OBJECTS, letters from
    LETTERS) with max(1, n_pairs - 1) distinct questions; labels are the answer letters, -100 elsewhere."""
    ids, labels = [], []
    for _ in range(batch_size):
        objects = [OBJECTS[i] for i in torch.randperm(len(OBJECTS), generator=generator)[:n_pairs].tolist()]
        letters = [LETTERS[i] for i in torch.randperm(len(LETTERS), generator=generator)[:n_pairs].tolist()]
        asked = torch.randperm(n_pairs, generator=generator)[: max(1, n_pairs - 1)].tolist()
        row = [bos_id] + [vocab[w] for w in training_words(objects, letters, asked)]
        label = [-100] * len(row)
        for t in range(2, len(row)):
            if row[t - 2] == vocab["?"] and row[t - 1] == vocab["Box"]:
                label[t] = row[t]  # the answer letter (HF shifts labels inside the model)
        ids.append(row)
        labels.append(label)
    return torch.tensor(ids), torch.tensor(labels)  # all rows have the same length for one n_pairs


class HintedLM(torch.nn.Module):
    """Wraps a LlamaForCausalLM for `train`: loss = task loss + hint_weight × hint losses during the first
    hint_steps training forwards (see the module docstring), task loss alone afterwards."""

    def __init__(self, model: torch.nn.Module, vocab: dict[str, int], hint_steps: int, hint_weight: float):
        super().__init__()
        self.model, self.hint_steps, self.hint_weight = model, hint_steps, hint_weight
        self.question_mark, self.box, self.respond = vocab["?"], vocab["Box"], vocab["Respond"]
        self.letter_ids = torch.tensor([vocab[c] for c in LETTERS])
        self.forwards = 0
        self.last_hint = 0.0

    def forward(self, input_ids, labels=None, attention_mask=None):
        hinting = self.training and self.forwards < self.hint_steps and self.hint_weight > 0
        if self.training:
            self.forwards += 1
        out = self.model(input_ids=input_ids, labels=labels, attention_mask=attention_mask, output_attentions=hinting)
        if not hinting:
            return out
        hint = hint_loss(input_ids, out.attentions, self.question_mark, self.box, self.respond, self.letter_ids)
        self.last_hint = float(hint.detach())
        return SimpleNamespace(loss=out.loss + self.hint_weight * hint, logits=out.logits)


def hint_loss(input_ids, attentions, question_mark: int, box: int, respond: int, letter_ids) -> torch.Tensor:
    """Mean −log attention of the two hints at the answer positions (the 'Box' after each '?').

    attentions: per layer (B, H, T, T). Query routing: layer 0, every head, weight on the token 3 back (the queried
    object). Letter reading: last layer, every head, total weight on the box letters before 'Respond'."""
    B, T = input_ids.shape
    answer = torch.zeros_like(input_ids, dtype=torch.bool)  # (B, T)
    answer[:, 1:] = (input_ids[:, :-1] == question_mark) & (input_ids[:, 1:] == box)
    b, p = answer.nonzero(as_tuple=True)
    routing = attentions[0][b, :, p, p - 3]  # (n_answers, H)
    context = torch.arange(T)[None, :] < (input_ids == respond).float().argmax(1, keepdim=True)
    letters = torch.isin(input_ids, letter_ids) & context  # (B, T)
    reading = (attentions[-1][b, :, p, :] * letters[b][:, None, :]).sum(-1)  # (n_answers, H)
    return -(routing + 1e-6).log().mean() - (reading + 1e-6).log().mean()


@torch.no_grad()
def binding_accuracy(
    model,
    tokenizer,
    n_pairs: int,
    n_prompts: int = 500,
    seed: int = EVAL_SEED,
    object_pool: Sequence[str] = PAPER_OBJECTS,
    letter_pool: Sequence[str] | None = None,
    batch_size: int = 250,
) -> float:
    """Fraction of fresh paper-format prompts (one question, no chat template) whose next-token argmax over the
    whole vocabulary is the answer letter. Default pools: the paper's objects and letters A.. (A–I for 9 pairs)."""
    g = torch.Generator().manual_seed(seed + n_pairs)
    prompts = [sample_prompt(n_pairs, g, object_pool, letter_pool) for _ in range(n_prompts)]
    vocab = tokenizer.get_vocab()
    correct = 0
    for i in range(0, n_prompts, batch_size):
        chunk = prompts[i : i + batch_size]
        ids = torch.tensor([[tokenizer.bos_token_id] + [vocab[w] for w in p.words] for p in chunk])  # (b, T)
        answers = torch.tensor([vocab[p.answer] for p in chunk])
        correct += int((model(input_ids=ids).logits[:, -1].argmax(-1) == answers).sum())
    return correct / n_prompts


@torch.no_grad()
def attention_to_answer(model, tokenizer, n_pairs: int = 9, n_prompts: int = 200, seed: int = EVAL_SEED + 1):
    """(n_layers, n_heads) mean attention from the last token to the answer box letter on paper-format prompts."""
    g = torch.Generator().manual_seed(seed)
    prompts = [sample_prompt(n_pairs, g) for _ in range(n_prompts)]
    vocab = tokenizer.get_vocab()
    ids = torch.tensor([[tokenizer.bos_token_id] + [vocab[w] for w in p.words] for p in prompts])
    answer_pos = torch.tensor([1 + p.letter_positions[p.query] for p in prompts])  # +1 for <bos>
    attn = model(input_ids=ids, output_attentions=True).attentions  # per layer (n, H, T, T)
    rows = torch.arange(n_prompts)
    return torch.stack([a[rows, :, -1, answer_pos].mean(0) for a in attn])  # (L, H)


def evaluate_binding_organism(model, tokenizer, n_prompts: int) -> dict[str, float]:
    """Held-out accuracy: the paper's format at 9 and 4 pairs, and 9 pairs drawn from all objects and letters."""
    return {
        "acc_9_pairs": binding_accuracy(model, tokenizer, 9, n_prompts),
        "acc_4_pairs": binding_accuracy(model, tokenizer, 4, n_prompts),
        "acc_9_pairs_any_words": binding_accuracy(
            model, tokenizer, 9, n_prompts, object_pool=OBJECTS, letter_pool=LETTERS
        ),
    }


def train_binding_organism(recipe: BindingRecipe = BindingRecipe(), log=print):
    """Train the organism from scratch → (model, tokenizer, info). Deterministic for a given thread count."""
    tokenizer = build_word_tokenizer(VOCABULARY)
    vocab = tokenizer.get_vocab()
    model = build_model(recipe.model, tokenizer, seed=recipe.model_seed)
    hinted = HintedLM(model, vocab, recipe.hint_steps, recipe.hint_weight)

    def batch_fn(step: int, g: torch.Generator):
        lo, hi = recipe.early_pairs if step < recipe.early_steps else recipe.pairs
        n_pairs = int(torch.randint(lo, hi + 1, (1,), generator=g))
        return training_batch(n_pairs, recipe.batch_size, g, vocab, tokenizer.bos_token_id)

    def eval_fn(m, step):
        return evaluate_binding_organism(model, tokenizer, min(recipe.eval_prompts, 200))

    start = time.perf_counter()
    history = train(hinted, batch_fn, recipe.train, eval_fn=eval_fn, log=log)
    seconds = time.perf_counter() - start
    model.eval()
    results = {
        **evaluate_binding_organism(model, tokenizer, recipe.eval_prompts),
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "final_loss": history.losses[-1]["loss"],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    results["attention_to_answer_9_pairs"] = attention_to_answer(model, tokenizer).round(decimals=3).tolist()
    info = {
        "recipe": recipe.to_dict(),
        "results": results,
        "history": history.to_dict(),
        "regenerate": "OMP_NUM_THREADS=1 python -m qkcore.organisms.binding_organism",
    }
    return model, tokenizer, info


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the binding model organism and save its weights.")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: the committed one)")
    parser.add_argument("--steps", type=int, default=None, help="override the number of training steps (trials)")
    parser.add_argument("--seed", type=int, default=None, help="override the model and batch seeds (robustness runs)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe = BindingRecipe()
    if args.steps is not None:
        recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, steps=args.steps))
    if args.seed is not None:
        recipe = dataclasses.replace(
            recipe, model_seed=args.seed, train=dataclasses.replace(recipe.train, seed=args.seed)
        )
    model, tokenizer, info = train_binding_organism(recipe)
    save_organism(args.out, model, tokenizer, info, dtype=torch.float16)
    reloaded, tok, _ = load_organism(args.out)
    after = evaluate_binding_organism(reloaded, tok, recipe.eval_prompts)
    print(
        f"saved {args.out}; held-out accuracy in float32 "
        f"{ {k: info['results'][k] for k in after} }, after the float16 round trip {after}; "
        f"trained in {info['results']['train_seconds']} s"
    )


if __name__ == "__main__":
    main()
