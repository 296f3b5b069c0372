"""Views of the binding subspaces (paper Figure 8): keys and queries of fresh prompts projected on a head's order-ID
and lexical-ID subspaces, reduced to 3-D by PCA (and to 2-D by UMAP for the lexical one), with a number that says
how well the coordinates separate the labels: leave-fold-out k-nearest-neighbour accuracy (chance = 1/n_labels).

    view = order_view(model, tok, chat, prompts, head=(2, 1), decomposition=dec, batch_size=50)
    view.key_pca (n·P, 3) coloured by view.key_labels (clause index); view.key_knn (float)
    lex = lexical_view(model, tok, chat, prompts, head, dec, batch_size, umap_seed=0)   # lex.umap (2n, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from qkcore.experiments.binding.prompts import capture_binding, encode_binding_prompts
from qkcore.lm import iter_batches
from qkcore.organisms.binding_task import OBJECTS, PAPER_OBJECTS, BindingPrompt, make_prompt, sample_prompt
from qkcore.progress import gathers
from qkcore.subspace import Decomposition, pca

KNN_NEIGHBOURS = 10
KNN_FOLDS = 5


def _knn(labels: np.ndarray, n_dims: int):
    """The decoder both kNN numbers use: (classifier, folds), or None where it cannot be fitted (a label seen once,
    or no coordinates). Up to 5 stratified folds (fewer when a label is rarer) and up to 10 neighbours, never more
    than the rarest label's training rows, so that a label can win the vote: with 27 prompts over 9 objects, 10
    neighbours would outvote every object's 2 training rows however tight its cluster."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    _, counts = np.unique(labels, return_counts=True)
    folds = min(KNN_FOLDS, int(counts.min()))
    if folds < 2 or n_dims == 0:
        return None
    rarest_train = int(counts.min()) - -(-int(counts.min()) // folds)  # its rows outside the largest held-out fold
    k = max(1, min(KNN_NEIGHBOURS, rarest_train))
    return KNeighborsClassifier(n_neighbors=k), StratifiedKFold(folds)


def knn_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean held-out accuracy of the kNN decoder (`_knn`: up to 10 neighbours, up to 5 stratified folds, no
    shuffling: deterministic); NaN where it cannot be fitted."""
    from sklearn.model_selection import cross_val_score

    fit = _knn(labels, x.shape[1])
    return float("nan") if fit is None else float(cross_val_score(fit[0], x, labels, cv=fit[1]).mean())


def knn_correct(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per row, whether the same decoder predicts its label when it is held out: knn_accuracy's per-row hits, for
    paired tests over prompts. NaN where it cannot be fitted."""
    from sklearn.model_selection import cross_val_predict

    fit = _knn(labels, x.shape[1])
    if fit is None:
        return np.full(len(labels), np.nan)
    return (cross_val_predict(fit[0], x, labels, cv=fit[1]) == labels).astype(float)


def balanced_query_prompts(n: int, n_pairs: int, generator: torch.Generator) -> list[BindingPrompt]:
    """n prompts like `sample_prompt`, the queried object cycling through the paper's objects in a random order,
    so that each is asked ⌊n/9⌋ or ⌈n/9⌉ times: the lexical view's kNN needs every object asked at least twice (and
    5 times for its 5 folds), which n uniform draws do not ensure (24 prompts over 9 objects leave some asked once)."""
    cycle = torch.randperm(len(PAPER_OBJECTS), generator=generator).tolist()
    out = []
    for i in range(n):
        p = sample_prompt(n_pairs, generator)
        target, objects = PAPER_OBJECTS[cycle[i % len(cycle)]], list(p.objects)
        if target in objects:
            query = objects.index(target)
        else:
            objects[p.query], query = target, p.query
        out.append(make_prompt(objects, p.letters, query))
    return out


def umap_2d(x: np.ndarray, neighbours: int, seed: int) -> np.ndarray:
    """Seeded single-threaded UMAP to 2-D. umap-learn's numba kernels change the process's OpenMP thread count (it
    then slows torch down many times over on a busy CPU), so torch's thread count is put back afterwards. Its kernels
    are compiled once per environment, not once per process (qkcore.jit_cache)."""
    import umap

    from qkcore.jit_cache import cache_numba_kernels

    cache_numba_kernels("umap", "pynndescent")
    threads = torch.get_num_threads()
    try:
        reducer = umap.UMAP(n_components=2, n_neighbors=min(neighbours, len(x) - 1), random_state=seed, n_jobs=1)
        return reducer.fit_transform(x)
    finally:
        torch.set_num_threads(threads)


def view_bases(dec: Decomposition) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key bases for a view: the top max(rank, 3) singular directions (the authors plot 3)."""
    r = min(max(dec.rank, 3), dec.U.shape[1])
    return dec.U[:, :r].float(), dec.V[:, :r].float()


@dataclass(frozen=True)
class View:
    """keys (n_k, r) and queries (n_q, r) in a subspace's coordinates (r = max(rank, 3)); their labels; PCA of keys
    and queries stacked (n_k + n_q, 3); key_knn / query_knn: label accuracy of kNN on the first `rank` coordinates.
    umap (n_k + n_q, 2) or None."""

    rank: int
    keys: np.ndarray
    queries: np.ndarray
    key_labels: np.ndarray
    query_labels: np.ndarray
    pca: np.ndarray
    key_knn: float
    query_knn: float
    umap: np.ndarray | None = None
    key_correct: np.ndarray | None = None  # per key, whether kNN reads its label held out (knn_correct)


def mean_view(views: Sequence[View]) -> View:
    """The first view (its coordinates, for plots) with kNN accuracies and per-key hits averaged over all views:
    one control averaged over several null draws."""
    return replace(
        views[0],
        key_knn=float(np.mean([v.key_knn for v in views])),
        query_knn=float(np.mean([v.query_knn for v in views])),
        key_correct=np.mean([v.key_correct for v in views], 0),
    )


@dataclass(frozen=True)
class Collected:
    """q (n, d), k (n, P, d), the answer clause (n,) and each key's absolute token position in its prompt (n, P)."""

    q: torch.Tensor
    k: torch.Tensor
    answer: torch.Tensor
    positions: torch.Tensor


def collect(model, tokenizer, chat, prompts, head, batch_size, key_offset=0, answer_prefix="") -> Collected:
    """One head's queries and box keys over prompts: what the views project."""
    qs, ks, answers, pos = [], [], [], []
    for idx in gathers(list(iter_batches(len(prompts), batch_size)), "views: gather q,k"):
        enc = encode_binding_prompts(tokenizer, [prompts[i] for i in idx], chat, key_offset, answer_prefix)
        vec = capture_binding(model, enc, [head], choice=False)  # stops after the head's layer
        qs.append(vec.q[0]), ks.append(vec.k[0]), answers.append(enc.answer)
        pos.append(enc.keys - torch.as_tensor(enc.batch.offsets)[:, None])  # (b, P) position in the prompt
    return Collected(torch.cat(qs), torch.cat(ks), torch.cat(answers), torch.cat(pos))


def _view(
    dec: Decomposition, q: torch.Tensor, k: torch.Tensor, q_labels, k_labels, umap_seed=None, umap_neighbours: int = 15
) -> View:
    U, V = view_bases(dec)
    kc, qc = (k @ V).numpy(), (q @ U).numpy()  # (n_k, r), (n_q, r)
    both = np.concatenate([kc, qc])
    emb = None
    if umap_seed is not None:
        emb = umap_2d(both[:, : max(dec.rank, 1)], umap_neighbours, umap_seed)
    r = dec.rank
    return View(
        r,
        kc,
        qc,
        np.asarray(k_labels),
        np.asarray(q_labels),
        pca(both, 3, pad=True)[0].numpy(),
        knn_accuracy(kc[:, :r], np.asarray(k_labels)),
        knn_accuracy(qc[:, :r], np.asarray(q_labels)),
        emb,
        knn_correct(kc[:, :r], np.asarray(k_labels)),
    )


@torch.no_grad()
def order_view(
    model,
    tokenizer,
    chat: bool,
    prompts: Sequence[BindingPrompt],
    head: tuple[int, int],
    decomposition: Decomposition,
    batch_size: int = 50,
    key_offset: int = 0,
    collected=None,
) -> View:
    """Every box's key (labelled by its clause index) and each query (labelled by the queried clause).
    collected: `collect(...)`'s output for these prompts, model and head, when already computed."""
    c = collected or collect(model, tokenizer, chat, prompts, head, batch_size, key_offset)
    n, P, d = c.k.shape
    return _view(decomposition, c.q, c.k.reshape(n * P, d), c.answer.numpy(), np.tile(np.arange(P), n))


@torch.no_grad()
def lexical_view(
    model,
    tokenizer,
    chat: bool,
    prompts: Sequence[BindingPrompt],
    head: tuple[int, int],
    decomposition: Decomposition,
    batch_size: int = 50,
    umap_seed: int | None = 0,
    umap_neighbours: int = 15,
    key_offset: int = 0,
    collected=None,
) -> View:
    """The answer box's key and the query, both labelled by the queried object (index into OBJECTS)."""
    c = collected or collect(model, tokenizer, chat, prompts, head, batch_size, key_offset)
    labels = np.array([OBJECTS.index(p.query_object) for p in prompts])
    k_answer = c.k[torch.arange(len(prompts)), c.answer]  # (n, d)
    return _view(decomposition, c.q, k_answer, labels, labels, umap_seed, umap_neighbours)


@dataclass(frozen=True)
class OrderBeyondPosition:
    """On prompts with filler between clauses (clause index no longer fixed by position): kNN accuracy of the clause
    from the keys' order coordinates (`keys`), from the absolute position alone (`position alone`, the most common
    clause at each position, in sample) and from the keys with each position's mean removed (`beyond position`:
    chance-level when the keys encode position, not order). chance = 1/n_pairs."""

    keys: float
    position_alone: float
    beyond_position: float
    chance: float
    position_spread: float  # mean over clauses of the std of a clause's letter position (tokens)
    per_prompt_keys: np.ndarray  # (n,) share of a prompt's keys whose clause kNN reads (held out)
    per_prompt_position: np.ndarray  # (n,) share whose clause is the most common clause at its position


def mean_beyond_position(results: Sequence[OrderBeyondPosition]) -> OrderBeyondPosition:
    """Averaged over several subspaces (null draws) of the same prompts: the key-based numbers per prompt."""
    return replace(
        results[0],
        keys=float(np.mean([r.keys for r in results])),
        beyond_position=float(np.mean([r.beyond_position for r in results])),
        per_prompt_keys=np.mean([r.per_prompt_keys for r in results], 0),
    )


def order_beyond_position(decomposition: Decomposition, collected: Collected) -> OrderBeyondPosition:
    """Decode the clause index from keys projected on the order subspace (first `rank` coordinates), with and
    without the absolute position's information."""
    from qkcore.experiments.binding.filler import position_alone_accuracy, remove_position_means

    n, P, d = collected.k.shape
    _, V = view_bases(decomposition)
    r = max(decomposition.rank, 1)
    x = (collected.k.reshape(n * P, d) @ V[:, :r]).numpy()
    clauses = np.tile(np.arange(P), n)
    pos = collected.positions.reshape(-1).numpy()
    spread = float(collected.positions.double().std(0).mean())
    majority = {p: np.bincount(clauses[pos == p]).argmax() for p in np.unique(pos)}
    by_position = np.array([majority[p] for p in pos]) == clauses
    return OrderBeyondPosition(
        knn_accuracy(x, clauses),
        position_alone_accuracy(pos, clauses),
        knn_accuracy(remove_position_means(x, pos), clauses),
        1 / P,
        spread,
        knn_correct(x, clauses).reshape(n, P).mean(1),
        by_position.reshape(n, P).mean(1).astype(float),
    )
