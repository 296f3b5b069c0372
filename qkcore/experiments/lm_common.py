"""Pieces every language-model chapter needs (paper Figures 6–10): load "the organism" or a hub id / local path,
wrap a prompt in the chat template when the model has one, name heads as the paper does ("L16H21"), and build the
randomly initialised copy of a model that the controls compare against.

    lm = load_lm("organism", organism_dir=WEIGHTS / "binding")    # or "meta-llama/Llama-3.1-8B-Instruct", a path
    text, shift = model_text(lm.tokenizer, "The egg is in Box A. ...", lm.chat)   # the string the model reads
    control = random_init_copy(lm.model, seed=0)                 # same architecture and dtype, fresh weights
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qkcore.lm import load_model
from qkcore.organisms.llama import load_organism, quiet_progress

ORGANISM = "organism"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedLM:
    """A model ready for the chapters: eval mode; `chat` says whether prompts go through its chat template;
    `name` is what the chapter prints as "the model that made these figures"."""

    model: nn.Module
    tokenizer: object
    name: str
    chat: bool
    info: dict


def uses_chat_template(tokenizer) -> bool:
    """Instruction-tuned models read prompts inside their chat template; the organisms have none."""
    return bool(getattr(tokenizer, "chat_template", None))


def load_lm(model: str, organism_dir: str | Path, dtype: str = "float32", device: str = "cpu",
            regenerate: str = "") -> LoadedLM:
    """"organism" → the committed organism in `organism_dir` (float32, eager attention); anything else → a hub id or
    a local folder through `qkcore.lm.load_model` (sdpa attention). `regenerate` is the command named in the error
    when the organism's weights are missing."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if model == ORGANISM:
        path = Path(organism_dir)
        if not (path / "config.json").is_file():
            hint = f"; regenerate them with `{regenerate}`" if regenerate else ""
            raise FileNotFoundError(f"no organism weights in {path}{hint}, or pass model=<hub id or local path>")
        net, tok, info = load_organism(path, dtype=DTYPES[dtype])
        net = net.to(device)
        return LoadedLM(net, tok, f"the binding organism ({path.name}, {_size(net)})", uses_chat_template(tok), info)
    with quiet_progress():
        net, tok = load_model(model, dtype=DTYPES[dtype], device=device)
    return LoadedLM(net, tok, f"{model} ({_size(net)})", uses_chat_template(tok), {})


def _size(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    cfg = model.config
    return (f"{cfg.num_hidden_layers} layers × {cfg.num_attention_heads} heads, "
            f"{n / 1e6:.2f} M parameters" if n < 1e9 else f"{n / 1e9:.1f} B parameters")


def model_text(tokenizer, text: str, chat: bool) -> tuple[str, int]:
    """(the string the model reads, the character where `text` starts inside it). With the chat template the text is
    the user's message and the string ends with the assistant's generation prompt, whose last token is the query."""
    if not chat:
        return text, 0
    templated = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                              add_generation_prompt=True)
    shift = templated.find(text)
    if shift < 0 or templated.find(text, shift + 1) >= 0:
        raise ValueError("the chat template did not embed the prompt text exactly once; cannot locate its tokens")
    return templated, shift


RANDOM_SEED_OFFSET = 1_000_003  # keeps the control's weights apart from a model built with the same small seed


def random_init_copy(model: nn.Module, seed: int) -> nn.Module:
    """A model of the same class, configuration, dtype, device and attention implementation with freshly drawn
    weights (the model's own initialiser, e.g. N(0, initializer_range) for Llama): the control that shows what the
    construction alone produces, before any training."""
    config = copy.deepcopy(model.config)
    param = next(model.parameters())
    impl = getattr(model.config, "_attn_implementation", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + RANDOM_SEED_OFFSET)
        with torch.device(param.device):
            fresh = type(model)._from_config(config, attn_implementation=impl, dtype=param.dtype)
    return fresh.eval()


def head_name(head: tuple[int, int]) -> str:
    """(16, 21) → "L16H21" (0-based layer and head, as in the paper)."""
    return f"L{head[0]}H{head[1]}"


def head_names(heads) -> str:
    return ", ".join(head_name(h) for h in heads)


def rounded(frame, digits: int = 3):
    """A DataFrame's numeric columns rounded for printing, with −0.0 turned into 0.0 (a sign that float noise may flip
    between runs, which nbval would report)."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype.kind == "f":
            out[col] = out[col].round(digits) + 0.0
    return out


def num(x: float, digits: int = 3) -> str:
    """A number for printing: rounded, never "−0.000"."""
    return f"{round(float(x), digits) + 0.0:.{digits}f}"
