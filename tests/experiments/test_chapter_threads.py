"""The chapters' thread policy (qkcore.experiments.chapter): a chapter on a pretrained model uses every core, or
QKCORE_THREADS (the runs that make and check the committed pages set 1); toy and organism chapters one thread."""

import os
from dataclasses import dataclass

import pytest
import torch

from qkcore.experiments.binding.subspaces import SubspaceParams
from qkcore.experiments.chapter import chapter_threads, start_chapter
from qkcore.experiments.filter_heads.analysis import FilterHeadsParams
from qkcore.experiments.toy.rank_recovery import RankRecoveryParams

CORES = len(os.sched_getaffinity(0))


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_chapter_on_a_pretrained_model_uses_every_core_unless_told(monkeypatch):
    monkeypatch.delenv("QKCORE_THREADS", raising=False)
    assert chapter_threads() == 1
    assert chapter_threads(FilterHeadsParams()) == 1  # the organism, full
    assert chapter_threads(FilterHeadsParams(preset="quick")) == 1  # the organism, quick: its matrices are small
    assert chapter_threads(SubspaceParams(model="binding", preset="quick")) == 1  # an organism by its registered name
    assert chapter_threads(FilterHeadsParams(model="smollm2-135m-instruct")) == CORES  # run alone, at its defaults
    assert chapter_threads(FilterHeadsParams(model="smollm2-135m-instruct", preset="quick")) == CORES
    assert chapter_threads(SubspaceParams(model="/data/my-model", preset="quick")) == CORES  # a user's own
    assert chapter_threads(RankRecoveryParams(preset="quick")) == 1  # a toy chapter: no model
    monkeypatch.setenv("QKCORE_THREADS", "1")  # as scripts/execute_book.py and nbval set it
    assert chapter_threads(FilterHeadsParams(model="smollm2-135m-instruct")) == 1
    assert chapter_threads(SubspaceParams(model="/data/my-model", preset="quick")) == 1
    assert chapter_threads(FilterHeadsParams()) == 1
    monkeypatch.setenv("QKCORE_THREADS", "3")
    assert chapter_threads(FilterHeadsParams(model="smollm2-135m-instruct")) == 3
    assert chapter_threads(FilterHeadsParams()) == 1  # never for an organism
    for bad in ("0", "two", "-1", "1.5", "²"):
        monkeypatch.setenv("QKCORE_THREADS", bad)
        with pytest.raises(ValueError, match="QKCORE_THREADS=.*a positive number of threads"):
            chapter_threads(FilterHeadsParams(model="smollm2-135m-instruct"))


def test_start_chapter_sets_the_threads_the_parameters_ask_for(restore_threads, monkeypatch):
    monkeypatch.delenv("QKCORE_THREADS", raising=False)
    start_chapter(FilterHeadsParams(model="qwen2.5-coder-0.5b-instruct", preset="quick"), cache=False)
    assert torch.get_num_threads() == CORES
    start_chapter(FilterHeadsParams(), cache=False)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("QKCORE_THREADS", "1")
    start_chapter(FilterHeadsParams(model="qwen2.5-coder-0.5b-instruct"), cache=False)
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    start_chapter(threads=None, cache=False)  # None leaves them
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match=r'threads must be a positive int, "auto" or None, got 0'):
        start_chapter(threads=0, cache=False)


@dataclass
class _NoPreset:
    model: str = "smollm2-135m-instruct"


def test_parameters_without_a_preset_follow_their_model(monkeypatch):
    monkeypatch.delenv("QKCORE_THREADS", raising=False)
    assert chapter_threads(_NoPreset()) == CORES


def test_every_core_means_the_cores_this_process_may_run_on(monkeypatch):
    """Not os.cpu_count(): a container or `taskset` may allow fewer (checked with a pretend affinity of three)."""
    monkeypatch.delenv("QKCORE_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert chapter_threads(_NoPreset()) == 3
    assert chapter_threads(FilterHeadsParams()) == 1


def test_a_thread_count_passed_as_the_parameters_is_refused():
    """The first argument was once the thread count: start_chapter(4) must not quietly mean one thread."""
    with pytest.raises(TypeError, match="threads=..."):
        start_chapter(4, cache=False)
    with pytest.raises(TypeError, match="a dataclass"):
        start_chapter(FilterHeadsParams, cache=False)  # the class, not an instance
