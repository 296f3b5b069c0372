"""What a saved ΔC belongs to: the model's identity and the contrast's definition, as plain dicts.

A ΔC file or checkpoint (qkcore.accumulator_file) carries both, so that sums are never resumed or merged across
another model or another set of prompts. The model's identity is its architecture, head geometry, name or path,
dtype and a sha256 of two of its weight matrices (the first layer's q_proj and the last layer's k_proj: a few MB even
for an 8B model, and different for any other checkpoint of the same architecture). The contrast's definition is
a sha256 of the prompts and their PromptPairs plus every setting that changes a batch (batch size, padding side,
weighting, special tokens), and an optional user label.

    model_identity(model)   # {"architecture": "LlamaForCausalLM", "n_layers": 2, ..., "weights_sha256": "9f…"}
    contrast_definition(prompts, pairs, batch_size=8, padding_side="left", weighting="pair_mean", ...)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import torch
from torch import nn

from qkcore.lm.layout import attention_layout, attention_modules
from qkcore.lm.residency import resident


def _tensor_bytes(t: torch.Tensor) -> bytes:
    return t.detach().to("cpu").contiguous().flatten().view(torch.uint8).numpy().tobytes()


def model_identity(model: nn.Module) -> dict:
    """Architecture, head geometry, name or path, dtype and a fingerprint of the weights (see module docstring)."""
    layout = attention_layout(resident(model))
    mods = attention_modules(model)
    first, last = mods[0][1], mods[-1][1]
    digest = hashlib.sha256()
    digest.update(_tensor_bytes(first.q_proj.weight))
    digest.update(_tensor_bytes(last.k_proj.weight))
    cfg = getattr(model, "config", None)
    return {
        "architecture": type(model).__name__,
        "model_type": getattr(cfg, "model_type", None),
        "name_or_path": str(getattr(cfg, "_name_or_path", "") or ""),
        "n_layers": layout.n_layers,
        "n_heads": layout.n_heads,
        "n_kv_heads": layout.n_kv_heads,
        "head_dim": layout.head_dim,
        "dtype": str(first.q_proj.weight.dtype).replace("torch.", ""),
        "weights_sha256": digest.hexdigest(),
    }


def _prompt_key(p) -> str | list[int]:
    return p if isinstance(p, str) else [int(t) for t in p]


def contrast_definition(
    prompts: Sequence, pairs: Sequence, label: dict | None = None, **settings: str | int | bool | None
) -> dict:
    """sha256 of the prompts and of their pairs, their count, the batch `settings` and the user's `label`."""
    prompt_hash = hashlib.sha256(json.dumps([_prompt_key(p) for p in prompts]).encode()).hexdigest()
    pair_hash = hashlib.sha256(
        json.dumps([[list(map(list, p.positive)), list(map(list, p.negative))] for p in pairs]).encode()
    ).hexdigest()
    return {
        "n_prompts": len(prompts),
        "prompts_sha256": prompt_hash,
        "pairs_sha256": pair_hash,
        "settings": {k: settings[k] for k in sorted(settings)},
        "label": label,
    }
