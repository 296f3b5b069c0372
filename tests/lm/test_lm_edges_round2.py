"""Issue 16, hard edges round two, in qkcore.lm (gather, capture, batches, edits, loading): each case the issue found
silent, unclear or crashing is now a clear error naming the argument and what it allows, refused up front, or a
documented behaviour with a test."""

import dataclasses
import warnings
from pathlib import Path

import pytest
import torch
import transformers

from qkcore.lm import (
    LogitEdit,
    PromptPairs,
    capture_qk,
    encode_batch,
    gather_qk,
    load_model,
    pad_batch,
    run_model,
    stream_delta,
)
from qkcore.lm.tiny import tiny_model, tiny_tokenizer

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 9, 20, 4, 33], [40, 41, 42, 43, 44, 45, 46]]
MODEL = tiny_model("llama", attn_implementation="eager")  # 2 layers × 4 heads over 2 key heads, d_head 16
BATCH = pad_batch(PROMPTS, "right")  # prompt 1: columns 0..4, padding 5..8
LAST = torch.tensor([8, 4, 6])
TOK = tiny_tokenizer("word")
PAIRS = [PromptPairs(positive=[(-1, [0])], negative=[(-1, [1])])] * 3


def with_dropout():
    model = tiny_model("llama", attention_dropout=0.3)
    return model.train()


def meta_rotary():
    model = tiny_model("llama")
    rotary = model.model.rotary_emb
    rotary.inv_freq = torch.empty_like(rotary.inv_freq, device="meta")
    return model


def zero_row_batch():
    b = pad_batch(PROMPTS, "right")
    mask = b.attention_mask.clone()
    mask[1] = 0
    return dataclasses.replace(b, attention_mask=mask)


def zero_mask_under_capture():
    inputs = BATCH.model_inputs()
    inputs["attention_mask"] = torch.zeros_like(inputs["attention_mask"])
    with capture_qk(MODEL), torch.no_grad():
        MODEL(**inputs, use_cache=False)


def empty_safetensors(tmp: Path):
    folder = tmp / "broken"
    MODEL.save_pretrained(folder)
    TOK.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")
    return load_model(folder)


def gguf_without_tokenizer(tmp: Path):
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(tmp / "m.gguf"), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((64, 64), np.float32))
    writer.write_header_to_file(), writer.write_kv_data_to_file(), writer.write_tensors_to_file(), writer.close()
    return tmp / "m.gguf"


def truncated_gguf(tmp: Path):
    path = gguf_without_tokenizer(tmp)
    data = path.read_bytes()
    (tmp / "cut.gguf").write_bytes(data[:-1000])
    return load_model(tmp / "cut.gguf", cache=False)


CASES = {
    # silent before
    "gather attn_cols query on padding": (
        lambda: gather_qk(MODEL, BATCH, [(0, 1)], torch.tensor([8, 7, 6]), attn_cols=torch.tensor([[0]] * 3)),
        ValueError,
        r"query_cols\[1\] contains column 7, a padding column: prompt 1 has its tokens in columns 0..4",
    ),
    "gather attn_cols key on padding": (
        lambda: gather_qk(
            MODEL, BATCH, [(0, 1)], LAST, torch.tensor([[0], [6], [0]]), attn_cols=torch.tensor([[0]] * 3)
        ),
        ValueError,
        r"key_cols\[1\] contains column 6, a padding column",
    ),
    "train mode with attention dropout": (
        lambda: capture_qk(with_dropout()).__enter__(),
        RuntimeError,
        r"train\(\) mode with dropout active \(attention_dropout=0.3\).*call model.eval\(\) first",
    ),
    "stream in train mode": (
        lambda: stream_delta(with_dropout(), None, PROMPTS, PAIRS),
        RuntimeError,
        r"DeltaStreamer: .*train\(\) mode with dropout active",
    ),
    "batch with an all-zero mask row": (
        lambda: run_model(MODEL, zero_row_batch()),
        ValueError,
        "batch.attention_mask row 1 is all zeros: that prompt has no real token",
    ),
    "attention_mask all zeros under capture": (
        zero_mask_under_capture,
        ValueError,
        "attention_mask row 0 is all zeros",
    ),
    "gather dtype int64": (
        lambda: gather_qk(MODEL, BATCH, [(0, 1)], LAST, dtype=torch.int64),
        TypeError,
        r"dtype must be a floating-point torch.dtype \(torch.float32, torch.float64\), got torch.int64",
    ),
    "logit edit names a cell twice": (
        lambda: LogitEdit(0, 1, cells=[(0, 3, 1), (0, 3, 1)], values=[1.0, 2.0]),
        ValueError,
        r"cells names \(0, 3, 1\) more than once",
    ),
    "load_model tokenizer 'no'": (
        lambda: load_model("filter-5x5", tokenizer="no"),
        TypeError,
        "tokenizer must be True .* or False .*, got 'no'",
    ),
    "load_model revision on a registered name": (
        lambda: load_model("filter-5x5", revision="v999"),
        ValueError,
        "revision='v999' cannot apply to the registered model 'filter-5x5': its weights are pinned",
    ),
    # unclear before
    "meta rotary buffer": (
        lambda: capture_qk(meta_rotary()).__enter__(),
        ValueError,
        r"capture_qk: .*the buffer model.rotary_emb.inv_freq is on the meta device",
    ),
    "gather dtype str": (
        lambda: gather_qk(MODEL, BATCH, [(0, 1)], LAST, dtype="float32"),
        TypeError,
        "dtype must be a floating-point torch.dtype",
    ),
    "gather heads tensor": (
        lambda: gather_qk(MODEL, BATCH, torch.tensor([[0, 1]]), LAST),
        TypeError,
        r"heads must be \"all\" or a list of \(layer, head\) pairs, not a tensor: pass heads.tolist\(\)",
    ),
    "gather dict batch": (
        lambda: gather_qk(MODEL, BATCH.model_inputs(), [(0, 1)], LAST),
        TypeError,
        "batch must be an EncodedBatch .*got dict",
    ),
    "encode_batch None prompt": (
        lambda: encode_batch(TOK, ["the cat", None]),
        TypeError,
        r"texts\[1\] must be a string, got NoneType",
    ),
    "capture torch.compile": (
        lambda: capture_qk(torch.compile(MODEL)).__enter__(),
        TypeError,
        r"capture_qk: model is a torch.compile'd module.*model._orig_mod",
    ),
    "registered name as a Path": (
        lambda: load_model(Path("filter-5x5")),
        FileNotFoundError,
        "is a path that does not exist; to load the registered model pass the string 'filter-5x5'",
    ),
    "misspelt registered name": (
        lambda: load_model("filter-5X4"),
        ValueError,
        "'filter-5X4' is not a registered model.*did you mean 'filter-5x5'",
    ),
    "misspelt real model": (
        lambda: load_model("smollm2-135m-instruc"),
        ValueError,
        "did you mean 'smollm2-135m-instruct'",
    ),
}

TMP_CASES = {
    "zero-byte model.safetensors": (
        empty_safetensors,
        ValueError,
        r"the weight file model.safetensors is empty \(0 bytes\)",
    ),
    "gguf without a tokenizer": (
        lambda tmp: load_model(gguf_without_tokenizer(tmp), cache=False),
        ValueError,
        r"m.gguf: the GGUF file holds no tokenizer transformers can read",
    ),
    "truncated gguf": (truncated_gguf, ValueError, r"cut.gguf \([\d,]+ bytes\) is truncated or damaged"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lm_edge_is_a_clear_error(case):
    call, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("case", sorted(TMP_CASES))
def test_lm_file_edge_is_a_clear_error(case, tmp_path, monkeypatch):
    monkeypatch.setenv("QKCORE_CACHE", str(tmp_path / "qkcore_cache"))
    call, exc, match = TMP_CASES[case]
    with pytest.raises(exc, match=match):
        call(tmp_path)


def test_train_mode_without_dropout_is_accepted_and_exact():
    """Documented: train() mode alone changes nothing when no dropout is active, so it is not refused."""
    model = tiny_model("llama", attn_implementation="eager").train()
    with capture_qk(model, keep_masks=True) as cap:
        out = model(**BATCH.model_inputs(), use_cache=False, output_attentions=True)
    assert torch.equal(cap.attention(1, 2), out.attentions[1][:, 2].float())


def test_prompt_longer_than_max_positions_warns():
    model = tiny_model("llama", max_position_embeddings=8)
    with pytest.warns(UserWarning, match="a prompt of 9 tokens is longer than the model's max_position_embeddings"):
        run_model(model, BATCH)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_model(model, pad_batch(PROMPTS[1:2]))  # 5 tokens: no warning


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_attention_warns_that_exactness_is_float32(dtype):
    model = tiny_model("llama", attn_implementation="eager").to(dtype)
    with capture_qk(model, keep_masks=True) as cap:
        out = run_model(model, BATCH, output_attentions=True)
    with pytest.warns(UserWarning, match="equals the model's own attention exactly only for float32 models"):
        rebuilt = cap.attention(0, 1)
    diff = (rebuilt - out.attentions[0][:, 1].float()).abs().max()
    assert 0 < diff < 2e-2  # the model's own q·k is in half precision
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with capture_qk(MODEL, keep_masks=True) as cap32:
            run_model(MODEL, BATCH)
        cap32.attention(0, 1)  # float32: no warning


def test_compiled_model_refused_before_any_forward_and_uncompiled_works():
    compiled = torch.compile(MODEL)
    with pytest.raises(TypeError, match="torch.compile'd"):
        stream_delta(compiled, None, PROMPTS, PAIRS)
    assert isinstance(compiled, torch.nn.Module) and compiled._orig_mod is MODEL


def test_meta_parameters_still_named_first():
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(MODEL.config)
    with pytest.raises(ValueError, match="has parameters on the meta device"):
        capture_qk(model).__enter__()
