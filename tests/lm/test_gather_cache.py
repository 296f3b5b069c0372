"""The gather cache: a cold and a warm call give identical tensors; any change of model, prompts, heads, columns or
an in-place weight edit misses; outside the block nothing is written."""

import torch

from qkcore.lm import pad_batch
from qkcore.lm.gather import gather_qk, last_columns
from qkcore.lm.gather_cache import gather_cache, model_fingerprint
from qkcore.lm.tiny import tiny_model

PROMPTS = [[5, 6, 7, 8, 9, 10], [5, 9, 20, 4]]


def _gather(model, batch, heads=((0, 1), (1, 0)), **kw):
    cols = torch.arange(batch.input_ids.shape[1]).expand(batch.size, -1)
    return gather_qk(model, batch, list(heads), last_columns(batch), key_cols=None, attn_cols=cols, **kw)


def _files(d):
    return sorted(p.name for p in d.rglob("*.pt"))


def test_cold_and_warm_are_identical_and_changes_miss(tmp_path):
    model = tiny_model("llama", attn_implementation="eager")
    batch = pad_batch(PROMPTS, "left")
    with gather_cache(tmp_path):
        cold = _gather(model, batch, logits_to_keep=1)
        assert len(_files(tmp_path)) == 1
        warm = _gather(model, batch, logits_to_keep=1)
        assert len(_files(tmp_path)) == 1  # a hit writes nothing new
        for a, b in (
            (cold.q, warm.q),
            (cold.k, warm.k),
            (cold.attn, warm.attn),
            (cold.output.logits, warm.output.logits),
        ):
            assert torch.equal(a, b)
        assert cold.scaling == warm.scaling and cold.heads == warm.heads
        _gather(model, batch, heads=((0, 1),), logits_to_keep=1)  # other heads
        _gather(model, pad_batch(PROMPTS[:1], "left"), logits_to_keep=1)  # other prompts
        assert len(_files(tmp_path)) == 3
        before = model_fingerprint(model)
        with torch.no_grad():
            model.model.layers[0].self_attn.q_proj.weight[0, 0] += 1.0  # an in-place edit changes the fingerprint
        assert model_fingerprint(model) != before
        edited = _gather(model, batch, logits_to_keep=1)
        assert len(_files(tmp_path)) == 4 and not torch.equal(edited.q, cold.q)
        _gather(model, batch)  # no logits_to_keep: the whole vocabulary at every position is not kept
        assert len(_files(tmp_path)) == 4


def test_outside_the_block_nothing_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("QKCORE_CACHE", str(tmp_path))
    model = tiny_model("llama", attn_implementation="eager")
    _gather(model, pad_batch(PROMPTS, "left"), logits_to_keep=1)
    assert _files(tmp_path) == []


def test_enable_gather_cache_is_process_wide_and_can_be_turned_off(tmp_path):
    from qkcore.lm.gather_cache import active_directory, enable_gather_cache

    try:
        assert enable_gather_cache(tmp_path) == tmp_path and active_directory() == tmp_path
        model = tiny_model("llama", attn_implementation="eager")
        _gather(model, pad_batch(PROMPTS, "left"), logits_to_keep=1)
        assert len(_files(tmp_path)) == 1
    finally:
        enable_gather_cache(False)
    assert active_directory() is None


def test_the_thread_count_is_part_of_the_key_except_at_one_thread(tmp_path):
    """A page on a pretrained model run alone gathers with every core (qkcore.experiments.chapter): its results, which
    may differ in the last bits, must never be read by a one-thread run, while one-thread keys stay those the book's
    caches already hold."""
    from qkcore.lm.gather_cache import _key

    model = tiny_model("llama", attn_implementation="eager")
    batch = pad_batch(PROMPTS, "left")
    cols = torch.arange(batch.input_ids.shape[1]).expand(batch.size, -1)
    args = (model, batch, [(0, 1)], last_columns(batch), None, cols, torch.float32, {"logits_to_keep": 1}, True)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _key(*args)
        torch.set_num_threads(2)
        two = _key(*args)
        with gather_cache(tmp_path):
            _gather(model, batch, logits_to_keep=1)
            torch.set_num_threads(1)
            _gather(model, batch, logits_to_keep=1)
        assert len(_files(tmp_path)) == 2  # the one-thread call missed the two-thread result
    finally:
        torch.set_num_threads(before)
    assert one != two


def test_a_run_at_two_threads_reads_the_one_thread_result(tmp_path, monkeypatch):
    """After `make book` (one thread per page), a page re-run alone at two threads reads the book's gathers: the
    committed numbers, with no forward pass; with no one-thread result it computes and writes its own."""
    from qkcore.lm import gather_cache as cache

    model = tiny_model("llama", attn_implementation="eager")
    batch = pad_batch(PROMPTS, "left")
    before = torch.get_num_threads()
    try:
        with gather_cache(tmp_path / "book"):
            torch.set_num_threads(1)
            one = _gather(model, batch, logits_to_keep=1)
            torch.set_num_threads(2)
            computed = cache.computed()
            read = _gather(model, batch, logits_to_keep=1)
            assert cache.computed() == computed  # read, not computed
            assert len(_files(tmp_path / "book")) == 1
            (book_file,) = _files(tmp_path / "book")
            real_load = cache.load

            def vanishing_load(key):  # the one-thread file is deleted between cache_keys' look and the read
                for path in (tmp_path / "book").rglob("*.pt"):
                    path.unlink()
                return real_load(key)

            monkeypatch.setattr(cache, "load", vanishing_load)
            computed = cache.computed()
            _gather(model, batch, logits_to_keep=1)
            monkeypatch.undo()
            assert cache.computed() == computed + 1
            written = _files(tmp_path / "book")
            assert len(written) == 1 and written != [book_file]  # under the two-thread key, not the one-thread key
        assert torch.equal(read.q, one.q) and torch.equal(read.k, one.k)
        with gather_cache(tmp_path / "alone"):  # no one-thread result: computed and written under its own key
            computed = cache.computed()
            _gather(model, batch, logits_to_keep=1)
            assert cache.computed() == computed + 1
            torch.set_num_threads(1)
            _gather(model, batch, logits_to_keep=1)  # the one-thread run does not read it
            assert cache.computed() == computed + 2
        assert len(_files(tmp_path / "alone")) == 2
    finally:
        torch.set_num_threads(before)
