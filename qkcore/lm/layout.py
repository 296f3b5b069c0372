"""Where a Hugging Face causal LM keeps its attention heads, and the names of the q/k capture points.

Paper §3 ("The method"): the vectors of interest are each head's query and key *after* the rotary embedding (and
after q_norm/k_norm where the model has them). This module finds the attention modules of a model (any module that
has `q_proj`, `k_proj`, `layer_idx`, `head_dim`, `num_key_value_groups`: the shape of every attention class that
routes through transformers' AttentionInterface), reads the head geometry, validates (layer, head) choices, and
names the capture points after the module path, TransformerLens-style:

    layout = attention_layout(model)          # layout.n_layers, .n_heads, .n_kv_heads, .head_dim, .group_size
    layout.point_names()[:2]                  # ['model.layers.0.self_attn.q_rot', 'model.layers.0.self_attn.k_rot']
    resolve_point(model, "model.layers.1.self_attn.k_rot")   # QKPoint(layer=1, kind='k_rot', module_path=...)
    attention_layout_from_config(config).check_heads(P.heads)  # before loading weights or any forward pass
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from torch import nn

#: The two capture points of every attention module: post-rotary query and key (after q_norm/k_norm if any).
POINT_KINDS = ("q_rot", "k_rot")
_REQUIRED_ATTRS = ("q_proj", "k_proj", "layer_idx", "head_dim", "num_key_value_groups")
# Families whose attention modules look supported but whose attention is not one softmax(q·k) per layer.
_REFUSED = {
    "diffllama": "differential attention calls the attention function twice per layer (two query/key halves, "
    "the second softmax subtracted from the first), so a head's pattern is not softmax(q·k)",
}

HeadSpec = Literal["all"] | Iterable[tuple[int, int]]


def architecture_name(model: nn.Module) -> str:
    """The model's class name and config model_type, for error messages."""
    cfg = getattr(model, "config", None)
    return f"{type(model).__name__} (model_type={getattr(cfg, 'model_type', '?')!r})"


@dataclass(frozen=True)
class QKPoint:
    """A resolved capture-point name: `<module_path>.q_rot` or `<module_path>.k_rot`."""

    layer: int
    kind: str  # "q_rot" or "k_rot"
    module_path: str

    @property
    def name(self) -> str:
        return f"{self.module_path}.{self.kind}"


@dataclass(frozen=True)
class AttentionLayout:
    """Head geometry of a decoder: one attention module per layer, all layers alike."""

    architecture: str
    module_paths: tuple[str, ...]  # module_paths[layer] = "model.layers.<layer>.self_attn"
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def n_layers(self) -> int:
        return len(self.module_paths)

    @property
    def group_size(self) -> int:
        """Query heads per key head (GQA): query head h reads key head h // group_size."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        return head // self.group_size

    def all_heads(self) -> tuple[tuple[int, int], ...]:
        return tuple((layer, head) for layer in range(self.n_layers) for head in range(self.n_heads))

    def point_names(self) -> list[str]:
        return [f"{path}.{kind}" for path in self.module_paths for kind in POINT_KINDS]

    def check_layer(self, layer: int) -> int:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"layer must be an int, got {layer!r}")
        if not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer} is out of range: {self.architecture} has {self.n_layers} layers "
                f"(0..{self.n_layers - 1})"
            )
        return layer

    def check_head(self, head: int) -> int:
        if isinstance(head, bool) or not isinstance(head, int):
            raise TypeError(f"head must be an int, got {head!r}")
        if not 0 <= head < self.n_heads:
            raise ValueError(
                f"head {head} is out of range: {self.architecture} has {self.n_heads} query heads "
                f"per layer (0..{self.n_heads - 1})"
            )
        return head

    def select(self, heads: HeadSpec) -> tuple[tuple[int, int], ...]:
        """Validate a head choice: "all" or an iterable of (layer, head) → sorted, duplicate-free tuple."""
        if heads is None or not isinstance(heads, (str, Iterable)) or isinstance(heads, dict):
            raise TypeError(f'heads must be "all" or a list of (layer, head) pairs, got {heads!r}')
        if isinstance(heads, str):
            if heads != "all":
                raise ValueError(f'heads must be "all" or a list of (layer, head) pairs, got {heads!r}')
            return self.all_heads()
        chosen = []
        for item in heads:
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise ValueError(f"each head must be a (layer, head) pair, got {item!r}")
            chosen.append((self.check_layer(item[0]), self.check_head(item[1])))
        if not chosen:
            raise ValueError("no heads chosen: pass heads='all' or a non-empty list of (layer, head) pairs")
        if len(set(chosen)) != len(chosen):
            dup = sorted({h for h in chosen if chosen.count(h) > 1})
            raise ValueError(f"heads listed more than once: {dup}")
        return tuple(sorted(chosen))

    def check_heads(self, heads, name: str = "heads") -> tuple[tuple[int, int], ...]:
        """Check an explicit list of (layer, head) pairs (a chapter's `heads`, or `[view_head]`) against this
        layout before any forward pass: ints, in range, none repeated. Returns the pairs as tuples, in the order
        given. `name` is the argument named in the error messages."""
        if heads is None or isinstance(heads, (str, bytes, dict)) or not isinstance(heads, Iterable):
            raise TypeError(f"{name} must be a list of (layer, head) pairs, got {heads!r}")
        heads = list(heads)
        if len(heads) == 2 and all(isinstance(x, int) for x in heads):
            raise TypeError(
                f"{name} must be a list of (layer, head) pairs, got the single pair {tuple(heads)}; "
                f"write [{tuple(heads)}]"
            )
        if not heads:
            raise ValueError(f"{name} is empty: give at least one (layer, head) pair")
        out = []
        for i, item in enumerate(heads):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                raise TypeError(f"{name}[{i}] must be a (layer, head) pair of ints, got {item!r}")
            layer, head = item
            for what, v, n in (("layer", layer, self.n_layers), ("head", head, self.n_heads)):
                if isinstance(v, bool) or not isinstance(v, int):
                    raise TypeError(f"{name}[{i}] = {item!r}: {what} must be an int in 0..{n - 1}, got {v!r}")
                if not 0 <= v < n:
                    unit = "layers" if what == "layer" else "query heads per layer"
                    raise ValueError(
                        f"{name}[{i}] = {item!r}: {what} {v} is out of range: {self.architecture} has "
                        f"{n} {unit} ({what} must be in 0..{n - 1})"
                    )
            if (layer, head) in out:
                raise ValueError(f"{name} lists the head ({layer}, {head}) more than once")
            out.append((layer, head))
        return tuple(out)


def _is_attention(module: nn.Module) -> bool:
    # Gemma3n's KV-shared layers have no k_proj: they read the keys of an earlier layer (still one attention call)
    return all(
        hasattr(module, a) or (a == "k_proj" and getattr(module, "is_kv_shared_layer", False)) for a in _REQUIRED_ATTRS
    )


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(path, module) of every attention module, ordered by layer index; raises for unsupported architectures."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a Hugging Face causal LM), got {type(model).__name__}")
    arch = architecture_name(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in _REFUSED:
        raise NotImplementedError(f"{arch} is not supported by qkcore.lm: {_REFUSED[model_type]}")
    found = [(name, m) for name, m in model.named_modules() if _is_attention(m)]
    if not found:
        raise NotImplementedError(
            f"{arch} has no attention module of the AttentionInterface kind (with q_proj, k_proj, layer_idx, "
            f"head_dim, num_key_value_groups); qkcore.lm cannot capture its queries and keys. Supported: decoder "
            f"LMs such as Llama, Mistral, Qwen2, Qwen3, Gemma, Gemma2, Gemma3."
        )
    found.sort(key=lambda pm: pm[1].layer_idx)
    layers = [m.layer_idx for _, m in found]
    if layers != list(range(len(found))):
        raise NotImplementedError(
            f"{arch}: attention layer indices {layers} are not 0..{len(found) - 1}; "
            "qkcore.lm supports one attention module per decoder layer"
        )
    return found


def attention_layout(model: nn.Module) -> AttentionLayout:
    """Read the head geometry of `model` and check that every layer has the same shape."""
    mods = attention_modules(model)
    arch = architecture_name(model)
    shapes = set()
    for path, m in mods:
        cfg = m.config
        n_heads, n_kv = (
            int(cfg.num_attention_heads),
            int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads),
        )
        d = int(m.head_dim)
        q_out = m.q_proj.out_features
        k_out = m.k_proj.out_features if hasattr(m, "k_proj") else n_kv * d  # KV-shared layer: keys of another
        if q_out != n_heads * d or k_out != n_kv * d or n_heads % n_kv or m.num_key_value_groups != n_heads // n_kv:
            raise NotImplementedError(
                f"{arch}: {path} has q_proj→{q_out}, k_proj→{k_out} features for {n_heads} query heads, {n_kv} key "
                f"heads of size {d}; qkcore.lm needs q_proj = heads × head_dim (no gated or fused projections)"
            )
        shapes.add((n_heads, n_kv, d))
    if len(shapes) != 1:
        raise NotImplementedError(f"{arch}: layers differ in head shape {sorted(shapes)}; not supported")
    n_heads, n_kv, d = shapes.pop()
    return AttentionLayout(arch, tuple(p for p, _ in mods), n_heads, n_kv, d)


def resolve_point(model_or_layout: nn.Module | AttentionLayout, name: str) -> QKPoint:
    """Map a point name such as "model.layers.3.self_attn.q_rot" to its layer and kind; unknown names raise."""
    layout = model_or_layout if isinstance(model_or_layout, AttentionLayout) else attention_layout(model_or_layout)
    path, _, kind = name.rpartition(".")
    if kind in POINT_KINDS and path in layout.module_paths:
        return QKPoint(layout.module_paths.index(path), kind, path)
    raise KeyError(
        f"unknown capture point {name!r} for {layout.architecture}; names look like "
        f"{layout.point_names()[:2]} (module path + '.q_rot' or '.k_rot')"
    )


def head_name(head: tuple[int, int]) -> str:
    """(16, 21) → "L16H21": 0-based layer and head, as the paper names heads."""
    layer, index = head
    return f"L{layer}H{index}"


def head_names(heads) -> str:
    """[(16, 1), (17, 24)] → "L16H1, L17H24"."""
    return ", ".join(head_name(h) for h in heads)


def attention_layout_from_config(config) -> AttentionLayout:
    """The layout of the causal LM that `config` (a transformers PretrainedConfig, e.g. from
    AutoConfig.from_pretrained) describes, without weights or a forward pass: the model is built on the meta
    device (no memory for parameters), so `check_heads` can run before anything expensive."""
    import torch
    import transformers

    if not isinstance(config, transformers.PretrainedConfig):
        raise TypeError(f"config must be a transformers PretrainedConfig, got {type(config).__name__}")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return attention_layout(model)
