"""Load a causal LM and its tokenizer by hub id or local path, offline-aware (the paper's models:
meta-llama/Llama-3.1-8B-Instruct, Qwen/Qwen3-4B-Instruct-2507; any AttentionInterface decoder works).

dtype and device are the caller's; `device_map="auto"` is passed to transformers/accelerate for models larger than
one GPU; remote code runs only with trust_remote_code=True. When the hub is offline (HF_HUB_OFFLINE=1, as the
Makefile sets) and the model is not on disk, loading fails at once with a message that names the id, the cache
folder searched, and how to point at local weights.

    model, tok = load_model("meta-llama/Llama-3.1-8B-Instruct", dtype="bfloat16", device="cuda")
    model, tok = load_model("/data/weights/Qwen3-4B-Instruct-2507")          # a local folder
    model, tok = load_model("meta-llama/Llama-3.1-70B-Instruct", dtype="bfloat16", device_map="auto")
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

_TRUE = ("1", "true", "yes", "on")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


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


def resolve_source(name_or_path: str | os.PathLike, revision: str | None = None) -> tuple[str, bool, Path]:
    """(what to pass to from_pretrained, local_files_only, cache dir) — raises at once when offline and missing."""
    cache = hub_cache_dir()
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} exists but has no config.json: pass the folder that holds the model's "
                                    "config.json and weights")
        return str(path), True, cache
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"local model folder {name!r} does not exist")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", cache_dir=cache, revision=revision)
    if isinstance(cached, str):
        return name, True, cache
    if hub_offline():
        raise _not_found(name, cache, "the hub is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE) and it is not "
                                      "in the cache")
    return name, False, cache


def load_model(
    name_or_path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str | None = None,
    device_map: str | dict | None = None,
    attn_implementation: str = "sdpa",
    trust_remote_code: bool = False,
    revision: str | None = None,
    tokenizer: bool = True,
) -> tuple[nn.Module, object | None]:
    """(model in eval mode, fast tokenizer or None). dtype: torch dtype or "float32" | "bfloat16" | "float16" |
    "auto" (the checkpoint's). device: where to move the model (not with device_map). device_map: passed through
    (e.g. "auto" to shard over GPUs with accelerate). attn_implementation: "sdpa" (fast; capture works) or
    "eager" (the model's own attention weights)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device is not None and device_map is not None:
        raise ValueError("give device or device_map, not both (device_map places the model itself)")
    dtype = _as_dtype(dtype)
    source, local_only, cache = resolve_source(name_or_path, revision)
    common = dict(revision=revision, trust_remote_code=trust_remote_code, local_files_only=local_only,
                  cache_dir=cache)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, device_map=device_map,
                                                     attn_implementation=attn_implementation, **common)
        tok = AutoTokenizer.from_pretrained(source, **common) if tokenizer else None
    except OSError as err:
        raise _not_found(str(name_or_path), cache, f"from_pretrained failed ({err.__class__.__name__}: "
                                                   f"{str(err).splitlines()[0]})") from err
    if device is not None:
        model = model.to(device)
    return model.eval(), tok
