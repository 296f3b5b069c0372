"""The chapters' figures follow the book's style (qkcore.plotting.style): at most the column's width, no text under
9 pt (about 12 px on screen at that width), one diverging scale where panels are compared, no 3-D tick labels."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from qkcore.experiments.method import MethodParams, run_method  # noqa: E402
from qkcore.experiments.toy.causal_swaps import SwapParams, run_causal_swaps  # noqa: E402
from qkcore.experiments.toy.cube import CubeParams, run_cube  # noqa: E402
from qkcore.experiments.toy.model import train_and_analyse  # noqa: E402
from qkcore.experiments.toy.rank_recovery import RankRecoveryParams, run_rank_recovery  # noqa: E402
from qkcore.experiments.toy.why_it_works import WhyItWorksParams, run_why_it_works  # noqa: E402
from qkcore.plotting import method as method_plots  # noqa: E402
from qkcore.plotting.style import DPI, WIDTH, category_styles, symmetric_limit, use_book_style  # noqa: E402
from qkcore.plotting.toy import causal_swaps, cube, rank_recovery, why_it_works  # noqa: E402

FAST = dict(max_steps=200, contrast_batches=5)


@pytest.fixture(scope="module")
def figures():
    use_book_style()
    trained = train_and_analyse(CubeParams(**FAST))
    m = run_method(MethodParams(n_pairs=2000))
    why = run_why_it_works(WhyItWorksParams(**FAST))
    grid = run_rank_recovery(
        RankRecoveryParams(
            latent_dims=(3, 5),
            tasks=("binary", "gaussian"),
            d_heads=(8,),
            max_steps=60,  # early_steps (50) must come before the end
            contrast_batches=2,
            test_size=256,
        )
    )
    c = run_cube(CubeParams(**FAST, n_points=200), trained)
    s = run_causal_swaps(SwapParams(**FAST, n_trials=100, n_random=2), trained)
    figs = {
        "method delta": method_plots.plot_delta(m),
        "method spectrum": method_plots.plot_spectrum(m, 0.99),
        "method convergence": method_plots.plot_convergence(m),
        "rank heatmaps": rank_recovery.plot_rank_heatmaps(grid.table),
        "rank accuracy": rank_recovery.plot_accuracy(grid.table),
        "why spectra": why_it_works.plot_factor_spectra(why.analysis.decomposition, 0.99, {"z1": 3, "z2": 5}),
        "why angles": why_it_works.plot_angles(why.angles, why.cross_angles),
        "why G": why_it_works.plot_interaction(why.G, 3),
        "cube points": cube.plot_cube_points(c),
        "cube means": cube.plot_cube_means(c),
        "swaps": causal_swaps.plot_causal_swaps(s),
    }
    yield figs
    plt.close("all")


def test_figures_fit_the_column_at_the_book_dpi(figures):
    for name, fig in figures.items():
        assert fig.get_figwidth() <= WIDTH + 1e-9, name
        assert fig.dpi == DPI, name


def test_no_text_under_9_points(figures):
    for name, fig in figures.items():
        fig.canvas.draw()
        small = [
            (t.get_text(), t.get_fontsize())
            for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 9
        ]
        assert not small, f"{name}: {small[:5]}"


def test_cube_axes_have_no_tick_labels(figures):
    for name in ("cube points", "cube means"):
        ax = figures[name].axes[0]
        figures[name].canvas.draw()
        for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
            assert not any(label.get_text() for label in axis.get_ticklabels()), name


def test_compared_heatmaps_share_one_scale(figures):
    images = [ax.images[0] for ax in figures["method delta"].axes if ax.images]
    assert len(images) == 3 and len({im.get_clim() for im in images}) == 1
    meshes = [ax.collections[0] for ax in figures["rank heatmaps"].axes if ax.collections and ax.get_title()]
    assert len(meshes) == 2 and len({m.get_clim() for m in meshes}) == 1


def test_style_helpers():
    styles = category_styles(13)
    assert len(set(styles)) == 13 and styles[0][1] != styles[10][1]
    assert symmetric_limit([1.0, -3.0], [2.0]) == 3.0 and symmetric_limit([0.0]) == 1.0
