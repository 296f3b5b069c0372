"""Word-level Hugging Face tokenizers for the project's model organisms (small LMs trained here from scratch).

One token per word or punctuation mark, so every list item, box letter or object of a task is a single token whose
position is easy to find. The result is an ordinary `PreTrainedTokenizerFast`: it saves and loads with
`save_pretrained` / `AutoTokenizer.from_pretrained`, returns offsets, and prepends `<bos>` like Llama's tokenizer.

    tok = build_word_tokenizer(vocabulary_from_texts(["Here is a list:", "- cat", "What are the fruits?"]))
    enc = tok("Here is a list:\\n- cat", return_offsets_mapping=True)   # ids start with tok.bos_token_id
    span = char_span_to_tokens(text, enc["offset_mapping"], 18, 21)      # qkcore.lm.positions: the "cat" token
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in every organism vocabulary


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Split on whitespace, then isolate every punctuation character ("list?" → "list", "?")."""
    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation("isolated")])


def vocabulary_from_texts(texts: Iterable[str]) -> list[str]:
    """Every distinct word and punctuation mark of `texts`, in order of first appearance."""
    pre = _pre_tokenizer()
    seen: dict[str, None] = {}
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            seen.setdefault(piece, None)
    return list(seen)


def build_word_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """A WordLevel tokenizer over `words` (+ <pad>, <bos>, <eos>, <unk> as ids 0–3).

    Each word must survive the pre-tokenizer as one piece (no spaces, punctuation only as a lone character), so that
    a word is exactly one token; duplicates are an error. Unknown words encode as <unk>."""
    words = list(words)
    if not words:
        raise ValueError("build_word_tokenizer needs at least one word")
    duplicates = sorted({w for w in words if words.count(w) > 1})
    if duplicates:
        raise ValueError(f"duplicate words in the vocabulary: {duplicates[:10]}; pass each word once")
    pre = _pre_tokenizer()
    for w in words:
        if w in SPECIAL_TOKENS:
            raise ValueError(f"{w!r} is a reserved special token; remove it from the word list")
        pieces = [p for p, _ in pre.pre_tokenize_str(w)]
        if pieces != [w]:
            raise ValueError(
                f"word {w!r} would be split into {pieces} by the whitespace/punctuation pre-tokenizer; "
                "give words without spaces and punctuation only as single characters"
            )
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = _pre_tokenizer()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        padding_side="right",
        model_max_length=4096,
    )
