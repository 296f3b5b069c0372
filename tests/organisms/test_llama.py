"""The organism base: word-level tokenizer, Llama build/save/load, seeded trainer."""

import pytest
import torch

from qkcore.lm.positions import char_span_to_tokens
from qkcore.organisms.llama import OrganismConfig, build_model, load_organism, save_organism
from qkcore.organisms.trainer import TrainConfig, learning_rate, train
from qkcore.organisms.vocab import build_word_tokenizer, vocabulary_from_texts

TEXT = "Here is a list:\n- cat\n- USA\nWhat are the fruits in the list? Answer: cat"
TINY = OrganismConfig(n_layers=1, hidden=16, n_heads=2, n_kv_heads=1, intermediate=32, max_positions=32)


def test_tokenizer_words_offsets_and_specials():
    tok = build_word_tokenizer(vocabulary_from_texts([TEXT]))
    enc = tok(TEXT, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert ids[0] == tok.bos_token_id == 1 and tok.pad_token_id == 0 and tok.eos_token_id == 2
    assert tok.unk_token_id not in ids
    start = TEXT.index("USA")
    span = char_span_to_tokens(TEXT, offsets, start, start + 3)
    assert span.stop == span.start + 1 and tok.convert_ids_to_tokens(ids[span.last]) == "USA"
    assert tok.convert_ids_to_tokens(tok("fruits?")["input_ids"]) == ["<bos>", "fruits", "?"]
    assert tok("zebra")["input_ids"][1] == tok.unk_token_id


def test_tokenizer_rejects_bad_words():
    with pytest.raises(ValueError, match="split"):
        build_word_tokenizer(["two words"])
    with pytest.raises(ValueError, match="duplicate"):
        build_word_tokenizer(["cat", "cat"])
    with pytest.raises(ValueError, match="reserved"):
        build_word_tokenizer(["<pad>"])


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        OrganismConfig(hidden=30, n_heads=4)
    with pytest.raises(ValueError, match="multiple"):
        OrganismConfig(n_heads=4, n_kv_heads=3)


def test_build_is_seeded_and_save_load_roundtrip(tmp_path):
    tok = build_word_tokenizer(vocabulary_from_texts([TEXT]))
    a, b = build_model(TINY, tok, seed=3), build_model(TINY, tok, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(build_model(TINY, tok, seed=4).lm_head.weight, a.lm_head.weight)
    save_organism(tmp_path, a, tok, {"note": "x"}, dtype=torch.float32)
    model, tok2, info = load_organism(tmp_path)
    assert info == {"note": "x"} and tok2(TEXT)["input_ids"] == tok(TEXT)["input_ids"]
    x = torch.tensor([tok(TEXT)["input_ids"]])
    torch.testing.assert_close(model(x).logits, a.eval()(x).logits)
    assert model.config.num_key_value_heads == 1 and model.config._attn_implementation == "eager"


def _copy_task(vocab: int):
    """Sequences a b c a b c over word ids 4..vocab-1: loss only on the repeated half."""

    def batch_fn(step, g):
        first = torch.randint(4, vocab, (16, 4), generator=g)  # (B, 4)
        ids = torch.cat([torch.full((16, 1), 1), first, first], 1)  # (B, 9)
        labels = ids.clone()
        labels[:, :5] = -100
        return ids, labels

    return batch_fn


def test_trainer_learns_and_is_deterministic():
    tok = build_word_tokenizer([f"w{i}" for i in range(8)])
    cfg = TrainConfig(steps=60, lr=1e-2, warmup_steps=5, seed=1, eval_every=30, log_every=10)
    runs = []
    for _ in range(2):
        model = build_model(TINY, tok, seed=0)
        hist = train(model, _copy_task(len(tok)), cfg, eval_fn=lambda m, s: {"s": s})
        runs.append((hist, model.lm_head.weight.detach().clone()))
    (h1, w1), (h2, w2) = runs
    assert torch.equal(w1, w2) and h1.losses == h2.losses
    assert h1.losses[-1]["loss"] < 0.5 * h1.losses[0]["loss"]
    assert [e["step"] for e in h1.evals] == [30.0, 60.0]


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(0, cfg) == pytest.approx(0.1) and learning_rate(9, cfg) == pytest.approx(1.0)
    assert learning_rate(10, cfg) == pytest.approx(1.0) and learning_rate(99, cfg) == pytest.approx(0.1)


def test_trainer_rejects_bad_batches():
    tok = build_word_tokenizer(["a"])
    model = build_model(TINY, tok, seed=0)
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="no label"):
        train(model, lambda s, g: (ids, torch.full_like(ids, -100)), TrainConfig(steps=1, warmup_steps=0))
    with pytest.raises(ValueError, match="must both be"):
        train(model, lambda s, g: (ids, ids[:, :2]), TrainConfig(steps=1, warmup_steps=0))
