"""Early exit (qkcore.lm.early_exit): a pass stopped after the deepest needed attention layer gives bit-identical q,
k and attention to the full pass, runs no later layer and no LM head, and leaves no hook behind; `last_logits`
computes the LM head only at each row's last token and equals the full pass's logits there (left and right padding).
Real-model timings: benchmarks/real_model.py."""

import pytest
import torch

from qkcore.lm import encode_batch, gather_qk, run_model
from qkcore.lm.early_exit import last_logits, run_until
from qkcore.lm.gather import last_columns
from qkcore.lm.tiny import tiny_model, tiny_tokenizer

TEXTS = ["The tea is in box B. The egg is in box C. Which box is the egg in?", "Find the fruits: apple, bus.", "Hi"]


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer("byte_bpe")
    vocab = len(tok)
    gemma_layers = ["sliding_attention", "full_attention"] * 2  # sliding window: a layer-type mask per layer
    return tok, {
        "llama": tiny_model("llama", num_hidden_layers=4, vocab_size=vocab),
        "qwen2": tiny_model("qwen2", num_hidden_layers=4, vocab_size=vocab),
        "gemma3": tiny_model("gemma3", num_hidden_layers=4, layer_types=gemma_layers, vocab_size=vocab),
    }


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_gather_without_logits_is_bit_identical_and_stops_early(setup, family, padding_side):
    tok, models = setup
    model = models[family]
    batch = encode_batch(tok, TEXTS, padding_side=padding_side)
    cols = torch.arange(batch.input_ids.shape[1]).expand(batch.size, -1)  # (b, S)
    ran = []
    handles = [
        layer.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, layer in enumerate(model.model.layers)
    ]
    head_calls = []
    handles.append(model.lm_head.register_forward_hook(lambda *a: head_calls.append(1)))
    try:
        for heads in ([(1, 0), (0, 1)], [(3, 1)], "all"):
            ran.clear(), head_calls.clear()
            full = gather_qk(model, batch, heads, last_columns(batch), None, attn_cols=cols)
            assert ran == [0, 1, 2, 3] and head_calls == [1]
            ran.clear(), head_calls.clear()
            early = gather_qk(model, batch, heads, last_columns(batch), None, attn_cols=cols, logits=False)
            deepest = 3 if heads == "all" else max(layer for layer, _ in heads)
            assert ran == list(range(deepest)) and head_calls == []  # layer `deepest` stops inside, after attention
            assert early.output is None and early.heads == full.heads and early.scaling == full.scaling
            assert torch.equal(early.q, full.q) and torch.equal(early.k, full.k) and torch.equal(early.attn, full.attn)
    finally:
        for h in handles:
            h.remove()
    assert not any(m._forward_hooks for m in model.modules())  # run_until's hook is gone
    run_model(model, batch)  # and the model runs whole again


def test_run_until_checks_the_layer(setup):
    tok, models = setup
    batch = encode_batch(tok, TEXTS[:1])
    for bad in (4, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"layer must be an int in 0..3"):
            run_until(models["llama"], batch, bad)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_last_logits_equal_the_full_pass_at_each_rows_last_token(setup, padding_side):
    tok, models = setup
    model = models["qwen2"]
    batch = encode_batch(tok, TEXTS, padding_side=padding_side)
    full = run_model(model, batch).logits  # (b, S, vocab)
    rows = torch.arange(batch.size)
    want = full[rows, last_columns(batch)]  # (b, vocab)
    got = last_logits(model, batch)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
