"""Forward passes that compute no more than is read: stop after the deepest attention layer needed, or keep only the
last position's logits (issue 17: reading heads at layer L needs no layer above L and no vocabulary projection).

    run_until(model, batch, layer=15)            # layers 0..15's attention run; the rest, and the LM head, do not
    logits = last_logits(model, batch)           # (b, vocab): each row's last real token, one column of logits each

`run_until` stops the pass with a forward hook on layer L's attention module that raises a private exception, caught
here; the hook is removed in `finally`. Everything up to that attention call is the unmodified forward pass, so what a
capture context records there is bit-identical to a full pass (tests/lm/test_early_exit.py). Qwen2.5-Coder-0.5B at
L15 of 24 layers: a third less decoder compute and none of its 151,936-wide LM head.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from qkcore.lm.batching import EncodedBatch, run_model
from qkcore.lm.layout import attention_modules


class _StopForward(Exception):
    """Raised by the hook of `run_until` once the last needed attention layer has run; never escapes this module."""


def run_until(model: nn.Module, batch: EncodedBatch, layer: int, **kwargs) -> None:
    """Run `batch` through the model up to and including the attention of decoder layer `layer` (0-based), then
    stop: no MLP of that layer, no later layer, no final norm, no LM head. Returns nothing (there is no output);
    capture the vectors with a capture context around this call (capture_qk, edit_attention)."""
    mods = attention_modules(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(mods):
        raise ValueError(f"layer must be an int in 0..{len(mods) - 1} for this model, got {layer!r}")

    def stop(_module, _inputs, _output):
        raise _StopForward

    handle = mods[layer][1].register_forward_hook(stop)  # after any capture hook already on the module
    try:
        run_model(model, batch, **kwargs)
    except _StopForward:
        pass
    else:  # pragma: no cover - the hook always fires when the layer runs
        raise RuntimeError(f"layer {layer}'s attention never ran: the model skipped it")
    finally:
        handle.remove()


def keeps_last_logits(model: nn.Module) -> bool:
    """Whether the model's forward takes `logits_to_keep` (transformers' causal LMs do)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def last_logits(model: nn.Module, batch: EncodedBatch, **kwargs) -> torch.Tensor:
    """(b, vocab) logits at each row's last real token, computing the LM head only at those columns (with left
    padding one column for the whole batch; with right padding one per distinct prompt length) instead of at every
    position: for a 151,936-token vocabulary, a batch of 8 × 100 tokens saves a 486 MB tensor. Extra kwargs go to
    the model (e.g. inside an edit_attention context, the edited pass)."""
    device = model.get_input_embeddings().weight.device
    last = (batch.offsets + batch.lengths - 1).to(device)  # (b,) batch column of each row's last token
    cols, row_col = torch.unique(last, return_inverse=True)  # (c,) sorted distinct columns; (b,) index into them
    rows = torch.arange(batch.size, device=device)
    if not keeps_last_logits(model):
        return run_model(model, batch, **kwargs).logits[rows, last]
    keep = 1 if cols.numel() == 1 and int(cols[0]) == batch.input_ids.shape[1] - 1 else cols
    logits = run_model(model, batch, logits_to_keep=keep, **kwargs).logits  # (b, c, vocab)
    return logits[rows, row_col]
