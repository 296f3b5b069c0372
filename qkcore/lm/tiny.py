"""Tiny randomly initialised causal LMs of several families, built from configs (no download), for tests, examples
and benchmarks of qkcore.lm. Hidden size 64, 2 layers, 4 query heads over 2 key heads (GQA) unless told otherwise.

    model = tiny_model("qwen3", seed=0)                 # Qwen3ForCausalLM, eval mode, float32, sdpa
    model = tiny_model("gemma2", attn_implementation="eager")
    FAMILIES                                            # ('llama', 'mistral', 'qwen2', 'qwen3', 'gemma', ...)
"""

from __future__ import annotations

import torch
import transformers

# family -> (config class, model class, extra config fields)
_FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {}),
    # Gemma2: soft-capped logits, alternating sliding/full layers (window 4 so that short test prompts use it).
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"sliding_window": 4, "query_pre_attn_scalar": 16}),
    # Gemma3: q_norm/k_norm, sliding layers, query_pre_attn_scalar.
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM",
               {"sliding_window": 4, "query_pre_attn_scalar": 16, "layer_types": ["sliding_attention",
                                                                                "full_attention"]}),
}
FAMILIES = tuple(_FAMILIES)


def tiny_config(family: str, **overrides):
    """The config of a tiny model of `family` (see FAMILIES); keyword overrides replace any field."""
    if family not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")
    config_cls, _, extra = _FAMILIES[family]
    fields = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    fields.update(extra)
    fields.update(overrides)
    return getattr(transformers, config_cls)(**fields)


def tiny_model(family: str, seed: int = 0, attn_implementation: str = "sdpa", dtype: torch.dtype = torch.float32,
               **overrides) -> torch.nn.Module:
    """A randomly initialised `family` causal LM (eval mode) from `tiny_config(family, **overrides)`."""
    config = tiny_config(family, **overrides)
    _, model_cls, _ = _FAMILIES[family]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation=attn_implementation,
                                                          dtype=dtype)
    with torch.no_grad():  # random init of q_norm/k_norm weights too, so that a missed norm would show
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.normal_(1.0, 0.3)
    return model.eval()
