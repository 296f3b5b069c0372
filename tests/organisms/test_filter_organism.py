"""The committed filter organisms still do the task on fresh prompts, match the specification in the code, and
training is deterministic."""

import dataclasses

import pytest
import torch

from qkcore.organisms.filter_organism import SPECS, train_filter_organism
from qkcore.organisms.filter_task import FilterTask, exact_match
from qkcore.organisms.llama import load_organism, organism_dir

STATED_ACCURACY = 0.95  # weights/README.md: at least this held-out exact match


@pytest.mark.parametrize("name", sorted(SPECS))
def test_committed_weights_reach_the_stated_accuracy(name):
    model, tok, info = load_organism(organism_dir(name))
    assert info["spec"] == SPECS[name].to_dict(), "the committed weights were trained with another spec: retrain"
    task = FilterTask(SPECS[name].task)
    g = torch.Generator().manual_seed(424242)  # neither the training nor the held-out seed
    full, single = task.sample(200, g, full=True), task.sample_single_positive(200, g)
    assert exact_match(model, tok, full) >= STATED_ACCURACY
    assert exact_match(model, tok, single) >= STATED_ACCURACY
    assert info["results"]["exact_match"]["full"] >= STATED_ACCURACY


def test_training_is_deterministic():
    spec = SPECS["filter-5x5"]
    spec = dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, steps=3, warmup_steps=1, eval_every=0, log_every=1), eval_prompts=4
    )
    a, _, info_a = train_filter_organism(spec, log=None)
    b, _, info_b = train_filter_organism(spec, log=None)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert info_a["history"]["losses"] == info_b["history"]["losses"]
