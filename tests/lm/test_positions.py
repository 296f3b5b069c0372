"""Token spans from text: multi-token words, leading spaces, chat templates, left/right padding, clear errors."""

import pytest
import torch

from qkcore.lm import encode_batch
from qkcore.lm.positions import find_substring, token_span
from qkcore.lm.tiny import TOKENIZER_KINDS, tiny_tokenizer

TEXT = "The egg is in Box A, the fan is in Box B, and the tea is in Box C. Which box is the scooter in? Box"


@pytest.fixture(scope="module", params=TOKENIZER_KINDS)
def tok(request):
    return tiny_tokenizer(request.param)


def decoded(tok, text, span, add_special_tokens=True):
    ids = tok(text, add_special_tokens=add_special_tokens)["input_ids"]
    return tok.decode(ids[span.start : span.stop]).strip()


def test_span_covers_exactly_the_word(tok):
    for word in ["egg", "fan", "scooter", "Which"]:
        span = token_span(tok, TEXT, word)
        assert decoded(tok, TEXT, span).replace(" ", "") == word
        assert TEXT[span.char_start : span.char_end] == word
    assert token_span(tok, TEXT, "The").start == 1  # after <s>; a special token never matches


@pytest.mark.parametrize("kind", ["byte_bpe", "metaspace"])
def test_multi_token_word_last_sub_token(kind):
    tok = tiny_tokenizer(kind)
    text = "The seahorse is in Box D."  # a word the tokenizers never saw: several sub-tokens
    span = token_span(tok, text, "seahorse")
    pieces = tok.convert_ids_to_tokens(tok(text)["input_ids"][span.start : span.stop])
    assert len(pieces) > 1 and "".join(pieces).lstrip("▁Ġ") == "seahorse"
    assert span.last == span.stop - 1 and span.positions == list(range(span.start, span.stop))


def test_token_merged_with_punctuation_is_an_error_unless_allowed():
    tok = tiny_tokenizer("metaspace")  # merges "▁A," into one token
    with pytest.raises(ValueError, match=r"extends beyond 'A'.*allow_partial"):
        token_span(tok, TEXT, "A")
    span = token_span(tok, TEXT, "A", allow_partial=True)
    assert tok.convert_ids_to_tokens(tok(TEXT)["input_ids"][span.start : span.stop]) == ["▁A,"]


def test_missing_and_ambiguous_substrings_are_named(tok):
    with pytest.raises(ValueError, match="'giraffe' not found"):
        token_span(tok, TEXT, "giraffe")
    with pytest.raises(ValueError, match=r"'tea' is ambiguous: it occurs 2 times"):
        token_span(tok, TEXT + " tea", "tea")
    with pytest.raises(ValueError, match="occurrence=5 does not exist"):
        token_span(tok, TEXT, "Box", occurrence=5)
    first, last = token_span(tok, TEXT, "Box", occurrence=0), token_span(tok, TEXT, "Box", occurrence=-1)
    assert first.start < last.start and last.stop == len(tok(TEXT)["input_ids"])


def test_whole_words_only_by_default():
    assert find_substring("Answer: A", "A") == (8, 9)  # not the A of "Answer"
    assert find_substring("scatter cat", "cat") == (8, 11)
    assert find_substring("scatter", "cat", whole_word=False) == (1, 4)


def test_chat_template(tok):
    text = tok.apply_chat_template([{"role": "user", "content": TEXT}], tokenize=False, add_generation_prompt=True)
    span = token_span(tok, text, "scooter", add_special_tokens=False)
    assert decoded(tok, text, span, add_special_tokens=False).replace(" ", "") == "scooter"
    with pytest.raises(ValueError, match="'user' not found"):
        token_span(tok, text, "user", add_special_tokens=False)  # only inside the special token <|user|>
    assert token_span(tok, text + " user", "user", add_special_tokens=False).start > span.start


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_spans_survive_padding(tok, padding_side):
    texts = [TEXT, "Which box is the tea in? Box", "The scooter is in Box Q. Which box is the scooter in? Box"]
    batch = encode_batch(tok, texts, padding_side=padding_side)
    for row, text in enumerate(texts):
        alone = tok(text)["input_ids"]
        span = batch.span(row, "tea" if row == 1 else "scooter", occurrence=-1)
        cols = [batch.padded(row, p) for p in span.positions]
        assert batch.input_ids[row, cols].tolist() == alone[span.start : span.stop]
        assert batch.input_ids[row, batch.padded(row, -1)].item() == alone[-1]
    with pytest.raises(ValueError, match="position 40 is out of range for prompt 1"):
        batch.padded(1, 40)


def _scan(offsets, start, end):
    """The definition: every non-empty token overlapping [start, end)."""
    return [i for i, (s, e) in enumerate(offsets) if e > s and s < end and e > start]


@pytest.mark.parametrize(
    "offsets",
    [
        ((0, 0), (0, 3), (3, 4), (4, 4), (4, 9), (9, 10), (10, 10)),  # in order, special tokens among them
        ((0, 3), (1, 3), (3, 6), (3, 6), (6, 7)),  # overlapping tokens (bytes of one character), still in order
        ((0, 3), (8, 10), (3, 8), (10, 12)),  # out of order: the index falls back to the scan
    ],
)
def test_token_index_finds_the_tokens_the_scan_finds(offsets):
    from qkcore.lm.positions import TokenIndex

    index = TokenIndex(offsets)
    for start in range(-1, 14):
        for end in range(start, 15):
            assert index.overlapping(start, end) == _scan(offsets, start, end), (start, end)


def test_token_index_on_real_encodings(tok):
    from qkcore.lm.positions import TokenIndex, char_span_to_tokens

    batch = encode_batch(tok, [TEXT, "Box A, Box B"], padding_side="left")
    for r, text in enumerate(batch.texts):
        offsets = batch.offset_mapping[r]
        index = TokenIndex(offsets)
        for m in __import__("re").finditer(r"\w+", text):
            assert index.overlapping(m.start(), m.end()) == _scan(offsets, m.start(), m.end())
            assert char_span_to_tokens(text, offsets, m.start(), m.end(), True, index=index) == char_span_to_tokens(
                text, offsets, m.start(), m.end(), True
            )
        with pytest.raises(ValueError, match="other offsets"):
            char_span_to_tokens(text, batch.offset_mapping[1 - r], 0, 3, index=index)


def test_padded_positions_are_the_padded_columns(tok):
    batch = encode_batch(tok, [TEXT, "Box A, Box B"], padding_side="left")
    positions = [[0, 3, -1, -2], [1, 0, -1, 2]]
    cols = batch.padded_positions(positions)
    assert cols.shape == (2, 4) and cols.dtype == torch.long
    assert cols.tolist() == [[batch.padded(r, p) for p in row] for r, row in enumerate(positions)]
    n = int(batch.lengths[1])
    with pytest.raises(ValueError, match=f"position {n} is out of range for prompt 1"):
        batch.padded_positions([[0], [n]])
