"""The filter task: prompt format, spans, answers, sampling, training batches."""

import pytest
import torch

from qkcore.organisms.filter_task import (
    ALL_CATEGORY_NAMES,
    CATEGORIES,
    PAPER_CATEGORIES,
    FilterTask,
    FilterTaskConfig,
    render_prompt,
)
from qkcore.organisms.vocab import build_word_tokenizer


def test_paper_categories_and_format():
    assert PAPER_CATEGORIES["country"] == ("USA", "Canada", "UK", "Australia", "India")
    assert len(ALL_CATEGORY_NAMES) == 13 and all(len(v) == 5 for v in CATEGORIES.values())
    assert len({i for v in CATEGORIES.values() for i in v}) == 65  # every item in one category only
    p = render_prompt(["cat", "apple", "pear"], ["animal", "fruit", "fruit"], "fruit")
    assert p.text == (
        "Here is a list:\n- cat\n- apple\n- pear\nRespond in single words, only the answers and "
        "nothing else: What are the fruits in the list? Answer:"
    )
    assert [p.text[s:e] for s, e in p.item_spans] == ["cat", "apple", "pear"]
    assert p.answer == ("apple", "pear") and p.positive == (False, True, True)
    with pytest.raises(ValueError, match="no item"):
        render_prompt(["cat"], ["animal"], "fruit")


def test_sampling_is_seeded_and_full_prompts_list_everything():
    task = FilterTask(FilterTaskConfig())
    a = task.sample(20, torch.Generator().manual_seed(1))
    b = task.sample(20, torch.Generator().manual_seed(1))
    assert [p.text for p in a] == [p.text for p in b]
    full = task.sample(30, torch.Generator().manual_seed(2), full=True)
    for p in full:
        assert sorted(p.items) == sorted(i for v in PAPER_CATEGORIES.values() for i in v)
        assert len(p.answer) == 5 and all(CATEGORIES[p.asked].count(i) for i in p.answer)
    asked = task.sample(10, torch.Generator().manual_seed(3), asked="liquid", full=False)
    assert all(p.asked == "liquid" and 1 <= len(p.answer) <= 5 for p in asked)


def test_subset_and_single_positive_prompts():
    task = FilterTask(FilterTaskConfig(categories=ALL_CATEGORY_NAMES, listed=5))
    for p in task.sample(20, torch.Generator().manual_seed(0), full=True):
        assert len(set(p.item_categories)) == 5 and len(p.items) == 25 and p.asked in p.item_categories
    for p in FilterTask(FilterTaskConfig()).sample_single_positive(20, torch.Generator().manual_seed(0)):
        assert sum(p.positive) == 1 and len(p.items) == 21 and len(set(p.items)) == 21


def test_batch_labels_only_on_answer_and_eos():
    task = FilterTask(FilterTaskConfig())
    tok = build_word_tokenizer(task.vocabulary())
    prompts = task.sample(8, torch.Generator().manual_seed(0))
    ids, labels = task.batch(prompts, tok)
    assert tok.unk_token_id not in ids.tolist()[0]
    for row, p in zip(range(len(prompts)), prompts):
        kept = labels[row][labels[row] != -100].tolist()
        assert tok.convert_ids_to_tokens(kept) == [*p.answer, "<eos>"]
        n = len(tok(p.text)["input_ids"])
        assert (labels[row, :n] == -100).all() and ids[row, 0] == tok.bos_token_id


def test_config_validation():
    with pytest.raises(ValueError, match="categories"):
        FilterTaskConfig(categories=("fruit", "planet"))
    with pytest.raises(ValueError, match="listed"):
        FilterTaskConfig(listed=9)
