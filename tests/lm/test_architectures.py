"""The exactness matrix (issue 11): on tiny random models of every family in MATRIX_FAMILIES, attention rebuilt from
captured post-rotary q, k equals the model's own eager attention (output_attentions), with left and right padding,
logits are unchanged with capture on; under sdpa the rebuilt attention matches the eager weights to float error.
Families qkcore.lm cannot capture exactly are refused up front with a NotImplementedError naming the reason."""

import pytest
import torch
import transformers

from qkcore.lm import attention_layout, capture_qk, pad_batch, run_model
from qkcore.lm.tiny import FAMILIES, MATRIX_FAMILIES, NO_SDPA, tiny_model

torch.set_num_threads(1)

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 9, 20, 4, 33], [40, 41, 42, 43, 44, 45, 46]]
NEW = [f for f in MATRIX_FAMILIES if f not in FAMILIES]  # the 7 of FAMILIES are in tests/test_lm_capture.py


def worst_difference(model, reference, batch):
    """max |rebuilt − reference eager weights| over real query rows of every head; and logits on == off."""
    ref = run_model(reference, batch, output_attentions=True)
    bare = run_model(model, batch).logits
    with capture_qk(model, keep_masks=True) as cap:
        on = run_model(model, batch).logits
    layout, rows = attention_layout(model), batch.attention_mask.bool()[:, :, None]
    worst = max(
        ((cap.attention(layer, h) - ref.attentions[layer][:, h]).abs() * rows).max().item()
        for layer in range(layout.n_layers)
        for h in range(layout.n_heads)
    )
    return worst, torch.equal(on, bare)


def test_the_matrix_covers_at_least_20_families():
    assert len(MATRIX_FAMILIES) >= 20
    for feature in ("phi", "olmo", "olmo2", "stablelm", "cohere", "qwen2_moe", "mixtral", "starcoder2", "gemma2"):
        assert feature in MATRIX_FAMILIES


@pytest.mark.parametrize("family", NEW)
def test_eager_rebuilt_attention_is_exact(family):
    model = tiny_model(family, attn_implementation="eager")
    for side in ("left", "right"):
        worst, same = worst_difference(model, model, pad_batch(PROMPTS, side))
        assert worst == 0.0, f"{family} ({side} padding): rebuilt attention differs by {worst}"
        assert same, f"{family}: capture changed the logits"


@pytest.mark.parametrize("family", [f for f in NEW if f not in NO_SDPA])
def test_sdpa_rebuilt_attention_matches_eager(family):
    sdpa, eager = tiny_model(family, attn_implementation="sdpa"), tiny_model(family, attn_implementation="eager")
    worst, same = worst_difference(sdpa, eager, pad_batch(PROMPTS, "left"))
    assert worst < 1e-5, f"{family} sdpa: rebuilt attention differs from eager by {worst}"
    assert same


def small(config_cls, **extra):
    fields = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    fields.update(extra)
    return getattr(transformers, config_cls)(**fields)


# (model class, config, what the error must say)
REFUSED = {
    "gpt2": (
        "GPT2LMHeadModel",
        lambda: transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50),
        "GPT2LMHeadModel.*no attention module of the AttentionInterface kind",
    ),
    "phi3": ("Phi3ForCausalLM", lambda: small("Phi3Config", num_key_value_heads=2), "Phi3ForCausalLM.*no attention"),
    "gpt_neox": ("GPTNeoXForCausalLM", lambda: small("GPTNeoXConfig"), "GPTNeoXForCausalLM.*no attention"),
    "persimmon": ("PersimmonForCausalLM", lambda: small("PersimmonConfig"), "PersimmonForCausalLM.*no attention"),
    "jetmoe": (
        "JetMoeForCausalLM",
        lambda: small("JetMoeConfig", kv_channels=16, num_local_experts=2),
        "JetMoeForCausalLM.*no attention",
    ),
    "diffllama": (
        "DiffLlamaForCausalLM",
        lambda: small("DiffLlamaConfig", num_key_value_heads=2),
        "DiffLlama.*attention function twice per layer",
    ),
}


@pytest.mark.parametrize("family", sorted(REFUSED))
def test_unsupported_family_is_refused_up_front(family):
    model_cls, config, message = REFUSED[family]
    model = getattr(transformers, model_cls)(config()).eval()
    with pytest.raises(NotImplementedError, match=message):
        attention_layout(model)
    with pytest.raises(NotImplementedError, match=message):
        capture_qk(model).__enter__()
