"""The random-initialisation control: the same architecture with freshly drawn weights (paper's controls; the book
sets every language-model result beside it to show what the construction alone produces, before any training).

    control = random_init_copy(model, seed=1)    # same class, config, dtype, device and attention implementation
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def random_init_copy(model: nn.Module, seed: int) -> nn.Module:
    """A model of the same class, configuration, dtype, device and attention implementation whose weights the
    model's own initialiser draws (e.g. N(0, initializer_range) for Llama) from `seed`, in eval mode. The global
    random state is left as it was."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    config = copy.deepcopy(model.config)
    param = next(model.parameters())
    impl = getattr(model.config, "_attn_implementation", None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(param.device):
            fresh = type(model)._from_config(config, attn_implementation=impl, dtype=param.dtype)
    return fresh.eval()
