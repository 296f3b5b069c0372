"""qkcore.lm: the post-rotary queries and keys of Hugging Face causal LMs — capture, streaming ΔC for every head,
logit edits and key swaps, token positions from text (paper §3 "The method"; Figures 6–10).

Verified (tests/lm/) on tiny random models of 39 decoder families (the README's "Supported architectures" table) and on
the real weights of SmolLM2-135M-Instruct and Qwen2.5-Coder-0.5B-Instruct: attention rebuilt from captured q, k equals
the model's own eager attention; outputs with capture on == off; batched == one by one. Families that cannot be
captured exactly are refused up front. Indices are 0-based (L20H26 = layer 20, head 26). GQA: query head h reads key
head h // group_size.

Loading (loading.py)
    model, tok = load_model(name_or_path, dtype="float32", device=None, device_map=None, attn_implementation=None,
                            trust_remote_code=False, revision=None, tokenizer=True, cache=True, progress=None)
        # registered name, .gguf file or folder, local folder, hub id; offline-aware; clear error if not on disk
    lm = load_lm("smollm2-135m-instruct" | "filter-5x5" | path | hub id, dtype="float32", device="cpu")  # LoadedLM
    MODELS, registered(name) -> RegisteredModel(name, kind, description, how_to_get, attn_implementation).locate()
    GGUF files (gguf.py): dequantised by transformers, float32 copy cached in $QKCORE_CACHE/gguf/<sha256>/
    GGUF split over packages (chunks.py): assembled once into $QKCORE_CACHE/assembled/<sha256>/<name>.gguf

Layout and point names (layout.py)
    layout = attention_layout(model)   # .n_layers .n_heads .n_kv_heads .head_dim .group_size .module_paths
    layout.point_names()               # ["model.layers.0.self_attn.q_rot", "model.layers.0.self_attn.k_rot", ...]
    resolve_point(model, name) -> QKPoint(layer, kind, module_path)

Batches (batching.py) — prompt positions: 0 = first token of the prompt, -1 = last; padding never shifts them
    batch = encode_batch(tok, texts, padding_side="left", add_special_tokens=True)   # EncodedBatch
    batch = pad_batch(list_of_token_id_lists, padding_side="left")
    batch.padded(row, position) -> batch column;  batch.padded_positions([[...], ...]) -> (batch, n) columns
    out = run_model(model, batch)      # passes attention_mask + position_ids, use_cache=False, no_grad
    iter_batches(n, batch_size, progress=False)   # index ranges, tqdm bar if progress

Capture (capture.py)
    with capture_qk(model, heads="all" | [(layer, head), ...], query_positions=None | (batch, n) columns,
                    key_positions=None | (batch, n) columns, keep_masks=False, device=None) as cap:
        run_model(model, batch)
    cap.q(layer, head) -> (batch, n_q, d);  cap.k(layer, head) -> (batch, n_k, d)   (post-rotary, detached)
    cap["model.layers.1.self_attn.q_rot"] -> (batch, captured heads, n, d);  cap.scaling(layer)
    cap.attention(layer, head) -> softmax rebuilt from q, k (needs all positions and keep_masks=True)

Streaming ΔC (streaming.py)
    pairs = [PromptPairs(positive=[(q_pos, [k_pos, ...]), ...], negative=[...]) for each prompt]
    st = stream_delta(model, tok, prompts, pairs, heads="all", batch_size=8, padding_side="left",
                      weighting="pair_mean" | "prompt_sum", add_special_tokens=True, progress=False)
    st = DeltaStreamer(model, heads, weighting); st.add(batch, pairs)     # your own batching
    st.acc (ContrastiveCovariance, head_shape=(len(st.heads),)), st.heads, st.delta(layer, head) -> (d, d),
    st.delta() -> (n_heads_chosen, d, d), st.grid() -> (n_layers, n_heads, d, d), st.logit_gap()

Long runs (streaming.py, resume.py, distributed.py, identity.py, placement.py)
    st.merge(other_st); st.state_dict(); st.load_state_dict(state); st.save(path, contrast=None)
    DeltaStreamer.load(path, model, contrast=None)       # refuses another model (model_identity) or contrast
    stream_delta(..., checkpoint="run.pt", checkpoint_every=10)   # saves every N batches, resumes after a crash
    stream_delta_distributed(model, tok, prompts, pairs, ..., out="dc.pt")   # under torchrun, gloo or nccl
    model_identity(model), contrast_definition(prompts, pairs, **settings)     # what a saved ΔC belongs to
    DeltaStreamer(model, per_layer=None)   # device_map over several devices: one accumulator per layer, on its device

Token positions from text (positions.py) — whole words, never inside special tokens; missing/ambiguous → error
    span = token_span(tok, text, "scooter", occurrence=None, whole_word=True, add_special_tokens=True,
                      allow_partial=False)       # TokenSpan(start, stop, char_start, char_end); .last, .positions
    span = batch.span(row, "tea", occurrence=-1)  # on an EncodedBatch row; then batch.padded(row, span.last)

Edits (editing.py) — columns are batch columns; needs attn_implementation "eager" or "sdpa"
    LogitEdit(layer, head, cells=[(row, q_col, k_col), ...], values=[raw q·k, ...])
    KeySwap(layer, head, basis (d, r), orig=[col per row], target=[col per row], query=[col per row] | None)
    with edit_attention(model, edits=[...], read=[(layer, head), ...]) as ed:
        run_model(model, batch)
    ed.attention(layer, head) -> (batch, q_len, kv_len) float32;  ed.logits(layer, head) -> raw q·k after edits

Gathering (gather.py) — one pass, q at one column per row and k at chosen columns: what every chapter's pairs come from
    got = gather_qk(model, batch, heads, query_cols (b,), key_cols (b, n) | None, attn_cols=None | (b, m))
    got.q (H, b, d), got.k (H, b, n, d), got.attn (H, b, m) | None, got.output (the model's output)
    gather_qk(..., logits=False)   # output None: the pass stops after the deepest head's attention (bit-identical)

Early exit (early_exit.py) — compute no more than is read
    run_until(model, batch, layer)   # layers 0..layer's attention only: no later layer, no LM head (capture around it)
    last_logits(model, batch)        # (b, vocab) at each row's last token; the LM head runs only there

Chat text (chat.py), controls (controls.py), head names (layout.py)
    text, shift = model_text(tokenizer, prompt, chat=uses_chat_template(tokenizer), assistant_prefix="")
    control = random_init_copy(model, seed)    # same architecture, fresh weights, global RNG untouched
    head_name((16, 21)) -> "L16H21";  head_names([(16, 1), (17, 24)]) -> "L16H1, L17H24"

Tiny models (tiny.py): tiny_model(family, seed=0, attn_implementation=None, **config_overrides), FAMILIES,
    tiny_tokenizer("byte_bpe" | "metaspace" | "word")
"""

from qkcore.lm.batching import EncodedBatch, encode_batch, iter_batches, pad_batch, run_model
from qkcore.lm.capture import QKCapture, capture_qk
from qkcore.lm.chat import model_text, uses_chat_template
from qkcore.lm.controls import random_init_copy
from qkcore.lm.distributed import all_reduce_streamer, stream_delta_distributed
from qkcore.lm.early_exit import last_logits, run_until
from qkcore.lm.editing import AttentionEdits, KeySwap, LogitEdit, edit_attention
from qkcore.lm.gather import GatheredQK, gather_qk
from qkcore.lm.identity import contrast_definition, model_identity
from qkcore.lm.layout import AttentionLayout, QKPoint, attention_layout, head_name, head_names, resolve_point
from qkcore.lm.loading import LoadedLM, load_lm, load_model
from qkcore.lm.positions import TokenSpan, find_substring, token_span
from qkcore.lm.registry import MODELS, RegisteredModel, registered
from qkcore.lm.streaming import DeltaStreamer, PromptPairs, stream_delta
from qkcore.lm.tiny import FAMILIES, tiny_model, tiny_tokenizer

__all__ = [
    "AttentionLayout",
    "QKPoint",
    "attention_layout",
    "resolve_point",
    "EncodedBatch",
    "encode_batch",
    "pad_batch",
    "run_model",
    "iter_batches",
    "QKCapture",
    "capture_qk",
    "GatheredQK",
    "gather_qk",
    "run_until",
    "last_logits",
    "model_text",
    "uses_chat_template",
    "random_init_copy",
    "head_name",
    "head_names",
    "PromptPairs",
    "DeltaStreamer",
    "stream_delta",
    "stream_delta_distributed",
    "all_reduce_streamer",
    "model_identity",
    "contrast_definition",
    "LogitEdit",
    "KeySwap",
    "AttentionEdits",
    "edit_attention",
    "TokenSpan",
    "token_span",
    "find_substring",
    "load_model",
    "LoadedLM",
    "load_lm",
    "RegisteredModel",
    "MODELS",
    "registered",
    "FAMILIES",
    "tiny_model",
    "tiny_tokenizer",
]
