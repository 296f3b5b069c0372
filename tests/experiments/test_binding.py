"""The binding chapters' experiments (Figures 8–10): the attribution identity, the contrasts against a direct
computation, the swap plumbing, params validation, and all three experiments end to end on tiny random Llamas saved
to disk (the real-model path: load by folder, with and without a chat template)."""

import pytest
import torch

import qkcore.lm.registry as registry
from qkcore.covariance import contrastive_covariance
from qkcore.experiments.binding.analysis import BindingParams, load_binding_lm
from qkcore.experiments.binding.attribution import (
    AttributionParams,
    capture_head,
    explained_fraction,
    run_attribution,
    split_logits,
    split_query,
)
from qkcore.experiments.binding.contrasts import lexical_contrast, order_contrast
from qkcore.experiments.binding.interventions import InterventionParams, run_interventions
from qkcore.experiments.binding.nulls import lexical_deltas, order_deltas
from qkcore.experiments.binding.prompts import capture_binding, encode_binding_prompts
from qkcore.experiments.binding.subspaces import SubspaceParams, run_subspaces
from qkcore.lm import edit_attention, run_model
from qkcore.organisms.binding_task import VOCABULARY, lexical_pairs, order_id_prompts, sample_prompt
from qkcore.params import from_namespace
from qkcore.plotting import binding as binding_plots
from qkcore.plotting.style import use_book_style
from qkcore.subspace import random_orthonormal

SMALL = dict(n_order_prompts=24, n_lexical_prompts=24, batch_size=16, n_heads=2)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "chat-template"])
def tiny(request, tmp_path_factory, save_tiny_llama):
    use_book_style()
    path = save_tiny_llama(tmp_path_factory.mktemp("tiny"), VOCABULARY, chat=request.param)
    lm = load_binding_lm(BindingParams(model=str(path)))
    assert lm.chat == request.param
    return path, lm


# -- attribution: the parts add up to the raw logit ---------------------------------------------------------------


def test_attribution_parts_sum_exactly_to_the_logit():
    g = torch.Generator().manual_seed(0)
    q, K = torch.randn(5, 16, generator=g), torch.randn(5, 30, 16, generator=g)
    U_o = random_orthonormal(16, 3, g)
    U_l = torch.linalg.qr(torch.cat([U_o[:, :1], torch.randn(16, 3, generator=g, dtype=torch.float64)], 1)).Q
    parts = split_logits(q, K, U_o, U_l)  # overlapping bases: the order part takes the overlap
    torch.testing.assert_close(parts.order + parts.lexical + parts.residual, parts.total, rtol=0, atol=1e-12)
    torch.testing.assert_close(parts.total, (K.double() @ q.double()[:, :, None])[..., 0], rtol=0, atol=1e-12)
    q_ord, q_lex, q_res = split_query(q, U_o, U_l)
    torch.testing.assert_close(q_ord, q.double() @ U_o @ U_o.T)  # order first: the plain projection
    assert (q_res @ U_l).abs().max() < 1e-12  # what is left has nothing in span(U_l)
    assert (q_lex - q_lex @ U_l @ U_l.T).abs().max() < 1e-12
    full = split_logits(q, K, torch.eye(16, dtype=torch.float64), torch.zeros(16, 0, dtype=torch.float64))
    assert torch.allclose(explained_fraction(full), torch.ones(5, dtype=torch.float64))
    empty = torch.zeros(16, 0, dtype=torch.float64)
    assert torch.allclose(explained_fraction(split_logits(q, K, empty, empty)), torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="orthonormal"):
        split_query(q, 2 * U_o, U_l)


def test_attribution_total_is_the_models_own_logit(tiny):
    _, lm = tiny
    prompts = [sample_prompt(4, torch.Generator().manual_seed(s)) for s in range(3)]
    head = (1, 1)
    cap = capture_head(lm.model, lm.tokenizer, lm.chat, prompts, head, batch_size=2)
    enc = encode_binding_prompts(lm.tokenizer, prompts, lm.chat)
    with edit_attention(lm.model, [], read=[head]) as ed:
        run_model(lm.model, enc.batch)
    raw = ed.logits(*head)[torch.arange(3), enc.last].double()  # (3, seq): the head's own q·k at the last token
    parts = split_logits(cap.q, cap.K, random_orthonormal(16, 2, torch.Generator()), torch.zeros(16, 0))
    torch.testing.assert_close(parts.total[cap.valid], raw[cap.valid], rtol=1e-4, atol=1e-4)


# -- the contrasts equal a direct computation from stored vectors -------------------------------------------------


def test_order_and_lexical_delta_match_stored_pairs(tiny):
    _, lm = tiny
    head = (1, 0)
    prompts = order_id_prompts(10, 5, torch.Generator().manual_seed(1))
    order, scan, kept = order_contrast(
        lm.model, lm.tokenizer, prompts, lm.chat, heads=[head], batch_size=4, keep=[head]
    )
    vec = capture_binding(lm.model, encode_binding_prompts(lm.tokenizer, prompts, lm.chat), [head], attention=True)
    q, k = vec.q[0].double(), vec.k[0].double()  # (10, d), (10, 5, d)
    ans = torch.tensor([p.query for p in prompts])
    neg = [(i, j) for i in range(10) for j in range(5) if j != ans[i]]
    expected = contrastive_covariance(q, k[torch.arange(10), ans], q[[i for i, _ in neg]], k[tuple(zip(*neg))])
    torch.testing.assert_close(order.delta[0], expected, rtol=1e-6, atol=1e-8)
    assert abs(scan.attn_answer[0] - vec.attn[0][torch.arange(10), ans].mean()) < 1e-6
    # the null draws' closed form, given the true answers, is the streamed ΔC (so nulls are scored like the truth)
    torch.testing.assert_close(kept[head].q, vec.q[0]), torch.testing.assert_close(kept[head].k, vec.k[0])
    torch.testing.assert_close(order_deltas(q, k, ans[None], "pair_mean")[0], order.delta[0], rtol=1e-6, atol=1e-8)

    pairs = lexical_pairs(8, 5, torch.Generator().manual_seed(2))
    lex, lex_kept = lexical_contrast(lm.model, lm.tokenizer, pairs, lm.chat, heads=[head], batch_size=3, keep=[head])
    vp = capture_binding(lm.model, encode_binding_prompts(lm.tokenizer, [p for p, _ in pairs], lm.chat), [head])
    vc = capture_binding(lm.model, encode_binding_prompts(lm.tokenizer, [c for _, c in pairs], lm.chat), [head])
    a = torch.tensor([p.query for p, _ in pairs])
    expected = contrastive_covariance(vp.q[0], vp.k[0][torch.arange(8), a], vc.q[0], vc.k[0][torch.arange(8), a])
    torch.testing.assert_close(lex.delta[0], expected, rtol=1e-6, atol=1e-8)
    v = lex_kept[head]
    unflipped = lexical_deltas(v.qp, v.kp, v.qc, v.kc, torch.zeros(1, 8, dtype=torch.bool))[0]
    torch.testing.assert_close(unflipped, lex.delta[0], rtol=1e-6, atol=1e-8)


def test_capture_without_the_answer_stops_early_and_gives_the_same_vectors(tiny):
    """choice=False (the views): no answer, a pass that stops after the head's layer, the same q and k bit for bit."""
    _, lm = tiny
    enc = encode_binding_prompts(lm.tokenizer, order_id_prompts(4, 5, torch.Generator().manual_seed(3)), lm.chat)
    full = capture_binding(lm.model, enc, [(0, 1)])
    early = capture_binding(lm.model, enc, [(0, 1)], choice=False)
    assert early.choice is None and full.choice is not None
    assert torch.equal(full.q, early.q) and torch.equal(full.k, early.k)


# -- swaps: the binding encoder hands the engine its task; a full-space swap exchanges the two logits -------------


def test_binding_task_on_the_swap_engine(tiny):
    _, lm = tiny
    from qkcore.experiments.swap_engine import gather_swap_sets, recomputed_metrics

    prompts = [sample_prompt(5, torch.Generator().manual_seed(s)) for s in range(6)]
    targets = torch.tensor([(p.query + 1) % 5 for p in prompts])
    orig = torch.tensor([p.query for p in prompts])
    head = (1, 1)
    enc = encode_binding_prompts(lm.tokenizer, prompts, lm.chat)
    task = enc.task
    assert torch.equal(task.candidates, enc.keys) and torch.equal(task.query, enc.last)
    assert torch.equal(task.labels[0], torch.arange(5))
    for r, p in enumerate(prompts):  # the candidate columns hold the box letters, in clause order
        assert lm.tokenizer.convert_ids_to_tokens(task.batch.input_ids[r, task.candidates[r]].tolist()) == list(
            p.letters
        )
    s = gather_swap_sets(lm.model, [task], [head], orig, targets)[head]
    full = recomputed_metrics(s, torch.eye(16, dtype=torch.float64))
    torch.testing.assert_close(full["attn_orig_after"], full["attn_target_before"], rtol=0, atol=1e-6)
    torch.testing.assert_close(full["attn_target_after"], full["attn_orig_before"], rtol=0, atol=1e-6)
    none = recomputed_metrics(s, torch.zeros(16, 0, dtype=torch.float64))
    assert none["delta_p"].abs().max() < 1e-9  # an empty subspace changes nothing


# -- the three experiments end to end on a saved tiny model ---------------------------------------------------------


def test_subspaces_end_to_end(tiny):
    path, lm = tiny
    # umap=False: a UMAP fit costs ≈20 s of numba compilation; the chapter itself runs it
    r = run_subspaces(SubspaceParams(model=str(path), n_view_prompts=20, umap=False, **SMALL), lm)
    a = r.analysis
    assert a.heads_from_scan and len(a.heads) == 2 and r.view_head == a.heads[0]
    gap = a.trained.order.logit_gap()
    assert gap[a.trained.order.index(a.heads[0])] == gap.max()  # the scan's top head
    table = a.head_table()
    assert len(table) == 2 * 3 and (table["order rank"] >= 0).all()
    assert r.lexical_views["trained"].umap is None and r.lexical_views["trained"].pca.shape == (40, 3)
    assert set(r.view_table().index) == {"trained", "shuffled labels", "random init"}
    pt = r.position_table()  # filler prompts: the clause apart from absolute position
    assert set(pt.index) == {"trained", "shuffled labels", "random init"} and (pt["chance"] == 1 / 9).all()
    assert (pt["clause from position alone"] < 1).all()  # the filler moved the clauses
    # null label draws at the studied heads only: 50 per family, the shuffled-label control's 10 draws among them
    assert set(a.nulls) == set(a.heads)
    for h in a.heads:
        for w in ("order", "lexical"):
            n = a.nulls[h][w]
            assert {f: len(x) for f, x in n.families.items()} == {"random labels": 50, "balanced labels": 50}
            assert n.control_deltas.shape[0] == 10 and len(a.shuffled_decompositions(h, w)) == 10
            assert (
                abs(n.observed - float(torch.linalg.svdvals(a.trained.get(w).delta[a.trained.get(w).index(h)])[0]))
                < 1e-9
            )
    nt = a.null_table()
    assert len(nt) == 2 * 2 and ((nt["random labels: p"] > 0) & (nt["balanced labels: p"] <= 1)).all()
    assert a.trained.vectors == {}  # the other heads' per-prompt vectors are not kept
    # the random-init copy is a different model with the same architecture
    assert not torch.equal(a.random_model.lm_head.weight, lm.model.lm_head.weight)
    _check_figures(
        {
            "scan": binding_plots.plot_scan(a),
            "spectra": binding_plots.plot_contrast_spectra(a, r.view_head),
            "null draws": binding_plots.plot_null_draws(a),
            "order views": binding_plots.plot_views(r.order_views, "clause index", "order ID"),
        }
    )


def test_interventions_and_attribution_end_to_end(tiny):
    path, lm = tiny
    ri = run_interventions(
        InterventionParams(model=str(path), heads=[[1, 0], [1, 1]], n_swap_prompts=10, n_random=2, **SMALL), lm
    )
    t = ri.table
    assert t.index.get_level_values(0).unique().tolist() == ["L1H0", "L1H1"]
    assert {
        "order",
        "lexical",
        "order+lexical",
        "random (order rank)",
        "top key variance (order+lexical rank)",
        "shuffled labels: order",
        "random init: order",
    } <= set(t.index.get_level_values(1))
    for m in ("flip", "flip_candidates"):  # undefined where the answer is not on top: NaN, never 0
        assert ((t[m].dropna() >= 0) & (t[m].dropna() <= 1)).all()
        assert (t[f"{m} n"] <= 10).all()
    assert len(ri.verdicts) == 2 * 3 and all(v.head in ("L1H0", "L1H1") for v in ri.verdicts)
    ra = run_attribution(AttributionParams(model=str(path), n_attr_prompts=6, n_random=2, **SMALL), lm)
    ex = ra.example
    torch.testing.assert_close(ex.order + ex.lexical + ex.residual, ex.total, rtol=0, atol=1e-9)
    assert len(ra.example_tokens) == len(ex.total) and ra.example_tokens[-1] == "Box"
    assert list(ra.explained_table().index) == [
        "trained",
        "shuffled labels",
        "random init",
        "random subspaces",
        "mean query direction",
    ]
    assert list(ra.key_fractions.columns) == ["trained", "shuffled labels", "random init"]
    sel = ra.key_selectivity.loc["trained"]
    assert abs(sel["order"] + sel["lexical"] + sel["residual"] - sel["total"]) < 1e-6
    _check_figures(
        {
            "swaps": binding_plots.plot_binding_swaps(t, ["L1H0", "L1H1"]),
            "attribution": binding_plots.plot_attribution(ra),
            "explained": binding_plots.plot_explained(ra),
        }
    )


def _check_figures(figures: dict) -> None:
    """Issue 18: at most the column (6.5 in at 150 dpi), no text under 9 pt."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    for name, fig in figures.items():
        assert fig.get_figwidth() <= binding_plots.FIG_WIDTH + 1e-9, name
        fig.canvas.draw()
        small = [
            (t.get_text(), t.get_fontsize())
            for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and t.get_fontsize() < 9
        ]
        assert not small, f"{name}: {small[:5]}"
    plt.close("all")


# -- params ----------------------------------------------------------------------------------------------------------


def test_params_validation(monkeypatch, tmp_path):
    assert SubspaceParams(heads=[[1, 2]]).heads == ((1, 2),)
    with pytest.raises(ValueError, match="unknown parameter"):
        from_namespace(SubspaceParams, {"n_pair": 9})
    with pytest.raises(ValueError, match="n_pairs"):
        BindingParams(n_pairs=1)
    with pytest.raises(ValueError, match="query_object"):
        BindingParams(query_object="zebra")
    with pytest.raises(ValueError, match="repeat"):
        BindingParams(heads=[[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="example"):
        AttributionParams(n_attr_prompts=5, example=5)
    with pytest.raises(ValueError, match=r"n_null_draws must be an int ≥ 50 .*permutation p-value.*got 49"):
        BindingParams(n_null_draws=49)
    with pytest.raises(ValueError, match=r"n_shuffled must be an int in \[1, n_null_draws=60\]"):
        BindingParams(n_null_draws=60, n_shuffled=61)
    with pytest.raises(TypeError, match="weighting"):
        BindingParams(weighting="mean")
    assert AttributionParams().n_pairs == 4 and InterventionParams().n_pairs == 9
    monkeypatch.setattr(registry, "ORGANISM_WEIGHTS", tmp_path)  # the organism's weights are missing
    with pytest.raises(FileNotFoundError, match="regenerate"):
        load_binding_lm(BindingParams())


def test_key_offset_moves_the_keys(tiny):
    _, lm = tiny
    prompts = [sample_prompt(3, torch.Generator().manual_seed(s)) for s in range(2)]
    for offset, expected in ((0, None), (1, {",", "."}), (-4, None)):
        enc = encode_binding_prompts(lm.tokenizer, prompts, lm.chat, key_offset=offset)
        assert torch.equal(enc.keys, enc.letters + offset)
        for r, p in enumerate(prompts):
            toks = lm.tokenizer.convert_ids_to_tokens(enc.batch.input_ids[r, enc.keys[r]].tolist())
            want = {0: list(p.letters), -4: list(p.objects)}.get(offset)
            assert (set(toks) <= expected) if expected else toks == want
    with pytest.raises(ValueError, match="key_offset"):
        BindingParams(key_offset=2)


def test_heads_out_of_range_stop_before_any_forward_pass(tiny, monkeypatch):
    """issue 11, item 9: a bad `heads` or `view_head` fails at once, not after the scan and the streaming."""
    path, lm = tiny
    calls = []
    monkeypatch.setattr(lm.model, "forward", lambda *a, **k: calls.append(1))
    with pytest.raises(ValueError, match=r"heads\[0\] = \(5, 0\): layer 5 is out of range"):
        run_subspaces(SubspaceParams(model=str(path), heads=[[5, 0]], **SMALL), lm)
    with pytest.raises(ValueError, match=r"view_head\[0\] = \(0, 7\): head 7 is out of range"):
        run_subspaces(SubspaceParams(model=str(path), view_head=(0, 7), **SMALL), lm)
    assert not calls


def test_answer_prefix_begins_the_answer(tiny):
    """A chat model's answer begun "The tea is in Box": the query is that "Box", the answer letters follow it; a
    plain model refuses the parameter when it loads, naming it."""
    path, lm = tiny
    prompts = [sample_prompt(3, torch.Generator().manual_seed(s)) for s in range(2)]
    if not lm.chat:
        with pytest.raises(ValueError, match="answer_prefix"):
            load_binding_lm(BindingParams(model=str(path), answer_prefix="The {object} is in Box"))
        return
    enc = encode_binding_prompts(lm.tokenizer, prompts, lm.chat, answer_prefix="The {object} is in Box")
    for r, p in enumerate(prompts):
        toks = lm.tokenizer.convert_ids_to_tokens(enc.batch.input_ids[r, enc.last[r] - 4 : enc.last[r] + 1].tolist())
        assert toks == ["The", p.query_object, "is", "in", "Box"]
        assert lm.tokenizer.convert_ids_to_tokens(enc.letter_ids[r].tolist()) == list(p.letters)
