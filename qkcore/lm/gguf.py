"""GGUF checkpoints (llama.cpp's single-file format) as ordinary float32 Hugging Face models, with a disk cache.

transformers dequantises a GGUF file itself (`from_pretrained(folder, gguf_file=name)`, given the `gguf` package);
on 2 idle cores that takes 14 s for SmolLM2-135M-Instruct's 98 MB Q4_1 file and 27 s for Qwen2.5-Coder-0.5B's
491 MB Q4_K_M (34 s and 84 s before `_parse_header_once`, which stops transformers parsing the header three times).
The first load therefore writes the dequantised float32 weights (safetensors), the config and the tokenizer to

    $QKCORE_CACHE/gguf/<sha256 of the file>/    (QKCORE_CACHE defaults to $XDG_CACHE_HOME/qkcore, else ~/.cache/qkcore)

(517 MB for SmolLM2-135M: 4 bytes per parameter) and every later load reads that folder like any local model (< 2 s).
The folder is written under a temporary name and renamed when complete, so concurrent loads never see half a cache.
Delete the folder to free the space; pass cache=False to `load_gguf` (or `load_model`) to skip it.

    path = find_gguf("/data/weights/")                     # a .gguf file, or a folder holding exactly one
    model, tok = load_gguf(path, dtype=torch.float32)      # what qkcore.lm.load_model does with a .gguf path
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import threading
from pathlib import Path

import torch
from torch import nn

GGUF_INSTALL = "pip install gguf==0.19.0"
CACHE_ENV = "QKCORE_CACHE"
SOURCE_FILE = "source.json"  # written last into a cache folder: what it was made from, and with which versions
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256, for this process


def cache_root() -> Path:
    """$QKCORE_CACHE, else $XDG_CACHE_HOME/qkcore, else ~/.cache/qkcore (read now, not at import)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "qkcore"


def cache_dir(sha256: str) -> Path:
    """Where the dequantised copy of the GGUF file with this sha256 lives (whether or not it exists yet)."""
    return cache_root() / "gguf" / sha256


def sha256_of(path: str | os.PathLike) -> str:
    """The file's sha256 (hex), computed once per process for a given (path, size, mtime)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def find_gguf(path: str | os.PathLike) -> Path:
    """The .gguf file named by `path`: the file itself, or the only .gguf file in the folder `path`."""
    path = Path(path).expanduser()
    if path.suffix == ".gguf" and not path.is_dir():
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist")
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a .gguf file nor a folder holding one")
    found = sorted(path.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {path}")
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise ValueError(f"{path} holds {len(found)} .gguf files ({names}): pass the path of the one to load")
    return found[0]


def require_gguf_package() -> None:
    """transformers needs the `gguf` package to read GGUF files; say how to install it when it is missing."""
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(
            f"loading a GGUF file needs the `gguf` package, which is not installed: `{GGUF_INSTALL}` "
            "(the version qkcore pins in pyproject.toml)"
        )


_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_strings(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, str]:
    """The string fields `keys` of the file's header (e.g. "general.architecture", "general.name"), read directly:
    gguf.GGUFReader parses every field and maps the tensors (~2 s). Scanning stops once every key is found (the
    general.* keys come first by convention); keys the header lacks are absent from the result."""
    wanted, found = set(keys), {}
    with Path(path).open("rb") as f:

        def read(fmt):
            size = struct.calcsize(fmt)
            raw = f.read(size)
            if len(raw) != size:
                raise ValueError(f"{path} ends inside its GGUF header: a truncated or corrupt file")
            return struct.unpack(fmt, raw)[0]

        def read_string():
            n = read("<Q")
            raw = f.read(n)
            if len(raw) != n:
                raise ValueError(f"{path} ends inside its GGUF header: a truncated or corrupt file")
            return raw.decode("utf-8", errors="replace")

        def skip(kind, count=1):
            if kind == _GGUF_STRING:
                for _ in range(count):
                    f.seek(read("<Q"), os.SEEK_CUR)
            elif kind in _GGUF_SCALARS:
                f.seek(count * struct.calcsize(_GGUF_SCALARS[kind]), os.SEEK_CUR)
            elif kind == _GGUF_ARRAY:
                for _ in range(count):
                    item_kind = read("<I")
                    skip(item_kind, read("<Q"))
            else:
                raise ValueError(f"{path}: unknown GGUF value type {kind} in the header: a corrupt file")

        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF')")
        version, _n_tensors, n_kv = read("<I"), read("<Q"), read("<Q")
        if version < 2:
            raise ValueError(f"{path} is GGUF version {version}; transformers reads versions 2 and 3")
        for _ in range(n_kv):
            if wanted <= found.keys():
                break
            key, kind = read_string(), read("<I")
            if kind == _GGUF_STRING and key in wanted:
                found[key] = read_string()
            else:
                skip(kind)
    return found


def gguf_architecture(path: str | os.PathLike) -> str:
    """`general.architecture` from the file's header."""
    arch = gguf_strings(path, ("general.architecture",)).get("general.architecture")
    if arch is None:
        raise ValueError(f"{path} has no general.architecture field: transformers cannot load it")
    return arch


def check_architecture(path: str | os.PathLike) -> str:
    """The file's architecture, when transformers can dequantise it into a model; a clear error otherwise."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = gguf_architecture(path)
    renamed = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "t5encoder": "t5"}.get(arch, arch.replace("-", "_"))
    if arch not in GGUF_SUPPORTED_ARCHITECTURES and renamed not in GGUF_SUPPORTED_ARCHITECTURES:
        known = sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise NotImplementedError(
            f"{path} holds a {arch!r} model, which transformers cannot dequantise from GGUF; "
            f"it can for: {', '.join(known)}"
        )
    return arch


def check_complete(path: Path) -> None:
    """Refuse a truncated GGUF file by name (gguf's own reader says only "cannot reshape array ...")."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except (ValueError, IndexError) as err:
        raise ValueError(
            f"{path} ({path.stat().st_size:,} bytes) is truncated or damaged: its header describes more tensor data "
            f"than the file holds ({err}). Download or install it again"
        ) from None


@contextlib.contextmanager
def _dequantise_bar(show: bool):
    """transformers draws its "de-quantizing GGUF tensors" bar with a bare tqdm that ignores its own progress-bar
    switch; swap in a disabled one inside the block when `show` is False."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    if not show:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


_HEADER_PATCH = threading.RLock()


@contextlib.contextmanager
def _parse_header_once():
    """Inside the block, each GGUF file's header is parsed once, on a plain array. transformers parses the whole
    header three times (for the config, the tokenizer and the weights), each with a fresh `gguf.GGUFReader` that
    slices a numpy memmap once per field: for a 151,936-token vocabulary (Qwen2.5) that is ~1.2M slices whose
    memmap bookkeeping costs more than the dequantisation itself. Here one reader per file is shared (it maps the
    file read-only), it slices a plain ndarray view of the same mapping, and the metadata-only parse
    (`return_tensors=False`, asked by the config and again by the tokenizer) is kept and handed out as copies."""
    import gguf
    import numpy as np
    from gguf.gguf_reader import GGUFReader  # the class itself, even while another block has patched the name
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    class PlainViewReader(GGUFReader):
        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped):  # GGUFReader.__init__ assigns its np.memmap here; the view keeps the mapping alive
            self._plain = mapped.view(np.ndarray)

    readers, metadata = {}, {}

    def shared_reader(path, mode="r"):
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = PlainViewReader(path, mode)
        return readers[key]

    def load_checkpoint(path, return_tensors=False, **kwargs):
        if return_tensors or kwargs:
            return original_load(path, return_tensors=return_tensors, **kwargs)
        key = str(Path(path).resolve())
        if key not in metadata:
            metadata[key] = original_load(path, return_tensors=False)
        return copy.deepcopy(metadata[key])

    with _HEADER_PATCH:  # one block at a time: the names patched are process-wide (two loads in two threads wait)
        original_reader, original_load = gguf.GGUFReader, gguf_utils.load_gguf_checkpoint
        gguf.GGUFReader, gguf_utils.load_gguf_checkpoint = shared_reader, load_checkpoint
        try:
            yield
        finally:
            gguf.GGUFReader, gguf_utils.load_gguf_checkpoint = original_reader, original_load


def dequantise(path: Path, attn_implementation: str = "sdpa", progress: bool = True) -> tuple[nn.Module, object]:
    """(float32 model, tokenizer) straight from the GGUF file through transformers (slow: module docstring)."""
    require_gguf_package()
    check_architecture(path)
    with _parse_header_once():
        check_complete(path)
        return _dequantise_checked(path, attn_implementation, progress)


def _dequantise_checked(path: Path, attn_implementation: str, progress: bool) -> tuple[nn.Module, object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    except Exception as err:  # transformers raises KeyError, ValueError, ... for a GGUF without a usable tokenizer
        raise ValueError(
            f"{path}: the GGUF file holds no tokenizer transformers can read ({type(err).__name__}: "
            f"{str(err)[:160]}); qkcore loads a GGUF model together with its tokenizer, so use a GGUF file that "
            "embeds one (tokenizer.ggml.* metadata)"
        ) from err
    try:
        with _dequantise_bar(progress):
            model = AutoModelForCausalLM.from_pretrained(
                path.parent,
                gguf_file=path.name,
                dtype=torch.float32,
                attn_implementation=attn_implementation,
                local_files_only=True,
            )
    except (ValueError, KeyError, OSError, RuntimeError) as err:
        raise ValueError(
            f"{path} ({path.stat().st_size:,} bytes) could not be dequantised: the file looks truncated or damaged "
            f"(a tensor's data is shorter than its header says?) — {type(err).__name__}: {str(err)[:160]}. "
            "Download or install it again"
        ) from err
    return model.eval(), tok


def save_plain(model: nn.Module, tokenizer, folder: Path, source: dict) -> None:
    """Save a dequantised model as an ordinary local model folder: float32 safetensors, config (without the GGUF
    marker), generation config, tokenizer, and `source.json` (written last) saying what it was made from."""
    import transformers
    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # the GGUF marker: the saved copy is a plain float32 model
        del config.quantization_config
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():  # tied weights (embedding = lm_head) are stored once
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    source = dict(
        source,
        weights_size=(folder / "model.safetensors").stat().st_size,
        transformers=transformers.__version__,
        gguf=_version("gguf"),
    )
    (folder / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")


def write_cache(model: nn.Module, tokenizer, path: Path, sha256: str) -> Path:
    """`save_plain` into the cache folder of `sha256`, atomically: written to a temporary folder beside it, then
    renamed; when another process completed the same folder meanwhile, its copy is kept and ours discarded."""
    target = cache_dir(sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-", dir=target.parent))
    try:
        save_plain(model, tokenizer, tmp, {"gguf_file": path.name, "gguf_size": path.stat().st_size, "sha256": sha256})
        if target.exists() and cached_folder(sha256) is None:  # stale (other versions) or broken: move it away
            aside = Path(tempfile.mkdtemp(prefix=f".{sha256[:12]}-old-", dir=target.parent))
            with contextlib.suppress(OSError):  # another process may have moved it already
                target.rename(aside / "old")
            shutil.rmtree(aside, ignore_errors=True)
        if not target.exists():
            with contextlib.suppress(OSError):  # lost a race: the other process's copy is complete
                tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if cached_folder(sha256) is None:
        raise OSError(f"the cache folder {target} is incomplete after writing it")
    return target


@contextlib.contextmanager
def dequantise_lock(sha256: str):
    """An exclusive lock on the cache of `sha256` while it is made (fcntl, released when the block ends or the
    process dies): two processes loading the same cold GGUF (the two nbval workers of `make test`) would otherwise
    both dequantise it, with twice the memory and CPU time, for one folder that only one of them keeps."""
    import fcntl

    locks = cache_root() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"gguf-{sha256}.lock", "w") as handle:  # left in place: deleting a lock file races
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_folder(sha256: str) -> Path | None:
    """The complete cache folder for this sha256, or None (absent, half-written, or made by other versions)."""
    import transformers

    folder = cache_dir(sha256)
    try:
        source = json.loads((folder / SOURCE_FILE).read_text())
        complete = (
            source.get("sha256") == sha256
            and source.get("transformers") == transformers.__version__
            and (folder / "model.safetensors").stat().st_size == source.get("weights_size")
        )
    except (OSError, ValueError):
        return None
    return folder if complete else None


def load_gguf(
    path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    attn_implementation: str = "sdpa",
    device_map: str | dict | None = None,
    tokenizer: bool = True,
    cache: bool = True,
    sha256: str | None = None,
    progress: bool = True,
) -> tuple[nn.Module, object | None]:
    """(model in eval mode, tokenizer or None) from a GGUF file. The weights are dequantised to float32, saved as a
    plain model folder, and loaded from it with `dtype` ("auto" means float32 here), so that a first and a later load
    give the same model. With `cache` that folder is the cache (module docstring); without, a temporary folder
    deleted after loading. `sha256` skips hashing when the caller has verified the file already (and, when the cache
    of that sha256 is complete, the file is not read at all); `progress` shows the dequantising bar."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha256 = sha256 or sha256_of(find_gguf(path))
    with contextlib.ExitStack() as stack:
        folder = cached_folder(sha256) if cache else None
        if folder is None and cache:  # one process dequantises; a concurrent one waits, then reads its cache
            stack.enter_context(dequantise_lock(sha256))
            folder = cached_folder(sha256)
        if folder is None:
            path = find_gguf(path)  # with `sha256` given and the cache complete, the file itself is not needed
            model, tok = dequantise(path, attn_implementation, progress)
            if cache:
                try:
                    folder = write_cache(model, tok, path, sha256)
                except OSError as err:
                    raise OSError(
                        f"could not write the dequantised copy of {path} to {cache_dir(sha256)} ({err}); "
                        f"set {CACHE_ENV} to a writable folder with {4 * _n_params(model) / 1e6:.0f} MB "
                        "free, or pass cache=False"
                    ) from err
            else:
                folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qkcore-gguf-")))
                save_plain(model, tok, folder, {"gguf_file": path.name, "sha256": sha256})
            del model, tok
        model = AutoModelForCausalLM.from_pretrained(
            folder,
            dtype=torch.float32 if dtype == "auto" else dtype,
            attn_implementation=attn_implementation,
            device_map=device_map,
            local_files_only=True,
        )
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True) if tokenizer else None
    return model.eval(), tok


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _version(package: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
