"""Streaming ΔC for every head: equal to ΔC from stored vectors (both weightings), independent of batch size and
padding side, from text prompts through token spans, with clear errors."""

import pytest
import torch

from qkcore.covariance import ContrastiveCovariance
from qkcore.lm import DeltaStreamer, PromptPairs, capture_qk, encode_batch, pad_batch, run_model, stream_delta
from qkcore.lm.tiny import tiny_model, tiny_tokenizer


def random_prompts(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 12, (n,), generator=g)
    return [torch.randint(3, 128, (int(m),), generator=g).tolist() for m in lengths]


def pairs_for(prompts, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, p in enumerate(prompts):
        keys = torch.randperm(len(p) - 1, generator=g)[:4].tolist()
        neg = [(-1, keys[1:])] + ([(-2, [0])] if i % 2 else [])
        pos = [(-1, keys[:1])] if i != 3 else []  # prompt 3 gives negatives only (a counterfactual prompt)
        out.append(PromptPairs(positive=pos, negative=neg))
    return out


def stored_delta(model, prompts, pairs, heads, weighting):
    """Reference: capture every prompt alone, keep its vectors, build ΔC per head at the end."""
    ref = ContrastiveCovariance(16, head_shape=(len(heads),), weighting=weighting)
    store = {True: ([], []), False: ([], [])}
    counts = {True: 0, False: 0}
    for prompt, pp in zip(prompts, pairs):
        with capture_qk(model, heads=heads) as cap:
            run_model(model, pad_batch([prompt]))
        q = torch.stack([cap.q(*h)[0] for h in heads])  # (heads, seq, d)
        k = torch.stack([cap.k(*h)[0] for h in heads])
        for sign, plist in ((True, pp.positive), (False, pp.negative)):
            counts[sign] += bool(plist)
            for qpos, kposs in plist:
                for kpos in kposs:
                    store[sign][0].append(q[:, qpos]), store[sign][1].append(k[:, kpos])
    for sign in (True, False):
        qs, ks = torch.stack(store[sign][0], 1), torch.stack(store[sign][1], 1)  # (heads, n, d)
        ref.add(qs, ks, positive=sign, prompts=counts[sign])
    return ref.delta()


@pytest.mark.parametrize("weighting", ["pair_mean", "prompt_sum"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_streamed_delta_equals_delta_from_stored_vectors(family, weighting):
    model = tiny_model(family)
    prompts, heads = random_prompts(), [(0, 0), (0, 3), (1, 1), (1, 2)]
    pairs = pairs_for(prompts)
    ref = stored_delta(model, prompts, pairs, heads, weighting)
    for batch_size, side in [(3, "left"), (7, "right"), (1, "left")]:
        st = stream_delta(
            model, None, prompts, pairs, heads=heads, batch_size=batch_size, padding_side=side, weighting=weighting
        )
        assert st.heads == tuple(heads)
        torch.testing.assert_close(st.delta(), ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(st.delta(1, 1), ref[2], atol=1e-5, rtol=1e-5)
    assert ref.abs().max() > 0.01  # the comparison is not between zeros (tolerance 1e-5)


def test_all_heads_grid_and_constant_memory():
    model = tiny_model("mistral")
    prompts = random_prompts(9)
    pairs = pairs_for(prompts)
    st = DeltaStreamer(model, heads="all")
    sizes = []
    for start in range(0, 9, 3):
        st.add(pad_batch(prompts[start : start + 3]), pairs[start : start + 3])
        sizes.append(sum(t.numel() for t in st.acc.sums.values()))
    assert len(set(sizes)) == 1  # the state is the float64 sums only, whatever the number of prompts
    grid = st.grid()
    assert grid.shape == (2, 4, 16, 16) and st.prompts_seen == 9
    torch.testing.assert_close(grid[1, 3], st.delta(1, 3))
    torch.testing.assert_close(st.logit_gap()[st.index(1, 3)], torch.trace(st.delta(1, 3)))


def test_text_prompts_with_token_spans():
    tok = tiny_tokenizer("byte_bpe")
    model = tiny_model("llama", vocab_size=len(tok))
    items = ["cat", "dog", "scooter", "apple", "tea"]
    texts = [
        f"Here is a list:\n- {a}\n- {b}\n- {c}\nAnswer:"
        for a, b, c in [items[0:3], items[1:4], items[2:5], [items[4], items[0], items[2]]]
    ]
    batch = encode_batch(tok, texts)
    pairs = []
    for row, text in enumerate(texts):
        words = [w for w in items if f"- {w}\n" in text]
        keys = [batch.span(row, w).last for w in words]
        pairs.append(PromptPairs(positive=[(-1, keys[:1])], negative=[(-1, keys[1:])]))
    st = stream_delta(model, tok, texts, pairs, heads=[(1, 0)], batch_size=2)
    ref = stored_delta(model, [tok(t)["input_ids"] for t in texts], pairs, [(1, 0)], "pair_mean")
    torch.testing.assert_close(st.delta(), ref, atol=1e-5, rtol=1e-5)
    assert st.acc.pairs == {True: 4, False: 8}


def test_clear_errors():
    model = tiny_model("llama")
    prompts = random_prompts(2)
    with pytest.raises(ValueError, match="one per prompt"):
        stream_delta(model, None, prompts, pairs_for(prompts)[:1])
    with pytest.raises(ValueError, match="key position 3 comes after query position 1"):
        stream_delta(model, None, prompts, [PromptPairs(positive=[(1, [3])], negative=[(1, [0])])] * 2)
    with pytest.raises(ValueError, match="position 40 is out of range for prompt 0"):
        stream_delta(model, None, prompts, [PromptPairs(positive=[(40, [0])], negative=[(1, [0])])] * 2)
    with pytest.raises(ValueError, match="must be a list"):
        PromptPairs(positive=[(-1, 3)])
    with pytest.raises(ValueError, match="head 7 is out of range"):
        DeltaStreamer(model, heads=[(0, 7)])
    st = DeltaStreamer(model, heads=[(0, 1)])
    with pytest.raises(KeyError, match="not among the streamed heads"):
        st.delta(1, 1)
    with pytest.raises(ValueError, match="heads='all'"):
        st.grid()
