"""Token positions of a substring (a list item, a box letter) through the tokenizer's character offsets (paper
Figures 6–10 take keys at an item's last sub-token and queries at the prompt's last token).

A substring is found in the text (whole words by default, so "A" does not match inside "Answer"; never inside a
special token such as "<|user|>"); the tokens whose character spans overlap it form its span. This handles
multi-token words, tokenizers that fold the leading space into the token ("Ġcat", "▁cat"), special tokens and chat
templates (search the templated string). A missing or ambiguous substring is an error naming it; pick an occurrence
explicitly when a word appears more than once.

    span = token_span(tokenizer, text, "scooter")      # TokenSpan(start=11, stop=13): tokens 11 and 12
    span.last                                           # 12, the item's last sub-token
    batch.span(row, "tea", occurrence=-1)               # the same on a row of an EncodedBatch (prompt positions)
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

Offsets = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class TokenSpan:
    """Tokens start..stop-1 (prompt positions) cover the substring at characters char_start..char_end-1."""

    start: int
    stop: int
    char_start: int
    char_end: int

    @property
    def last(self) -> int:
        return self.stop - 1

    @property
    def positions(self) -> list[int]:
        return list(range(self.start, self.stop))


def special_token_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokenizer's special tokens, including added special tokens such as chat-template markers, but not
    the unknown token (it stands for real text)."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for i, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(i))
    ids.discard(getattr(tokenizer, "unk_token_id", None))
    return frozenset(ids)


def text_offsets(
    offsets: Offsets, token_ids: Sequence[int], special_ids: frozenset[int]
) -> tuple[tuple[int, int], ...]:
    """Offsets with special tokens blanked to empty spans, so that text inside "<|user|>" is never a match."""
    return tuple((int(e), int(e)) if t in special_ids else (int(s), int(e)) for (s, e), t in zip(offsets, token_ids))


def find_substring(
    text: str, substring: str, occurrence: int | None = None, whole_word: bool = True, offsets: Offsets | None = None
) -> tuple[int, int]:
    """Character span (start, end) of `substring` in `text`. occurrence=None requires exactly one match;
    an int picks one (0 = first, -1 = last). whole_word: the match may not touch a letter or digit on either side.
    With token offsets given, matches not fully covered by tokens (inside special tokens) are ignored."""
    if not substring:
        raise ValueError("substring is empty")
    pattern = re.escape(substring)
    if whole_word:
        pattern = rf"(?<![^\W_]){pattern}(?![^\W_])"
    starts = [m.start() for m in re.finditer(f"(?=({pattern}))", text)]
    if offsets is not None:
        covered = [False] * len(text)
        for s, e in offsets:
            covered[s:e] = [True] * (e - s)
        starts = [s for s in starts if all(covered[s : s + len(substring)])]
    where = f"{text[:60]!r}{'…' if len(text) > 60 else ''}"
    if not starts:
        kind = "as a whole word " if whole_word else ""
        raise ValueError(f"substring {substring!r} not found {kind}in the text {where}")
    if occurrence is None:
        if len(starts) > 1:
            raise ValueError(
                f"substring {substring!r} is ambiguous: it occurs {len(starts)} times (at characters "
                f"{starts}) in {where}; pass occurrence=i (0 = first, -1 = last)"
            )
        occurrence = 0
    if not -len(starts) <= occurrence < len(starts):
        raise ValueError(
            f"substring {substring!r} occurs {len(starts)} times, so occurrence={occurrence} does not exist"
        )
    start = starts[occurrence]
    return start, start + len(substring)


class TokenIndex:
    """One text's token offsets indexed for many span lookups (`char_span_to_tokens(..., index=)`): a prompt's
    items are looked up one after another, and scanning every token for each was a second of the filter chapter's
    quick run. When the non-empty offsets are in order (starts and ends non-decreasing, as tokenizers write them)
    the overlapping tokens are found by bisection; otherwise by the same scan. Either way the same tokens."""

    def __init__(self, offsets: Offsets):
        self.offsets = offsets
        live = [(s, e, i) for i, (s, e) in enumerate(offsets) if e > s]  # special tokens (empty offsets) never match
        self._starts = [s for s, _, _ in live]
        self._ends = [e for _, e, _ in live]
        self._ids = [i for _, _, i in live]
        self._ordered = all(a <= b for a, b in zip(self._starts, self._starts[1:])) and all(
            a <= b for a, b in zip(self._ends, self._ends[1:])
        )

    def overlapping(self, char_start: int, char_end: int) -> list[int]:
        """The tokens whose offsets overlap [char_start, char_end), in order."""
        if not self._ordered:
            return _overlapping(self.offsets, char_start, char_end)
        # ends in order: e > char_start from `lo` on; starts in order: s < char_end before `hi`
        lo, hi = bisect_right(self._ends, char_start), bisect_left(self._starts, char_end)
        return self._ids[lo:hi]


def _overlapping(offsets: Offsets, char_start: int, char_end: int) -> list[int]:
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < char_end and e > char_start]


def char_span_to_tokens(
    text: str,
    offsets: Offsets,
    char_start: int,
    char_end: int,
    allow_partial: bool = False,
    index: TokenIndex | None = None,
) -> TokenSpan:
    """The tokens whose offsets overlap [char_start, char_end). Special tokens (empty offsets) never match.
    A token that also covers non-space characters outside the span is an error unless allow_partial. `index`: a
    TokenIndex of these offsets, for many lookups in one text (the same answer, faster)."""
    if index is not None and index.offsets is not offsets:
        raise ValueError("index was built from other offsets than the ones passed: build it with TokenIndex(offsets)")
    hits = index.overlapping(char_start, char_end) if index is not None else _overlapping(offsets, char_start, char_end)
    piece = text[char_start:char_end]
    if not hits:
        raise ValueError(
            f"no token covers characters {char_start}..{char_end} ({piece!r}); were the offsets "
            "computed on this exact text?"
        )
    if hits != list(range(hits[0], hits[-1] + 1)):
        raise ValueError(f"the tokens covering {piece!r} are not contiguous: {hits}")
    if not allow_partial:
        for i in (hits[0], hits[-1]):
            s, e = offsets[i]
            outside = text[s:char_start] + text[char_end:e]
            if outside.strip():
                raise ValueError(
                    f"token {i} ({text[s:e]!r}) extends beyond {piece!r}: the tokenizer merges it with "
                    f"{outside.strip()!r}; pass allow_partial=True to accept that token"
                )
    return TokenSpan(hits[0], hits[-1] + 1, char_start, char_end)


def span_in_encoding(
    text: str,
    offsets: Offsets,
    substring: str,
    occurrence: int | None = None,
    whole_word: bool = True,
    allow_partial: bool = False,
) -> TokenSpan:
    """Token span of `substring` given a text and its tokens' offsets (from return_offsets_mapping=True, special
    tokens blanked with `text_offsets`)."""
    cs, ce = find_substring(text, substring, occurrence, whole_word, offsets)
    return char_span_to_tokens(text, offsets, cs, ce, allow_partial)


def token_span(
    tokenizer,
    text: str,
    substring: str,
    occurrence: int | None = None,
    whole_word: bool = True,
    add_special_tokens: bool = True,
    allow_partial: bool = False,
) -> TokenSpan:
    """Token span of `substring` in `tokenizer(text, add_special_tokens=...)` (a fast tokenizer, for offsets)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer; character offsets need one "
            "(AutoTokenizer.from_pretrained(..., use_fast=True))"
        )
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    offsets = text_offsets(enc["offset_mapping"], enc["input_ids"], special_token_ids(tokenizer))
    return span_in_encoding(text, offsets, substring, occurrence, whole_word, allow_partial)
