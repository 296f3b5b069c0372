"""Issue 11 ("Hard edges"): one test per defect that gave a silent wrong result or a late / misleading error."""

import math

import numpy as np
import pytest
import torch
import transformers

from qkcore.covariance import ContrastiveCovariance
from qkcore.lm import (
    DeltaStreamer,
    KeySwap,
    LogitEdit,
    PromptPairs,
    attention_layout,
    capture_qk,
    edit_attention,
    pad_batch,
    run_model,
    stream_delta,
)
from qkcore.lm.tiny import tiny_config, tiny_model
from qkcore.subspace import combine_bases, decompose, ranks_at_energy
from qkcore.toy.task import TaskConfig
from qkcore.toy.train import ToyTrainConfig

torch.set_num_threads(1)

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 9, 20, 4, 33], [40, 41, 42, 43, 44, 45, 46]]


def rebuilt_vs_own(model, batch):
    """Largest |rebuilt − own| attention over real query rows, all heads, and whether logits stayed the same."""
    ref = run_model(model, batch, output_attentions=True)
    with capture_qk(model, keep_masks=True) as cap:
        out = run_model(model, batch)
    layout, rows = attention_layout(model), batch.attention_mask.bool()[:, :, None]
    worst = max(
        ((cap.attention(layer, h) - ref.attentions[layer][:, h]).abs() * rows).max().item()
        for layer in range(layout.n_layers)
        for h in range(layout.n_heads)
    )
    return worst, torch.equal(out.logits, ref.logits)


# 1 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_gpt_oss_sinks_are_in_the_rebuilt_attention(padding_side):
    model = tiny_model("gpt_oss", attn_implementation="eager")
    worst, same = rebuilt_vs_own(model, pad_batch(PROMPTS, padding_side))
    assert worst == 0.0 and same


def test_gpt_oss_edit_reads_the_models_own_attention():
    model = tiny_model("gpt_oss", attn_implementation="eager")
    batch = pad_batch(PROMPTS, "right")
    ref = run_model(model, batch, output_attentions=True)
    with edit_attention(model, read=[(1, 3)]) as ed:
        run_model(model, batch)
    rows = batch.attention_mask.bool()[:, :, None]
    assert ((ed.attention(1, 3) - ref.attentions[1][:, 3]).abs() * rows).max().item() < 1e-6
    assert ref.attentions[1][:, 3].sum(-1)[batch.attention_mask.bool()].min() < 0.9  # the sink takes a share


# 2 -------------------------------------------------------------------------------------------------------------
def test_gemma3n_kv_shared_layers_are_counted_and_read_the_shared_keys():
    model = tiny_model("gemma3n", attn_implementation="eager")
    layout = attention_layout(model)
    assert layout.n_layers == 4 and len(layout.all_heads()) == 16
    batch = pad_batch(PROMPTS, "left")
    with capture_qk(model, heads=[(3, 0), (2, 0), (1, 0), (0, 0)]) as cap:
        run_model(model, batch)
    shared = model.model.layers[3].self_attn
    assert shared.is_kv_shared_layer and not hasattr(shared, "k_proj")
    assert any(torch.equal(cap.k(3, 0), cap.k(p, 0)) for p in (0, 1))  # the keys it reuses, bit for bit
    worst, same = rebuilt_vs_own(model, batch)
    assert worst == 0.0 and same


# 3 -------------------------------------------------------------------------------------------------------------
def llama4_tuned():
    # layer 1 is a NoPE layer whose queries get the column-dependent temperature once column + 1 >= floor_scale
    return tiny_model(
        "llama4", attn_implementation="eager", no_rope_layers=[1, 0], floor_scale=4, attn_temperature_tuning=True
    )


def test_llama4_temperature_tuning_with_left_padding_is_refused():
    model = llama4_tuned()
    with pytest.raises(NotImplementedError, match="attn_temperature_tuning.*column index.*padding_side='right'"):
        with capture_qk(model):
            run_model(model, pad_batch(PROMPTS, "left"))
    pairs = [PromptPairs(positive=[(-1, [0])], negative=[(-1, [1])])] * 3
    with pytest.raises(NotImplementedError, match="attn_temperature_tuning"):
        stream_delta(model, None, PROMPTS, pairs, padding_side="left")


def test_llama4_right_padding_equals_one_by_one():
    model = llama4_tuned()
    batch = pad_batch(PROMPTS, "right")
    with capture_qk(model, heads=[(1, 0)]) as cap:
        run_model(model, batch)
    for row, prompt in enumerate(PROMPTS):
        with capture_qk(model, heads=[(1, 0)]) as one:
            run_model(model, pad_batch([prompt]))
        n = len(prompt)
        torch.testing.assert_close(cap.q(1, 0)[row, :n], one.q(1, 0)[0], atol=1e-6, rtol=1e-6)


def test_llama4_default_floor_scale_left_padding_is_fine():
    model = tiny_model("llama4", attn_implementation="eager", no_rope_layers=[1, 0])  # floor_scale 8192
    worst, same = rebuilt_vs_own(model, pad_batch(PROMPTS, "left"))
    assert worst == 0.0 and same


# 4 -------------------------------------------------------------------------------------------------------------
def test_capture_position_in_padding_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match=r"key_positions\[1\] contains column 8, a padding column.*columns 0..4"):
        with capture_qk(model, key_positions=[[8], [8], [8]]):
            run_model(model, pad_batch(PROMPTS, "right"))


@pytest.mark.parametrize(
    "cell, why", [((0, 3, 5), "future key"), ((1, 8, 2), "padding row"), ((1, 4, 7), "padding key")]
)
def test_logit_edit_of_a_masked_cell_is_refused(cell, why):
    model = tiny_model("llama", attn_implementation="eager")
    batch = pad_batch(PROMPTS, "right")  # prompt 1 has columns 0..4
    with pytest.raises(ValueError, match=r"LogitEdit cell.*is masked"):
        with edit_attention(model, [LogitEdit(0, 1, [cell], [3.0])]):
            run_model(model, batch)


def test_logit_edit_outside_the_sliding_window_is_refused():
    model = tiny_model("gemma2")  # window 4 on layer 0
    with pytest.raises(ValueError, match=r"LogitEdit cell \(row 0, query column 8, key column 1\) is masked"):
        with edit_attention(model, [LogitEdit(0, 0, [(0, 8, 1)], [3.0])]):
            run_model(model, pad_batch(PROMPTS, "left"))


def test_key_swap_on_a_future_or_padding_key_is_refused():
    model = tiny_model("llama", attn_implementation="eager")
    batch = pad_batch(PROMPTS, "right")
    basis = torch.eye(16)[:, :2]
    with pytest.raises(ValueError, match="KeySwap target key.*is masked"):
        with edit_attention(model, [KeySwap(1, 0, basis, orig=[0, 0, 0], target=[8, 8, 8], query=[4, 4, 4])]):
            run_model(model, batch)
    with pytest.raises(ValueError, match="target column 8 of row 1 is masked for every query"):
        with edit_attention(model, [KeySwap(1, 0, basis, orig=[0, 0, 0], target=[8, 8, 8])]):
            run_model(model, batch)


# 5 -------------------------------------------------------------------------------------------------------------
def test_loose_types_are_refused():
    q = torch.randn(3, 4)
    acc = ContrastiveCovariance(4)
    with pytest.raises(TypeError, match="positive must be True or False"):
        acc.add(q, q, positive="no")
    with pytest.raises(TypeError, match="positive must be True or False"):
        acc.add(q, q, positive=None)
    with pytest.raises(TypeError, match="d_head must be a positive int"):
        ContrastiveCovariance(16.7)
    with pytest.raises(TypeError, match="prompts must be an int"):
        acc.add(q, q, positive=True, prompts=2.5)
    with pytest.raises(TypeError, match=r"token_ids\[0\] must be a list of int token ids"):
        pad_batch([[1.5, 2.0]])
    with pytest.raises(TypeError, match="q must be a real floating-point tensor"):
        acc.add(q.to(torch.complex64), q, positive=True)
    with pytest.raises(ValueError, match="weight_decay must be a finite number"):
        ToyTrainConfig(weight_decay=math.nan)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        ToyTrainConfig(batch_size=2.5)
    with pytest.raises(ValueError, match="seed must be an integer"):
        TaskConfig(seed=1.5)


# 6 -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_matrices_are_refused(bad):
    m = torch.eye(4, dtype=torch.float64)
    m[0, 1] = bad
    with pytest.raises(ValueError, match="deltas must be finite"):
        ranks_at_energy(m[None])
    with pytest.raises(ValueError, match=r"bases\[1\] must be finite"):
        combine_bases([torch.eye(4)[:, :1], m[:, 1:2]])


# 7 -------------------------------------------------------------------------------------------------------------
# 8 -------------------------------------------------------------------------------------------------------------
def test_diffllama_is_refused_up_front_with_the_real_cause():
    model = transformers.DiffLlamaForCausalLM(
        transformers.DiffLlamaConfig(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    ).eval()
    match = "DiffLlama.*not supported.*attention function twice per layer"
    with pytest.raises(NotImplementedError, match=match):
        capture_qk(model).__enter__()
    with pytest.raises(NotImplementedError, match=match):
        DeltaStreamer(model)
    with pytest.raises(NotImplementedError, match=match):
        edit_attention(model, read=[(0, 0)]).__enter__()


def test_a_second_attention_call_in_one_forward_is_named():
    model = tiny_model("llama")
    attn = model.model.layers[0].self_attn
    original = attn.forward

    def twice(*args, **kwargs):
        original(*args, **kwargs)
        return original(*args, **kwargs)

    attn.forward = twice
    with pytest.raises(NotImplementedError, match="called the attention function twice in one forward pass"):
        with capture_qk(model):
            run_model(model, pad_batch(PROMPTS))


# 9 -------------------------------------------------------------------------------------------------------------
def test_heads_are_checked_against_the_config_before_any_forward_pass():
    from qkcore.lm.layout import attention_layout_from_config

    config = tiny_config("qwen3")
    layout = attention_layout_from_config(config)
    assert layout == attention_layout(tiny_model("qwen3"))
    assert layout.check_heads([[1, 3], (0, 0)]) == ((1, 3), (0, 0))
    with pytest.raises(ValueError, match=r"heads\[1\] = \(2, 0\): layer 2 is out of range.*0..1"):
        layout.check_heads([(0, 0), (2, 0)])
    with pytest.raises(ValueError, match=r"view_head\[0\] = \(0, 4\): head 4 is out of range"):
        layout.check_heads([(0, 4)], name="view_head")
    with pytest.raises(ValueError, match=r"heads lists the head \(1, 1\) more than once"):
        layout.check_heads([(1, 1), (1, 1)])
    with pytest.raises(TypeError, match="heads must be a list of"):
        layout.check_heads(None)


# 10 ------------------------------------------------------------------------------------------------------------
def test_meta_device_model_is_refused_up_front():
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(tiny_config("llama"))
    with pytest.raises(ValueError, match="capture_qk: .*meta device"):
        capture_qk(model).__enter__()
    with pytest.raises(ValueError, match="DeltaStreamer: .*meta device"):
        DeltaStreamer(model)
    with pytest.raises(ValueError, match="edit_attention: .*meta device"):
        edit_attention(model, read=[(0, 0)]).__enter__()


# 12 ------------------------------------------------------------------------------------------------------------
def test_errors_that_were_unclear():
    acc = ContrastiveCovariance(4)
    with pytest.raises(TypeError, match="q must be a torch.Tensor, got ndarray"):
        acc.add(np.zeros((2, 4)), torch.zeros(2, 4), positive=True)
    with pytest.raises(TypeError, match="delta must be a torch.Tensor, got NoneType"):
        decompose(None)
    with pytest.raises(TypeError, match="energy must be a number in"):
        decompose(torch.eye(3), energy="0.9")
    model = tiny_model("llama")
    with pytest.raises(TypeError, match='heads must be "all" or a list'):
        capture_qk(model, heads=None).__enter__()
    with pytest.raises(TypeError, match="model must be a torch.nn.Module.*NoneType"):
        capture_qk(None).__enter__()
    with capture_qk(model, heads=[(0, 0)], keep_masks=True) as cap:
        run_model(model, pad_batch(PROMPTS))
    with pytest.raises(ValueError, match="layer 5 is out of range"):
        cap.scaling(5)
    with pytest.raises(KeyError, match=r"layer 1: no head of it was captured; captured layers: \[0\]"):
        cap.mask(1)
    with pytest.raises(ValueError, match="token id 200.*vocabulary has 128 ids"):
        run_model(model, pad_batch([[1, 200]]))
    with pytest.raises(TypeError, match="prompts are strings but tokenizer is None"):
        stream_delta(model, None, ["a b"], [PromptPairs(positive=[(-1, [0])])])
