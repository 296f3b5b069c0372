"""The progress-bar switch (qkcore.progress): bars on stderr by default, none under QKCORE_PROGRESS=0, a clear error
on any other value, and no bar for a loop whose gathers all come from the gather cache."""

import pytest
import torch

from qkcore import progress
from qkcore.experiments.chapter import start_chapter
from qkcore.lm import gather_cache
from qkcore.lm.batching import pad_batch
from qkcore.lm.gather import gather_qk, last_columns
from qkcore.toy.task import PayloadTask, TaskConfig
from qkcore.toy.train import ToyTrainConfig, train_grid


def test_bar_on_stderr_when_enabled(monkeypatch, capfd):
    monkeypatch.delenv(progress.ENV, raising=False)
    assert list(progress.steps(range(3), "gather q,k")) == [0, 1, 2]
    out, err = capfd.readouterr()
    assert out == ""
    assert "gather q,k" in err and "3/3" in err


def test_no_bar_when_off(monkeypatch, capfd):
    monkeypatch.setenv(progress.ENV, "0")
    assert list(progress.steps(range(3), "gather q,k")) == [0, 1, 2]
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("value", ["yes", "2", "", "off"])
def test_invalid_value_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv(progress.ENV, value)
    with pytest.raises(ValueError, match='QKCORE_PROGRESS=.*"1".*"0"'):
        list(progress.steps(range(2), "swaps"))
    with pytest.raises(ValueError, match="QKCORE_PROGRESS"):  # a chapter refuses it before loading anything
        start_chapter(cache=False)


def test_bar_closed_when_the_loop_is_left(monkeypatch, capfd):
    monkeypatch.setenv(progress.ENV, "1")
    for i in progress.steps(range(10), "train toy heads", unit="step"):
        if i == 3:
            break
    err = capfd.readouterr().err
    assert "train toy heads" in err and "4/10" in err


def test_lazy_bar_waits_for_real_work(monkeypatch, capfd):
    monkeypatch.setenv(progress.ENV, "1")
    work = {"n": 0}
    assert list(progress.steps(range(4), "cached", after=lambda: work["n"])) == [0, 1, 2, 3]
    assert capfd.readouterr().err == ""  # no work: no bar
    for i in progress.steps(range(4), "half cached", after=lambda: work["n"]):
        if i == 1:
            work["n"] += 1  # the second item was computed
    err = capfd.readouterr().err
    assert "half cached" in err and "4/4" in err


def _gathers(model, batches):
    for ids in progress.gathers(batches, "gather q,k"):
        batch = pad_batch(ids)
        gather_qk(model, batch, [(0, 0)], last_columns(batch), logits=False)


def test_cache_hit_shows_no_bar(monkeypatch, capfd, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    model = LlamaForCausalLM(cfg).eval()
    batches = [[[1, 2, 3], [4, 5, 6]], [[7, 8, 9]]]
    monkeypatch.setenv(progress.ENV, "1")
    with gather_cache.gather_cache(tmp_path):
        _gathers(model, batches)  # cold: computed, a bar
        err = capfd.readouterr().err
        assert "gather q,k" in err and "2/2" in err
        before = gather_cache.computed()
        _gathers(model, batches)  # warm: read from disk, no bar
        assert gather_cache.computed() == before
        assert capfd.readouterr().err == ""


def test_toy_training_bar(monkeypatch, capfd):
    monkeypatch.setenv(progress.ENV, "1")
    tasks = [PayloadTask(TaskConfig(r1=2, r2=2, kind="binary", seed=1))]
    config = ToyTrainConfig(batch_size=8, max_steps=3, warmup_steps=1, val_every=3, val_size=8, test_size=8)
    train_grid(tasks, (4,), config)
    assert "train toy heads" in capfd.readouterr().err
    monkeypatch.setenv(progress.ENV, "0")
    train_grid(tasks, (4,), config)
    assert "train toy heads" not in capfd.readouterr().err
