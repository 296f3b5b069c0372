"""Stream (query, key) pairs of every requested head straight into ΔC accumulators, one forward pass per batch
(paper §3: C± = mean of q kᵀ over positive / negative pairs, ΔC = C⁺ − C⁻, per head).

Pairs are given per prompt in prompt positions (0 = first token, −1 = last): a list of (query position, key positions)
for the positive pairs and one for the negative pairs. Each batch adds its pairs to one float64
`qkcore.covariance.ContrastiveCovariance` with head_shape (n_heads_chosen,), then drops the vectors, so memory does
not grow with the number of prompts (only with pairs per batch × heads × d_head).

    pairs = [PromptPairs(positive=[(-1, [5, 9])], negative=[(-1, [7, 11, 13])]) for _ in texts]
    stream = stream_delta(model, tokenizer, texts, pairs, heads="all", batch_size=16)
    stream.delta(20, 26)          # (d_head, d_head) ΔC of L20H26;  stream.grid(): (n_layers, n_heads, d, d)

Long runs: `stream_delta(..., checkpoint="run.pt", checkpoint_every=50)` saves the sums every 50 batches (and at the
end) with the model's identity and the contrast's definition; run the same call again after a crash and it resumes
after the last saved batch (qkcore.lm.resume). `merge`, `state_dict` / `load_state_dict` and `save` / `load` let
shards computed apart be added (qkcore.lm.distributed does it over torch.distributed).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qkcore import accumulator_file
from qkcore.covariance import ContrastiveCovariance, Weighting
from qkcore.lm.batching import EncodedBatch, encode_batch, iter_batches, pad_batch, run_model
from qkcore.lm.identity import contrast_definition, model_identity
from qkcore.lm.intercept import AttentionCall, attention_session, check_model
from qkcore.lm.layout import HeadSpec, attention_layout, attention_modules
from qkcore.lm.placement import join, layer_devices, split_state
from qkcore.lm.residency import resident

PairList = tuple[tuple[int, tuple[int, ...]], ...]


def _as_pair_list(pairs, name: str) -> PairList:
    out = []
    for item in pairs:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{name}: each entry must be (query_position, [key_positions]), got {item!r}")
        q, ks = item
        if isinstance(ks, int):
            raise ValueError(f"{name}: key positions must be a list, got the int {ks} (write [{ks}])")
        ks = tuple(ks)
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in (q, *ks)):
            raise ValueError(f"{name}: positions must be ints, got {item!r}")
        out.append((q, ks))
    return tuple(out)


@dataclass(frozen=True)
class PromptPairs:
    """The pairs one prompt contributes: positive/negative = ((query_position, (key_position, ...)), ...).
    Positions are prompt positions (negative counts from the prompt's end). A counterfactual prompt may give only
    negatives, and vice versa."""

    positive: PairList = ()
    negative: PairList = ()

    def __post_init__(self):
        object.__setattr__(self, "positive", _as_pair_list(self.positive, "positive"))
        object.__setattr__(self, "negative", _as_pair_list(self.negative, "negative"))

    def count(self, positive: bool) -> int:
        return sum(len(ks) for _, ks in (self.positive if positive else self.negative))


class DeltaStreamer:
    """ΔC accumulators for the chosen heads of `model`; `add(batch, pairs)` runs one forward pass and absorbs it.

    `acc` is a ContrastiveCovariance with head_shape (len(heads),), head i = heads[i] (sorted (layer, head)).
    per_layer: keep one accumulator per layer on that layer's device (qkcore.lm.placement); None (default) does so
    exactly when the streamed layers sit on more than one device (device_map) and no `device` is given."""

    def __init__(
        self,
        model: nn.Module,
        heads: HeadSpec = "all",
        weighting: Weighting = "pair_mean",
        device: torch.device | str | None = None,
        per_layer: bool | None = None,
    ):
        check_model(model, "DeltaStreamer")
        self.model = model
        self.layout = attention_layout(model)
        self.heads = self.layout.select(heads)
        self._index = {h: i for i, h in enumerate(self.heads)}
        self.q_heads = {
            layer: [h for (l, h) in self.heads if l == layer] for layer in sorted({l for l, _ in self.heads})
        }
        mods = attention_modules(model)
        self._modules = {layer: mods[layer][1] for layer in self.q_heads}
        resident(model)  # a parked model's weights back before its devices are read
        devices = layer_devices(self._modules)
        if per_layer is None:
            per_layer = device is None and len(set(devices.values())) > 1
        if not isinstance(per_layer, bool):
            raise TypeError(f"per_layer must be True, False or None (automatic), got {per_layer!r}")
        self.layer_accs: dict[int, ContrastiveCovariance] | None = None
        if per_layer:
            self.layer_accs = {
                layer: ContrastiveCovariance(
                    self.layout.head_dim, head_shape=(len(hs),), weighting=weighting, device=device or devices[layer]
                )
                for layer, hs in self.q_heads.items()
            }
        else:
            if device is None:
                device = next(model.parameters()).device
            self._acc = ContrastiveCovariance(
                self.layout.head_dim, head_shape=(len(self.heads),), weighting=weighting, device=device
            )
        self.prompts_seen = 0
        # ΔC needs no logits: ask for the last position's only (saves the vocabulary projection of every token)
        takes = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._forward_kwargs = {"logits_to_keep": 1} if takes else {}

    # -- accumulation ----------------------------------------------------------------------------------------
    def _pair_index(self, batch: EncodedBatch, pairs: Sequence[PromptPairs], positive: bool):
        rows, qcols, kcols = [], [], []
        for r, p in enumerate(pairs):
            for qpos, kposs in p.positive if positive else p.negative:
                qc = batch.padded(r, qpos)
                for kpos in kposs:
                    kc = batch.padded(r, kpos)
                    if kc > qc:
                        raise ValueError(
                            f"prompt {r}: key position {kpos} comes after query position {qpos}; a "
                            "causal head cannot attend to it"
                        )
                    rows.append(r), qcols.append(qc), kcols.append(kc)
        n_prompts = sum(1 for p in pairs if (p.positive if positive else p.negative))
        return (
            torch.tensor(rows, dtype=torch.long),
            torch.tensor(qcols, dtype=torch.long),
            torch.tensor(kcols, dtype=torch.long),
            n_prompts,
        )

    def add(self, batch: EncodedBatch, pairs: Sequence[PromptPairs]) -> None:
        """Run `model` on `batch` and add each prompt's positive and negative pairs, for every chosen head."""
        if len(pairs) != batch.size:
            raise ValueError(f"{len(pairs)} PromptPairs for a batch of {batch.size} prompts: give one per prompt")
        if not all(isinstance(p, PromptPairs) for p in pairs):
            raise TypeError("pairs must be PromptPairs objects (one per prompt)")
        index = {s: self._pair_index(batch, pairs, s) for s in (True, False)}
        got: dict[bool, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {True: {}, False: {}}

        def on_call(call: AttentionCall) -> None:
            layer, query, key = call.layer, call.query.detach(), call.key.detach()
            hq = torch.tensor(self.q_heads[layer], device=query.device)
            hk = torch.div(hq, self.layout.group_size, rounding_mode="floor")  # GQA: key head of each query head
            for s in (True, False):
                rows, qc, kc, _ = index[s]
                if rows.numel():
                    rows_d, qc_d, kc_d = rows.to(query.device), qc.to(query.device), kc.to(query.device)
                    q = query[rows_d, :, qc_d].index_select(1, hq)  # (n_pairs, heads_in_layer, d)
                    k = key[rows_d, :, kc_d].index_select(1, hk)  # (n_pairs, heads_in_layer, d)
                    got[s][layer] = (q, k)

        with attention_session(self.model, self._modules, on_call):
            run_model(self.model, batch, **self._forward_kwargs)
        for s in (True, False):
            rows, _, _, n_prompts = index[s]
            if rows.numel() == 0:
                continue
            if self.layer_accs is not None:  # each layer's pairs summed on its own device
                for layer, acc in self.layer_accs.items():
                    q, k = (x.transpose(0, 1) for x in got[s][layer])  # (heads_in_layer, n, d)
                    acc.add(q, k, positive=s, prompts=n_prompts)
                continue
            q = torch.cat([got[s][layer][0] for layer in self.q_heads], dim=1).transpose(0, 1)  # (heads, n, d)
            k = torch.cat([got[s][layer][1] for layer in self.q_heads], dim=1).transpose(0, 1)  # (heads, n, d)
            self._acc.add(q, k, positive=s, prompts=n_prompts)
        self.prompts_seen += batch.size

    @property
    def acc(self) -> ContrastiveCovariance:
        """The sums of every streamed head: head_shape (len(heads),). Per-layer accumulators are joined into a new
        one (a snapshot) on the first streamed layer's device."""
        return self._acc if self.layer_accs is None else join(list(self.layer_accs.values()))

    def accumulators(self) -> list[ContrastiveCovariance]:
        """The accumulators the streamer adds to (one, or one per layer in layer order): what an all-reduce sums."""
        return [self._acc] if self.layer_accs is None else list(self.layer_accs.values())

    def _load_acc_state(self, state: dict) -> None:
        if self.layer_accs is None:
            self._acc.load_state_dict(state)
            return
        parts = split_state(state, [a.head_shape[0] for a in self.layer_accs.values()])
        for acc, part in zip(self.layer_accs.values(), parts):
            acc.load_state_dict(part)

    # -- merging and saving ----------------------------------------------------------------------------------
    def merge(self, other: DeltaStreamer) -> DeltaStreamer:
        """Add `other`'s sums (same heads and model geometry; another shard of prompts) into this one; returns
        self. The result is the ΔC of both shards' prompts."""
        if not isinstance(other, DeltaStreamer):
            raise TypeError(f"other must be a DeltaStreamer, got {type(other).__name__}")
        if other.heads != self.heads or other.layout != self.layout:
            raise ValueError(
                f"cannot merge streamers of different heads or models: {len(self.heads)} heads of "
                f"{self.layout.architecture} vs {len(other.heads)} heads of {other.layout.architecture}"
            )
        if self.layer_accs is None:
            self._acc.merge(other.acc)
        else:
            parts = split_state(other.acc.state_dict(), [a.head_shape[0] for a in self.layer_accs.values()])
            for acc, part in zip(self.layer_accs.values(), parts):
                acc.merge(ContrastiveCovariance.from_state_dict(part, acc.sums[True].device))
        self.prompts_seen += other.prompts_seen
        return self

    def state_dict(self) -> dict:
        """The streamed heads, the prompt count and the accumulator's state (float64 sums and pair counts)."""
        return {"heads": [list(h) for h in self.heads], "prompts_seen": self.prompts_seen, "acc": self.acc.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Replace the sums and counts by `state` (from `state_dict` of a streamer of the same heads)."""
        if not isinstance(state, dict) or not {"heads", "prompts_seen", "acc"} <= set(state):
            raise ValueError("state must be a dict from DeltaStreamer.state_dict() (heads, prompts_seen, acc)")
        heads = tuple(tuple(h) for h in state["heads"])
        if heads != self.heads:
            raise ValueError(f"state streams {len(heads)} heads {list(heads)[:4]}…, this streamer {len(self.heads)}")
        self._load_acc_state(state["acc"])
        self.prompts_seen = int(state["prompts_seen"])

    def save(self, path, contrast: dict | None = None, extra: dict | None = None):
        """Write the sums to one file with `model_identity(model)` and `contrast` (the contrast's definition)."""
        state = self.state_dict()
        return accumulator_file.write(path, "DeltaStreamer", state, model_identity(self.model), contrast, extra)

    @classmethod
    def load(cls, path, model: nn.Module, contrast: dict | None = None) -> DeltaStreamer:
        """A streamer over `model` holding the sums saved at `path`; refuses a file made with another model (its
        identity) or, when `contrast` is given, for another contrast."""
        found = accumulator_file.read(path, "DeltaStreamer", model=model_identity(model), contrast=contrast)
        state = found["state"]
        streamer = cls(model, [tuple(h) for h in state["heads"]], state["acc"]["definition"]["weighting"])
        streamer.load_state_dict(state)
        return streamer

    # -- results ---------------------------------------------------------------------------------------------
    def index(self, layer: int, head: int) -> int:
        """Position of (layer, head) along the accumulator's head axis."""
        self.layout.check_layer(layer), self.layout.check_head(head)
        if (layer, head) not in self._index:
            raise KeyError(f"head ({layer}, {head}) is not among the streamed heads")
        return self._index[(layer, head)]

    def delta(self, layer: int | None = None, head: int | None = None) -> torch.Tensor:
        """ΔC of one head (d, d), or of all streamed heads (n_heads_chosen, d, d) when no head is named."""
        if layer is None and head is None:
            return self.acc.delta()
        i = self.index(layer, head)
        return self.acc.delta()[i]

    def logit_gap(self) -> torch.Tensor:
        """trace ΔC = E[q·k|+] − E[q·k|−] per streamed head: (n_heads_chosen,)."""
        return self.acc.logit_gap()

    def grid(self, values: torch.Tensor | None = None) -> torch.Tensor:
        """Reshape per-head values (default ΔC) to (n_layers, n_heads, ...) — needs heads="all"."""
        if len(self.heads) != self.layout.n_layers * self.layout.n_heads:
            raise ValueError("grid() needs every head streamed (heads='all')")
        values = self.delta() if values is None else values
        return values.reshape(self.layout.n_layers, self.layout.n_heads, *values.shape[1:])


def stream_delta(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[str] | Sequence[Sequence[int]],
    pairs: Sequence[PromptPairs],
    heads: HeadSpec = "all",
    batch_size: int = 8,
    padding_side: str = "left",
    weighting: Weighting = "pair_mean",
    add_special_tokens: bool = True,
    progress: bool | str = False,
    checkpoint=None,
    checkpoint_every: int = 10,
    contrast: dict | None = None,
) -> DeltaStreamer:
    """ΔC for the chosen heads over all prompts (texts, or lists of token ids), `batch_size` prompts per pass.

    checkpoint: a file path; the sums are saved there every `checkpoint_every` batches and at the end, and a call
    that finds the file resumes after its last saved batch (refusing a file of another model or contrast).
    contrast: an optional label (plain dict) saved with the checkpoint beside the prompts' fingerprint."""
    from qkcore.lm.resume import stream_batches  # the loop, with checkpoints

    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise TypeError(f"prompts must be a list of strings or of token-id lists, got {type(prompts).__name__}")
    if isinstance(pairs, PromptPairs) or not isinstance(pairs, Sequence):
        raise TypeError(f"pairs must be a list of PromptPairs (one per prompt), got {type(pairs).__name__}")
    if any(isinstance(p, str) for p in prompts) and tokenizer is None:
        raise TypeError("prompts are strings but tokenizer is None: pass the model's tokenizer, or give token-id lists")
    if len(prompts) != len(pairs):
        raise ValueError(f"{len(prompts)} prompts but {len(pairs)} PromptPairs: give one per prompt")
    streamer = DeltaStreamer(model, heads, weighting)
    ranges = list(iter_batches(len(prompts), batch_size))
    definition = (
        contrast_definition(
            prompts,
            pairs,
            label=contrast,
            heads=[list(h) for h in streamer.heads],
            batch_size=batch_size,
            padding_side=padding_side,
            weighting=weighting,
            add_special_tokens=add_special_tokens,
        )
        if checkpoint is not None
        else None
    )
    return stream_batches(
        streamer,
        tokenizer,
        prompts,
        pairs,
        ranges,
        padding_side,
        add_special_tokens,
        progress,
        checkpoint,
        checkpoint_every,
        definition,
    )


def make_batch(tokenizer, chunk, padding_side: str, add_special_tokens: bool) -> EncodedBatch:
    """One batch of texts (tokenized) or of token-id lists (padded)."""
    if all(isinstance(p, str) for p in chunk):
        return encode_batch(tokenizer, chunk, padding_side, add_special_tokens)
    if any(isinstance(p, str) for p in chunk):
        raise TypeError("prompts mixes strings and token-id lists: give one kind")
    return pad_batch(chunk, padding_side)
