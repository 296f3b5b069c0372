"""Fixtures shared across the test folders: tiny random Llamas saved to disk in the organisms' layout, with or without
a chat template, so the chapters' real-model path (load by folder) runs in seconds."""

import os
from pathlib import Path

import pytest
import torch

from qkcore.experiments.chapter import start_chapter
from qkcore.organisms.llama import OrganismConfig, build_model, save_organism
from qkcore.organisms.vocab import build_word_tokenizer

# No progress bars (qkcore.progress) in the tests nor in the chapters they execute (papermill passes the environment
# to the kernel), as in the book's own execution; tests/core/test_progress.py turns them on where it checks them.
os.environ["QKCORE_PROGRESS"] = "0"
# One torch thread in the chapters the tests execute, as the book's pages are made (qkcore/experiments/chapter.py);
# tests/experiments/test_chapter_threads.py unsets it where it checks the policy.
os.environ["QKCORE_THREADS"] = "1"

# A minimal chat template: the prompt sits inside "User : … Assistant :", like a real model's user turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}User : {{ messages[0]['content'] }}{% if add_generation_prompt %} Assistant :{% endif %}"
)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The book's thread policy (one torch thread) for every test: the same numbers as the chapters, and no
    oversubscription of the 2-core machines."""
    start_chapter(cache=False)  # tests gather afresh; the chapters they execute cache as the book does


@pytest.fixture(scope="session")
def save_tiny_llama():
    """save(path, words, chat, max_positions) → path: a 2-layer, hidden-32 Llama (GQA 2/1, large init so that its
    attention is peaked and prompt-dependent) with a word-level tokenizer over `words`, saved like an organism."""

    def save(path: Path, words: list[str], chat: bool, max_positions: int = 160) -> Path:
        tok = build_word_tokenizer(list(words) + ["User", "Assistant"])
        if chat:
            tok.chat_template = CHAT_TEMPLATE
        cfg = OrganismConfig(
            n_layers=2, hidden=32, n_heads=2, n_kv_heads=1, intermediate=64, max_positions=max_positions, init_std=0.3
        )
        save_organism(path, build_model(cfg, tok, seed=0), tok, {}, dtype=torch.float32)
        return path

    return save
