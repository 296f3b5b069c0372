"""The random-initialisation control: the same architecture with freshly drawn weights (paper's controls; the book
sets every language-model result beside it to show what the construction alone produces, before any training).

    control = random_init_copy(model, seed=1)    # same class, config, dtype, device and attention implementation
    recipe = init_recipe(model)                  # what a copy is drawn from; draw(recipe, 1) is the same copy again

The draw is deterministic: the same recipe and seed give bit-identical weights on one machine, which is what lets
qkcore.lm.control_cache keep the first draw and qkcore.lm.residency release a control's weights and restore them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class InitRecipe:
    """What a random-init copy of a model is drawn from: its class, a copy of its configuration, its attention
    implementation, dtype and device (read while the model's weights are present)."""

    cls: type
    config: object
    attn_implementation: str | None
    dtype: torch.dtype
    device: torch.device


def init_recipe(model: nn.Module) -> InitRecipe:
    """The recipe of `model`'s random-init copies."""
    param = next(model.parameters())
    if param.device.type == "meta":
        raise ValueError(
            "the model's weights are not in memory (a parked model? qkcore.lm.residency.resident(model) restores "
            "them): a random-init copy is drawn on the model's own device"
        )
    impl = getattr(model.config, "_attn_implementation", None)
    return InitRecipe(type(model), copy.deepcopy(model.config), impl, param.dtype, param.device)


def draw(recipe: InitRecipe, seed: int) -> nn.Module:
    """A model of the recipe's class, configuration, dtype, device and attention implementation whose weights its
    own initialiser draws (e.g. N(0, initializer_range) for Llama) from `seed`, in eval mode. The global random state
    is left as it was."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    config = copy.deepcopy(recipe.config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(recipe.device):
            fresh = recipe.cls._from_config(config, attn_implementation=recipe.attn_implementation, dtype=recipe.dtype)
    return fresh.eval()


def random_init_copy(model: nn.Module, seed: int) -> nn.Module:
    """`draw(init_recipe(model), seed)`: a freshly initialised model of the same class, configuration, dtype,
    device and attention implementation, in eval mode; the global random state is left as it was."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return draw(init_recipe(model), seed)
