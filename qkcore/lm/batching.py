"""Batches of prompts with padding that give the same queries and keys as one prompt at a time.

Each prompt is tokenized on its own (so its tokens do not depend on its batch mates), then padded left or right.
Position ids are passed explicitly (cumulative sum of the attention mask − 1), so that with left padding the rotary
embedding sees each prompt's own positions 0..n−1, as in a one-prompt run. Positions inside a prompt are
"prompt positions" (0 = its first token, −1 = its last); `EncodedBatch.padded` converts them to batch columns.

    batch = encode_batch(tokenizer, ["The cat sat.", "A dog"], padding_side="left")
    out = run_model(model, batch)                  # model(input_ids, attention_mask, position_ids, use_cache=False)
    col = batch.padded(row=1, position=-1)         # column of prompt 1's last token
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qkcore.lm.positions import span_in_encoding, special_token_ids, text_offsets

PADDING_SIDES = ("left", "right")


@dataclass(frozen=True)
class EncodedBatch:
    """input_ids, attention_mask, position_ids: (batch, seq). lengths: (batch,) real tokens per prompt.
    offsets: (batch,) column of each prompt's first token (0 for right padding). offset_mapping: per prompt, the
    (char_start, char_end) of each token in its text, empty for special tokens (None when built from token ids)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    lengths: torch.Tensor
    offsets: torch.Tensor
    padding_side: str
    texts: tuple[str, ...] | None = None
    offset_mapping: tuple[tuple[tuple[int, int], ...], ...] | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def padded(self, row: int, position: int) -> int:
        """Batch column of prompt `row`'s token `position` (negative counts from the prompt's end)."""
        if not 0 <= row < self.size:
            raise ValueError(f"row {row} out of range for a batch of {self.size} prompts")
        n = int(self.lengths[row])
        if not -n <= position < n:
            raise ValueError(
                f"position {position} is out of range for prompt {row}, which has {n} tokens (valid: {-n}..{n - 1})"
            )
        return int(self.offsets[row]) + (position % n)

    def padded_positions(self, positions: Sequence[Sequence[int]]) -> torch.Tensor:
        """Per-row prompt positions (equal counts per row) → (batch, n) batch columns."""
        if len(positions) != self.size:
            raise ValueError(f"{len(positions)} rows of positions for a batch of {self.size} prompts")
        cols = [[self.padded(r, p) for p in row] for r, row in enumerate(positions)]
        if len({len(c) for c in cols}) > 1:
            raise ValueError("every prompt needs the same number of positions to form a (batch, n) tensor")
        return torch.tensor(cols, dtype=torch.long)

    def span(
        self,
        row: int,
        substring: str,
        occurrence: int | None = None,
        whole_word: bool = True,
        allow_partial: bool = False,
    ):
        """TokenSpan (prompt positions) of `substring` in prompt `row`'s text (see qkcore.lm.positions)."""
        if self.texts is None or self.offset_mapping is None:
            raise ValueError("this batch was built from token ids: it has no text to search (use encode_batch)")
        if not 0 <= row < self.size:
            raise ValueError(f"row {row} out of range for a batch of {self.size} prompts")
        return span_in_encoding(
            self.texts[row], self.offset_mapping[row], substring, occurrence, whole_word, allow_partial
        )

    def model_inputs(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        return {
            "input_ids": self.input_ids.to(device),
            "attention_mask": self.attention_mask.to(device),
            "position_ids": self.position_ids.to(device),
        }

    def to(self, device: torch.device | str) -> EncodedBatch:
        return EncodedBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.lengths,
            self.offsets,
            self.padding_side,
            self.texts,
            self.offset_mapping,
        )


def pad_batch(
    token_ids: Sequence[Sequence[int]],
    padding_side: str = "left",
    pad_id: int = 0,
    texts: Sequence[str] | None = None,
    offset_mapping=None,
) -> EncodedBatch:
    """Pad lists of token ids into an EncodedBatch. pad_id is irrelevant to the results (padding is masked)."""
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if isinstance(token_ids, str) or (isinstance(token_ids, torch.Tensor) and token_ids.dim() != 2):
        raise TypeError("token_ids must be a list of token-id lists (one per prompt), not one string or 1-D tensor")
    if len(token_ids) == 0:
        raise ValueError("empty batch: give at least one prompt")
    rows = []
    for r, t in enumerate(token_ids):
        try:
            row = torch.as_tensor(t if isinstance(t, torch.Tensor) else list(t))
        except (TypeError, ValueError, RuntimeError):
            row = None
        if row is not None and row.numel() == 0 and not isinstance(t, str):
            raise ValueError(f"prompt {r} has no tokens")
        if (
            row is None
            or isinstance(t, str)
            or row.dim() != 1
            or row.is_floating_point()
            or row.is_complex()
            or row.dtype == torch.bool
        ):
            raise TypeError(f"token_ids[{r}] must be a list of int token ids, got {t!r}")
        if row.numel() and row.min() < 0:
            raise ValueError(f"token_ids[{r}] contains the negative token id {int(row.min())}; ids are >= 0")
        rows.append(row.long())
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise TypeError(f"pad_id must be an int, got {pad_id!r}")
    token_ids = rows
    lengths = torch.tensor([len(t) for t in token_ids], dtype=torch.long)  # (batch,)
    if (lengths == 0).any():
        raise ValueError(f"prompt {int((lengths == 0).nonzero()[0])} has no tokens")
    seq = int(lengths.max())
    ids = torch.full((len(token_ids), seq), int(pad_id), dtype=torch.long)  # (batch, seq)
    mask = torch.zeros((len(token_ids), seq), dtype=torch.long)
    offsets = (seq - lengths) if padding_side == "left" else torch.zeros_like(lengths)
    for r, t in enumerate(token_ids):
        o = int(offsets[r])
        ids[r, o : o + len(t)] = t
        mask[r, o : o + len(t)] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp_min(0)  # (batch, seq): 0..n-1 on each prompt's own tokens
    return EncodedBatch(
        ids,
        mask,
        position_ids,
        lengths,
        offsets,
        padding_side,
        tuple(texts) if texts is not None else None,
        offset_mapping,
    )


def encode_batch(
    tokenizer, texts: Sequence[str], padding_side: str = "left", add_special_tokens: bool = True
) -> EncodedBatch:
    """Tokenize each text on its own (with character offsets) and pad. Chat-templated prompts: pass the templated
    string and add_special_tokens=False if the template already writes the BOS token."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    ids, offsets = [], []
    special = special_token_ids(tokenizer)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] must be a string, got {type(text).__name__} ({text!r:.40})")
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        ids.append(enc["input_ids"])
        offsets.append(text_offsets(enc["offset_mapping"], enc["input_ids"], special))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return pad_batch(ids, padding_side, pad, texts, tuple(offsets))


def iter_batches(n: int, batch_size: int, progress: bool | str = False) -> Iterator[range]:
    """Index ranges of consecutive batches over n items, with a tqdm bar when progress is True (or a label)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=progress if isinstance(progress, str) else "batches", unit="batch")
    for s in starts:
        yield range(s, min(n, s + batch_size))


def run_model(model: nn.Module, batch: EncodedBatch, **kwargs):
    """One forward pass of `batch` without a KV cache (on the model's device), under torch.no_grad()."""
    if not isinstance(batch, EncodedBatch):
        raise TypeError(f"batch must be an EncodedBatch (from encode_batch or pad_batch), got {type(batch).__name__}")
    embeddings = model.get_input_embeddings()
    device = embeddings.weight.device
    vocab = getattr(embeddings, "num_embeddings", None)
    ids = batch.input_ids
    if vocab is not None and ids.numel() and int(ids.max()) >= vocab:
        raise ValueError(
            f"batch.input_ids contains token id {int(ids.max())}, but the model's vocabulary "
            f"has {vocab} ids (0..{vocab - 1}): was the batch made with another model's tokenizer?"
        )
    empty = (batch.attention_mask.sum(-1) == 0).nonzero()
    if len(empty):
        raise ValueError(
            f"batch.attention_mask row {int(empty[0])} is all zeros: that prompt has no real token, so its attention "
            "rows are empty; every row needs at least one token (mask 1)"
        )
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    longest = int(batch.lengths.max()) if batch.lengths.numel() else 0
    if isinstance(limit, int) and longest > limit:
        warnings.warn(
            f"a prompt of {longest} tokens is longer than the model's max_position_embeddings ({limit}): positions "
            "beyond it were never trained (its q and k there may be meaningless)",
            stacklevel=2,
        )
    with torch.no_grad():
        return model(**batch.model_inputs(device), use_cache=False, **kwargs)
