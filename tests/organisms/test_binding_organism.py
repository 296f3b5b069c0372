"""The binding task generator (prompts, positions, order-ID and lexical contrasts), the training batches and hint
loss of the recipe, and the committed binding organism's held-out accuracy."""

import pytest
import torch

from qkcore.lm.positions import char_span_to_tokens
from qkcore.organisms.binding_organism import (
    WEIGHTS_DIR,
    binding_accuracy,
    hint_loss,
    training_batch,
)
from qkcore.organisms.binding_task import (
    EXTRA_OBJECTS,
    LETTERS,
    OBJECTS,
    PAPER_OBJECTS,
    VOCABULARY,
    counterfactual,
    lexical_pairs,
    make_prompt,
    order_id_prompts,
    sample_prompt,
)
from qkcore.organisms.llama import load_organism, organism_dir
from qkcore.organisms.vocab import build_word_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(VOCABULARY)


def test_paper_prompt_text_and_positions(tokenizer):
    p = make_prompt(["egg", "fan", "tea"], ["A", "B", "C"], query=2)
    assert p.text == (
        "The egg is in Box A, the fan is in Box B, and the tea is in Box C. Respond in one word, only "
        "the answer and nothing else: Which box is the tea in? Box"
    )
    assert p.answer == "C" and p.query_object == "tea" and p.n_pairs == 3
    assert [p.words[i] for i in p.letter_positions] == ["A", "B", "C"]
    assert [p.words[i] for i in p.object_positions] == ["egg", "fan", "tea"]
    assert p.words[p.query_position] == "tea" and p.words[-1] == "Box"
    assert [p.text[s:e] for s, e in p.letter_spans] == ["A", "B", "C"]
    assert p.text[slice(*p.query_span)] == "tea"
    enc = tokenizer(p.text, return_offsets_mapping=True)
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == ["<bos>", *p.words]
    for word_index, span in zip(p.letter_positions, p.letter_spans):
        found = char_span_to_tokens(p.text, enc["offset_mapping"], *span)
        assert (found.start, found.stop) == (word_index + 1, word_index + 2)


def test_sampling_is_deterministic_and_shuffled():
    a = [sample_prompt(9, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert a[0] == a[1]
    g = torch.Generator().manual_seed(3)
    many = [sample_prompt(9, g) for _ in range(50)]
    assert all(sorted(p.objects) == sorted(PAPER_OBJECTS) and sorted(p.letters) == list("ABCDEFGHI") for p in many)
    assert len({p.objects for p in many}) > 40 and len({p.letters for p in many}) > 40
    assert {p.query for p in many} == set(range(9))
    assert sample_prompt(9, torch.Generator().manual_seed(4)) != many[0]
    four = sample_prompt(4, g)
    assert sorted(four.letters) == list("ABCD") and set(four.objects) <= set(PAPER_OBJECTS)


def test_order_id_prompts_fix_the_word_and_vary_its_position():
    prompts = order_id_prompts(300, 9, torch.Generator().manual_seed(0), query_object="tea")
    assert all(p.query_object == "tea" and p.objects.count("tea") == 1 for p in prompts)
    assert all(p.answer == p.letters[p.objects.index("tea")] for p in prompts)
    counts = torch.bincount(torch.tensor([p.query for p in prompts]), minlength=9)
    assert counts.min() > 15  # every clause position occurs (uniform: about 33 each)
    assert order_id_prompts(5, 9, torch.Generator().manual_seed(0)) == prompts[:5]


def test_lexical_counterfactual_changes_only_the_queried_object():
    for prompt, cf in lexical_pairs(100, 9, torch.Generator().manual_seed(1)):
        assert cf.query_object in EXTRA_OBJECTS and cf.query_object not in prompt.objects
        assert cf.letters == prompt.letters and cf.query == prompt.query and cf.answer == prompt.answer
        assert cf.letter_positions == prompt.letter_positions and cf.query_position == prompt.query_position
        changed = [i for i, (a, b) in enumerate(zip(prompt.words, cf.words)) if a != b]
        assert changed == [prompt.object_positions[prompt.query], prompt.query_position]
    with pytest.raises(ValueError, match="already in the prompt"):
        counterfactual(prompt, prompt.objects[0])


def test_bad_prompts_are_rejected():
    with pytest.raises(ValueError, match="distinct"):
        make_prompt(["egg", "egg"], ["A", "B"], 0)
    with pytest.raises(ValueError, match="not binding objects"):
        make_prompt(["egg", "dragon"], ["A", "B"], 0)
    with pytest.raises(ValueError, match="query"):
        make_prompt(["egg", "fan"], ["A", "B"], 2)
    with pytest.raises(ValueError, match="n_pairs"):
        sample_prompt(10, torch.Generator())  # 9 paper objects only


def test_training_batch_labels_only_the_answers(tokenizer):
    vocab = tokenizer.get_vocab()
    ids, labels = training_batch(5, 8, torch.Generator().manual_seed(0), vocab, tokenizer.bos_token_id)
    assert ids.shape == labels.shape and ids.shape[0] == 8
    inv = {i: w for w, i in vocab.items()}
    for row, lab in zip(ids.tolist(), labels.tolist()):
        words = [inv[i] for i in row]
        answers = [t for t, l in enumerate(lab) if l != -100]
        assert len(answers) == 4 and all(lab[t] == row[t] and words[t - 2 : t] == ["?", "Box"] for t in answers)
        for t in answers:  # each answer is the letter of the asked object's clause
            obj = words[t - 4]
            assert words[words.index(obj) + 4] == words[t]


def test_hint_loss_is_zero_for_the_hinted_pattern_and_positive_otherwise(tokenizer):
    vocab = tokenizer.get_vocab()
    ids, _ = training_batch(3, 2, torch.Generator().manual_seed(0), vocab, tokenizer.bos_token_id)
    B, T = ids.shape
    letters = torch.isin(ids, torch.tensor([vocab[c] for c in LETTERS]))
    respond = int((ids[0] == vocab["Respond"]).nonzero()[0])
    perfect0 = torch.zeros(B, 2, T, T)
    perfect1 = torch.zeros(B, 2, T, T)
    for b in range(B):
        for p in range(1, T):
            perfect0[b, :, p, p - 3 if p >= 3 else 0] = 1.0
            ctx = letters[b].clone()
            ctx[respond:] = False
            perfect1[b, :, p, ctx] = 1.0 / ctx.sum()
    args = (vocab["?"], vocab["Box"], vocab["Respond"], torch.tensor([vocab[c] for c in LETTERS]))
    assert float(hint_loss(ids, [perfect0, perfect1], *args)) == pytest.approx(0.0, abs=1e-4)
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    uniform = uniform.expand(B, 2, T, T)
    assert float(hint_loss(ids, [uniform, uniform], *args)) > 1.0


@pytest.fixture(scope="module")
def organism():
    if not (WEIGHTS_DIR / "model.safetensors").is_file():
        pytest.fail(f"committed binding weights missing in {WEIGHTS_DIR}")
    torch.set_num_threads(1)
    return load_organism(organism_dir("binding"))


@pytest.mark.parametrize("n_pairs", [9, 4])
def test_committed_weights_reach_the_stated_accuracy(organism, n_pairs):
    model, tokenizer, info = organism
    stated = info["results"][f"acc_{n_pairs}_pairs"]
    assert stated >= 0.95
    fresh = binding_accuracy(model, tokenizer, n_pairs, n_prompts=300, seed=424242)  # not the training eval seed
    assert fresh >= 0.95 and fresh >= stated - 0.04


def test_committed_weights_bind_unused_objects_and_letters(organism):
    model, tokenizer, _ = organism
    acc = binding_accuracy(model, tokenizer, 9, n_prompts=300, seed=5151, object_pool=OBJECTS, letter_pool=LETTERS)
    assert acc >= 0.9
