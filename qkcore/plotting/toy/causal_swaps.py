"""Figure of the causal-swap chapter (paper Figure 4): attention on i_orig and i_target after each swap, the argmax
flip rate and whether the predicted payload follows.

    fig = plot_causal_swaps(result)          # result = qkcore.experiments.toy.causal_swaps.run_causal_swaps(P)
    plt.show()
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from qkcore.experiments.toy.causal_swaps import SwapResult


def plot_causal_swaps(result: SwapResult):
    """Left: mean attention on i_orig and on i_target after the swap, per condition (dotted: before). Right: argmax
    flip rate and the share of predictions that follow the target's payload; random subspaces show ±1 sd over
    draws."""
    t = result.table
    is_random = np.array([c.startswith("random") for c in t.index])
    labels = ["none" if c == "none" else f"{'random' if rnd else c}\nrank {r}"
              for c, r, rnd in zip(t.index, t["rank"], is_random)]
    x = np.arange(len(t))
    w = 0.38
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"wspace": 0.18})

    ax = axes[0]
    ax.bar(x - w / 2, t["attn_orig_after"], w, label="on $i_{orig}$ (the true target $i^*$)", color="C0")
    ax.bar(x + w / 2, t["attn_target_after"], w, label="on $i_{target}$", color="C3")
    ax.axhline(t["attn_orig_before"].iloc[0], color="C0", ls=":", lw=1, label="on $i_{orig}$ before")
    ax.set(ylabel="mean attention after the swap", title="where the attention goes")

    ax = axes[1]
    for offset, col, colour, label in [(-w / 2, "flip_rate", "C2", "argmax moves to $i_{target}$"),
                                       (w / 2, "follows_target", "C1", "prediction = target's payload")]:
        ax.bar(x + offset, t[col], w, color=colour, label=label)
        ax.errorbar(x[is_random] + offset, t[col][is_random], yerr=t[f"{col}_sd"][is_random], fmt="none",
                    ecolor="k", capsize=3, lw=1)
    ax.set(ylabel="rate over trials", title="flip rate and predicted payload")

    for ax in axes:
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylim(0, 1.3)
        ax.set_yticks(np.linspace(0, 1, 6))
        if is_random.any():
            ax.axvspan(x[is_random][0] - 0.5, x[-1] + 0.5, color="0.93", zorder=0)
        ax.legend(fontsize=8, loc="upper center", ncol=2)
    fig.suptitle(f"swapping keys of $i_{{orig}}$ and $i_{{target}}$ inside a subspace ({result.n_trials} trials; "
                 "grey: random subspaces of equal rank)", fontsize=10)
    return fig
