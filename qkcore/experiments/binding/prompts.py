"""Binding prompts (qkcore.organisms.binding_task) through any tokenizer and model: token positions of the box
letters, and one capture pass per batch that returns the query at the last token, the keys of the boxes, the head's
attention on them and the model's choice among the prompt's letters (paper Figures 8–10).

The query is the prompt's last token (the organism: "Box"; a chat model: the last token of the assistant's
generation prompt, as in the authors' code). A box's key is read at its letter's last token (the paper), or
`key_offset` tokens after it: a small model may read the letter from the "," or "." that follows it.

    enc = encode_binding_prompts(tokenizer, prompts, chat=False)         # enc.keys (b, n_pairs) batch columns
    vec = capture_binding(model, enc, heads=[(2, 1)], attention=True)
    vec.q (H, b, d), vec.k (H, b, n_pairs, d), vec.attn (H, b, n_pairs), vec.choice (b,) clause the model picks
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qkcore.experiments.swap_engine import EncodedTask
from qkcore.lm import encode_batch
from qkcore.lm.batching import EncodedBatch
from qkcore.lm.chat import model_text
from qkcore.lm.gather import gather_qk
from qkcore.lm.positions import TokenIndex, char_span_to_tokens
from qkcore.organisms.binding_task import BindingPrompt


@dataclass(frozen=True)
class EncodedPrompts:
    """A left-padded batch and, per prompt, the batch columns of its box letters, keys and last token.

    letters (b, n_pairs): column of clause i's box letter (its last token); keys = letters + key_offset: where the
    box's key is read; last (b,): the query's column; answer (b,): the clause asked about; letter_ids (b, n_pairs):
    the token id that says each clause's letter as an answer."""

    prompts: tuple[BindingPrompt, ...]
    batch: EncodedBatch
    letters: torch.Tensor
    keys: torch.Tensor
    last: torch.Tensor
    answer: torch.Tensor
    letter_ids: torch.Tensor

    @property
    def size(self) -> int:
        return len(self.prompts)

    @property
    def task(self) -> EncodedTask:
        """The shared encoded task (qkcore.experiments.swap_engine): query = the last token, candidates = the box
        keys, labels = each box's clause index."""
        labels = torch.arange(self.keys.shape[1]).expand_as(self.keys).clone()  # (b, n_pairs)
        return EncodedTask(self.batch, self.last, self.keys, labels)


def answer_token_id(tokenizer, letter: str, chat: bool, answer_prefix: str = "") -> int:
    """The first token of the model's answer `letter`: "A" right after a chat template's generation prompt, " A"
    after a final "Box" (the plain prompt's, or an answer begun "The tea is in Box"; the word-level organism
    tokenizer reads both as "A")."""
    spaced = not chat or bool(answer_prefix)
    ids = tokenizer((" " + letter if spaced else letter), add_special_tokens=False)["input_ids"]
    if not ids or ids[0] == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"the tokenizer has no token for the box letter {letter!r}")
    return int(ids[0])


def answer_text(answer_prefix: str, prompt: BindingPrompt) -> str:
    """The assistant's answer begun: `answer_prefix` with "{object}" replaced by the queried object ("" = none)."""
    return answer_prefix.replace("{object}", prompt.query_object)


def encode_binding_prompts(
    tokenizer, prompts: Sequence[BindingPrompt], chat: bool, key_offset: int = 0, answer_prefix: str = ""
) -> EncodedPrompts:
    """Tokenize prompts (inside the chat template when chat, the answer begun with `answer_prefix`, e.g. "The
    {object} is in Box") and locate their box letters' tokens and keys."""
    if not prompts:
        raise ValueError("no prompts to encode")
    if len({p.n_pairs for p in prompts}) != 1:
        raise ValueError("all prompts of a batch must have the same number of pairs")
    texts, shifts = zip(*(model_text(tokenizer, p.text, chat, answer_text(answer_prefix, p)) for p in prompts))
    batch = encode_batch(tokenizer, list(texts), padding_side="left", add_special_tokens=not chat)
    letters, ids = [], []
    answer_ids = {
        x: answer_token_id(tokenizer, x, chat, answer_prefix) for x in sorted({x for p in prompts for x in p.letters})
    }
    for r, p in enumerate(prompts):
        offsets = batch.offset_mapping[r]
        index = TokenIndex(offsets)  # one index for the prompt's letters
        spans = [
            char_span_to_tokens(texts[r], offsets, s + shifts[r], e + shifts[r], index=index) for s, e in p.letter_spans
        ]
        letters.append([batch.padded(r, sp.last) for sp in spans])
        ids.append([answer_ids[x] for x in p.letters])
    last = torch.tensor([batch.padded(r, -1) for r in range(len(prompts))])  # (b,)
    answer = torch.tensor([p.query for p in prompts])  # (b,)
    letters = torch.tensor(letters)  # (b, n_pairs)
    keys = letters + key_offset
    if key_offset and not ((keys >= torch.as_tensor(batch.offsets)[:, None]).all() and (keys < last[:, None]).all()):
        raise ValueError(f"key_offset={key_offset} moves a key outside its prompt or onto the query token")
    return EncodedPrompts(tuple(prompts), batch, letters, keys, last, answer, torch.tensor(ids))


@dataclass(frozen=True)
class BindingVectors:
    """What one capture pass returns for heads[i]: q[i] (b, d) at the last token, k[i] (b, n_pairs, d) at the box
    keys (float32, CPU), attn[i] (b, n_pairs) the last token's attention on each key and clause_attn[i] (b, 6) on the
    answer clause's tokens at letter offsets −4…+1 (object, "is", "in", "Box", letter, "," for the organism; None
    unless asked); choice (b,) the clause whose letter the model's next-token logits rank first among the prompt's
    letters (None when not asked for)."""

    heads: tuple[tuple[int, int], ...]
    q: torch.Tensor
    k: torch.Tensor
    attn: torch.Tensor | None
    clause_attn: torch.Tensor | None
    choice: torch.Tensor | None


CLAUSE_OFFSETS = (-4, -3, -2, -1, 0, 1)  # tokens of "egg is in Box A ," around the letter (the organism's words)


def capture_binding(
    model: nn.Module,
    enc: EncodedPrompts,
    heads: Sequence[tuple[int, int]],
    attention: bool = False,
    choice: bool = True,
) -> BindingVectors:
    """One forward pass of `enc.batch` (qkcore.lm.gather_qk), capturing post-rotary q and k of `heads` (in order).
    choice=False: the model's answer is not wanted (BindingVectors.choice is None), so the pass stops after the
    deepest head's layer (early exit: the same vectors, less compute)."""
    heads = tuple(tuple(h) for h in heads)
    rows = torch.arange(enc.size)
    attn_cols = None
    if attention:
        answer_letter = enc.letters[rows, enc.answer]  # (b,)
        near = answer_letter[:, None] + torch.tensor(CLAUSE_OFFSETS)  # (b, 6)
        attn_cols = torch.cat([enc.keys, near.clamp(0, enc.batch.input_ids.shape[1] - 1)], 1)  # (b, n_pairs + 6)
    if choice:
        got = gather_qk(model, enc.batch, heads, enc.last, enc.keys, attn_cols=attn_cols, logits_to_keep=1)
        logits = got.output.logits[:, -1].float().cpu()  # (b, vocab): left padding, the last column is the query
        top = logits.gather(1, enc.letter_ids).argmax(-1)  # (b,)
    else:
        got = gather_qk(model, enc.batch, heads, enc.last, enc.keys, attn_cols=attn_cols, logits=False)
        top = None
    n_keys = enc.keys.shape[1]
    return BindingVectors(
        heads,
        got.q,
        got.k,
        got.attn[..., :n_keys] if attention else None,
        got.attn[..., n_keys:] if attention else None,
        top,
    )
