"""qkcore.lm.residency: a model and its random-init control share one memory slot. Parking and restoring gives the
same outputs bit for bit; a parked model's parameters hold no storage; running the other model parks the first and
running the first again restores it; a parked model used outside its forward fails loudly; weights modified in place
are never parked; a model qkcore cannot restore is never put in a slot.

The "trained" model here is a tiny Qwen2 (tied embeddings, like SmolLM2) or Llama saved into a fake qkcore GGUF cache
folder ($QKCORE_CACHE/gguf/<name>/), which is what makes it restorable from its file.
"""

import gc
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM

from qkcore.lm import gather_qk, model_identity, pad_batch, run_model
from qkcore.lm.controls import random_init_copy
from qkcore.lm.early_exit import last_logits, run_until
from qkcore.lm.gather import last_columns
from qkcore.lm.gather_cache import gather_cache
from qkcore.lm.residency import is_parked, random_init_control, resident, swap_log
from qkcore.lm.tiny import tiny_model


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """load(family, **overrides) → a tiny model saved into a fake qkcore cache folder and loaded back from it."""
    monkeypatch.setenv("QKCORE_CACHE", str(tmp_path / "cache"))

    def load(family="qwen2", **overrides):
        folder = tmp_path / "cache" / "gguf" / f"{family}-tiny"
        tiny_model(family, seed=3, **overrides).save_pretrained(folder)
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    return load


@pytest.fixture(scope="module")
def batch():
    return pad_batch([[5, 17, 99, 3, 64, 21, 8], [1, 2, 120, 77]], padding_side="left")


def logits(model, batch):
    return run_model(model, batch).logits


def test_the_control_is_drawn_with_the_trained_model_parked_and_both_restore_bit_for_bit(cached, batch):
    model = cached("qwen2", tie_word_embeddings=True)
    reference = random_init_copy(model, 5)  # the control as the controls module defines it, never parked
    trained = logits(model, batch)
    control = random_init_control(model, 5)
    assert is_parked(model) and not is_parked(control)
    assert torch.equal(logits(control, batch), logits(reference, batch))
    assert torch.equal(logits(model, batch), trained)  # restored from its file; the control parked
    assert is_parked(control) and not is_parked(model)
    assert torch.equal(logits(control, batch), logits(reference, batch))  # drawn again from its seed
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied weights stay tied through park/restore
    events = [e for e, *_ in swap_log(model)]
    assert events == ["park", "park", "restore", "park", "restore"]


def test_a_parked_model_holds_no_weights(cached):
    model = cached("llama")
    released = [weakref.ref(p) for p in model.parameters()]
    random_init_control(model, 1)
    gc.collect()
    assert all(r() is None for r in released)  # nothing keeps the loaded tensors alive
    embedding = model.get_input_embeddings().weight
    others = [p for p in model.parameters() if p is not embedding]
    assert others and all(p.is_meta for p in others)
    assert embedding.numel() == 0 and embedding.device.type == "cpu"  # so the model's device still reads right


def test_every_way_of_running_a_parked_model_restores_it(cached, batch, tmp_path):
    model = cached("qwen2")
    heads, last = [(1, 0), (0, 3)], last_columns(batch)
    want = gather_qk(model, batch, heads, last, logits=False)
    want_logits = last_logits(model, batch)
    control = random_init_control(model, 2)
    with gather_cache(tmp_path / "gathers"):  # not on disk yet: the model is made resident before the capture
        got = gather_qk(model, batch, heads, last, logits=False)  # run_until: early exit
    assert torch.equal(got.q, want.q) and torch.equal(got.k, want.k)
    logits(control, batch)
    assert torch.equal(last_logits(model, batch), want_logits)  # logits_to_keep
    logits(control, batch)
    run_until(model, batch, 0)
    assert not is_parked(model)
    logits(control, batch)
    assert model_identity(model)["weights_sha256"]  # reads weights outside a forward: restores first
    assert not is_parked(model)


def test_a_parked_model_is_restored_by_a_capture_without_the_gather_cache(cached, batch):
    """With the gather cache off (QKCORE_GATHER_CACHE=0, benchmarks/chapters.py --cache off), capture_qk's model
    checks run before the forward's hook: the capture restores the model first."""
    model = cached("qwen2")
    heads, last = [(1, 0)], last_columns(batch)
    want = gather_qk(model, batch, heads, last)
    control = random_init_control(model, 2)
    assert is_parked(model)
    got = gather_qk(model, batch, heads, last)  # no gather_cache block: nothing read from disk
    assert torch.equal(got.q, want.q) and torch.equal(got.k, want.k) and is_parked(control)


def test_a_parked_model_used_outside_its_forward_fails_loudly(cached, batch):
    model = cached("qwen2")
    random_init_control(model, 1)
    hidden = torch.ones(1, 3, model.config.hidden_size)
    with pytest.raises(RuntimeError, match="parked model's weight"):
        float(model.model.layers[0].self_attn.q_proj.weight.double().sum())
    with pytest.raises(RuntimeError, match="parked model's weight"):
        model.model.layers[0].mlp(hidden)  # a submodule called directly: no pre-hook restores it
    with pytest.raises(RuntimeError, match="parked model's weight"):
        hidden @ model.lm_head.weight.T  # (torch computes a CPU input times a plain meta weight into garbage)
    with pytest.raises(RuntimeError, match="parked model's weight"):
        model.get_input_embeddings()(torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="parked"):
        random_init_copy(model.model.layers[0], 1)  # its first parameter is on the meta device
    assert torch.isfinite(logits(resident(model), batch)).all()


def test_the_gather_cache_needs_no_restore_for_a_parked_model(cached, batch, tmp_path):
    model = cached("qwen2")
    heads, last = [(1, 0)], last_columns(batch)
    with gather_cache(tmp_path / "gathers"):
        want = gather_qk(model, batch, heads, last, logits=False)
        control = random_init_control(model, 1)
        gather_qk(control, batch, heads, last, logits=False)
        restores = len([e for e in swap_log(model) if e[0] == "restore"])
        got = gather_qk(model, batch, heads, last, logits=False)  # read from the cache: its fingerprint memoised
    assert is_parked(model) and len([e for e in swap_log(model) if e[0] == "restore"]) == restores
    assert torch.equal(got.q, want.q)


def test_weights_modified_in_place_are_never_parked(cached, batch):
    model = cached("qwen2")
    control = random_init_control(model, 1)
    resident(model)
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        logits(control, batch)


def test_a_model_qkcore_cannot_restore_gets_a_plain_control(batch):
    model = tiny_model("llama", seed=1)  # built here: no file to restore it from
    control = random_init_control(model, 4)
    assert not is_parked(model) and not is_parked(control) and swap_log(model) == []
    assert torch.equal(logits(control, batch), logits(random_init_copy(model, 4), batch))


def _same_weights(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    ba, bb = dict(a.named_buffers()), dict(b.named_buffers())
    return (
        pa.keys() == pb.keys()
        and ba.keys() == bb.keys()
        and all(torch.equal(pa[n], pb[n]) for n in pa)
        and all(torch.equal(ba[n], bb[n]) for n in ba)
    )


@pytest.mark.parametrize("family, tied", [("qwen2", True), ("llama", False)])
def test_the_control_is_drawn_once_per_machine_and_mapped_after(cached, batch, monkeypatch, family, tied):
    """The first control is drawn and written to the cache; a second page's control (another process: a fresh load
    of the trained model) maps that file without drawing, with the same weights, buffers, ties and outputs."""
    import qkcore.lm.residency as residency
    from qkcore.lm.control_cache import control_file
    from qkcore.lm.controls import init_recipe

    model = cached(family, tie_word_embeddings=tied)
    reference = random_init_copy(model, 4)
    path = control_file(init_recipe(model), 4)
    assert not path.exists()
    first = random_init_control(model, 4)
    assert path.is_file() and not list(path.parent.glob(".*partial"))
    assert _same_weights(first, reference)

    again = cached(family, tie_word_embeddings=tied)  # what the next page loads
    monkeypatch.setattr(residency, "draw", lambda *a, **k: pytest.fail("the cached control was drawn again"))
    second = random_init_control(again, 4)
    assert not second.training
    assert _same_weights(second, reference)
    assert (second.lm_head.weight is second.model.embed_tokens.weight) == tied
    assert torch.equal(logits(second, batch), logits(reference, batch))
    logits(again, batch)  # parks the control
    assert is_parked(second) and torch.equal(logits(second, batch), logits(reference, batch))  # mapped again
    assert control_file(init_recipe(resident(again)), 5) != path  # the seed is part of the key


def test_a_damaged_control_file_is_an_error_naming_it(cached):
    from qkcore.lm.control_cache import control_file
    from qkcore.lm.controls import init_recipe

    model = cached("qwen2", tie_word_embeddings=True)
    path = control_file(init_recipe(model), 6)
    path.parent.mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"model.norm.weight": torch.ones(3)}, path)  # a file under the right name with the wrong contents
    with pytest.raises(RuntimeError, match=f"{path.name}.*delete it"):
        random_init_control(model, 6)


def test_a_truncated_control_file_is_an_error_naming_it(cached):
    from qkcore.lm.control_cache import control_file
    from qkcore.lm.controls import init_recipe

    model = cached("qwen2", tie_word_embeddings=True)
    path = control_file(init_recipe(model), 7)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")  # cut short: safetensors' own error names no file
    with pytest.raises(RuntimeError, match=f"{path.name}.*delete it"):
        random_init_control(model, 7)


def test_without_a_writable_cache_the_control_is_drawn_again_when_restored(cached, batch, monkeypatch):
    """A full or read-only disk, or the controls folder deleted while a page runs: the control still restores, drawn
    from its seed, with the same weights."""
    import qkcore.lm.residency as residency

    def no_space(*_args):
        raise OSError(28, "No space left on device")

    model = cached("llama")
    reference = random_init_copy(model, 8)
    with monkeypatch.context() as patch:
        patch.setattr(residency, "write_control", no_space)
        with pytest.warns(UserWarning, match="could not keep the random-init control"):
            control = random_init_control(model, 8)
    logits(model, batch)  # parks the control
    assert is_parked(control) and torch.equal(logits(control, batch), logits(reference, batch))

    other = cached("qwen2", tie_word_embeddings=True)
    control = random_init_control(other, 8)
    from qkcore.lm.control_cache import control_file
    from qkcore.lm.controls import init_recipe

    logits(other, batch)  # parks the control, then its file goes
    control_file(init_recipe(resident(other)), 8).unlink()
    assert torch.equal(logits(control, batch), logits(random_init_copy(other, 8), batch))


def test_the_control_key_names_the_machine():
    """torch draws other numbers with other vector instructions: the key must change with them."""
    import qkcore.lm.control_cache as cc
    from qkcore.lm.controls import init_recipe

    recipe = init_recipe(tiny_model("qwen2", seed=3))
    here = cc.control_key(recipe, 1)
    real = torch.backends.cpu.get_cpu_capability
    try:
        torch.backends.cpu.get_cpu_capability = lambda: "DEFAULT" if real() != "DEFAULT" else "AVX2"
        assert cc.control_key(recipe, 1) != here
    finally:
        torch.backends.cpu.get_cpu_capability = real
