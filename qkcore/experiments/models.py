"""The model a language-model chapter runs on: `model = "organism"` (the chapter's own organism, trained here) or any
name `qkcore.lm.load_model` takes (a registered model, a local folder or .gguf file, a hub id).

    lm = load_chapter_model("organism", organism="binding", dtype="float32", device="cpu")
    lm.model, lm.tokenizer, lm.description (what the page prints as the model behind its figures), lm.chat, lm.info
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qkcore.lm import LoadedLM, load_lm
from qkcore.params import check_quick_values, check_types, require, require_text

ORGANISM = "organism"


@dataclass(frozen=True)
class LMChapterParams:
    """What every language-model chapter takes. model: "organism" (the chapter's organism) or a registered name, a
    local folder or .gguf file, or a hub id; heads: None → the top n_heads of the chapter's head scan, else
    [[layer, head], ...] (0-based); seed: prompts, controls and random subspaces; weighting: "pair_mean" (the
    definition) or "prompt_sum" (the authors' filter-head code); energy: the rank rule (paper 0.99); batch_size:
    prompts per forward pass; dtype, device: where the model runs ("bfloat16", "cuda" for an 8B model); quick_values:
    what preset="quick" sets ({parameter: value}; None: the chapter's QUICK, sized for the organisms), e.g. a
    variant page's own quick counts (qkcore.params.with_preset)."""

    model: str = ORGANISM
    heads: tuple[tuple[int, int], ...] | None = None
    n_heads: int = 2
    seed: int = 0
    weighting: Literal["pair_mean", "prompt_sum"] = "pair_mean"
    energy: float = 0.99
    batch_size: int = 50
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    quick_values: dict | None = None

    def __post_init__(self):
        check_types(self)
        if self.quick_values is not None:
            check_quick_values(self.quick_values, type(self))
        require_text(self.model, "model", '"organism", a registered model name, a local folder or a hub id')
        require_text(self.device, "device", 'a torch device, e.g. "cpu" or "cuda"')
        for name in ("n_heads", "batch_size"):
            require(getattr(self, name) >= 1, f"{name} must be ≥ 1, got {getattr(self, name)}")
        require(0 < self.energy <= 1, f"energy must be in (0, 1] (the paper uses 0.99), got {self.energy}")
        require(
            self.heads is None or len(self.heads) >= 1,
            "heads must be None (chosen by the scan) or a non-empty list of [layer, head]",
        )
        require(self.heads is None or len(set(self.heads)) == len(self.heads), f"heads repeat: {self.heads}")


def load_chapter_model(model: str, organism: str, dtype: str = "float32", device: str = "cpu") -> LoadedLM:
    """ "organism" → the registered organism `organism` (float32 by default, eager attention, as trained); anything
    else → whatever qkcore.lm.load_lm takes (a registered name such as "smollm2-135m-instruct", a .gguf file, a
    local folder, a hub id). `description` is what the page prints as the model behind its figures."""
    require_text(model, "model", '"organism", a registered model name, a local folder or a hub id')
    return load_lm(organism if model == ORGANISM else model, dtype=dtype, device=device)
