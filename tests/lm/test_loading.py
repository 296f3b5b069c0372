"""Loading by local path and by hub id from the cache, offline, with clear errors when a model is not on disk."""

import pytest
import torch

from qkcore.lm.loading import hub_cache_dir, load_model
from qkcore.lm.tiny import tiny_model, tiny_tokenizer

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


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
