"""Load a causal LM and its tokenizer by registered name, GGUF file, local folder or hub id, offline-aware (the paper's
models: meta-llama/Llama-3.1-8B-Instruct, Qwen/Qwen3-4B-Instruct-2507; any AttentionInterface decoder works).

Where `name_or_path` is looked for, in order: a name in qkcore.lm.registry.MODELS (the organisms "filter-5x5",
"filter-13", "binding"; the real models "smollm2-135m-instruct", a GGUF in a PyPI package, and
"qwen2.5-coder-0.5b-instruct", a GGUF split over six packages, assembled once: qkcore.lm.chunks); a .gguf file or a
folder holding one (dequantised to float32 by transformers, cached: qkcore.lm.gguf); a local model folder; a hub id.
dtype and device are the caller's; `device_map="auto"` is passed to transformers/accelerate for models larger than
one GPU; remote code runs only with trust_remote_code=True. When the hub is offline (HF_HUB_OFFLINE=1, as the
Makefile sets) and the model is not on disk, loading fails at once with a message that names the id, the cache
folder searched, and how to point at local weights.

    model, tok = load_model("smollm2-135m-instruct")      # first time ~30 s (dequantising), then < 2 s from the cache
    lm = load_lm("filter-5x5")                             # LoadedLM: .model .tokenizer .name .description .chat .info
    model, tok = load_model("meta-llama/Llama-3.1-8B-Instruct", dtype="bfloat16", device="cuda")
    model, tok = load_model("/data/weights/Qwen3-4B-Instruct-2507")          # a local folder
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from qkcore.lm.chunks import assembled_path
from qkcore.lm.gguf import cached_folder, find_gguf, load_gguf
from qkcore.lm.registry import MODELS, close_names, registered

_TRUE = ("1", "true", "yes", "on")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.tiktoken",
)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache in effect now: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set (read now, not at import)."""
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _as_dtype(dtype) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype must be a torch.dtype or one of {sorted(_DTYPES)}, got {dtype!r}")


def _not_found(name: str, cache: Path, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"model {name!r} is not available: {why}. Looked for it in the Hugging Face cache {cache} "
        f"(models--{name.replace('/', '--')}). To use weights already on disk, pass their folder (the one with "
        f"config.json) as the path, e.g. load_model('/path/to/{name.split('/')[-1]}'), or point HF_HOME (or "
        f"HF_HUB_CACHE) at the cache that holds them; to download, unset HF_HUB_OFFLINE on a machine with internet."
    )


def _check_local_folder(path: Path, tokenizer: bool) -> None:
    """Fail before loading, naming what is wrong with a local model folder."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is a file, not a model folder or a .gguf file: pass the folder that holds "
            "config.json and the weights"
        )
    config = path / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{path} exists but has no config.json: pass the folder that holds the model's config.json and weights"
        )
    try:
        parsed = json.loads(config.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{config} is not valid JSON ({err}): the folder's model configuration is broken") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{config} holds a JSON {type(parsed).__name__}, not an object: the configuration is broken")
    empty = [f.name for f in [*(path / w for w in WEIGHT_FILES), *path.glob("*.safetensors")] if f.is_file()]
    empty = [f for f in dict.fromkeys(empty) if (path / f).stat().st_size == 0]
    if empty:
        raise ValueError(
            f"{path}: the weight file {empty[0]} is empty (0 bytes): a failed download or copy? Fetch it again"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES) and not any(path.glob("*.safetensors")):
        raise FileNotFoundError(
            f"{path} has a config.json but no weights (none of {', '.join(WEIGHT_FILES)}, no *.safetensors)"
        )
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}): save the "
            "tokenizer into the folder (tokenizer.save_pretrained), or pass tokenizer=False"
        )


def resolve_source(
    name_or_path: str | os.PathLike, revision: str | None = None, tokenizer: bool = True
) -> tuple[str, bool, Path]:
    """(what to pass to from_pretrained, local_files_only, hub cache dir) for a local folder or a hub id — raises at
    once when a local folder is broken, or when offline and the id is not in the cache."""
    cache = hub_cache_dir()
    path = Path(name_or_path).expanduser()
    if path.exists():
        _check_local_folder(path, tokenizer)
        return str(path), True, cache
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"local model folder {name!r} does not exist")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        return name, True, cache
    if hub_offline():
        raise _not_found(
            name, cache, "the hub is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and it is not in the cache"
        )
    return name, False, cache


def _is_gguf(name_or_path) -> bool:
    path = Path(name_or_path).expanduser()
    return path.suffix == ".gguf" or (path.is_dir() and any(path.glob("*.gguf")))


def _check_name(name_or_path) -> None:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or a path, got {type(name_or_path).__name__}")
    if not str(name_or_path).strip():
        raise ValueError(
            f"name_or_path is empty: give a registered name ({', '.join(sorted(MODELS))}), a .gguf "
            "file, a local model folder or a hub id"
        )


def _check_registered_use(name_or_path, reg, revision) -> None:
    """A registered name takes no revision (its weights are pinned); a Path or a near-miss of a registered name
    that is not on disk is refused before anything goes to the hub."""
    if reg is not None and revision is not None:
        raise ValueError(
            f"revision={revision!r} cannot apply to the registered model {reg.name!r}: its weights are pinned "
            f"({reg.how_to_get}); revision is for hub ids"
        )
    if reg is not None or _is_gguf(name_or_path) or Path(name_or_path).expanduser().exists():
        return
    if isinstance(name_or_path, os.PathLike) and registered(str(name_or_path)) is not None:
        raise FileNotFoundError(
            f"{name_or_path!r} is a path that does not exist; to load the registered model pass the string "
            f"{str(name_or_path)!r}, not a Path"
        )
    close = close_names(str(name_or_path)) if "/" not in str(name_or_path) else []
    if close:
        raise ValueError(
            f"{str(name_or_path)!r} is not a registered model, a .gguf file or a local folder; did you mean "
            f"{' or '.join(map(repr, close))}? Registered: {', '.join(sorted(MODELS))}"
        )


@contextlib.contextmanager
def _progress_bars(show: bool | None):
    """transformers' loading progress bars on or off inside the block (None: as they are); yields whether shown."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    show = was if show is None else show
    (hf_logging.enable_progress_bar if show else hf_logging.disable_progress_bar)()
    try:
        yield show
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def load_model(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    tokenizer: bool = True,
    cache: bool = True,
    progress: bool | None = None,
) -> tuple[nn.Module, object | None]:
    """(model in eval mode, fast tokenizer or None). dtype: torch dtype or "float32" | "bfloat16" | "float16" |
    "auto" (the checkpoint's; float32 for GGUF). device: where to move the model (not with device_map). device_map:
    passed through (e.g. "auto" to shard over GPUs with accelerate). attn_implementation: None = the registered
    model's ("eager" for organisms, "sdpa" for the real model) or "sdpa"; "eager" gives the model's own attention
    weights. cache: GGUF only, keep the dequantised float32 copy on disk (qkcore.lm.gguf). progress: show the
    loading and dequantising progress bars (None: as transformers' switch says, so quiet_progress() hides them)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_name(name_or_path)
    if device is not None and device_map is not None:
        raise ValueError("give device or device_map, not both (device_map places the model itself)")
    if not isinstance(tokenizer, bool):
        raise TypeError(f"tokenizer must be True (load it) or False (model only), got {tokenizer!r}")
    dtype = _as_dtype(dtype)
    reg = registered(name_or_path)
    _check_registered_use(name_or_path, reg, revision)
    attn = attn_implementation or (reg.attn_implementation if reg else "sdpa")
    with _progress_bars(progress) as progress:
        if reg is not None and reg.kind == "organism":  # exactly as qkcore.organisms.llama.load_organism
            folder = reg.locate()
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=dtype, attn_implementation=attn, device_map=device_map
            )
            tok = AutoTokenizer.from_pretrained(folder) if tokenizer else None
        elif reg is not None:
            # a chunked model's float32 cache, once made from the verified file, is loaded without re-hashing 491 MB
            warm = reg.kind == "gguf-chunks" and cache and cached_folder(reg.sha256) is not None
            path = assembled_path(reg) if warm else reg.locate()
            model, tok = load_gguf(path, dtype, attn, device_map, tokenizer, cache, reg.sha256, progress)
        elif _is_gguf(name_or_path):
            model, tok = load_gguf(find_gguf(name_or_path), dtype, attn, device_map, tokenizer, cache, None, progress)
        else:
            model, tok = _load_transformers(
                name_or_path, dtype, device_map, attn, trust_remote_code, revision, tokenizer
            )
    if device is not None:
        model = model.to(device)
    return model.eval(), tok


def _load_transformers(name_or_path, dtype, device_map, attn, trust_remote_code, revision, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, local_only, cache = resolve_source(name_or_path, revision, tokenizer)
    common = dict(revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_only, cache_dir=cache)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, device_map=device_map, attn_implementation=attn, **common
        )
    except OSError as err:
        if local_only and Path(source).is_dir():
            raise OSError(f"could not load the model in {source}: {err}") from err
        raise _not_found(
            str(name_or_path), cache, f"from_pretrained failed ({err.__class__.__name__}: {str(err).splitlines()[0]})"
        ) from err
    if not tokenizer:
        return model, None
    try:
        tok = AutoTokenizer.from_pretrained(source, **common)
    except (OSError, ValueError, TypeError, ImportError) as err:
        raise ValueError(
            f"the model in {source} loaded, but its tokenizer did not ({err.__class__.__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); pass tokenizer=False to load the model "
            "alone"
        ) from err
    return model, tok


@dataclass
class LoadedLM:
    """A model ready for the chapters, in eval mode. `name`: the registered name or the path / id given;
    `description`: one line for the page (what it is, layers × heads, parameters; an organism's held-out accuracy);
    `chat`: whether the tokenizer has a chat template (prompts then go through it); `info`: an organism's
    organism.json ({} for other models)."""

    model: nn.Module
    tokenizer: object
    name: str
    description: str
    chat: bool
    info: dict = field(default_factory=dict)


def load_lm(
    name_or_path: str | os.PathLike, dtype: torch.dtype | str = "float32", device: torch.device | str = "cpu"
) -> LoadedLM:
    """`load_model` (no progress bars) wrapped with what the chapters print: see LoadedLM."""
    _check_name(name_or_path)
    model, tok = load_model(name_or_path, dtype=dtype, device=device, progress=False)
    reg = registered(name_or_path)
    info: dict = {}
    if reg is not None and reg.kind == "organism":
        info_path = reg.locate() / "organism.json"
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        description = (
            f"model organism {reg.name} ({_size(model, exact=True)}, trained here{_held_out(info.get('results', {}))})"
        )
    elif reg is not None:
        description = f"{reg.description}; run in {_dtype_name(model)}"
    else:
        description = f"{name_or_path} ({_size(model)}, {_dtype_name(model)})"
    name = reg.name if reg is not None else str(name_or_path)
    return LoadedLM(model, tok, name, description, bool(getattr(tok, "chat_template", None)), info)


def _size(model: nn.Module, exact: bool = False) -> str:
    n = sum(p.numel() for p in model.parameters())
    cfg = model.config
    count = (
        f"{n:,} parameters" if exact else (f"{n / 1e6:.1f}M parameters" if n < 1e9 else f"{n / 1e9:.1f}B parameters")
    )
    return f"{cfg.num_hidden_layers} layers × {cfg.num_attention_heads} heads, {count}"


def _dtype_name(model: nn.Module) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")


def _held_out(results: dict) -> str:
    """An organism's held-out accuracy from organism.json's results, as the chapters print it."""
    exact = results.get("exact_match")
    if isinstance(exact, dict) and "full" in exact:
        parts = [
            f"{exact[k]:.3f} on {label}"
            for k, label in [("full", "full lists"), ("varied", "varied lists"), ("single", "1 among 20")]
            if k in exact
        ]
        return "; held-out exact match " + ", ".join(parts)
    accs = [
        f"{k.removeprefix('acc_').replace('_', ' ')} {v:.3f}"
        for k, v in sorted(results.items())
        if k.startswith("acc_") and isinstance(v, (int, float))
    ]
    return "; held-out accuracy: " + ", ".join(accs) if accs else ""
