"""Streaming contrastive covariance: ΔC = E[q kᵀ | +] − E[q kᵀ | −] (the paper's method, §3; talk "Contrastive
Covariance Method").

A positive pair (q, k) is a query and a key whose tokens share the feature of interest; a negative pair does not.
C⁺ and C⁻ are plain second moments (no centring, no 1/√d). Sums are kept in float64 with pair counts, so any number
of batches of any size can be absorbed, for one head or for a whole stack of heads at once:

    acc = ContrastiveCovariance(d_head=16)                  # or head_shape=(n_layers, n_heads)
    acc.add(q_pos, k_pos, positive=True); acc.add(q_neg, k_neg, positive=False)
    delta = acc.delta()                                      # (d_head, d_head): rows = query dims, cols = key dims
    acc.query_concentration(), acc.mean_share()             # the rank-1 diagnostics, per head
    acc.merge(other_acc); acc.save("dc.pt", model=..., contrast=...); ContrastiveCovariance.load("dc.pt")

The accumulator is a set of sums and counts, so it scales by addition: `merge` adds another accumulator (another
shard of prompts, another process), `state_dict` / `load_state_dict` and `save` / `load` keep it between runs
(`qkcore.accumulator_file` writes one file with the model's identity and the contrast's definition beside the sums).
Merging halves equals one pass up to the order of float64 additions (bit for bit when the sums are exact).

Every contrast in the book (toy factors, filter categories, order and lexical IDs, their null groupings) is a set of
pairs fed to this one accumulator: directly from stored vectors, or per batch by `qkcore.lm.DeltaStreamer`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch

from qkcore import accumulator_file

Weighting = Literal["pair_mean", "prompt_sum"]
WEIGHTINGS = ("pair_mean", "prompt_sum")


class ContrastiveCovariance:
    """Accumulates Σ q kᵀ and pair counts for positive and negative pairs.

    weighting:
      "pair_mean"  (default) C± = Σ q kᵀ / number of ± pairs — the definition E[q kᵀ | ±].
      "prompt_sum" C± = Σ q kᵀ / number of prompts — the authors' filter-head code, where each prompt contributes
                   all its positive items and all its negative items, so the class with more items per prompt
                   weighs more (4× for 5 positives vs 20 negatives). Requires `prompts=` in `add`.
    """

    def __init__(
        self,
        d_head: int,
        d_key: int | None = None,
        head_shape: tuple[int, ...] = (),
        weighting: Weighting = "pair_mean",
        device: torch.device | str | None = None,
    ):
        if not isinstance(weighting, str) or weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        for name, value in (("d_head", d_head), ("d_key", d_key)):
            if (value is not None or name == "d_head") and (isinstance(value, bool) or not isinstance(value, int)):
                raise TypeError(f"{name} must be a positive int, got {value!r}")
        if isinstance(head_shape, (int, str)) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in head_shape
        ):
            raise TypeError(
                f"head_shape must be a tuple of positive ints, e.g. (n_layers, n_heads), got {head_shape!r}"
            )
        if d_head < 1 or (d_key is not None and d_key < 1):
            raise ValueError(f"dimensions must be positive, got d_head={d_head}, d_key={d_key}")
        if device is not None and torch.device(device).type == "meta":
            raise ValueError("device='meta' holds no values, so ΔC cannot be summed there: pass 'cpu' or a GPU device")
        self.d_query = int(d_head)
        self.d_key = int(d_key if d_key is not None else d_head)
        self.head_shape = tuple(int(h) for h in head_shape)
        self.weighting = weighting
        try:
            self._allocate(device)
        except (RuntimeError, MemoryError) as e:
            n_heads = math.prod(self.head_shape)
            gib = 16 * n_heads * (self.d_query * self.d_key + self.d_query + self.d_key + 1) / 2**30
            raise MemoryError(
                f"ContrastiveCovariance(d_head={self.d_query}, d_key={self.d_key}, head_shape={self.head_shape}) "
                f"needs {gib:.3g} GiB of float64 sums, which could not be allocated on {device or 'cpu'}: d_head and "
                f"d_key are one head's query and key sizes (e.g. 64 or 128), not the model width ({e})"
            ) from None

    def _allocate(self, device) -> None:
        shape = (*self.head_shape, self.d_query, self.d_key)
        self.sums = {s: torch.zeros(shape, dtype=torch.float64, device=device) for s in (True, False)}
        # first moments and Σ|q|², for the rank-1 diagnostics (O(d) per pair beside the O(d²) outer products)
        self.q_sums = {
            s: torch.zeros((*self.head_shape, self.d_query), dtype=torch.float64, device=device) for s in (True, False)
        }
        self.k_sums = {
            s: torch.zeros((*self.head_shape, self.d_key), dtype=torch.float64, device=device) for s in (True, False)
        }
        self.q_sq = {s: torch.zeros(self.head_shape, dtype=torch.float64, device=device) for s in (True, False)}
        self.pairs = {True: 0, False: 0}
        self.prompts = {True: 0, False: 0}

    def add(self, q: torch.Tensor, k: torch.Tensor, *, positive: bool, prompts: int = 0) -> None:
        """Absorb a batch of pairs: q (*head_shape, n, d_query), k (*head_shape, n, d_key), row i of q with row i
        of k. `prompts` counts the prompts these pairs came from (used by the "prompt_sum" weighting)."""
        for name, x in (("q", q), ("k", k)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if not x.is_floating_point():
                raise TypeError(f"{name} must be a real floating-point tensor, got dtype {x.dtype}")
        if not isinstance(positive, bool):
            raise TypeError(f"positive must be True or False, got {positive!r}")
        if isinstance(prompts, bool) or not isinstance(prompts, int):
            raise TypeError(f"prompts must be an int >= 0 (the number of prompts the pairs came from), got {prompts!r}")
        expected_q = (*self.head_shape, q.shape[-2] if q.dim() >= 2 else -1, self.d_query)
        if q.dim() != len(self.head_shape) + 2 or tuple(q.shape) != expected_q:
            raise ValueError(
                f"q must have shape (*head_shape, n_pairs, d_query) = ({', '.join(map(str, self.head_shape))}"
                f"{', ' if self.head_shape else ''}n, {self.d_query}), got {tuple(q.shape)}"
            )
        if tuple(k.shape) != (*self.head_shape, q.shape[-2], self.d_key):
            raise ValueError(
                f"k must have shape {(*self.head_shape, q.shape[-2], self.d_key)} to pair row-by-row with q "
                f"{tuple(q.shape)}, got {tuple(k.shape)}"
            )
        if prompts < 0:
            raise ValueError(f"prompts must be >= 0, got {prompts}")
        if not (torch.isfinite(q).all() and torch.isfinite(k).all()):
            raise ValueError("q and k must be finite: found NaN or inf (check the capture or the model's dtype)")
        sums = self.sums[bool(positive)]
        # detached: the sums are statistics, never part of an autograd graph
        q64 = q.detach().to(device=sums.device, dtype=torch.float64)
        k64 = k.detach().to(device=sums.device, dtype=torch.float64)
        outer = q64.transpose(-1, -2) @ k64  # (*head_shape, d_query, d_key)
        q_sq = q64.square().sum((-2, -1))  # (*head_shape,)
        if not (torch.isfinite(outer).all() and torch.isfinite(q_sq).all()):
            raise ValueError(
                f"q and k are finite but their products overflow float64 (largest |q| {q64.abs().max().item():.3g}, "
                f"|k| {k64.abs().max().item():.3g}); rescale them (ΔC scales by the same factor squared). "
                "Nothing was added"
            )
        sums += outer
        self.q_sums[bool(positive)] += q64.sum(-2)  # (*head_shape, d_query)
        self.k_sums[bool(positive)] += k64.sum(-2)  # (*head_shape, d_key)
        self.q_sq[bool(positive)] += q_sq
        self.pairs[bool(positive)] += int(q.shape[-2])
        self.prompts[bool(positive)] += int(prompts)

    def _normaliser(self, positive: bool) -> int:
        sign = "positive" if positive else "negative"
        if self.pairs[positive] == 0:
            raise ValueError(f"no {sign} pairs were added: ΔC needs at least one positive and one negative pair")
        if self.weighting == "pair_mean":
            return self.pairs[positive]
        if self.prompts[positive] == 0:
            raise ValueError(f'weighting="prompt_sum" needs add(..., prompts=n) for the {sign} pairs')
        return self.prompts[positive]

    def covariance(self, positive: bool) -> torch.Tensor:
        """C⁺ (positive=True) or C⁻: (*head_shape, d_query, d_key), float64."""
        return self.sums[bool(positive)] / self._normaliser(bool(positive))

    def delta(self) -> torch.Tensor:
        """ΔC = C⁺ − C⁻: (*head_shape, d_query, d_key), float64."""
        return self.covariance(True) - self.covariance(False)

    def logit_gap(self) -> torch.Tensor:
        """E[q·k | +] − E[q·k | −] = trace(ΔC) (square heads only): (*head_shape,). A head that prefers
        positive keys has a large positive gap."""
        if self.d_query != self.d_key:
            raise ValueError("the logit gap needs d_query == d_key")
        return torch.diagonal(self.delta(), dim1=-2, dim2=-1).sum(-1)

    # -- rank-1 diagnostics -------------------------------------------------------------------------------------
    def mean_query(self, positive: bool = True) -> torch.Tensor:
        """q̄± = E[q | ±] over the pairs of one class: (*head_shape, d_query)."""
        self._normaliser(bool(positive))  # raises when the class is empty
        return self.q_sums[bool(positive)] / self.pairs[bool(positive)]

    def mean_key(self, positive: bool = True) -> torch.Tensor:
        """k̄± = E[k | ±]: (*head_shape, d_key)."""
        self._normaliser(bool(positive))
        return self.k_sums[bool(positive)] / self.pairs[bool(positive)]

    def query_concentration(self, positive: bool = True) -> torch.Tensor:
        """|E q|² / E|q|² over one class's pairs: (*head_shape,). Near 1 the query barely varies, so ΔC is close to
        rank 1 whatever the keys hold (a caution when reading "rank 1 per category")."""
        mean_sq = self.q_sq[bool(positive)] / self.pairs[bool(positive)]
        return self.mean_query(positive).square().sum(-1) / mean_sq.clamp_min(1e-300)

    def mean_share(self) -> torch.Tensor:
        """1 − ‖ΔC − M‖² / ‖ΔC‖²: how much of ΔC the outer products of the class means alone give, with
        M = (n⁺/Z⁺) q̄⁺k̄⁺ᵀ − (n⁻/Z⁻) q̄⁻k̄⁻ᵀ (Z = the normaliser: pairs, or prompts for "prompt_sum"): (*head_shape,).
        Near 1 when ΔC is just q̄ (k̄⁺ − k̄⁻)ᵀ, i.e. a single query direction meeting a mean key difference.
        NaN for a head whose ΔC is exactly 0 (no contrast: the share of nothing is undefined)."""

        def part(s: bool) -> torch.Tensor:
            scale = self.pairs[s] / self._normaliser(s)
            return scale * self.mean_query(s)[..., :, None] * self.mean_key(s)[..., None, :]

        delta = self.delta()
        rest = delta - (part(True) - part(False))
        energy = delta.flatten(-2).square().sum(-1)
        share = 1 - rest.flatten(-2).square().sum(-1) / energy.clamp_min(1e-300)
        return torch.where(energy > 0, share, torch.full_like(share, float("nan")))

    # -- scaling past one pass: merge, state, files ----------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for s, sign in ((True, "positive"), (False, "negative")):
            out[f"sums.{sign}"] = self.sums[s]  # (*head_shape, d_query, d_key)
            out[f"q_sums.{sign}"] = self.q_sums[s]  # (*head_shape, d_query)
            out[f"k_sums.{sign}"] = self.k_sums[s]  # (*head_shape, d_key)
            out[f"q_sq.{sign}"] = self.q_sq[s]  # (*head_shape,)
        return out

    def definition(self) -> dict:
        """What must agree for two accumulators to be added: dimensions, head shape, weighting."""
        return {
            "d_query": self.d_query,
            "d_key": self.d_key,
            "head_shape": list(self.head_shape),
            "weighting": self.weighting,
        }

    def merge(self, other: ContrastiveCovariance) -> ContrastiveCovariance:
        """Add `other`'s sums and counts into this accumulator (in place; returns self): the result is the
        accumulator of both sets of pairs. `other` may live on another device; it is left unchanged."""
        if not isinstance(other, ContrastiveCovariance):
            raise TypeError(f"other must be a ContrastiveCovariance, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge an accumulator with itself: every pair would be counted twice")
        if other.definition() != self.definition():
            raise ValueError(
                f"cannot merge accumulators of different definitions: this one {self.definition()}, other "
                f"{other.definition()}"
            )
        mine, theirs = self._tensors(), other._tensors()
        for name, t in mine.items():
            t += theirs[name].to(t.device)
        for s in (True, False):
            self.pairs[s] += other.pairs[s]
            self.prompts[s] += other.prompts[s]
        return self

    def state_dict(self) -> dict:
        """Sums (float64 tensors), counts and definition: everything needed to resume or merge elsewhere."""
        return {
            "definition": self.definition(),
            "tensors": {name: t.detach().clone() for name, t in self._tensors().items()},
            "pairs": {"positive": self.pairs[True], "negative": self.pairs[False]},
            "prompts": {"positive": self.prompts[True], "negative": self.prompts[False]},
        }

    def load_state_dict(self, state: dict) -> None:
        """Replace this accumulator's sums and counts by `state` (from `state_dict`, same definition)."""
        if not isinstance(state, dict) or not {"definition", "tensors", "pairs", "prompts"} <= set(state):
            raise ValueError("state must be a dict from ContrastiveCovariance.state_dict() (definition, tensors, ...)")
        if state["definition"] != self.definition():
            raise ValueError(
                f"state holds an accumulator of definition {state['definition']}, this one is {self.definition()}"
            )
        mine = self._tensors()
        if set(state["tensors"]) != set(mine):
            raise ValueError(f"state's tensors are {sorted(state['tensors'])}, expected {sorted(mine)}")
        for name, t in mine.items():
            src = state["tensors"][name]
            if not isinstance(src, torch.Tensor) or src.shape != t.shape or src.dtype != torch.float64:
                raise ValueError(f"state tensor {name} must be float64 of shape {tuple(t.shape)}")
            t.copy_(src)
        for s, sign in ((True, "positive"), (False, "negative")):
            self.pairs[s] = int(state["pairs"][sign])
            self.prompts[s] = int(state["prompts"][sign])

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str | None = None) -> ContrastiveCovariance:
        """A new accumulator holding `state`."""
        if not isinstance(state, dict) or not isinstance(state.get("definition"), dict):
            raise ValueError("state must be a dict from ContrastiveCovariance.state_dict()")
        d = state["definition"]
        acc = cls(d["d_query"], d["d_key"], tuple(d["head_shape"]), d["weighting"], device)
        acc.load_state_dict(state)
        return acc

    def save(self, path: str | Path, model: dict | None = None, contrast: dict | None = None) -> Path:
        """Write the accumulator to one file with `model` (the model's identity, e.g. `qkcore.lm.model_identity`)
        and `contrast` (the contrast's definition): JSON-like dicts, checked again by `load`."""
        return accumulator_file.write(path, "ContrastiveCovariance", self.state_dict(), model, contrast)

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: dict | None = None,
        contrast: dict | None = None,
        device: torch.device | str | None = None,
    ) -> ContrastiveCovariance:
        """Read a file written by `save`; when `model` or `contrast` is given, refuse a file made for others."""
        found = accumulator_file.read(path, "ContrastiveCovariance", model=model, contrast=contrast)
        return cls.from_state_dict(found["state"], device)


def contrastive_covariance(
    q_pos: torch.Tensor, k_pos: torch.Tensor, q_neg: torch.Tensor, k_neg: torch.Tensor
) -> torch.Tensor:
    """ΔC from stored pairs in one call: q_pos (n⁺, d), k_pos (n⁺, d), q_neg (n⁻, d), k_neg (n⁻, d) → (d, d)."""
    acc = ContrastiveCovariance(q_pos.shape[-1], k_pos.shape[-1])
    acc.add(q_pos, k_pos, positive=True)
    acc.add(q_neg, k_neg, positive=False)
    return acc.delta()
