"""The chapters' thread policy (qkcore.experiments.chapter): one torch thread for every run the book commits, every
core for the quick preset of a chapter on a pretrained model."""

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


def test_only_a_quick_run_on_a_pretrained_model_uses_every_core():
    assert chapter_threads() == 1
    assert chapter_threads(FilterHeadsParams()) == 1  # the organism, full
    assert chapter_threads(FilterHeadsParams(preset="quick")) == 1  # the organism, quick: its matrices are small
    assert chapter_threads(SubspaceParams(model="binding", preset="quick")) == 1  # an organism by its registered name
    assert chapter_threads(FilterHeadsParams(model="smollm2-135m-instruct")) == 1  # full: numbers the book commits
    assert chapter_threads(FilterHeadsParams(model="smollm2-135m-instruct", preset="quick")) == CORES
    assert chapter_threads(SubspaceParams(model="/data/my-model", preset="quick")) == CORES  # a user's own
    assert chapter_threads(RankRecoveryParams(preset="quick")) == 1  # a toy chapter: no model


def test_start_chapter_sets_the_threads_the_parameters_ask_for(restore_threads):
    start_chapter(FilterHeadsParams(model="qwen2.5-coder-0.5b-instruct", preset="quick"), cache=False)
    assert torch.get_num_threads() == CORES
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


def test_parameters_without_a_preset_run_one_thread():
    assert chapter_threads(_NoPreset()) == 1


def test_a_thread_count_passed_as_the_parameters_is_refused():
    """The first argument was once the thread count: start_chapter(4) must not quietly mean one thread."""
    with pytest.raises(TypeError, match="threads=..."):
        start_chapter(4, cache=False)
    with pytest.raises(TypeError, match="a dataclass"):
        start_chapter(FilterHeadsParams, cache=False)  # the class, not an instance
