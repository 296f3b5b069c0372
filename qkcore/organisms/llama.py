"""Small Llama model organisms: a frozen config → a Hugging Face `LlamaForCausalLM`, saved and loaded in the
`from_pretrained` layout, so the capture code that runs on Llama-3.1-8B runs unchanged on them.

An organism directory holds `config.json` + `model.safetensors` (the model), `tokenizer.json` +
`tokenizer_config.json` (the word-level tokenizer), and `organism.json` (the OrganismConfig, the task and training
configuration and measured results: whatever the trainer of that organism wrote).

    model = build_model(OrganismConfig(n_layers=3, hidden=128, n_heads=4), tokenizer, seed=0)
    save_organism("weights/filter-5x5", model, tokenizer, info={"task": ..., "train": ...})
    model, tokenizer, info = load_organism(organism_dir("filter-5x5"))   # eval mode, float32, eager attention
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

INFO_FILE = "organism.json"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # the committed organisms, one folder each


@dataclass(frozen=True)
class OrganismConfig:
    """Architecture of a small Llama (no dropout, no biases, RMSNorm, RoPE, SwiGLU: Llama's own blocks).

    n_layers, hidden (d_model), n_heads query heads of size hidden / n_heads, n_kv_heads key/value heads (grouped-
    query attention when smaller than n_heads), intermediate (SwiGLU width), max_positions (longest sequence),
    rope_theta (RoPE base), tie_embeddings (share input and output embeddings), init_std (weight init scale)."""

    n_layers: int = 3
    hidden: int = 128
    n_heads: int = 4
    n_kv_heads: int = 4
    intermediate: int = 512
    max_positions: int = 256
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("n_layers", "hidden", "n_heads", "n_kv_heads", "intermediate", "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"OrganismConfig.{name} must be a positive int, got {value!r}")
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} must be divisible by n_heads={self.n_heads}")
        if (self.hidden // self.n_heads) % 2:
            raise ValueError(f"head size hidden/n_heads={self.hidden // self.n_heads} must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}")
        if not self.rope_theta > 0 or not self.init_std > 0:
            raise ValueError(f"rope_theta and init_std must be positive, got {self.rope_theta}, {self.init_std}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OrganismConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown OrganismConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def llama_config(self, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
        """The Hugging Face LlamaConfig for this architecture and tokenizer (vocabulary size, special ids)."""
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.n_layers,
            num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_positions,
            rope_theta=float(self.rope_theta),
            tie_word_embeddings=self.tie_embeddings,
            initializer_range=self.init_std,
            attention_dropout=0.0,
            attention_bias=False,
            mlp_bias=False,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )


@contextlib.contextmanager
def quiet_progress():
    """Hide transformers' weight loading/writing progress bars inside the block (they would clutter chapters)."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def build_model(config: OrganismConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A freshly initialised LlamaForCausalLM (float32, eager attention), its weights drawn from `seed`."""
    if tokenizer.pad_token_id is None or tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(
            "the tokenizer needs pad, bos and eos tokens (use qkcore.organisms.vocab.build_word_tokenizer)"
        )
    hf_config = config.llama_config(tokenizer)
    hf_config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(hf_config)
    return model.float()


def save_organism(
    directory: str | Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    info: dict[str, Any],
    dtype: torch.dtype = torch.float16,
) -> Path:
    """Write model (safetensors, in `dtype`), tokenizer and `organism.json` (= info, which must be JSON-serialisable)
    to `directory`; returns the path. The model in memory is not changed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(info, indent=2, sort_keys=True)  # fails early on non-serialisable info
    state = {k: v.detach().to(dtype).clone() for k, v in model.state_dict().items()}
    with quiet_progress():
        model.save_pretrained(directory, state_dict=state)
    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dtype"] = str(dtype).removeprefix("torch.")
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(directory)
    (directory / INFO_FILE).write_text(text + "\n")
    return directory


def organism_dir(name: str) -> Path:
    """The folder of the committed organism `name` ("filter-5x5", "filter-13", "binding")."""
    known = sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / INFO_FILE).is_file())
    if name not in known:
        raise ValueError(f"unknown organism {name!r}; the committed ones are {known}")
    return WEIGHTS_DIR / name


def load_organism(
    directory: str | Path, dtype: torch.dtype = torch.float32, attn_implementation: str = "eager"
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerBase, dict[str, Any]]:
    """(model in eval mode, tokenizer, info dict) from a directory written by `save_organism` (a committed one:
    `load_organism(organism_dir("binding"))`). Uses the same `from_pretrained` calls as for a real model; `info` is
    {} when the directory has no organism.json. The one loader of every organism."""
    directory = Path(directory)
    if not (directory / "model.safetensors").is_file() or not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} holds no config.json and model.safetensors: not a saved organism; "
            f"regenerate it with the command in {WEIGHTS_DIR / 'README.md'}"
        )
    with quiet_progress():
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation=attn_implementation)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    info_path = directory / INFO_FILE
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return model.eval(), tokenizer, info
