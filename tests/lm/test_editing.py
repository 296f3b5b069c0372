"""Logit edits and key swaps: reading without edits gives the model's own attention; an edit changes exactly the
cells it names and propagates downstream; a key swap equals the swap done by hand on captured vectors."""

import pytest
import torch

from qkcore.interventions import swap_in_subspace
from qkcore.lm import capture_qk, pad_batch, run_model
from qkcore.lm.editing import KeySwap, LogitEdit, edit_attention
from qkcore.lm.tiny import FAMILIES, NO_SDPA, tiny_model
from qkcore.subspace import random_orthonormal

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12], [5, 9, 20, 4, 33]]


@pytest.mark.parametrize(
    "family, impl", [(f, i) for f in FAMILIES for i in ("eager", "sdpa") if not (i == "sdpa" and f in NO_SDPA)]
)
def test_read_without_edits_is_the_models_attention(family, impl):
    model, eager = tiny_model(family, attn_implementation=impl), tiny_model(family, attn_implementation="eager")
    batch = pad_batch(PROMPTS, "left")
    ref = run_model(eager, batch, output_attentions=True)
    bare = run_model(model, batch).logits
    with edit_attention(model, read=[(0, 1), (1, 3)]) as ed:
        out = run_model(model, batch).logits
    assert torch.equal(out, bare)  # reading changes nothing
    rows = batch.attention_mask.bool()[:, :, None]
    for layer, head in [(0, 1), (1, 3)]:
        diff = ((ed.attention(layer, head) - ref.attentions[layer][:, head]).abs() * rows).max().item()
        assert diff < (1e-6 if impl == "eager" else 1e-5)  # sdpa's own kernels differ from eager's in the last bits


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_logit_edit_changes_exactly_the_named_cells(impl):
    model = tiny_model("qwen3", attn_implementation=impl)
    batch = pad_batch(PROMPTS, "left")
    cells = [(0, 7, 2), (1, 7, 4), (1, 5, 3)]
    with edit_attention(model, read=[(0, 1), (0, 2)]) as before:
        out0 = run_model(model, batch, output_hidden_states=True)
    edit = LogitEdit(0, 1, cells=cells, values=[5.0, -3.0, 2.5])
    with edit_attention(model, [edit], read=[(0, 2)]) as after:
        out1 = run_model(model, batch, output_hidden_states=True)
    changed = (after.logits(0, 1) != before.logits(0, 1)).nonzero().tolist()
    assert changed == sorted(list(c) for c in cells)
    assert after.logits(0, 1)[1, 7, 4].item() == -3.0
    att_changed = (after.attention(0, 1) != before.attention(0, 1)).any(-1).nonzero().tolist()
    assert att_changed == [[0, 7], [1, 5], [1, 7]]  # only the rows holding an edited cell
    assert torch.equal(after.attention(0, 2), before.attention(0, 2))  # other heads untouched
    # downstream: positions after the earliest edited row change, earlier ones do not
    h0, h1 = out0.hidden_states[1], out1.hidden_states[1]  # output of layer 0: (batch, seq, hidden)
    assert torch.equal(h0[0, :7], h1[0, :7]) and not torch.allclose(h0[0, 7], h1[0, 7])
    assert torch.equal(h0[1, :5], h1[1, :5]) and not torch.allclose(h0[1, 5], h1[1, 5])
    assert not torch.allclose(out0.logits[1, 7], out1.logits[1, 7])


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_key_swap_equals_the_swap_by_hand(family):
    model = tiny_model(family)
    batch = pad_batch(PROMPTS, "right")
    layer, head = 1, 2
    with capture_qk(model, heads=[(layer, head)], keep_masks=True) as cap:
        run_model(model, batch)
    q, k = cap.q(layer, head).float(), cap.k(layer, head).float()  # (batch, seq, d)
    basis = random_orthonormal(16, 3, torch.Generator().manual_seed(0)).float()
    orig, target, query = [1, 3], [4, 0], [7, 4]  # per row: swapped key columns, reading query column
    swap = KeySwap(layer, head, basis, orig=orig, target=target, query=query)
    with edit_attention(model, [swap]) as ed:
        run_model(model, batch)
    raw = q @ k.transpose(-1, -2)
    for r in range(2):
        new_o, new_t = swap_in_subspace(k[r, orig[r]], k[r, target[r]], basis)
        raw[r, query[r], orig[r]] = q[r, query[r]] @ new_o
        raw[r, query[r], target[r]] = q[r, query[r]] @ new_t
    torch.testing.assert_close(ed.logits(layer, head), raw, atol=1e-5, rtol=1e-5)
    # a swap inside the whole space exchanges the two keys completely
    full = KeySwap(layer, head, torch.eye(16), orig=orig, target=target, query=None)
    with edit_attention(model, [full]) as ed_full:
        run_model(model, batch)
    lg = ed_full.logits(layer, head)
    for r in range(2):
        torch.testing.assert_close(lg[r, :, orig[r]], (q[r] @ k[r, target[r]]), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lg[r, :, target[r]], (q[r] @ k[r, orig[r]]), atol=1e-5, rtol=1e-5)


def test_clear_errors():
    model = tiny_model("llama")
    batch = pad_batch(PROMPTS)
    with pytest.raises(ValueError, match="layer 3 is out of range"):
        with edit_attention(model, [LogitEdit(3, 0, cells=[(0, 1, 0)], values=[1.0])]):
            pass
    with pytest.raises(ValueError, match="key column 9 is out of range for 8 positions"):
        with edit_attention(model, [LogitEdit(0, 0, cells=[(0, 1, 9)], values=[1.0])]):
            run_model(model, batch)
    with pytest.raises(ValueError, match="2 values for 1 cells"):
        LogitEdit(0, 0, cells=[(0, 1, 0)], values=[1.0, 2.0])
    with pytest.raises(ValueError, match="basis must be"):
        with edit_attention(model, [KeySwap(0, 0, torch.eye(8), orig=[0, 0], target=[1, 1])]):
            pass
    with pytest.raises(KeyError, match="neither edited nor read"):
        with edit_attention(model, read=[(0, 0)]) as ed:
            run_model(model, batch)
        ed.attention(1, 0)
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(NotImplementedError, match="eager.*sdpa"):
        with edit_attention(model, read=[(0, 0)]):
            pass
