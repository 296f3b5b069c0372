"""The random-init control of a cached model, drawn once per machine and memory-mapped after that.

Drawing Qwen2.5-Coder-0.5B's control (qkcore.lm.controls: its class's own initialiser, 630M float32 weights from a
seed) takes 7-13 s on one core, most of it the random number generator, and every language-model page drew it, and
drew it again after each park (qkcore.lm.residency). The draw is deterministic, so the first one is written beside the
model's float32 cache and later ones, and every restore after a park, map that file instead (0.2 s; pages are read as
a pass touches them), as the trained model is restored from its own file. Bit for bit the same weights (tests).

    path = control_file(recipe, seed)        # $QKCORE_CACHE/controls/<key>.safetensors
    control = mapped_control(recipe, path)   # the control with its weights mapped from the file

The key covers everything the draw depends on: the model's class, its full configuration, attention implementation,
dtype and device, the seed, the torch and transformers versions (whose initialisers and generators make the numbers),
and the CPU's architecture and the vector instructions torch uses on it (torch's normal_ draws other numbers with
AVX2 than without, so a cache folder shared between machines must not hand one machine's draw to another). A file
that is there but does not hold the control's parameters is an error naming it. One file per model and seed: the
book's pages use two seeds per model (5.0 GB for Qwen, 1.1 GB for SmolLM2); delete the folder to free them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path

import torch
from torch import nn

from qkcore.lm.controls import InitRecipe

KEY_VERSION = 2  # bump when what a control file holds, or its key, changes


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
        "machine": platform.machine(),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


def control_file(recipe: InitRecipe, seed: int) -> Path:
    """Where the control of `recipe` and `seed` is kept (whether or not it exists yet)."""
    from qkcore.lm.gguf import cache_root

    return cache_root() / "controls" / f"{control_key(recipe, seed)}.safetensors"


def write_control(control: nn.Module, path: Path) -> None:
    """Save the control's parameters (each tied parameter once, under its first name) to `path`, atomically: the
    file is written under a unique temporary name, flushed to disk, then renamed, so a run stopped while writing, or
    another process writing the same control, never leaves a partial file under `path`."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: p.detach().contiguous() for name, p in control.named_parameters()}
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        save_file(tensors, partial, metadata={"format": "pt"})
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


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
    damaged = RuntimeError(
        f"{path} does not hold the parameters of this {recipe.cls.__name__} control (a damaged or foreign file in "
        "qkcore's cache): delete it, and the control is drawn again and rewritten"
    )
    try:
        tensors = safetensors_weights(path)
    except Exception as error:  # safetensors' own errors (a truncated or empty file) name no path
        raise damaged from error
    shapes = {name: (p.shape, p.dtype) for name, p in skeleton.named_parameters()}
    if shapes != {name: (t.shape, t.dtype) for name, t in tensors.items()}:
        raise damaged
    assign_parameters(skeleton, tensors)
    return skeleton.eval()
