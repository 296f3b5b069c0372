"""Where a DeltaStreamer keeps its sums when the model is split over devices (`device_map`).

With every layer on one device the streamer keeps one accumulator (head_shape (n_heads_chosen,)) there. When the
streamed layers sit on several devices (a model placed with device_map over GPUs, or over a GPU and the CPU), it keeps
one accumulator per layer on that layer's device instead, so each layer's q and k are summed where they were made
and never cross devices during the run; reading ΔC (`streamer.acc`, `delta()`) joins them, head axis in the
streamer's head order, on the first streamed layer's device.

    devices = layer_devices(modules)                # {layer: device of its q_proj}
    joined_acc = join(list_of_layer_accs)           # one ContrastiveCovariance, heads concatenated
    parts = split_state(acc.state_dict(), [4, 4])   # the inverse: one state per layer
"""

from __future__ import annotations

import torch
from torch import nn

from qkcore.covariance import ContrastiveCovariance


def layer_devices(modules: dict[int, nn.Module]) -> dict[int, torch.device]:
    """The device of each attention module's q_proj weight, by layer."""
    return {layer: m.q_proj.weight.device for layer, m in modules.items()}


def join(accs: list[ContrastiveCovariance]) -> ContrastiveCovariance:
    """One accumulator holding `accs` (same d, weighting and counts; head_shape (n_i,)) along the head axis, on the
    first one's device."""
    first = accs[0]
    device = first.sums[True].device
    n = sum(a.head_shape[0] for a in accs)
    out = ContrastiveCovariance(first.d_query, first.d_key, (n,), first.weighting, device)
    parts = [a._tensors() for a in accs]
    for name, t in out._tensors().items():
        t.copy_(torch.cat([p[name].to(device) for p in parts]))  # (n, ...)
    out.pairs, out.prompts = dict(first.pairs), dict(first.prompts)
    return out


def split_state(state: dict, sizes: list[int]) -> list[dict]:
    """An accumulator state of head_shape (Σ sizes,) cut along the head axis into states of (size,) each."""
    parts = []
    start = 0
    for size in sizes:
        parts.append(
            {
                "definition": {**state["definition"], "head_shape": [size]},
                "tensors": {name: t[start : start + size] for name, t in state["tensors"].items()},
                "pairs": dict(state["pairs"]),
                "prompts": dict(state["prompts"]),
            }
        )
        start += size
    return parts
