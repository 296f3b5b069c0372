"""The model a language-model chapter runs on: `model = "organism"` (the chapter's own organism, trained here) or any
name `qkcore.lm.load_model` takes (a registered model, a local folder or .gguf file, a hub id).

    lm = load_chapter_model("organism", organism="binding", dtype="float32", device="cpu")
    lm.model, lm.tokenizer, lm.name (what the page prints as the model behind its figures), lm.chat, lm.info
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from qkcore.lm import load_model
from qkcore.lm.chat import uses_chat_template
from qkcore.params import check_types, require, require_text

ORGANISM = "organism"


@dataclass(frozen=True)
class LMChapterParams:
    """What every language-model chapter takes. model: "organism" (the chapter's organism) or a registered name, a
    local folder or .gguf file, or a hub id; heads: None → the top n_heads of the chapter's head scan, else
    [[layer, head], ...] (0-based); seed: prompts, controls and random subspaces; weighting: "pair_mean" (the
    definition) or "prompt_sum" (the authors' filter-head code); energy: the rank rule (paper 0.99); batch_size:
    prompts per forward pass; dtype, device: where the model runs ("bfloat16", "cuda" for an 8B model)."""

    model: str = ORGANISM
    heads: tuple[tuple[int, int], ...] | None = None
    n_heads: int = 2
    seed: int = 0
    weighting: Literal["pair_mean", "prompt_sum"] = "pair_mean"
    energy: float = 0.99
    batch_size: int = 50
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"

    def __post_init__(self):
        check_types(self)
        require_text(self.model, "model", '"organism", a registered model name, a local folder or a hub id')
        require_text(self.device, "device", 'a torch device, e.g. "cpu" or "cuda"')
        for name in ("n_heads", "batch_size"):
            require(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")
        require(0 < self.energy <= 1, f"energy must be in (0, 1] (the paper uses 0.99), got {self.energy}")
        require(self.heads is None or len(self.heads) >= 1,
                "heads must be None (chosen by the scan) or a non-empty list of [layer, head]")
        require(self.heads is None or len(set(self.heads)) == len(self.heads), f"heads repeat: {self.heads}")


@dataclass
class LoadedLM:
    """A model ready for a chapter: eval mode; `chat` says whether prompts go through its chat template; `name` is
    what the chapter prints as "the model that made these figures"; `info` the organism's organism.json ({} else)."""

    model: nn.Module
    tokenizer: object
    name: str
    chat: bool
    info: dict


def model_size(model: nn.Module) -> str:
    """"3 layers × 4 heads, 0.80 M parameters" (or "8.0 B parameters")."""
    n = sum(p.numel() for p in model.parameters())
    cfg = model.config
    count = f"{n / 1e6:.2f} M parameters" if n < 1e9 else f"{n / 1e9:.1f} B parameters"
    return f"{cfg.num_hidden_layers} layers × {cfg.num_attention_heads} heads, {count}"


def held_out_accuracy(info: dict) -> str:
    """The held-out accuracies an organism's trainer wrote to its organism.json, in words ("" when none)."""
    results = info.get("results", {})
    exact = results.get("exact_match", {})
    parts = [f"exact match {exact['full']:.3f} on full lists"] if "full" in exact else []
    parts += [f"{k.removeprefix('acc_').replace('_', ' ')} {v:.3f}" for k, v in sorted(results.items())
              if k.startswith("acc_") and isinstance(v, (int, float))]
    return ", ".join(parts)


def load_chapter_model(model: str, organism: str, dtype: str = "float32", device: str = "cpu") -> LoadedLM:
    """"organism" → the committed organism `organism` (float32 by default, eager attention, as trained); anything
    else → qkcore.lm.load_model (sdpa attention)."""
    from qkcore.organisms.llama import load_organism, organism_dir, quiet_progress

    if not isinstance(model, str) or not model.strip():
        raise ValueError(f'model must be "organism" or a model name, local folder or hub id, got {model!r}')
    if model == ORGANISM:
        from qkcore.lm.loading import _as_dtype

        net, tok, info = load_organism(organism_dir(organism), dtype=_as_dtype(dtype))
        net = net.to(device)
        accuracy = held_out_accuracy(info)
        name = f"model organism {organism} ({model_size(net)}; trained here" + (
            f"; held-out accuracy: {accuracy})" if accuracy else ")")
        return LoadedLM(net, tok, name, uses_chat_template(tok), info)
    with quiet_progress():
        net, tok = load_model(model, dtype=dtype, device=device)
    return LoadedLM(net, tok, f"{model} ({model_size(net)})", uses_chat_template(tok), {})
