"""The binding-subspaces chapter (paper Figure 8): both contrasts at every head with their controls, and the order-ID
and lexical views (PCA, kNN, UMAP) at one head.

    P = SubspaceParams()                  # model="organism": the CPU-trained binding organism
    result = run_subspaces(P)             # .analysis (BindingAnalysis), .order_views / .lexical_views per condition
    summary(result)                       # the chapter's closing numbers
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pandas as pd
import torch

from qkcore.experiments.binding.analysis import (
    CONDITIONS,
    BindingAnalysis,
    BindingParams,
    analyse_binding,
    control_decompositions,
    load_binding_lm,
)
from qkcore.experiments.binding.views import collect, lexical_view, order_view
from qkcore.experiments.models import LoadedLM
from qkcore.experiments.tables import r3
from qkcore.lm import attention_layout
from qkcore.lm.layout import head_name
from qkcore.organisms.binding_task import order_id_prompts, sample_prompt
from qkcore.params import require


@dataclass(frozen=True)
class SubspaceParams(BindingParams):
    """BindingParams, plus: view_head (None → the first studied head), n_view_prompts fresh prompts for the
    PCA/UMAP views, umap (False skips the UMAP view: its first fit compiles numba kernels for ~20 s),
    umap_neighbours."""

    view_head: tuple[int, int] | None = None
    n_view_prompts: int = 200
    umap: bool = True
    umap_neighbours: int = 15
    QUICK: ClassVar[dict] = {"n_order_prompts": 200, "n_lexical_prompts": 200, "n_view_prompts": 100, "umap": False}

    def __post_init__(self):
        super().__post_init__()
        require(self.n_view_prompts >= 10, f"n_view_prompts must be ≥ 10, got {self.n_view_prompts}")
        require(self.umap_neighbours >= 2, f"umap_neighbours must be ≥ 2, got {self.umap_neighbours}")


@dataclass
class SubspaceResult:
    """The analysis, the view head, and the order / lexical views per condition (trained, shuffled labels,
    random init; controls at the trained rank)."""

    analysis: BindingAnalysis
    view_head: tuple[int, int]
    order_views: dict
    lexical_views: dict

    def view_table(self) -> pd.DataFrame:
        """kNN accuracy of the clause index (order keys and queries) and of the queried object (lexical)."""
        rows = {
            cond: {
                "order rank": self.order_views[cond].rank,
                "order: clause from keys": self.order_views[cond].key_knn,
                "order: clause from queries": self.order_views[cond].query_knn,
                "lexical rank": self.lexical_views[cond].rank,
                "lexical: object from keys": self.lexical_views[cond].key_knn,
                "lexical: object from queries": self.lexical_views[cond].query_knn,
            }
            for cond in CONDITIONS
        }
        return pd.DataFrame(rows).T


def run_subspaces(params: SubspaceParams, lm: LoadedLM | None = None) -> SubspaceResult:
    """The Figure 8 chapter: analysis (scan, contrasts, controls) and the views at the view head."""
    lm = lm if lm is not None else load_binding_lm(params)
    if params.view_head is not None:  # checked before the contrasts are streamed
        attention_layout(lm.model).check_heads([params.view_head], name="view_head")
    analysis = analyse_binding(params, lm)
    head = analysis.heads[0] if params.view_head is None else tuple(params.view_head)
    g = torch.Generator().manual_seed(params.seed + 2)
    order = order_id_prompts(params.n_view_prompts, params.n_pairs, g, query_object=params.query_object)
    plain = [sample_prompt(params.n_pairs, g) for _ in range(params.n_view_prompts)]
    tok, chat, bs = analysis.lm.tokenizer, analysis.lm.chat, params.batch_size
    models = {"trained": analysis.lm.model, "shuffled labels": analysis.lm.model, "random init": analysis.random_model}
    order_views, lexical_views = {}, {}
    vectors = {}  # (model, which prompts) → collected q, k: the trained model serves two conditions

    def got(model, which):
        key = (id(model), which)
        if key not in vectors:
            vectors[key] = collect(model, tok, chat, order if which == "order" else plain, head, bs, params.key_offset)
        return vectors[key]

    for which, views in (("order", order_views), ("lexical", lexical_views)):
        for cond, dec in control_decompositions(analysis, head, which).items():
            net = models[cond]
            if which == "order":
                views[cond] = order_view(
                    net, tok, chat, order, head, dec, bs, params.key_offset, collected=got(net, which)
                )
            else:
                views[cond] = lexical_view(
                    net,
                    tok,
                    chat,
                    plain,
                    head,
                    dec,
                    bs,
                    umap_seed=params.seed if cond == "trained" and params.umap else None,
                    umap_neighbours=params.umap_neighbours,
                    key_offset=params.key_offset,
                    collected=got(net, which),
                )
    return SubspaceResult(analysis, head, order_views, lexical_views)


def summary(result: SubspaceResult) -> dict[str, object]:
    """The chapter's closing numbers: the model's letter accuracy; per studied head the order and lexical ranks and
    the order logit gap beside their controls (trained, shuffled labels, random init); at the view head the kNN
    accuracies of the views beside their controls."""
    a, conds = result.analysis, ("trained", "shuffled labels", "random init")
    table = a.head_table()
    out: dict[str, object] = {
        "model": a.lm.description.split(" (")[0],
        "letter accuracy": r3(a.trained.order.accuracy["order prompts"]),
        "chance": r3(1 / a.params.n_pairs),
    }
    for head in a.heads:
        name = head_name(head)
        for which in ("order", "lexical"):
            out[f"{name} {which} rank (trained, shuffled, random init)"] = tuple(
                int(table.loc[(name, c), f"{which} rank"]) for c in conds
            )
        out[f"{name} order logit gap (trained, shuffled, random init)"] = tuple(
            r3(table.loc[(name, c), "order gap"]) for c in conds
        )
    views = result.view_table()
    view = head_name(result.view_head)
    for col, label in (
        ("order: clause from keys", "clause from order keys"),
        ("lexical: object from keys", "object from lexical keys"),
    ):
        out[f"{view} kNN {label} (trained, shuffled, random init)"] = tuple(
            round(float(views.loc[c, col]), 2) + 0.0 for c in conds
        )
    return out
