"""Figure of the causal-swap chapter (paper Figure 4): attention on i_orig and i_target after each swap, the argmax
flip rate and whether the predicted payload follows.

    fig = plot_causal_swaps(result)          # result = qkcore.experiments.toy.causal_swaps.run_causal_swaps(P)
    plt.show()
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from qkcore.experiments.toy.causal_swaps import FACTOR_CONDITIONS, SwapResult
from qkcore.plotting.style import palette
from qkcore.plotting.toy import COLUMN

ATTENTION = {"attn_orig_after": "on $i_{orig}$ (= $i^*$)", "attn_target_after": "on $i_{target}$"}
RATES = {"flip_rate": "argmax on $i_{target}$", "follows_target": "answer = its payload"}


def condition_label(condition: str, rank: int) -> str:
    """ "z1\\nrank 3", "random\\nrank 3", "none": the x tick of a condition."""
    if condition == "none":
        return "no swap"
    name = "random" if condition.startswith("random") else f"${condition.replace('z1', 'z_1').replace('z2', 'z_2')}$"
    return f"{name}\nrank {rank}"


def long_form(result: SwapResult) -> pd.DataFrame:
    """One row per named condition and one per random draw, with a tick label: seaborn's bars then show the mean
    over draws with ±1 sd for the random subspaces, and the single value for the others."""
    named = result.table.loc[["none", *FACTOR_CONDITIONS]].reset_index()
    rows = pd.concat([named, result.random_draws], ignore_index=True)
    rows["label"] = [condition_label(c, int(r)) for c, r in zip(rows["condition"], rows["rank"])]
    return rows


def plot_causal_swaps(result: SwapResult):
    """Top: mean attention on i_orig and on i_target after the swap, per condition (dotted line: on i_orig before).
    Bottom: argmax flip rate and the share of predictions that follow the target's payload. Random subspaces (grey
    band) show the mean over draws ±1 sd."""
    rows = long_form(result)
    order = list(dict.fromkeys(rows["label"]))
    n_random = sum(label.startswith("random") for label in order)
    colours = palette(4)
    fig, axes = plt.subplots(2, 1, figsize=(COLUMN, 5.6), sharex=True, layout="constrained")
    panels = [
        (axes[0], ATTENTION, [colours[0], colours[3]], "mean attention after the swap"),
        (axes[1], RATES, [colours[2], colours[1]], "share of trials"),
    ]
    for ax, columns, hue_colours, ylabel in panels:
        long = rows.melt(id_vars=["label"], value_vars=list(columns), var_name="measure", value_name="value")
        long["measure"] = long["measure"].map(columns)
        sns.barplot(
            long,
            x="label",
            y="value",
            hue="measure",
            order=order,
            palette=hue_colours,
            ax=ax,
            errorbar="sd",
            capsize=0.15,
            err_kws={"linewidth": 1.2},
            width=0.75,
        )
        ax.set(ylabel=ylabel, xlabel="", ylim=(0, 1.25), yticks=[0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.legend(loc="upper left", ncol=2, title=None)
        if n_random:
            ax.axvspan(len(order) - n_random - 0.5, len(order) - 0.5, color="0.92", zorder=0)
    before = float(result.table.loc["none", "attn_orig_before"])
    axes[0].axhline(before, color=colours[0], ls=":", lw=1.3)
    axes[0].annotate(
        f"on $i_{{orig}}$ before: {before:.2f}",
        (len(order) - 0.5, before),
        xytext=(0, 3),
        textcoords="offset points",
        ha="right",
        va="bottom",
        fontsize=9,
        color=colours[0],
    )
    axes[0].set_title(f"key swaps inside a subspace ({result.n_trials} trials)")
    axes[1].set_xlabel("subspace swapped (grey: random, mean ± sd)")
    return fig
