"""The filter-heads experiment end to end on tiny random Llamas saved to disk (the real-model path: load by folder,
with and without a chat template), and the chapter notebook run through papermill with model= such a folder."""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch

from qkcore.experiments.filter_heads.analysis import (
    FilterHeadsParams,
    analyse_heads,
    delta_prompts,
    load_filter_model,
)
from qkcore.experiments.filter_heads.intervention import swap_experiment, swap_targets
from qkcore.experiments.filter_heads.keys13 import analyse_13, keys13_verdict
from qkcore.experiments.filter_heads.report import (
    all_verdicts,
    category_table,
    findings,
    greedy_answer,
    null_table,
    null_table_13,
    scan_table,
    subspace_table,
    summary,
)
from qkcore.experiments.filter_heads.vectors import encode_filter_prompts, filter_tasks
from qkcore.experiments.swap_engine import forward_swaps, gather_swap_sets, recomputed_metrics
from qkcore.organisms.filter_task import ALL_CATEGORY_NAMES, PAPER_CATEGORY_NAMES, FilterTask, FilterTaskConfig

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(n_delta_prompts=40, n_pca_prompts=10, n_swap_prompts=12, n_prompts_13=39, batch_size=16, n_random=3)


def _words() -> list[str]:
    return FilterTask(FilterTaskConfig(categories=ALL_CATEGORY_NAMES)).vocabulary()


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "chat-template"])
def tiny(request, tmp_path_factory, save_tiny_llama):
    path = save_tiny_llama(tmp_path_factory.mktemp("tiny"), _words(), chat=request.param, max_positions=128)
    params = FilterHeadsParams(model=str(path), **SMALL)
    lm = load_filter_model(params)
    return params, lm.model, lm.tokenizer, analyse_heads(lm.model, lm.tokenizer, params, lm.description), request.param


def test_item_positions_point_at_the_items(tiny):
    params, model, tok, _, chat = tiny
    prompts = delta_prompts(PAPER_CATEGORY_NAMES, 4, torch.Generator().manual_seed(0))
    batch, items = encode_filter_prompts(tok, prompts)
    for r, p in enumerate(prompts):
        cols = [batch.padded(r, i) for i in items[r]]
        assert tok.convert_ids_to_tokens(batch.input_ids[r, cols].tolist()) == list(p.items)
        last = tok.convert_ids_to_tokens(batch.input_ids[r, batch.padded(r, -1)].item())
        assert last == ":" and (tok.convert_ids_to_tokens(batch.input_ids[r, -2].item()) == "Assistant") == chat
        assert (batch.input_ids[r] == tok.bos_token_id).sum() == 1  # the chat template's BOS, not a second one


def test_streamed_delta_equals_delta_from_stored_vectors(tiny):
    _, _, _, result, _ = tiny
    for layer, head in result.heads:
        torch.testing.assert_close(
            result.scan.deltas[:, layer, head], result.analyses["model"][(layer, head)].deltas, rtol=1e-5, atol=1e-9
        )
    attn = result.scan.attn_pos + result.scan.attn_neg
    assert ((attn > 0) & (attn <= 1 + 1e-6)).all()


def test_the_scan_keeps_the_vectors_a_second_pass_would_collect(tiny):
    params, model, tok, result, _ = tiny
    from qkcore.experiments.filter_heads.vectors import collect_vectors, head_scan

    prompts = delta_prompts(PAPER_CATEGORY_NAMES, 10, torch.Generator().manual_seed(2))
    scan = head_scan(model, tok, prompts, PAPER_CATEGORY_NAMES, batch_size=4, keep_vectors=True)
    kept = scan.vectors(result.heads)
    again = collect_vectors(model, tok, prompts, PAPER_CATEGORY_NAMES, result.heads, batch_size=3)
    for h in result.heads:
        for a, b in zip(kept.at(h), again.at(h)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        i, j = kept.heads.index(h), again.heads.index(h)
        torch.testing.assert_close(kept.attn[i], again.attn[j], atol=1e-6, rtol=1e-4)
    assert (kept.asked == again.asked).all() and (kept.item_cat == again.item_cat).all()


def test_rank_one_when_queries_do_not_vary(tiny):
    """Layer 0: the last token's query sees only its own token and position, identical in every prompt, so each
    ΔC = q̄ dᵀ is rank 1 whatever the keys hold — the artefact the chapter warns about."""
    params, model, tok, _, _ = tiny
    result = analyse_heads(model, tok, FilterHeadsParams(model=params.model, heads=((0, 0),), **SMALL))
    a = result.analyses["model"][(0, 0)]
    assert a.ranks.tolist() == [1] * 5 and a.query_basis.shape[1] == 1
    torch.testing.assert_close(a.query_concentration, torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(a.mean_share, torch.ones(5, dtype=torch.float64))


def test_full_space_swap_exchanges_attention(tiny):
    _, model, tok, result, _ = tiny
    prompts = FilterTask(FilterTaskConfig()).sample_single_positive(10, torch.Generator().manual_seed(0))
    head = result.heads[0]
    orig, target = swap_targets(prompts, torch.Generator().manual_seed(1))
    tasks = filter_tasks(tok, prompts, PAPER_CATEGORY_NAMES, 4)
    rows = gather_swap_sets(model, tasks, [head], orig, target)[head]
    d = result.analyses["model"][head].deltas.shape[-1]
    whole = recomputed_metrics(rows, torch.eye(d, dtype=torch.float64))
    nothing = recomputed_metrics(rows, torch.zeros(d, 0, dtype=torch.float64))
    torch.testing.assert_close(whole["attn_target_after"], whole["attn_orig_before"], atol=1e-6, rtol=0)
    assert nothing["delta_p"].abs().max() < 1e-7


def test_tables_swaps_and_13_categories_run(tiny):
    params, model, tok, result, _ = tiny
    assert category_table(result, result.heads[0]).shape == (5, 14)
    assert subspace_table(result).shape == (3 * len(result.heads), 8)
    assert len(null_table(result)) == 4 * len(result.heads)
    swaps = swap_experiment(model, tok, result, params)
    for s in swaps.values():
        table = s.table()
        assert len(table) == 6 and table["delta_p"].between(-1, 1).all() and s.power > 0
        assert s.check is not None and s.check < 1e-4  # swap_method="forward": rebuilt rows = the edited pass
    k13 = analyse_13(model, tok, params)
    assert k13.analysis.deltas.shape[0] == 13 and k13.projection.keys.shape == (params.n_pca_prompts * 25, 3)
    # the 13-category view is judged against the families, not one grouping: n_groupings each, 65 items
    assert len(k13.nulls.random) == len(k13.nulls.balanced) == params.n_groupings
    assert k13.nulls.matching.matrix.shape == (13, 13) and len(k13.nulls.matching.null) == params.n_groupings
    assert all(0 < p <= 1 for p in (*k13.nulls.p_eta, *k13.nulls.p_decoding)) and len(null_table_13(k13)) == 4
    numbers = summary(result, swaps, k13)
    assert len(scan_table(result, n=3)) == 3 and numbers["13 categories: head"]
    assert numbers["13 categories: key η² p (random, balanced groupings)"] == [round(p, 3) for p in k13.nulls.p_eta]
    verdicts = [k for k in numbers if k.startswith("verdict: ")]
    assert len(verdicts) == 5 * len(result.heads) + 1  # one verdict per claim and studied head, one for 13 categories
    recorded = all_verdicts(result, swaps, k13)
    assert len(recorded) == 5 * len(result.heads) + 1 and recorded[-1] == keys13_verdict(k13)
    assert recorded[-1].claim == "filter: keys cluster by category" and "13 categories" in recorded[-1].head
    assert recorded[-1].verdict == "not testable here"  # a random tiny model cannot read the task
    notes = findings(result, swaps, k13)
    assert set(notes) >= {"accuracy", "ranks", "nulls", "swap", "verdict", "keys13"}
    assert f"{params.n_groupings} balanced ones" in notes["keys13"] and "13 categories" in notes["verdict"]
    prompt = delta_prompts(PAPER_CATEGORY_NAMES, 1, torch.Generator().manual_seed(0))[0]
    assert isinstance(greedy_answer(model, tok, prompt, max_new_tokens=3), str)


def test_a_model_that_cannot_read_the_task_gets_no_verdict(tiny):
    """A random tiny model answers at chance: every verdict is "not testable here" and the page says why."""
    params, model, tok, result, _ = tiny
    assert not result.gate[0]
    swaps = swap_experiment(model, tok, result, params)
    numbers = summary(result, swaps, None)
    assert all(v.startswith("not testable here") for k, v in numbers.items() if k.startswith("verdict: "))
    assert "cannot read the task" in findings(result, swaps)["accuracy"]


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="categories"):
        FilterHeadsParams(categories=("fruit", "planet"))
    with pytest.raises(TypeError, match="heads"):
        FilterHeadsParams(heads="L20H26")
    with pytest.raises(TypeError, match="weighting"):
        FilterHeadsParams(weighting="sum")


@pytest.mark.slow
def test_chapter_runs_with_a_tiny_model_folder(tmp_path, save_tiny_llama):
    path = save_tiny_llama(tmp_path / "model", _words(), chat=True, max_positions=128)
    out = tmp_path / "filter_heads.ipynb"
    args = [
        sys.executable,
        "-m",
        "papermill",
        "-k",
        "python3",
        "--cwd",
        str(ROOT / "book"),
        str(ROOT / "book" / "filter_heads.ipynb"),
        str(out),
        "-p",
        "model",
        str(path),
    ]
    for key, value in SMALL.items():
        args += ["-p", key, str(value)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = "".join(
        o.get("text", "")
        for c in nbformat.read(out, as_version=4).cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    flat = " ".join(outputs.split())  # a long folder path (an xdist worker's tmp_path) wraps the line
    assert f"model: {path} (" in flat and "chat template: yes" in flat  # the folder's model made the figures
    assert "studied heads:" in outputs
    assert "13 categories: key η² p (random, balanced groupings)" in outputs


def test_heads_out_of_range_stop_before_the_scan(tiny, monkeypatch):
    """issue 11, item 9: a bad `heads` fails before the head scan's forward passes."""
    params, model, tok, _, _ = tiny
    calls = []
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(1))
    bad = FilterHeadsParams(model=params.model, heads=[[0, 1], [9, 0]], **SMALL)
    with pytest.raises(ValueError, match=r"heads\[1\] = \(9, 0\): layer 9 is out of range"):
        analyse_heads(model, tok, bad)
    assert not calls


def test_recomputed_swap_equals_the_edited_forward_pass(tiny):
    """The engine's rebuilt rows (one gathered pass) give the metrics of edit_attention's forward pass, on the
    chapter's own encoded tasks, at a basis that moves the softmax's normaliser."""
    params, model, tok, result, _ = tiny
    head = result.heads[0]
    prompts = FilterTask(FilterTaskConfig(categories=PAPER_CATEGORY_NAMES)).sample_single_positive(
        12, torch.Generator().manual_seed(3)
    )
    orig, target = swap_targets(prompts, torch.Generator().manual_seed(5))
    tasks = filter_tasks(tok, prompts, PAPER_CATEGORY_NAMES, 5)
    basis = result.analyses["model"][head].key_basis
    rebuilt = recomputed_metrics(gather_swap_sets(model, tasks, [head], orig, target)[head], basis)
    forward = forward_swaps(model, tasks, head, orig, target, basis)
    for m in ("delta_p", "attn_target_after", "attn_orig_after"):
        torch.testing.assert_close(rebuilt[m], forward[m], atol=1e-5, rtol=1e-4)


def test_swapped_attention_row_equals_edit_attention(tiny):
    """Whole rows, not only the orig/target cells: the rebuilt row is the edited forward pass's row."""
    from qkcore.interventions import swapped_attention
    from qkcore.lm import KeySwap, edit_attention, run_model
    from qkcore.lm.gather import gather_qk
    from qkcore.subspace import random_orthonormal

    params, model, tok, result, _ = tiny
    head = result.heads[0]
    prompts = FilterTask(FilterTaskConfig(categories=PAPER_CATEGORY_NAMES)).sample_single_positive(
        6, torch.Generator().manual_seed(4)
    )
    batch, items = encode_filter_prompts(tok, prompts)
    last = torch.tensor([batch.padded(r, -1) for r in range(6)])
    o = torch.tensor([batch.padded(r, items[r][0]) for r in range(6)])
    t = torch.tensor([batch.padded(r, items[r][3]) for r in range(6)])
    cols = torch.arange(batch.input_ids.shape[1]).expand(6, -1)
    got = gather_qk(model, batch, [head], last, attn_cols=cols)
    d = result.analyses["model"][head].key_pcs.shape[0]
    # half the key space: unlike a whole-key swap (which only permutes two logits), the softmax's normaliser moves
    basis = random_orthonormal(d, d // 2, torch.Generator().manual_seed(0)).double()
    rr = torch.arange(6)
    rebuilt = swapped_attention(got.attn[0], got.q[0], got.k[0][rr, o], got.k[0][rr, t], basis, got.scaling[0], o, t)
    swap = KeySwap(head[0], head[1], basis.float(), orig=o.tolist(), target=t.tolist(), query=last.tolist())
    with edit_attention(model, [swap]) as ed:
        run_model(model, batch)
    assert (rebuilt - got.attn[0].double()).abs().max() > 1e-3  # the swap moves the row: the check has teeth
    torch.testing.assert_close(rebuilt.float(), ed.attention(*head)[rr, last], atol=1e-5, rtol=1e-4)
