"""Issue 16 ("Also"): exactness on families and configurations the first matrix never built or never activated —
Apertus and NanoChat; SmolLM3 with a NoPE layer; GPT-OSS and Gemma3n with a sliding window shorter than the prompts;
Llama 4 with chunked attention shorter than the prompts. Each: attention rebuilt from captured q, k equals the model's
own eager attention (difference 0.0) with left and right padding, and capture leaves the logits unchanged. Each test
also checks that the feature really acted (a mask that is not plain causal, a layer without rotary)."""

import pytest
import torch
import transformers

from qkcore.lm import capture_qk, pad_batch, run_model
from qkcore.lm.tiny import tiny_config, tiny_model

torch.set_num_threads(1)

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 9, 20, 4, 33], [40, 41, 42, 43, 44, 45, 46]]
BASE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
    initializer_range=0.2,
)


def new_family(config_cls: str, model_cls: str, attn: str = "eager", **extra):
    torch.manual_seed(0)
    config = getattr(transformers, config_cls)(**{**BASE, **extra})
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation=attn, dtype=torch.float32)
    with torch.no_grad():  # random q/k norm weights, so that a missed norm would show
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.normal_(1.0, 0.3)
    return model.eval()


MODELS = {
    "apertus": lambda: new_family("ApertusConfig", "ApertusForCausalLM"),
    "nanochat": lambda: new_family("NanoChatConfig", "NanoChatForCausalLM"),
    "smollm3 NoPE layer": lambda: tiny_model("smollm3", attn_implementation="eager", no_rope_layers=[1, 0]),
    "gpt_oss sliding window 4": lambda: tiny_model("gpt_oss", attn_implementation="eager", sliding_window=4),
    "gemma3n sliding window 4": lambda: tiny_model("gemma3n", attn_implementation="eager", sliding_window=4),
    "llama4 chunked attention 4": lambda: tiny_model("llama4", attn_implementation="eager", attention_chunk_size=4),
}


def not_plain_causal(mask: torch.Tensor, batch) -> bool:
    """Whether some real key column before (or at) a real query is masked: a window or chunk acted."""
    real = batch.attention_mask.bool()  # (batch, seq)
    seq = real.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    allowed_by_causal_and_padding = causal[None] & real[:, None, :] & real[:, :, None]
    m = mask[:, 0] if mask.dim() == 4 else mask  # (batch, q, k)
    return bool((torch.isinf(m) & allowed_by_causal_and_padding).any())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_rebuilt_attention_is_exact(name):
    model = MODELS[name]()
    for side in ("left", "right"):
        batch = pad_batch(PROMPTS, side)
        ref = run_model(model, batch, output_attentions=True)
        with capture_qk(model, keep_masks=True) as cap:
            on = run_model(model, batch).logits
        rows = batch.attention_mask.bool()[:, :, None]
        n_layers, n_heads = len(ref.attentions), ref.attentions[0].shape[1]
        for layer in range(n_layers):
            for h in range(n_heads):
                worst = ((cap.attention(layer, h) - ref.attentions[layer][:, h]).abs() * rows).max().item()
                assert worst == 0.0, f"{name} ({side} padding) L{layer}H{h}: rebuilt attention differs by {worst}"
        assert torch.equal(on, run_model(model, batch).logits), f"{name}: capture changed the logits"
        if "sliding" in name or "chunked" in name:
            assert any(not_plain_causal(cap.mask(layer), batch) for layer in range(n_layers)), "feature inactive"


def test_the_nope_layer_is_really_without_rotary():
    model = MODELS["smollm3 NoPE layer"]()
    assert [layer.self_attn.use_rope for layer in model.model.layers] == [1, 0]
    assert tiny_config("smollm3").no_rope_layers == [1, 1]  # the first matrix never had a NoPE layer


@pytest.mark.parametrize("family", [("ApertusConfig", "ApertusForCausalLM"), ("NanoChatConfig", "NanoChatForCausalLM")])
def test_sdpa_rebuilt_attention_matches_eager(family):
    sdpa, eager = new_family(*family, attn="sdpa"), new_family(*family)
    batch = pad_batch(PROMPTS, "left")
    ref = run_model(eager, batch, output_attentions=True)
    with capture_qk(sdpa, keep_masks=True) as cap:
        run_model(sdpa, batch)
    rows = batch.attention_mask.bool()[:, :, None]
    worst = max(
        ((cap.attention(layer, h) - ref.attentions[layer][:, h]).abs() * rows).max().item()
        for layer in range(2)
        for h in range(4)
    )
    assert worst < 1e-5, f"{family[0]} sdpa: rebuilt attention differs from eager by {worst}"
