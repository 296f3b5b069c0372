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
from qkcore.experiments.binding.interventions import InterventionParams, _Batches, _swap, run_interventions
from qkcore.experiments.binding.prompts import capture_binding, encode_binding_prompts
from qkcore.experiments.binding.subspaces import SubspaceParams, run_subspaces
from qkcore.lm import edit_attention, run_model
from qkcore.organisms.binding_task import VOCABULARY, lexical_pairs, order_id_prompts, sample_prompt
from qkcore.params import from_namespace
from qkcore.subspace import random_orthonormal

SMALL = dict(n_order_prompts=24, n_lexical_prompts=24, batch_size=16, n_heads=2)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "chat-template"])
def tiny(request, tmp_path_factory, save_tiny_llama):
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
    order, scan = order_contrast(lm.model, lm.tokenizer, prompts, lm.chat, heads=[head], batch_size=4)
    vec = capture_binding(lm.model, encode_binding_prompts(lm.tokenizer, prompts, lm.chat), [head], attention=True)
    q, k = vec.q[0].double(), vec.k[0].double()  # (10, d), (10, 5, d)
    ans = torch.tensor([p.query for p in prompts])
    neg = [(i, j) for i in range(10) for j in range(5) if j != ans[i]]
    expected = contrastive_covariance(q, k[torch.arange(10), ans], q[[i for i, _ in neg]], k[tuple(zip(*neg))])
    torch.testing.assert_close(order.delta[0], expected, rtol=1e-6, atol=1e-8)
    assert abs(scan.attn_answer[0] - vec.attn[0][torch.arange(10), ans].mean()) < 1e-6
    assert not torch.allclose(order.null_delta[0], order.delta[0])

    pairs = lexical_pairs(8, 5, torch.Generator().manual_seed(2))
    lex = lexical_contrast(lm.model, lm.tokenizer, pairs, lm.chat, heads=[head], batch_size=3)
    vp = capture_binding(lm.model, encode_binding_prompts(lm.tokenizer, [p for p, _ in pairs], lm.chat), [head])
    vc = capture_binding(lm.model, encode_binding_prompts(lm.tokenizer, [c for _, c in pairs], lm.chat), [head])
    a = torch.tensor([p.query for p, _ in pairs])
    expected = contrastive_covariance(vp.q[0], vp.k[0][torch.arange(8), a], vc.q[0], vc.k[0][torch.arange(8), a])
    torch.testing.assert_close(lex.delta[0], expected, rtol=1e-6, atol=1e-8)


# -- swaps: the full-space swap exchanges the two logits exactly ---------------------------------------------------


def test_full_space_swap_exchanges_orig_and_target(tiny):
    _, lm = tiny
    prompts = [sample_prompt(5, torch.Generator().manual_seed(s)) for s in range(6)]
    targets = torch.tensor([(p.query + 1) % 5 for p in prompts])
    head = (1, 1)
    batches = _Batches(lm.model, lm.tokenizer, lm.chat, prompts, targets, [head], batch_size=4)
    for enc, orig, target, _, clause in batches.items:  # the swapped columns hold the answer's and target's letters
        for r, p in enumerate(enc.prompts):
            ids = enc.batch.input_ids[r]
            assert (
                lm.tokenizer.convert_ids_to_tokens([int(ids[orig[r]]), int(ids[target[r]])])
                == [p.answer, p.letters[clause[r]]]
                and clause[r] != p.query
            )
    m = _swap(lm.model, batches, [(head, torch.eye(16))])
    assert abs(m["attn_orig_after"] - m["attn_target_before"]) < 1e-5
    assert abs(m["attn_target_after"] - m["attn_orig_before"]) < 1e-5
    same = _swap(lm.model, batches, [(head, torch.zeros(16, 0))])  # an empty subspace changes nothing
    assert abs(same["target_shift"]) < 1e-6 and abs(same["attn_orig_after"] - same["attn_orig_before"]) < 1e-6


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
    # the random-init copy is a different model with the same architecture
    assert not torch.equal(a.random_model.lm_head.weight, lm.model.lm_head.weight)


def test_interventions_and_attribution_end_to_end(tiny):
    path, lm = tiny
    ri = run_interventions(
        InterventionParams(model=str(path), heads=[[1, 0], [1, 1]], n_swap_prompts=10, n_random=2, **SMALL), lm
    )
    t = ri.table
    assert t.index.get_level_values(0).unique().tolist() == ["L1H0", "L1H1", "all studied"]
    ranks = t.loc[("all studied", "order+lexical"), "rank"]
    assert ranks == t.loc[("L1H0", "order+lexical"), "rank"] + t.loc[("L1H1", "order+lexical"), "rank"]
    assert {
        "order",
        "lexical",
        "order+lexical",
        "random (order rank)",
        "shuffled labels: order",
        "random init: order",
    } <= set(t.index.get_level_values(1))
    assert ((t["flip_rate"].dropna() >= 0) & (t["flip_rate"].dropna() <= 1)).all()
    ra = run_attribution(AttributionParams(model=str(path), n_attr_prompts=6, n_random=2, **SMALL), lm)
    ex = ra.example
    torch.testing.assert_close(ex.order + ex.lexical + ex.residual, ex.total, rtol=0, atol=1e-9)
    assert len(ra.example_tokens) == len(ex.total) and ra.example_tokens[-1] == "Box"
    assert list(ra.explained_table().index) == ["trained", "shuffled labels", "random init", "random subspaces"]


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


# -- the recomputed swap path (swap_method="recompute") ---------------------------------------------------------------


def test_recomputed_swap_equals_the_edited_forward_pass(tiny):
    """Rows rebuilt from one gathered pass give the forward path's metrics and per-prompt flips, for a half-space
    basis (the softmax's normaliser moves) and the whole key space (the two logits are exchanged)."""
    _, lm = tiny
    prompts = [sample_prompt(5, torch.Generator().manual_seed(s)) for s in range(10)]
    targets = torch.tensor([(p.query + 2) % 5 for p in prompts])
    head = (1, 1)
    slow = _Batches(lm.model, lm.tokenizer, lm.chat, prompts, targets, [head], batch_size=4)
    fast = _Batches(lm.model, lm.tokenizer, lm.chat, prompts, targets, [head], batch_size=4, recompute=True)
    assert fast.correct == slow.correct and not slow.qk and len(fast.qk) == 3
    torch.testing.assert_close(fast.letter_keys[head], slow.letter_keys[head], rtol=0, atol=1e-5)
    for basis in (random_orthonormal(16, 8, torch.Generator().manual_seed(1)).float(), torch.eye(16)):
        a, b = _swap(lm.model, slow, [(head, basis)]), _swap(lm.model, fast, [(head, basis)])
        for key in ("attn_orig_after", "attn_target_after", "target_shift", "share_shift", "flip_rate"):
            assert abs(a[key] - b[key]) < 1e-5, key
        assert torch.equal(a["flips"], b["flips"])
        assert b["answer_to_target"] != b["answer_to_target"]  # NaN: no edited forward pass, no answer
    moved = _swap(lm.model, fast, [(head, random_orthonormal(16, 8, torch.Generator().manual_seed(1)).float())])
    unmoved = _swap(lm.model, fast, [(head, torch.zeros(16, 0))])
    assert abs(moved["target_shift"]) > 1e-4 and abs(unmoved["target_shift"]) < 1e-7  # the check can fail
    with pytest.raises(ValueError, match="one head"):
        _swap(lm.model, fast, [(head, torch.eye(16)), ((1, 0), torch.eye(16))])
    top = fast.top_variance(head, 3)
    torch.testing.assert_close(top.T @ top, torch.eye(3, dtype=top.dtype), rtol=0, atol=1e-10)


def test_interventions_recompute_path_end_to_end(tiny):
    path, lm = tiny
    kw = dict(model=str(path), heads=[[1, 0], [1, 1]], n_swap_prompts=10, n_random=2, **SMALL)
    fwd = run_interventions(InterventionParams(**kw), lm).table
    rec = run_interventions(InterventionParams(swap_method="recompute", **kw), lm).table
    assert "all studied" not in rec.index.get_level_values(0)
    for row in (
        "order",
        "lexical",
        "order+lexical",
        "top key variance (order+lexical rank)",
        "shuffled labels: order+lexical",
    ):
        for h in ("L1H0", "L1H1"):
            assert abs(fwd.loc[(h, row), "flip_rate"] - rec.loc[(h, row), "flip_rate"]) < 1e-6, (h, row)
            assert rec.loc[(h, row), "flip_lo"] <= rec.loc[(h, row), "flip_rate"] <= rec.loc[(h, row), "flip_hi"]


# -- the verdicts' rules, on made-up numbers ------------------------------------------------------------------------


def test_verdict_rules():
    from qkcore.experiments.binding import report as r

    assert r.at_chance(0.27, 4, 150) and not r.at_chance(0.45, 4, 150)
    rnd = (0.05, 0.02, 0.08)
    assert r.compare((0.9, 0.85, 0.95), {"random": rnd, "shuffled": (0.5, 0.4, 0.6)}, "random") == r.REPRODUCED
    assert r.compare((0.9, 0.85, 0.95), {"random": rnd, "shuffled": (0.8, 0.7, 0.9)}, "random") == r.SHARED
    assert r.compare((0.1, 0.07, 0.15), {"random": rnd, "shuffled": (0.0, 0.0, 0.0)}, "random") == r.NOT_REPRODUCED
    nan = float("nan")
    assert r.compare((nan, nan, nan), {"random": rnd}, "random") == r.NOT_REPRODUCED
    near = {"random": rnd, "shuffled": (0.99, 0.985, 0.99)}  # above by less than the margin: not a difference
    assert r.compare((0.996, 0.995, 0.996), near, "random") == r.SHARED
    assert r.compare((0.1, 0.1, 0.12), {"random": rnd}, "random") == r.NOT_REPRODUCED  # 0.02 above: within it

    def rows(both, shuffled):
        return {
            "random (order+lexical rank)": rnd,
            "order+lexical": both,
            "shuffled labels: order+lexical": shuffled,
            "top key variance (order+lexical rank)": (0, 0, 0),
        }

    text = r.swap_verdict(
        {"L1H1": rows((1, 0.99, 1), (0.6, 0.5, 0.7)), "L1H2": rows((1, 0.99, 1), (0.99, 0.98, 1))},
        1.0,
        9,
        300,
        organism=True,
    )
    assert text.startswith(f"**Verdict: {r.SHARED}.**") and "attention hints" not in text and "nudged" in text
    chance = r.swap_verdict({"L20H6": rows((0.3, 0.25, 0.35), (0.3, 0.25, 0.35))}, 0.26, 4, 100, organism=False)
    assert "negative control" in chance and r.SHARED in chance
    fr = {
        "trained": (0.8, 0.75, 0.85),
        "random subspaces": (0.2, 0.18, 0.22),
        "shuffled labels": (0.5, 0.45, 0.55),
        "random init": (0.98, 0.97, 0.99),
    }
    assert f"Verdict: {r.SHARED}" in r.attribution_verdict(fr, 0.9, 4, 100, organism=False)
    ranks = {"trained": (1, 3), "shuffled labels": (20, 30), "random init": (0, 30)}
    knn = {"trained": 0.9, "shuffled labels": 0.3, "random init": 0.2}
    assert f"order ID {r.REPRODUCED}" in r.subspace_verdict(ranks, knn, knn, 64, 0.9, 4, 100, False)
    flat = {"trained": 0.42, "shuffled labels": 0.29, "random init": 0.35}
    assert f"order ID {r.NOT_REPRODUCED}" in r.subspace_verdict(ranks, flat, knn, 64, 0.9, 4, 100, False)
