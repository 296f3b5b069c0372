"""One memory slot for a model and its random-init control: only one of them holds its weights at a time (issue 15:
a Qwen2.5-Coder-0.5B page held the trained model and its control, 2 × 2.5 GB of float32, and peaked at 6.8 GB).

    control = random_init_control(model, seed)   # random_init_copy(model, seed), sharing one slot with `model`
    gather_qk(control, ...)                      # control made resident (mapped again if parked); `model` parked
    gather_qk(model, ...)                        # `model` mapped again from its file; `control` parked

A parked model's parameters are stand-ins without values (`Parked`: meta tensors of the same shape and dtype, except
the input embedding's weight, an empty (0, d) tensor on the model's device, so that the model's device still reads
right before a forward: run_model, last_logits and transformers' `model.device` read it). A stand-in answers its
shape, dtype and device, and raises on anything else, so a parked model used outside its forward fails loudly
instead of computing with empty weights (plain meta tensors would not: torch 2.13 returns uninitialised memory for
a CPU input times a meta weight). A parked model is made resident again, parking the others,
  - automatically, by a forward pre-hook on the top-level model: every pass (run_model, run_until, last_logits,
    generate, the capture and editing contexts) goes through that forward;
  - explicitly, by `resident(model)`, where the library reads a parked model's weights or per-layer devices outside
    a forward (capture_qk before its checks, model_fingerprint on a miss of its memo, model_identity, DeltaStreamer).
Restoring is bit-identical: a model loaded from qkcore's float32 cache (qkcore.lm.gguf) is memory-mapped again from
that file, so only the pages a pass touches count; the control likewise from the file its first draw was written to
(qkcore.lm.control_cache: drawn once per machine by qkcore.lm.controls, from its seed). Weights modified in place
since they were loaded could not be restored, so parking such a model raises. A model whose weights qkcore cannot
restore (organisms, tiny test models, hub or folder models) is never parked: random_init_control then returns a plain
random_init_copy and both stay resident, as before.
`swap_log(model)` lists the slot's park and restore events with their seconds.
"""

from __future__ import annotations

import ctypes
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from qkcore.lm.control_cache import control_file, mapped_control, write_control
from qkcore.lm.controls import draw, init_recipe, random_init_copy

_T = torch.Tensor
_METADATA = {
    _T.shape.__get__, _T.dtype.__get__, _T.device.__get__, _T.is_meta.__get__, _T.ndim.__get__, _T.layout.__get__,
    _T.requires_grad.__get__, _T.grad.__get__, _T._version.__get__, _T.data.__get__, _T.is_cuda.__get__,
    _T.numel, _T.dim, _T.size, _T.is_floating_point, _T.detach, _T.requires_grad_, _T.__repr__,
}  # fmt: skip


class Parked(torch.Tensor):
    """A parked parameter's stand-in: its shape, dtype and device can be read; any computation raises."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in _METADATA:
            return super().__torch_function__(func, types, args, kwargs or {})
        raise RuntimeError(
            f"{getattr(func, '__name__', func)} on a parked model's weight: its weights were released so that it "
            "and its random-init control share one memory slot (qkcore.lm.residency); run the model itself (its "
            "forward restores them) or call qkcore.lm.residency.resident(model) first"
        )


Restore = Callable[[], dict[str, torch.Tensor]]  # () -> {parameter name: tensor}, bit-identical to the weights now
_SLOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its MemorySlot


@dataclass
class _Entry:
    restore: Restore
    shapes: dict[str, torch.Size]  # unique parameter name -> shape
    versions: tuple[int, ...]  # the parameters' in-place versions when last known equal to what `restore` gives
    hook: object = None
    parked: bool = False


@dataclass
class MemorySlot:
    """Models of which at most one is resident: making one resident parks the others. `log`: (event, model's class
    and id, seconds) per park ("park") and restore ("restore")."""

    entries: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    log: list[tuple[str, str, float]] = field(default_factory=list)

    def admit(self, model: nn.Module, restore: Restore) -> None:
        """Put `model` (resident, its weights exactly what `restore` returns) in this slot."""
        if model in _SLOTS:
            raise ValueError(f"{type(model).__name__} is already in a memory slot")
        hook = model.register_forward_pre_hook(lambda module, _args: self.make_resident(module))
        shapes = {n: p.shape for n, p in model.named_parameters()}
        self.entries[model] = _Entry(restore, shapes, _versions(model), hook)
        _SLOTS[model] = self

    def park(self, model: nn.Module) -> None:
        """Release `model`'s parameters (meta tensors in their place; tied parameters stay tied)."""
        entry = self.entries[model]
        if entry.parked:
            return
        if _versions(model) != entry.versions:
            raise RuntimeError(
                f"cannot park {type(model).__name__}: its weights were modified in place since they were loaded, so "
                "they could not be restored; use the model without a memory slot"
            )
        start = time.perf_counter()
        embedding = model.get_input_embeddings().weight
        stand_ins: dict[int, nn.Parameter] = {}
        for module, name, p in _parameter_slots(model):
            if id(p) not in stand_ins:
                shape, device = ((0, *p.shape[1:]), p.device) if p is embedding else (p.shape, "meta")
                empty = torch.empty(shape, dtype=p.dtype, device=device).as_subclass(Parked)
                stand_ins[id(p)] = nn.Parameter(empty, requires_grad=p.requires_grad)
            module._parameters[name] = stand_ins[id(p)]
        del stand_ins, p
        entry.parked = True
        _return_freed_memory()
        self.log.append(("park", _label(model), time.perf_counter() - start))

    def make_resident(self, model: nn.Module) -> None:
        """Park every other model of the slot, then restore `model`'s parameters (nothing when already resident)."""
        if not self.entries[model].parked:
            return
        for other in list(self.entries):
            if other is not model:
                self.park(other)
        self._restore(model)

    def release(self) -> None:
        """Restore every model at once and empty the slot (hooks removed): for code that needs them together."""
        for model, entry in list(self.entries.items()):
            if entry.parked:
                self._restore(model)
            entry.hook.remove()
            del _SLOTS[model], self.entries[model]

    def _restore(self, model: nn.Module) -> None:
        entry = self.entries[model]
        start = time.perf_counter()
        tensors = entry.restore()
        names = dict(model.named_parameters())  # unique parameters (a tied one under its first name)
        wrong = [n for n, s in entry.shapes.items() if n not in tensors or tensors[n].shape != s]
        if names.keys() != entry.shapes.keys() or wrong:
            raise RuntimeError(f"the restored weights of {type(model).__name__} do not match its parameters")
        assign_parameters(model, tensors)
        del tensors
        entry.versions, entry.parked = _versions(model), False
        self.log.append(("restore", _label(model), time.perf_counter() - start))


def assign_parameters(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put `tensors` ({unique parameter name: tensor}, as named_parameters names them) in place of the model's
    parameters, without copying; a tied parameter gets the same new parameter under each of its names."""
    names = dict(model.named_parameters())  # unique parameters (a tied one under its first name)
    fresh = {id(p): nn.Parameter(tensors[n].to(p.dtype), requires_grad=p.requires_grad) for n, p in names.items()}
    for module, name, p in _parameter_slots(model):
        module._parameters[name] = fresh[id(p)]


def resident(model: nn.Module) -> nn.Module:
    """Make `model` resident if it is parked (parking its slot's other model); returns it. A no-op for a model in no
    slot: call it wherever a model's device or weights are read outside its forward. Anything that is not a module
    is returned as it is, for the caller's own checks to name."""
    if not isinstance(model, nn.Module):
        return model
    slot = _SLOTS.get(model)
    if slot is not None:
        slot.make_resident(model)
    return model


def is_parked(model: nn.Module) -> bool:
    """Whether `model`'s parameters are released (meta) now."""
    slot = _SLOTS.get(model)
    return slot is not None and slot.entries[model].parked


def tensor_versions(model: nn.Module) -> tuple[int, ...]:
    """The in-place versions of the model's parameters and buffers; for a parked model, those its weights had when
    parked (restoring gives them back bit for bit), so that a fingerprint memoised then stays valid."""
    slot = _SLOTS.get(model)
    if slot is not None and slot.entries[model].parked:
        return slot.entries[model].versions + tuple(b._version for b in model.buffers())
    return _versions(model) + tuple(b._version for b in model.buffers())


def swap_log(model: nn.Module) -> list[tuple[str, str, float]]:
    """The park and restore events of `model`'s slot ([] for a model in no slot)."""
    slot = _SLOTS.get(model)
    return list(slot.log) if slot is not None else []


def cached_weights(model: nn.Module) -> Restore | None:
    """How to restore `model` from qkcore's float32 cache (qkcore.lm.gguf) when it was loaded from there in float32
    on the CPU: its model.safetensors memory-mapped again; None otherwise (the model cannot be parked)."""
    from qkcore.lm.gguf import cache_root

    folder = Path(str(getattr(getattr(model, "config", None), "_name_or_path", "") or ""))
    path = folder / "model.safetensors"
    params = list(model.parameters())
    if (
        folder.parent.resolve() != (cache_root() / "gguf").resolve()
        or not path.is_file()
        or any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params)
    ):
        return None
    return lambda: safetensors_weights(path)


def safetensors_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, memory-mapped (pages are read when a pass touches them)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {name: f.get_tensor(name) for name in f.keys()}


def random_init_control(model: nn.Module, seed: int) -> nn.Module:
    """`random_init_copy(model, seed)`, in one memory slot with `model` when `model`'s weights can be restored
    (cached_weights): `model` is parked before the copy is drawn, so the two are never in memory together. The copy
    is drawn once per machine and kept beside the model's cache (qkcore.lm.control_cache); later calls, and its
    restores after a park, map that file."""
    slot = _SLOTS.get(model)
    if slot is None:
        restore = cached_weights(model)
        if restore is None:
            return random_init_copy(model, seed)
        slot = MemorySlot()
        slot.admit(model, restore)
    recipe = init_recipe(resident(model))  # read while the model's weights are present
    slot.park(model)
    path = control_file(recipe, seed)  # drawn once per machine, then mapped (qkcore.lm.control_cache)
    if path.is_file():
        control = mapped_control(recipe, path)
    else:
        control = draw(recipe, seed)
        try:
            write_control(control, path)
        except OSError as error:  # a full or read-only disk: the control is drawn again at each restore instead
            warnings.warn(
                f"could not keep the random-init control in {path} ({error}); it is drawn again when needed",
                stacklevel=2,
            )
    slot.admit(control, lambda: _control_weights(recipe, seed, path))
    return control


def _control_weights(recipe, seed: int, path: Path) -> dict[str, torch.Tensor]:
    """A control's weights for a restore: mapped from its file, or drawn again from its seed when the file is gone
    (never written, or its folder deleted while the model is in use): the same weights either way."""
    if path.is_file():
        return safetensors_weights(path)
    return dict(draw(recipe, seed).named_parameters())


def _parameter_slots(model: nn.Module):
    """(module, name, parameter) for every place a parameter sits, tied ones under each of their names."""
    for module in model.modules():
        for name, p in module._parameters.items():
            if p is not None:
                yield module, name, p


def _return_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps freed blocks of a few MB in its heap: a parked control's
    2.5 GB would stay in the process's RSS); elsewhere nothing."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _versions(model: nn.Module) -> tuple[int, ...]:
    return tuple(p._version for p in model.parameters())


def _label(model: nn.Module) -> str:
    return f"{type(model).__name__}@{id(model):x}"
