"""Bad inputs to qkcore.lm (layout, capture, streaming, edits, batches, positions): each must raise the right
exception with a message that names the offending argument and what it allows (issue 11)."""

import pytest
import torch
import transformers

from qkcore.lm import (
    DeltaStreamer,
    KeySwap,
    LogitEdit,
    PromptPairs,
    attention_layout,
    capture_qk,
    edit_attention,
    encode_batch,
    find_substring,
    iter_batches,
    pad_batch,
    resolve_point,
    run_model,
    stream_delta,
    token_span,
)
from qkcore.lm.layout import attention_layout_from_config
from qkcore.lm.tiny import tiny_model, tiny_tokenizer

torch.set_num_threads(1)

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [5, 9, 20, 4, 33], [40, 41, 42, 43, 44, 45, 46]]
MODEL = tiny_model("llama", attn_implementation="eager")  # 2 layers × 4 heads over 2 key heads, d_head 16
LAYOUT = attention_layout(MODEL)
BATCH = pad_batch(PROMPTS, "right")  # prompt 1: columns 0..4
TOK = tiny_tokenizer("word")
BASIS = torch.eye(16)[:, :2]
PAIRS = [PromptPairs(positive=[(-1, [0])], negative=[(-1, [1])])] * 3


def captured(**kw):
    with capture_qk(MODEL, **kw) as cap:
        run_model(MODEL, BATCH)
    return cap


def capture_run(**kw):
    with capture_qk(MODEL, **kw):
        run_model(MODEL, BATCH)


def edit_run(edits, read=(), batch=BATCH):
    with edit_attention(MODEL, edits, read) as ed:
        run_model(MODEL, batch)
    return ed


def streamer(heads="all"):
    st = DeltaStreamer(MODEL, heads)
    st.add(BATCH, PAIRS)
    return st


CASES = {
    # layout
    "layout None": (lambda: attention_layout(None), TypeError, "model must be a torch.nn.Module.*NoneType"),
    "layout str": (lambda: attention_layout("llama"), TypeError, "model must be a torch.nn.Module.*str"),
    "layout from config None": (
        lambda: attention_layout_from_config(None),
        TypeError,
        "config must be a transformers PretrainedConfig",
    ),
    "layout from config dict": (
        lambda: attention_layout_from_config({"model_type": "llama"}),
        TypeError,
        "config must be a transformers PretrainedConfig, got dict",
    ),
    "select heads None": (lambda: LAYOUT.select(None), TypeError, 'heads must be "all" or a list of'),
    "select heads int": (lambda: LAYOUT.select(5), TypeError, 'heads must be "all" or a list of'),
    "select heads dict": (lambda: LAYOUT.select({0: 1}), TypeError, 'heads must be "all" or a list of'),
    "select heads str": (lambda: LAYOUT.select("some"), ValueError, "heads must be \"all\" or a list.*got 'some'"),
    "select item short": (lambda: LAYOUT.select([(0,)]), ValueError, r"each head must be a \(layer, head\) pair"),
    "select item int": (lambda: LAYOUT.select([3]), ValueError, r"each head must be a \(layer, head\) pair"),
    "select layer range": (lambda: LAYOUT.select([(2, 0)]), ValueError, r"layer 2 is out of range.*\(0..1\)"),
    "select head range": (lambda: LAYOUT.select([(0, 4)]), ValueError, r"head 4 is out of range.*\(0..3\)"),
    "select head negative": (lambda: LAYOUT.select([(0, -1)]), ValueError, "head -1 is out of range"),
    "select layer bool": (lambda: LAYOUT.select([(True, 0)]), TypeError, "layer must be an int, got True"),
    "select head float": (lambda: LAYOUT.select([(0, 1.0)]), TypeError, r"head must be an int, got 1\.0"),
    "select empty": (lambda: LAYOUT.select([]), ValueError, "no heads chosen: pass heads='all' or a non-empty"),
    "select repeated": (lambda: LAYOUT.select([(0, 1), (0, 1)]), ValueError, r"heads listed more than once"),
    "check_heads None": (lambda: LAYOUT.check_heads(None), TypeError, r"heads must be a list of \(layer, head\)"),
    "check_heads str": (lambda: LAYOUT.check_heads("all"), TypeError, r"heads must be a list of \(layer, head\)"),
    "check_heads single pair": (
        lambda: LAYOUT.check_heads((1, 2)),
        TypeError,
        r"got the single pair \(1, 2\); write \[\(1, 2\)\]",
    ),
    "check_heads empty": (lambda: LAYOUT.check_heads([]), ValueError, r"heads is empty: give at least one"),
    "check_heads short": (lambda: LAYOUT.check_heads([(1,)]), TypeError, r"heads\[0\] must be a \(layer, head\)"),
    "check_heads None item": (lambda: LAYOUT.check_heads([None]), TypeError, r"heads\[0\] must be a \(layer"),
    "check_heads float": (
        lambda: LAYOUT.check_heads([(1.0, 0)]),
        TypeError,
        r"heads\[0\] = \(1\.0, 0\): layer must be an int in 0..1",
    ),
    "check_heads str head": (
        lambda: LAYOUT.check_heads([(0, "1")]),
        TypeError,
        r"head must be an int in 0..3, got '1'",
    ),
    "check_heads bool": (lambda: LAYOUT.check_heads([(0, False)]), TypeError, "head must be an int"),
    "check_heads layer range": (
        lambda: LAYOUT.check_heads([(0, 0), (5, 0)]),
        ValueError,
        r"heads\[1\] = \(5, 0\): layer 5 is out of range.*layer must be in 0..1",
    ),
    "check_heads head range": (
        lambda: LAYOUT.check_heads([(0, 9)], name="view_head"),
        ValueError,
        r"view_head\[0\] = \(0, 9\): head 9 is out of range.*head must be in 0..3",
    ),
    "check_heads negative": (lambda: LAYOUT.check_heads([(-1, 0)]), ValueError, "layer -1 is out of range"),
    "check_heads repeated": (
        lambda: LAYOUT.check_heads([[0, 1], (0, 1)]),
        ValueError,
        r"heads lists the head \(0, 1\) more than once",
    ),
    "resolve unknown": (
        lambda: resolve_point(MODEL, "model.layers.0.self_attn.k_proj"),
        KeyError,
        "unknown capture point.*'.q_rot' or '.k_rot'",
    ),
    "resolve layer": (
        lambda: resolve_point(LAYOUT, "model.layers.7.self_attn.q_rot"),
        KeyError,
        "unknown capture point",
    ),
    # capture
    "capture None": (lambda: capture_qk(None).__enter__(), TypeError, "capture_qk: model must be a torch.nn.Module"),
    "capture heads None": (lambda: capture_qk(MODEL, heads=None).__enter__(), TypeError, 'heads must be "all"'),
    "capture heads range": (
        lambda: capture_qk(MODEL, heads=[(3, 0)]).__enter__(),
        ValueError,
        "layer 3 is out of range",
    ),
    "capture keep_masks str": (
        lambda: capture_qk(MODEL, keep_masks="yes").__enter__(),
        TypeError,
        "keep_masks must be True or False, got 'yes'",
    ),
    "capture positions 1-D": (
        lambda: capture_qk(MODEL, query_positions=[1, 2]).__enter__(),
        ValueError,
        r"query_positions must be a \(batch, n\) integer tensor",
    ),
    "capture positions float": (
        lambda: capture_qk(MODEL, key_positions=[[1.5]]).__enter__(),
        ValueError,
        r"key_positions must be a \(batch, n\) integer",
    ),
    "capture positions bool": (
        lambda: capture_qk(MODEL, key_positions=[[True]]).__enter__(),
        ValueError,
        "key_positions must be a",
    ),
    "capture positions str": (
        lambda: capture_qk(MODEL, query_positions=[["a"]]).__enter__(),
        ValueError,
        "query_positions must be a",
    ),
    "capture positions ragged": (
        lambda: capture_qk(MODEL, query_positions=[[1], [1, 2]]).__enter__(),
        ValueError,
        "query_positions must be a",
    ),
    "capture positions range": (
        lambda: capture_run(query_positions=[[9], [0], [0]]),
        ValueError,
        r"query_positions contains position 9, out of range.*\(0..8\)",
    ),
    "capture positions negative": (
        lambda: capture_run(key_positions=[[-1], [0], [0]]),
        ValueError,
        "key_positions contains position -1, out of range",
    ),
    "capture positions rows": (
        lambda: capture_run(key_positions=[[0]]),
        ValueError,
        "key_positions has 1 rows but the batch has 3 prompts",
    ),
    "capture position padding": (
        lambda: capture_run(query_positions=[[8], [8], [6]]),
        ValueError,
        r"query_positions\[1\] contains column 8, a padding column.*columns 0..4",
    ),
    "cap q layer range": (lambda: captured().q(2, 0), ValueError, "layer 2 is out of range"),
    "cap q head range": (lambda: captured().q(0, 4), ValueError, "head 4 is out of range"),
    "cap q float": (lambda: captured().q(0.0, 1), TypeError, "layer must be an int"),
    "cap q not captured": (lambda: captured(heads=[(0, 0)]).k(0, 2), KeyError, r"head \(0, 2\) was not captured"),
    "cap point unknown": (lambda: captured()["model.layers.0.q_rot"], KeyError, "unknown capture point"),
    "cap point not captured": (
        lambda: captured(heads=[(0, 0)])["model.layers.1.self_attn.q_rot"],
        KeyError,
        "no head of layer 1 was captured",
    ),
    "cap scaling range": (lambda: captured().scaling(5), ValueError, r"layer 5 is out of range.*\(0..1\)"),
    "cap scaling str": (lambda: captured().scaling("0"), TypeError, "layer must be an int"),
    "cap scaling not captured": (
        lambda: captured(heads=[(1, 0)]).scaling(0),
        KeyError,
        r"layer 0: no head of it was captured; captured layers: \[1\]",
    ),
    "cap mask without keep_masks": (lambda: captured().mask(0), KeyError, "pass keep_masks=True"),
    "cap mask not captured": (
        lambda: captured(heads=[(0, 0)], keep_masks=True).mask(1),
        KeyError,
        "layer 1: no head of it was captured",
    ),
    "cap attention positions": (
        lambda: captured(query_positions=[[0], [0], [0]]).attention(0, 0),
        ValueError,
        "attention\\(\\) needs vectors at every position",
    ),
    "cap before run": (lambda: capture_qk(MODEL).__enter__().q(0, 0), RuntimeError, "layer 0 has not run yet"),
    # streaming
    "pairs key int": (
        lambda: PromptPairs(positive=[(0, 1)]),
        ValueError,
        r"positive: key positions must be a list, got the int 1 \(write \[1\]\)",
    ),
    "pairs query float": (lambda: PromptPairs(negative=[(0.5, [1])]), ValueError, "negative: positions must be ints"),
    "pairs short": (
        lambda: PromptPairs(positive=[(0,)]),
        ValueError,
        r"positive: each entry must be \(query_position, \[key_positions\]\)",
    ),
    "pairs str": (lambda: PromptPairs(positive=[("a", [1])]), ValueError, "positive: positions must be ints"),
    "pairs bool": (lambda: PromptPairs(positive=[(True, [1])]), ValueError, "positive: positions must be ints"),
    "streamer weighting": (
        lambda: DeltaStreamer(MODEL, weighting="mean"),
        ValueError,
        "weighting must be one of.*pair_mean",
    ),
    "streamer heads None": (lambda: DeltaStreamer(MODEL, heads=None), TypeError, 'heads must be "all"'),
    "streamer model None": (lambda: DeltaStreamer(None), TypeError, "DeltaStreamer: model must be a torch.nn"),
    "streamer pairs count": (
        lambda: DeltaStreamer(MODEL).add(BATCH, PAIRS[:2]),
        ValueError,
        "2 PromptPairs for a batch of 3 prompts",
    ),
    "streamer pairs type": (
        lambda: DeltaStreamer(MODEL).add(BATCH, [1, 2, 3]),
        TypeError,
        "pairs must be PromptPairs objects",
    ),
    "streamer key after query": (
        lambda: DeltaStreamer(MODEL).add(BATCH, [PromptPairs(positive=[(0, [2])])] * 3),
        ValueError,
        "key position 2 comes after query position 0",
    ),
    "streamer position range": (
        lambda: DeltaStreamer(MODEL).add(BATCH, [PromptPairs(positive=[(7, [0])])] * 3),
        ValueError,
        r"position 7 is out of range for prompt 1, which has 5 tokens",
    ),
    "streamer delta range": (lambda: streamer().delta(2, 0), ValueError, "layer 2 is out of range"),
    "streamer delta not streamed": (
        lambda: streamer([(0, 0)]).delta(0, 1),
        KeyError,
        r"head \(0, 1\) is not among the streamed heads",
    ),
    "streamer grid subset": (lambda: streamer([(0, 0)]).grid(), ValueError, r"grid\(\) needs every head"),
    "stream prompts str": (
        lambda: stream_delta(MODEL, TOK, "the cat", PAIRS),
        TypeError,
        "prompts must be a list of strings or of token-id lists, got str",
    ),
    "stream prompts int": (lambda: stream_delta(MODEL, TOK, 5, PAIRS), TypeError, "prompts must be a list"),
    "stream pairs single": (
        lambda: stream_delta(MODEL, TOK, PROMPTS, PAIRS[0]),
        TypeError,
        "pairs must be a list of PromptPairs",
    ),
    "stream no tokenizer": (
        lambda: stream_delta(MODEL, None, ["the cat"], PAIRS[:1]),
        TypeError,
        "prompts are strings but tokenizer is None",
    ),
    "stream mixed": (
        lambda: stream_delta(MODEL, TOK, ["the cat", [5, 6]], PAIRS[:2]),
        TypeError,
        "prompts mixes strings and token-id lists",
    ),
    "stream count": (
        lambda: stream_delta(MODEL, TOK, PROMPTS, PAIRS[:2]),
        ValueError,
        "3 prompts but 2 PromptPairs: give one per prompt",
    ),
    "stream batch_size 0": (
        lambda: stream_delta(MODEL, TOK, PROMPTS, PAIRS, batch_size=0),
        ValueError,
        "batch_size must be >= 1, got 0",
    ),
    "stream batch_size float": (
        lambda: stream_delta(MODEL, TOK, PROMPTS, PAIRS, batch_size=2.5),
        TypeError,
        r"batch_size must be an int >= 1, got 2\.5",
    ),
    "stream padding_side": (
        lambda: stream_delta(MODEL, TOK, PROMPTS, PAIRS, padding_side="middle"),
        ValueError,
        r"padding_side must be one of \('left', 'right'\)",
    ),
    "stream token too big": (
        lambda: stream_delta(MODEL, TOK, [[1, 500]], PAIRS[:1]),
        ValueError,
        "token id 500, but the model's vocabulary has 128 ids",
    ),
    # edits
    "logit cells empty": (
        lambda: LogitEdit(0, 0, [], []),
        ValueError,
        r"cells must be a non-empty list of \(row, query_column, key_column\)",
    ),
    "logit cell short": (lambda: LogitEdit(0, 0, [(0, 1)], [1.0]), ValueError, "cells must be a non-empty list"),
    "logit cell float": (lambda: LogitEdit(0, 0, [(0, 1.5, 0)], [1.0]), ValueError, "cells must be a non-empty"),
    "logit cell None": (lambda: LogitEdit(0, 0, [None], [1.0]), ValueError, "cells must be a non-empty list"),
    "logit cells int": (lambda: LogitEdit(0, 0, 3, [1.0]), ValueError, "cells must be a non-empty list"),
    "logit values count": (
        lambda: LogitEdit(0, 0, [(0, 1, 0)], [1.0, 2.0]),
        ValueError,
        "2 values for 1 cells: give one value per cell",
    ),
    "logit values nan": (
        lambda: LogitEdit(0, 0, [(0, 1, 0)], [float("nan")]),
        ValueError,
        "logit values must be finite",
    ),
    "logit values str": (lambda: LogitEdit(0, 0, [(0, 1, 0)], ["a"]), TypeError, "values must be real numbers"),
    "logit values complex": (
        lambda: LogitEdit(0, 0, [(0, 1, 0)], torch.tensor([1 + 1j])),
        TypeError,
        "values must be real numbers",
    ),
    "logit values bool": (lambda: LogitEdit(0, 0, [(0, 1, 0)], [True]), TypeError, "values must be real numbers"),
    "swap basis numpy": (
        lambda: KeySwap(0, 0, BASIS.numpy(), [0], [1]),
        TypeError,
        r"basis must be a real \(d_head, r\) torch.Tensor",
    ),
    "swap basis 1-D": (lambda: KeySwap(0, 0, BASIS[:, 0], [0], [1]), TypeError, "basis must be a real"),
    "swap basis int": (lambda: KeySwap(0, 0, BASIS.long(), [0], [1]), TypeError, "basis must be a real"),
    "swap basis nan": (lambda: KeySwap(0, 0, BASIS * float("nan"), [0], [1]), ValueError, "basis must be finite"),
    "swap orig float": (
        lambda: KeySwap(0, 0, BASIS, [0.5], [1]),
        ValueError,
        "orig must be a 1-D list of integer batch columns",
    ),
    "swap target str": (lambda: KeySwap(0, 0, BASIS, [0], "a"), ValueError, "target must be a 1-D list"),
    "swap query bool": (lambda: KeySwap(0, 0, BASIS, [0], [1], [True]), ValueError, "query must be a 1-D list"),
    "swap lengths": (
        lambda: KeySwap(0, 0, BASIS, [0, 1], [1]),
        ValueError,
        r"orig, target \(and query\) need one column per batch row",
    ),
    "edit model None": (lambda: edit_attention(None).__enter__(), TypeError, "edit_attention: model must be"),
    "edit not an edit": (
        lambda: edit_attention(MODEL, ["swap"]).__enter__(),
        TypeError,
        "edits must be LogitEdit or KeySwap, got str",
    ),
    "edit layer range": (
        lambda: edit_attention(MODEL, [LogitEdit(4, 0, [(0, 1, 0)], [1.0])]).__enter__(),
        ValueError,
        "layer 4 is out of range",
    ),
    "edit head float": (
        lambda: edit_attention(MODEL, [LogitEdit(0, 1.0, [(0, 1, 0)], [1.0])]).__enter__(),
        TypeError,
        "head must be an int",
    ),
    "edit basis size": (
        lambda: edit_attention(MODEL, [KeySwap(0, 0, torch.eye(8)[:, :2], [0], [1])]).__enter__(),
        ValueError,
        r"KeySwap basis must be \(head_dim=16, r\)",
    ),
    "edit read range": (lambda: edit_attention(MODEL, read=[(0, 7)]).__enter__(), ValueError, "head 7 is out of range"),
    "edit row range": (
        lambda: edit_run([LogitEdit(0, 0, [(3, 1, 0)], [1.0])]),
        ValueError,
        r"row 3 is out of range for 3 positions \(0..2\)",
    ),
    "edit column range": (
        lambda: edit_run([LogitEdit(0, 0, [(0, 9, 0)], [1.0])]),
        ValueError,
        r"query column 9 is out of range for 9 positions \(0..8\)",
    ),
    "edit future key": (
        lambda: edit_run([LogitEdit(0, 0, [(0, 2, 5)], [1.0])]),
        ValueError,
        r"LogitEdit cell \(row 0, query column 2, key column 5\) is masked",
    ),
    "edit padding key": (
        lambda: edit_run([LogitEdit(0, 0, [(1, 4, 6)], [1.0])]),
        ValueError,
        "LogitEdit cell.*is masked for this head",
    ),
    "edit padding query": (
        lambda: edit_run([LogitEdit(0, 0, [(1, 7, 0)], [1.0])]),
        ValueError,
        "LogitEdit cell.*is masked",
    ),
    "swap batch size": (
        lambda: edit_run([KeySwap(0, 0, BASIS, [0], [1])]),
        ValueError,
        "KeySwap of head .* has 1 swaps for a batch of 3 prompts",
    ),
    "swap column range": (
        lambda: edit_run([KeySwap(0, 0, BASIS, [0, 0, 0], [9, 1, 1])]),
        ValueError,
        "target column 9 is out of range",
    ),
    "swap future key": (
        lambda: edit_run([KeySwap(0, 0, BASIS, [0, 0, 0], [3, 3, 3], [2, 2, 2])]),
        ValueError,
        "KeySwap target key.*is masked",
    ),
    "swap padding key": (
        lambda: edit_run([KeySwap(0, 0, BASIS, [0, 7, 0], [1, 1, 1])]),
        ValueError,
        "orig column 7 of row 1 is masked for every query",
    ),
    "edit read not read": (
        lambda: edit_run([], read=[(0, 0)]).attention(0, 1),
        KeyError,
        r"head \(0, 1\) was neither edited nor read",
    ),
    # batches
    "pad str": (lambda: pad_batch("abc"), TypeError, "token_ids must be a list of token-id lists"),
    "pad 1-D tensor": (lambda: pad_batch(torch.tensor([1, 2])), TypeError, "token_ids must be a list of token-id"),
    "pad empty": (lambda: pad_batch([]), ValueError, "empty batch: give at least one prompt"),
    "pad empty prompt": (lambda: pad_batch([[1], []]), ValueError, "prompt 1 has no tokens"),
    "pad float ids": (lambda: pad_batch([[1.5, 2.0]]), TypeError, r"token_ids\[0\] must be a list of int token ids"),
    "pad str ids": (lambda: pad_batch([["a"]]), TypeError, r"token_ids\[0\] must be a list of int token ids"),
    "pad str row": (lambda: pad_batch([[1], "ab"]), TypeError, r"token_ids\[1\] must be a list of int"),
    "pad bool ids": (lambda: pad_batch([[True, False]]), TypeError, r"token_ids\[0\] must be a list of int"),
    "pad nested": (lambda: pad_batch([[[1, 2]]]), TypeError, r"token_ids\[0\] must be a list of int"),
    "pad negative": (lambda: pad_batch([[1, -3]]), ValueError, r"token_ids\[0\] contains the negative token id -3"),
    "pad side": (lambda: pad_batch([[1]], padding_side="top"), ValueError, "padding_side must be one of"),
    "pad_id float": (lambda: pad_batch([[1]], pad_id=1.5), TypeError, r"pad_id must be an int, got 1\.5"),
    "pad_id None": (lambda: pad_batch([[1]], pad_id=None), TypeError, "pad_id must be an int, got None"),
    "padded row": (lambda: BATCH.padded(5, 0), ValueError, "row 5 out of range for a batch of 3 prompts"),
    "padded position": (
        lambda: BATCH.padded(1, 5),
        ValueError,
        r"position 5 is out of range for prompt 1, which has 5 tokens \(valid: -5..4\)",
    ),
    "padded_positions rows": (
        lambda: BATCH.padded_positions([[0]]),
        ValueError,
        "1 rows of positions for a batch of 3 prompts",
    ),
    "padded_positions ragged": (
        lambda: BATCH.padded_positions([[0], [0, 1], [0]]),
        ValueError,
        "every prompt needs the same number of positions",
    ),
    "span on ids": (lambda: BATCH.span(0, "cat"), ValueError, "this batch was built from token ids"),
    "encode one string": (lambda: encode_batch(TOK, "the cat"), TypeError, "texts must be a list of strings"),
    "iter batch_size 0": (lambda: list(iter_batches(5, 0)), ValueError, "batch_size must be >= 1, got 0"),
    "iter batch_size float": (lambda: list(iter_batches(5, 2.5)), TypeError, "batch_size must be an int >= 1"),
    "iter batch_size None": (lambda: list(iter_batches(5, None)), TypeError, "batch_size must be an int >= 1"),
    "run_model list": (
        lambda: run_model(MODEL, [[1, 2]]),
        TypeError,
        "batch must be an EncodedBatch .*from encode_batch or pad_batch.*, got list",
    ),
    "run_model token too big": (
        lambda: run_model(MODEL, pad_batch([[1, 128]])),
        ValueError,
        r"token id 128, but the model's vocabulary has 128 ids \(0..127\)",
    ),
    # positions
    "substring empty": (lambda: find_substring("a cat", ""), ValueError, "substring is empty"),
    "substring missing": (
        lambda: find_substring("a cat", "dog"),
        ValueError,
        "substring 'dog' not found as a whole word",
    ),
    "substring inside word": (lambda: find_substring("Answer", "A"), ValueError, "substring 'A' not found"),
    "substring ambiguous": (
        lambda: find_substring("cat cat", "cat"),
        ValueError,
        r"substring 'cat' is ambiguous: it occurs 2 times.*pass occurrence=i",
    ),
    "substring occurrence": (
        lambda: find_substring("cat cat", "cat", occurrence=2),
        ValueError,
        "occurs 2 times, so occurrence=2 does not exist",
    ),
    "span slow tokenizer": (lambda: token_span(object(), "a cat", "cat"), TypeError, "is not a fast tokenizer"),
    "span missing": (lambda: token_span(TOK, "the cat sat", "dog"), ValueError, "substring 'dog' not found"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_lm_bad_input_is_a_clear_error(case):
    call, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        call()


def test_meta_model_is_refused_by_every_entry_point():
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(MODEL.config)
    for enter in (
        lambda: capture_qk(model).__enter__(),
        lambda: DeltaStreamer(model),
        lambda: edit_attention(model).__enter__(),
    ):
        with pytest.raises(ValueError, match="parameters on the meta device.*Load the weights first"):
            enter()
