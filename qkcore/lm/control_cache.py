"""The random-init control of a cached model, drawn once per machine and memory-mapped after that.

Drawing Qwen2.5-Coder-0.5B's control (qkcore.lm.controls: its class's own initialiser, 630M float32 weights from a
seed) takes 7-13 s on one core, most of it the random number generator, and every language-model page draws it,
some twice (a parked control is drawn again: qkcore.lm.residency). The draw is deterministic, so the first one is
written beside the model's float32 cache and later ones map that file instead (0.1 s; pages are read as a pass
touches them), exactly as the trained model is restored from its own file. Bit for bit the same weights (tests).

    path = control_file(recipe, seed)        # $QKCORE_CACHE/controls/<key>.safetensors
    control = mapped_control(recipe, path)   # the control with its weights mapped from the file

The key covers everything the draw depends on: the model's class, its full configuration, attention implementation,
dtype and device, the seed, and the torch and transformers versions (whose initialisers and generators make the
numbers). A file that is there but does not hold the control's parameters is an error naming it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from qkcore.lm.controls import InitRecipe

KEY_VERSION = 1  # bump when what a control file holds changes


def control_key(recipe: InitRecipe, seed: int) -> str:
    """sha256 over what the control drawn from `recipe` and `seed` depends on."""
    import transformers

    spec = {
        "version": KEY_VERSION,
        "class": f"{recipe.cls.__module__}.{recipe.cls.__qualname__}",
        "config": json.loads(recipe.config.to_json_string(use_diff=False)),
        "attn_implementation": recipe.attn_implementation,
        "dtype": str(recipe.dtype),
        "device": str(recipe.device),
        "seed": seed,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def control_file(recipe: InitRecipe, seed: int) -> Path:
    """Where the control of `recipe` and `seed` is kept (whether or not it exists yet)."""
    from qkcore.lm.gguf import cache_root

    return cache_root() / "controls" / f"{control_key(recipe, seed)}.safetensors"


def write_control(control: nn.Module, path: Path) -> None:
    """Save the control's parameters (each tied parameter once, under its first name) to `path`, atomically: a run
    stopped while writing leaves no partial file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().contiguous() for name, p in control.named_parameters()}
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, partial, metadata={"format": "pt"})
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def mapped_control(recipe: InitRecipe, path: Path) -> nn.Module:
    """The recipe's model (eval mode) with its parameters memory-mapped from `path` and its buffers built as the
    class builds them; nothing is drawn. Raises when the file does not hold exactly the model's parameters."""
    from accelerate import init_empty_weights

    from qkcore.lm.residency import assign_parameters, safetensors_weights

    with init_empty_weights(include_buffers=False), torch.device(recipe.device):  # parameters on meta, no draw
        skeleton = recipe.cls._from_config(
            copy.deepcopy(recipe.config), attn_implementation=recipe.attn_implementation, dtype=recipe.dtype
        )
    skeleton.tie_weights()  # the empty-weights context leaves tied parameters as two; the draw ties them
    tensors = safetensors_weights(path)
    shapes = {name: (p.shape, p.dtype) for name, p in skeleton.named_parameters()}
    if shapes != {name: (t.shape, t.dtype) for name, t in tensors.items()}:
        raise RuntimeError(
            f"{path} does not hold the parameters of this {recipe.cls.__name__} control (a damaged or foreign "
            "file in qkcore's cache): delete it, and the control is drawn again and rewritten"
        )
    assign_parameters(skeleton, tensors)
    return skeleton.eval()
