"""The key-swap intervention of the filter-heads chapter (paper Figure 7): one item of the asked category among 20
others; inside a key subspace, swap the key coordinates of that item (orig) with those of a random other item
(target); overwrite that head's raw logits q·k at the last token (qkcore.lm.edit_attention); read its attention.

    table = swap_attention(model, tokenizer, prompts, [(2, 1)], {"category": [V], "random": [V.shape[1]]}, generator)
    table.loc["category", "flip_rate"]     # share of prompts whose argmax attention lands on the target after
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from qkcore.experiments.filter_heads.vectors import encode_filter_prompts
from qkcore.interventions import bootstrap_interval, swap_metrics, swapped_attention
from qkcore.lm import KeySwap, attention_layout, edit_attention, iter_batches, run_model
from qkcore.lm.gather import gather_qk
from qkcore.lm.layout import head_name
from qkcore.organisms.filter_task import FilterPrompt, FilterTask, FilterTaskConfig
from qkcore.subspace import random_orthonormal

BOOTSTRAP_SEED = 0  # the bootstrap's own generator: intervals never shift the conditions' random draws


def swap_targets(prompts: Sequence[FilterPrompt], generator: torch.Generator) -> tuple[list[int], list[int]]:
    """Per prompt: the item index of the asked category's single item (orig) and of a random other item (target)."""
    orig, target = [], []
    for p in prompts:
        pos = [i for i, flag in enumerate(p.positive) if flag]
        if len(pos) != 1:
            raise ValueError(f"swap prompts need exactly one item of the asked category, got {len(pos)}")
        others = [i for i in range(len(p.items)) if i != pos[0]]
        orig.append(pos[0])
        target.append(others[int(torch.randint(len(others), (), generator=generator))])
    return orig, target


@torch.no_grad()
def swap_attention(
    model,
    tokenizer,
    prompts: Sequence[FilterPrompt],
    heads: Sequence[tuple[int, int]],
    bases: dict[str, Sequence[torch.Tensor | int]],
    generator: torch.Generator,
    batch_size: int = 50,
    models: dict[str, torch.nn.Module] | None = None,
    answer_prefix: str = "",
) -> pd.DataFrame:
    """One row per condition; the swap is applied at every head of `heads` at once (one head: the paper's setting).

    bases: name → one entry per head, each a (d, r) orthonormal basis or an int r (a fresh random orthonormal
    subspace of rank r per batch). models: name → another model for that condition (e.g. the random-init copy;
    default `model`). Columns: rank (of the first head's subspace), mean over heads of the attention on orig and
    target before and after, target_shift and flip_rate (swap_metrics) with its 95% bootstrap interval over
    prompts (flip_lo, flip_hi; the flip averaged over the heads), and answer_target / answer_orig: how often the
    model's next token is then the target's / orig's first token."""
    heads = [tuple(h) for h in heads]
    orig, target = swap_targets(prompts, generator)
    rows = {}
    unedited: dict[tuple[int, int], dict] = {}  # (id of model, first prompt of the batch) → attention before
    for name, per_head in bases.items():
        if len(per_head) != len(heads):
            raise ValueError(f"condition {name!r}: {len(per_head)} bases for {len(heads)} heads")
        net = (models or {}).get(name, model)
        d = attention_layout(net).head_dim
        sums: dict[str, float] = {}
        flips = []  # per prompt, averaged over the heads
        for chunk in iter_batches(len(prompts), batch_size):
            start = chunk.start
            batch, items = encode_filter_prompts(tokenizer, [prompts[i] for i in chunk], answer_prefix)
            o = [batch.padded(r, items[r][orig[i]]) for r, i in enumerate(chunk)]
            t = [batch.padded(r, items[r][target[i]]) for r, i in enumerate(chunk)]
            last = [batch.padded(r, -1) for r in range(len(chunk))]
            rr = torch.arange(len(chunk))
            if (id(net), start) not in unedited:
                with edit_attention(net, read=heads) as ed:
                    run_model(net, batch)
                unedited[(id(net), start)] = {h: ed.attention(*h)[rr, last] for h in heads}  # (b, seq) per head
            before = unedited[(id(net), start)]
            swaps = [
                KeySwap(
                    h[0],
                    h[1],
                    (random_orthonormal(d, b, generator) if isinstance(b, int) else b).float(),
                    orig=o,
                    target=t,
                    query=last,
                )
                for h, b in zip(heads, per_head)
            ]
            with edit_attention(net, swaps) as ed:
                out = run_model(net, batch)
            flip = torch.zeros(len(chunk), dtype=torch.float64)
            for h in heads:
                after = ed.attention(*h)[rr, last]
                m = swap_metrics(before[h], after, torch.tensor(o), torch.tensor(t))
                for key, value in m.items():
                    sums[key] = sums.get(key, 0.0) + value * len(chunk) / len(heads)
                flip += (after.argmax(-1) == torch.tensor(t)).double() / len(heads)
            flips.append(flip)
            next_token = out.logits[:, -1].argmax(-1)  # left padding: column -1 is every prompt's last token
            for key, which in (("answer_target", target), ("answer_orig", orig)):
                words = [prompts[i].items[which[i]] for i in chunk]
                sums[key] = sums.get(key, 0.0) + _first_token_rate(tokenizer, next_token, words) * len(chunk)
        first = per_head[0]
        lo, hi = bootstrap_interval(torch.cat(flips), torch.Generator().manual_seed(BOOTSTRAP_SEED))
        rows[name] = {
            "rank": first if isinstance(first, int) else first.shape[1],
            **{k: v / len(prompts) for k, v in sums.items()},
            "flip_lo": lo,
            "flip_hi": hi,
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@torch.no_grad()
def recomputed_swaps(
    model,
    tokenizer,
    prompts: Sequence[FilterPrompt],
    head: tuple[int, int],
    bases: dict[str, torch.Tensor | int],
    generator: torch.Generator,
    batch_size: int = 50,
    models: dict[str, torch.nn.Module] | None = None,
    answer_prefix: str = "",
    n_random: int = 10,
    n_boot: int = 1000,
    gathered: dict | None = None,
) -> pd.DataFrame:
    """The swap at one head without a forward pass per condition: one pass per model gathers the head's query, its
    keys and its unedited attention row, then every condition is rebuilt by `swapped_attention`. Same columns as
    `swap_attention` except the model's answer (not read: no edited forward pass), plus the flip rate's 95% bootstrap
    interval over prompts (flip_lo, flip_hi). An int basis draws `n_random` random subspaces of that rank; their
    metrics are averaged (the interval is that of the per-prompt mean over draws). `gathered`: {id(model): rows}
    from `gather_swap_rows` for this head, when the caller gathered several heads in one pass."""
    head = tuple(head)
    orig, target = swap_targets(prompts, generator)
    nets = {name: (models or {}).get(name, model) for name in bases}
    for net in {id(n): n for n in nets.values()}.values():
        if getattr(net.config, "attn_logit_softcapping", None):
            raise NotImplementedError(
                "recomputed swaps assume a plain softmax over q·k; this model soft-caps its "
                "logits: use swap_method='forward'"
            )
    if gathered is None:
        gathered = {
            net_id: rows[head]
            for net_id, rows in gather_swap_rows(
                nets.values(), tokenizer, prompts, [head], orig, target, batch_size, answer_prefix
            ).items()
        }
    d = attention_layout(model).head_dim
    table = {}
    for name, basis in bases.items():
        draws = (
            [random_orthonormal(d, basis, generator) for _ in range(n_random)] if isinstance(basis, int) else [basis]
        )
        per_prompt, sums = [], {}
        for b in draws:
            flips = []
            for attn, q, k_o, k_t, o, t, scale in gathered[id(nets[name])]:
                after = swapped_attention(attn, q, k_o, k_t, b, scale, o, t)
                for key, value in swap_metrics(attn.double(), after, o, t).items():
                    sums[key] = sums.get(key, 0.0) + value * len(o) / len(prompts) / len(draws)
                flips.append((after.argmax(-1) == t).double())
            per_prompt.append(torch.cat(flips))
        lo, hi = bootstrap_interval(
            torch.stack(per_prompt).mean(0), torch.Generator().manual_seed(BOOTSTRAP_SEED), n_boot
        )
        rank = basis if isinstance(basis, int) else basis.shape[1]
        table[name] = {"rank": rank, **sums, "flip_lo": lo, "flip_hi": hi}
    return pd.DataFrame.from_dict(table, orient="index")


@torch.no_grad()
def gather_swap_rows(
    nets, tokenizer, prompts, heads, orig, target, batch_size: int = 50, answer_prefix: str = ""
) -> dict[int, dict[tuple[int, int], list]]:
    """One pass per distinct model over the swap prompts: for each head, per batch, the unedited attention row of
    the last token, its query, the orig and target keys, their columns and the head's logit scale."""
    heads = [tuple(h) for h in heads]
    out = {}
    for net in {id(n): n for n in nets}.values():
        rows = {h: [] for h in heads}
        for chunk in iter_batches(len(prompts), batch_size):
            batch, items = encode_filter_prompts(tokenizer, [prompts[i] for i in chunk], answer_prefix)
            cols = torch.arange(batch.input_ids.shape[1]).expand(len(chunk), -1)  # every column (b, S)
            last = torch.tensor([batch.padded(r, -1) for r in range(len(chunk))])
            o = torch.tensor([batch.padded(r, items[r][orig[i]]) for r, i in enumerate(chunk)])
            t = torch.tensor([batch.padded(r, items[r][target[i]]) for r, i in enumerate(chunk)])
            got = gather_qk(net, batch, heads, last, key_cols=None, attn_cols=cols, logits_to_keep=1)
            rr = torch.arange(len(chunk))
            for i, h in enumerate(heads):
                rows[h].append((got.attn[i], got.q[i], got.k[i][rr, o], got.k[i][rr, t], o, t, got.scaling[i]))
        out[id(net)] = rows
    return out


def _first_token_rate(tokenizer, predicted: torch.Tensor, words: list[str]) -> float:
    """Share of rows whose predicted token is the first token of the word (as written without a leading space, or
    with one: word-level, Llama-3 and SentencePiece tokenizers differ)."""
    hits = 0
    for p, w in zip(predicted.tolist(), words):
        firsts = {
            tokenizer(w, add_special_tokens=False)["input_ids"][0],
            tokenizer(" " + w, add_special_tokens=False)["input_ids"][0],
        }
        hits += p in firsts
    return hits / len(words)


def condition_bases(result, head) -> dict[str, torch.Tensor | int]:
    """The key bases compared at one head: the category subspace, a random subspace of the same rank (an int: drawn
    fresh), the keys' top principal directions (same rank), the shuffled-label subspace, and the random-init copy's
    own category subspace (run on that copy)."""
    a = result.analyses
    rank = a["model"][head].key_basis.shape[1]
    return {
        "category subspace": a["model"][head].key_basis,
        "random subspace, same rank": rank,
        "top key-variance subspace, same rank": a["model"][head].key_pcs[:, :rank],
        "shuffled-label subspace": a["shuffled labels"][head].key_basis,
        "random-init model": a["random init"][head].key_basis,
    }


def swap_experiment(model, tokenizer, result, params) -> pd.DataFrame:
    """Figure 7 at each studied head of a FilterHeadsResult, and at all of them at once: the category key subspace,
    a random subspace of equal rank, the span of the keys' top principal directions (equal rank), the subspace found
    with shuffled labels, and the random-init copy's own category subspace (run on that copy). Same prompts, orig
    and target items for every condition."""
    from qkcore.experiments.filter_heads.analysis import FilterHeadsParams, FilterHeadsResult  # no import cycle at load

    if not isinstance(result, FilterHeadsResult) or not isinstance(params, FilterHeadsParams):
        raise TypeError("swap_experiment needs a FilterHeadsResult and its FilterHeadsParams")
    prompts = FilterTask(FilterTaskConfig(categories=params.categories)).sample_single_positive(
        params.n_swap_prompts, torch.Generator().manual_seed(params.seed + 7)
    )
    if params.swap_method == "recompute":
        return _recomputed_experiment(model, tokenizer, result, params, prompts)
    groups = [[h] for h in result.heads] + ([list(result.heads)] if len(result.heads) > 1 else [])
    frames = []
    for heads in groups:
        per_head = [condition_bases(result, h) for h in heads]
        bases = {name: [b[name] for b in per_head] for name in per_head[0]}
        table = swap_attention(
            model,
            tokenizer,
            prompts,
            heads,
            bases,
            torch.Generator().manual_seed(params.seed + 8),
            params.batch_size,
            models={"random-init model": result.random_model},
            answer_prefix=params.answer_prefix,
        )
        name = head_name(heads[0]) if len(heads) == 1 else "all studied heads"
        table.index = pd.MultiIndex.from_product([[name], table.index], names=["heads", "condition"])
        frames.append(table)
    return pd.concat(frames)


def _recomputed_experiment(model, tokenizer, result, params, prompts) -> pd.DataFrame:
    """swap_method="recompute": the same conditions at each studied head (no all-heads row: heads in different layers
    change each other's inputs, which only a forward pass shows), with bootstrap intervals."""
    orig, target = swap_targets(prompts, torch.Generator().manual_seed(params.seed + 8))
    rows = gather_swap_rows(
        [model, result.random_model],
        tokenizer,
        prompts,
        result.heads,
        orig,
        target,
        params.batch_size,
        params.answer_prefix,
    )
    frames = []
    for h in result.heads:
        d = result.analyses["model"][h].key_pcs.shape[0]
        bases = {**condition_bases(result, h), "whole key space": torch.eye(d, dtype=torch.float64)}
        table = recomputed_swaps(
            model,
            tokenizer,
            prompts,
            h,
            bases,
            torch.Generator().manual_seed(params.seed + 8),
            params.batch_size,
            models={"random-init model": result.random_model},
            answer_prefix=params.answer_prefix,
            gathered={net_id: per_head[tuple(h)] for net_id, per_head in rows.items()},
        )
        table.index = pd.MultiIndex.from_product([[head_name(h)], table.index], names=["heads", "condition"])
        frames.append(table)
    return pd.concat(frames)
