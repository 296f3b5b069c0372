"""An on-disk cache of `gather_qk`'s results, so that a book run gathers each (model, prompts, heads, columns) once:
the pages of one model gather the same prompts again and again (the scan, the ΔC vectors, the views, the swaps; nbval
re-executing what `make book` executed), and on a 2-core machine the forward passes are nearly all of a page's time.

    with gather_cache():                      # $QKCORE_CACHE/gather (default ~/.cache/qkcore/gather)
        got = gather_qk(model, batch, heads, last, key_cols=items)   # a second identical call reads the file

The key is a sha256 of everything the result depends on: the model's fingerprint (its config, every parameter's
and buffer's name, shape, dtype, a strided sample of its values and its float64 sum; recomputed whenever a tensor is
modified in place), the batch (ids, mask, positions), the heads, the columns, the dtype, the forward arguments, and
the code version (the source of the capture modules and the torch and transformers versions), and torch's thread
count when it is not one (a chapter on a pretrained model run alone: qkcore.experiments.chapter). Anything else
misses. A run at several threads reads the one-thread result when there is one (the numbers the book commits, made
at one thread: a re-run after `make book` reads them), and writes what it computes under its own key, which no
one-thread run reads.
Only the model's logits are kept of its output. A cold cache and a warm one give identical tensors
(tests/lm/test_gather_cache.py). Outside a `gather_cache` block nothing is read or written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qkcore.lm.residency import resident, tensor_versions

_DIRECTORY: ContextVar[Path | None] = ContextVar("qkcore_gather_cache", default=None)
# The process-wide folder set by enable_gather_cache (a notebook kernel runs each cell in a copied context, so a
# context variable set in one cell would not reach the next): the one module-level setting of qkcore.lm.
_PROCESS: dict[str, Path | None] = {"directory": None}
# How many gather_qk results this process computed (ran the model for) rather than read from the cache: the counter
# a progress bar waits on (qkcore.progress.steps), so that a warm cache draws no bar.
_COMPUTED = {"count": 0}
_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → (tensor versions, fingerprint)
_SAMPLE = 1 << 14  # values sampled per tensor (strided over the whole tensor)
_CODE_FILES = ("capture.py", "gather.py", "intercept.py", "batching.py", "layout.py", "early_exit.py")
CACHEABLE_KWARGS = frozenset({"logits_to_keep"})  # forward arguments whose effect the cache key captures


@contextlib.contextmanager
def gather_cache(directory: str | os.PathLike | None = None) -> Iterator[Path]:
    """Inside the block, gather_qk reads and writes cached results under `directory` (default
    $QKCORE_CACHE/gather, see qkcore.lm.gguf.cache_root)."""
    if directory is None:
        from qkcore.lm.gguf import cache_root

        directory = cache_root() / "gather"
    path = Path(directory).expanduser()
    token = _DIRECTORY.set(path)
    try:
        yield path
    finally:
        _DIRECTORY.reset(token)


def enable_gather_cache(directory: str | os.PathLike | None = None) -> Path | None:
    """Cache every later gather_qk call of this process under `directory` (default $QKCORE_CACHE/gather); pass
    False to turn it off. What the book's chapters do through qkcore.experiments.chapter.start_chapter."""
    if directory is False:
        _PROCESS["directory"] = None
        return None
    if directory is None:
        from qkcore.lm.gguf import cache_root

        directory = cache_root() / "gather"
    _PROCESS["directory"] = Path(directory).expanduser()
    return _PROCESS["directory"]


def active_directory() -> Path | None:
    """The cache folder of the enclosing gather_cache block, else the process-wide one, else None."""
    return _DIRECTORY.get() or _PROCESS["directory"]


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of the model's config and tensors (name, shape, dtype, strided sample, float64 sum in chunks),
    memoised per model until one of its tensors is modified in place (a parked model keeps its memo:
    qkcore.lm.residency)."""
    versions = tensor_versions(model)
    memo = _FINGERPRINTS.get(model)
    if memo is not None and memo[0] == versions:
        return memo[1]
    resident(model)
    versions = tensor_versions(model)
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    h.update((config.to_json_string(use_diff=False) if config is not None else type(model).__name__).encode())
    h.update(str(getattr(config, "_attn_implementation", None)).encode())
    with torch.no_grad():
        for name, t in (*model.named_parameters(), *model.named_buffers()):
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLE)
            sample = flat[::step].float().cpu()
            h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|{_float64_sum(flat)!r}".encode())
            h.update(sample.numpy().tobytes())
    digest = h.hexdigest()
    _FINGERPRINTS[model] = (versions, digest)
    return digest


def _float64_sum(flat: torch.Tensor, chunk: int = 1 << 20) -> float:
    """The float64 sum of a 1-d tensor, taken a million elements at a time: a float64 copy of a whole 151,936 × 896
    embedding would add 1.1 GB to a Qwen page's peak (issue 15)."""
    return float(sum(flat[i : i + chunk].double().sum() for i in range(0, flat.numel(), chunk)))


def code_version() -> str:
    """sha256 of the capture code's source and the torch and transformers versions."""
    import transformers

    h = hashlib.sha256(f"{torch.__version__}|{transformers.__version__}".encode())
    here = Path(__file__).parent
    for name in _CODE_FILES:
        f = here / name
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKeys:
    """Where a gather_qk call reads its result from, and where it writes what it computes. They differ only for a
    run at several threads when a one-thread result is on disk: it reads that one (the numbers the book commits) and,
    should that file vanish before it is read, writes its own result under its own key, never under the one-thread
    key."""

    read: str | None
    write: str | None


def cache_keys(
    model: nn.Module, batch, heads, query_cols, key_cols, attn_cols, dtype, forward_kwargs, logits: bool = True
) -> CacheKeys:
    """The result's keys (both None when the call is not cached: forward arguments beyond CACHEABLE_KWARGS, or
    logits wanted without `logits_to_keep`, since the whole vocabulary's logits at every position are too large to
    keep). A run at several threads reads a one-thread result first when there is one. A parked model
    (qkcore.lm.residency) whose result is not on disk is made resident here, before gather_qk's capture checks its
    weights; one whose result is on disk stays parked."""
    args = (model, batch, heads, query_cols, key_cols, attn_cols, dtype, forward_kwargs, logits)
    own = _key(*args)
    directory = active_directory()
    if own is None or directory is None:
        resident(model)
        return CacheKeys(own, own)
    read = own
    if torch.get_num_threads() != 1:
        one_thread = _key(*args, threads=1)
        if _on_disk(directory, one_thread):
            read = one_thread  # the committed pages' result: read it rather than compute a last-bit variant
    if not _on_disk(directory, read):
        resident(model)
    return CacheKeys(read, own)


def _on_disk(directory: Path, key: str) -> bool:
    return (directory / key[:2] / f"{key}.pt").is_file()


def _key(
    model, batch, heads, query_cols, key_cols, attn_cols, dtype, forward_kwargs, logits, threads: int | None = None
) -> str | None:
    if set(forward_kwargs) - CACHEABLE_KWARGS or (logits and "logits_to_keep" not in forward_kwargs):
        return None
    h = hashlib.sha256()
    parts = {
        "model": model_fingerprint(model),
        "training": model.training,
        "code": code_version(),
        "heads": [list(h_) for h_ in heads],
        "dtype": str(dtype),
        "kwargs": sorted((k, repr(v)) for k, v in forward_kwargs.items()),
        "logits": logits,
        "padding_side": batch.padding_side,
    }
    threads = torch.get_num_threads() if threads is None else threads
    if threads != 1:  # float reductions split by thread count; one-thread keys stay as they were
        parts["threads"] = threads
    h.update(json.dumps(parts, sort_keys=True).encode())
    for t in (batch.input_ids, batch.attention_mask, batch.position_ids, query_cols, key_cols, attn_cols):
        if t is None:
            h.update(b"none")
        else:
            t = torch.as_tensor(t)
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def computed() -> int:
    """How many gather_qk results this process has computed so far (cached or not); reads from the cache don't count."""
    return _COMPUTED["count"]


def load(key: str):
    """The cached GatheredQK for `key`, or None."""
    directory = active_directory()
    if directory is None or key is None:
        return None
    path = directory / key[:2] / f"{key}.pt"
    if not path.is_file():
        return None
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from qkcore.lm.gather import GatheredQK

    saved = torch.load(path, weights_only=True)
    output = CausalLMOutputWithPast(logits=saved["logits"]) if saved["logits"] is not None else None
    heads = tuple(tuple(h) for h in saved["heads"])
    return GatheredQK(heads, saved["q"], saved["k"], saved["attn"], output, tuple(saved["scaling"]))


def store(key: str, got) -> None:
    """Write `got` under `key`, atomically (a temporary file renamed into place). gather_qk calls it for every result
    it computed (key None: not cached), so it also counts them (`computed`)."""
    _COMPUTED["count"] += 1
    directory = active_directory()
    if directory is None or key is None:
        return
    path = directory / key[:2] / f"{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    logits = getattr(got.output, "logits", None)
    payload = {
        "heads": [list(h) for h in got.heads],
        "q": got.q,
        "k": got.k,
        "attn": got.attn,
        "logits": None if logits is None else logits.detach().cpu(),
        "scaling": list(got.scaling),
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
