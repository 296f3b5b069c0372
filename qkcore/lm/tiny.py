"""Tiny randomly initialised causal LMs of several families, built from configs (no download), for tests, examples
and benchmarks of qkcore.lm. Hidden size 64, 2 layers, 4 query heads over 2 key heads (GQA) unless told otherwise.

    model = tiny_model("qwen3", seed=0)                 # Qwen3ForCausalLM, eval mode, float32, sdpa (Gemma2: eager)
    model = tiny_model("gemma2", attn_implementation="eager")
    tok = tiny_tokenizer("byte_bpe")                    # trained in a blink on a few sentences; has a chat template
    FAMILIES                                            # ('llama', 'mistral', 'qwen2', 'qwen3', 'gemma', ...)
    MATRIX_FAMILIES                                     # FAMILIES + 32 more (Phi, OLMo, Mixtral, GPT-OSS, ...)
"""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

# family -> (config class, model class, extra config fields)
_FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {}),
    # Gemma2: soft-capped logits, alternating sliding/full layers (window 4 so that short test prompts use it).
    # Cap 5 (Gemma2 uses 50) so that the cap bends the tiny model's logits measurably.
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {"sliding_window": 4, "query_pre_attn_scalar": 16, "attn_logit_softcapping": 5.0},
    ),
    # Gemma3: q_norm/k_norm, sliding layers, query_pre_attn_scalar.
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {"sliding_window": 4, "query_pre_attn_scalar": 16, "layer_types": ["sliding_attention", "full_attention"]},
    ),
}
FAMILIES = tuple(_FAMILIES)
# More decoder families for the exactness matrix (tests/lm/test_architectures.py), one feature each at least.
_MORE_FAMILIES = {
    "phi": ("PhiConfig", "PhiForCausalLM", {"partial_rotary_factor": 0.5}),  # rotary on half of each head
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {"clip_qkv": 0.5}),  # q, k, v clipped before the rotary
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),  # q/k RMSNorm over all heads at once
    "olmo3": ("Olmo3Config", "Olmo3ForCausalLM", {"sliding_window": 4}),
    "olmoe": ("OlmoeConfig", "OlmoeForCausalLM", {"num_experts": 4, "num_experts_per_tok": 2}),
    "stablelm": ("StableLmConfig", "StableLmForCausalLM", {"qk_layernorm": True, "partial_rotary_factor": 0.5}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"use_qk_norm": True}),
    "cohere2": ("Cohere2Config", "Cohere2ForCausalLM", {"sliding_window": 4}),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        "Qwen2MoeForCausalLM",
        {
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
        },
    ),
    "qwen3_moe": (
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    ),
    "mixtral": (
        "MixtralConfig",
        "MixtralForCausalLM",
        {"num_local_experts": 4, "num_experts_per_tok": 2, "sliding_window": None},
    ),
    "starcoder2": ("Starcoder2Config", "Starcoder2ForCausalLM", {"sliding_window": 4}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"attention_multiplier": 0.3}),  # scaling ≠ 1/√d
    "granitemoe": ("GraniteMoeConfig", "GraniteMoeForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "helium": ("HeliumConfig", "HeliumForCausalLM", {}),
    "glm": ("GlmConfig", "GlmForCausalLM", {}),
    "glm4": ("Glm4Config", "Glm4ForCausalLM", {}),
    "smollm3": ("SmolLM3Config", "SmolLM3ForCausalLM", {}),  # NoPE layers
    "exaone4": ("Exaone4Config", "Exaone4ForCausalLM", {"sliding_window": 4}),
    "seed_oss": ("SeedOssConfig", "SeedOssForCausalLM", {}),
    "arcee": ("ArceeConfig", "ArceeForCausalLM", {}),
    "ministral": ("MinistralConfig", "MinistralForCausalLM", {"sliding_window": 4}),
    "nemotron": ("NemotronConfig", "NemotronForCausalLM", {"partial_rotary_factor": 0.5}),
    "hunyuan_v1_dense": ("HunYuanDenseV1Config", "HunYuanDenseV1ForCausalLM", {}),
    "ernie4_5": ("Ernie4_5Config", "Ernie4_5ForCausalLM", {}),
    "bitnet": ("BitNetConfig", "BitNetForCausalLM", {}),
    "phimoe": ("PhimoeConfig", "PhimoeForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "vaultgemma": ("VaultGemmaConfig", "VaultGemmaForCausalLM", {"sliding_window": 4, "query_pre_attn_scalar": 16}),
    # attention sinks: one extra softmax column per head (rebuilt by qkcore.lm)
    "gpt_oss": ("GptOssConfig", "GptOssForCausalLM", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    # 4 layers, the last 2 reuse the keys of earlier layers (no k_proj of their own)
    "gemma3n": ("Gemma3nTextConfig", "Gemma3nForCausalLM", {"num_hidden_layers": 4, "num_kv_shared_layers": 2}),
    "llama4": ("Llama4TextConfig", "Llama4ForCausalLM", {}),
}
MATRIX_FAMILIES = FAMILIES + tuple(_MORE_FAMILIES)
NO_SDPA = ("gemma2", "vaultgemma", "gpt_oss")  # transformers 5.23 refuses sdpa for these (soft-capping, sinks)


def tiny_config(family: str, **overrides):
    """The config of a tiny model of `family` (see FAMILIES); keyword overrides replace any field."""
    if family not in _FAMILIES and family not in _MORE_FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {MATRIX_FAMILIES}")
    config_cls, _, extra = {**_FAMILIES, **_MORE_FAMILIES}[family]
    fields = dict(
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
    )  # 10× the usual init: logits of order 1–10, peaked attention patterns
    fields.update(extra)
    fields.update(overrides)
    return getattr(transformers, config_cls)(**fields)


def tiny_model(
    family: str, seed: int = 0, attn_implementation: str | None = None, dtype: torch.dtype = torch.float32, **overrides
) -> torch.nn.Module:
    """A randomly initialised `family` causal LM (eval mode) from `tiny_config(family, **overrides)`.
    attn_implementation defaults to "sdpa" ("eager" for Gemma2, which transformers runs with eager only)."""
    if attn_implementation is None:
        attn_implementation = "eager" if family in NO_SDPA else "sdpa"
    config = tiny_config(family, **overrides)
    _, model_cls, _ = {**_FAMILIES, **_MORE_FAMILIES}[family]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
    with torch.no_grad():  # random init of q_norm/k_norm weights too, so that a missed norm would show
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")) or ".q_layernorm." in name or ".k_layernorm." in name:
                p.normal_(1.0, 0.3)
    return model.eval()


TOKENIZER_KINDS = ("byte_bpe", "metaspace", "word")
_CORPUS = [
    "Here is a list:\n- cat\n- dog\n- scooter\n- apple\n- tea\n- USA\n- Canada",
    "Respond in single words, only the answers and nothing else: What are the animals in the list? Answer:",
    "The egg is in Box A, the fan is in Box B, and the tea is in Box C. Which box is the tea in? Box",
    "The cat sat on the mat. A dog, a horse and a cow walked to the scooter shop.",
]
_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]


def tiny_tokenizer(kind: str = "byte_bpe") -> transformers.PreTrainedTokenizerFast:
    """A small fast tokenizer trained on a few sentences of the paper's tasks: "byte_bpe" (GPT-2/Llama-3 style,
    leading space inside the token), "metaspace" (SentencePiece style "▁"), or "word" (one token per word or
    punctuation mark). Adds <s> at the start, pads with <pad> (id 0), and has a minimal chat template."""
    if kind == "byte_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=_SPECIALS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.decoder = decoders.ByteLevel()
    elif kind == "metaspace":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.BpeTrainer(vocab_size=150, special_tokens=_SPECIALS, show_progress=False)
    elif kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(special_tokens=_SPECIALS, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; choose one of {TOKENIZER_KINDS}")
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    fast.chat_template = _CHAT_TEMPLATE
    return fast
