"""Bad inputs to qkcore's core (ΔC, subspaces), the toy configs and the chapters' parameters: each must raise the
right exception with a message that names the offending argument and what it allows (issue 11)."""

import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from qkcore.covariance import ContrastiveCovariance, contrastive_covariance
from qkcore.experiments.binding.analysis import BindingParams
from qkcore.experiments.filter_heads.analysis import FilterHeadsParams
from qkcore.experiments.method import MethodParams
from qkcore.experiments.toy.model import ToyModelParams
from qkcore.experiments.toy.rank_recovery import RankRecoveryParams
from qkcore.params import check_types, from_namespace, require_text
from qkcore.subspace import combine_bases, decompose, random_orthonormal, rank_at_energy, ranks_at_energy
from qkcore.toy.task import TaskConfig
from qkcore.toy.train import ToyTrainConfig

Q = torch.randn(5, 4)


def acc(**kw):
    return ContrastiveCovariance(4, **kw)


def with_value(x, i, j, v):
    x = x.clone()
    x[i, j] = v
    return x


def empty_acc_delta():
    return acc().delta()


def prompt_sum_without_prompts():
    a = acc(weighting="prompt_sum")
    a.add(Q, Q, positive=True), a.add(Q, Q, positive=False)
    return a.delta()


def rectangular_gap():
    a = ContrastiveCovariance(4, 3)
    a.add(Q, Q[:, :3], positive=True), a.add(Q, Q[:, :3], positive=False)
    return a.logit_gap()


EYE = torch.eye(4, dtype=torch.float64)
S = torch.tensor([3.0, 2.0, 1.0])

CASES = {
    # ContrastiveCovariance(...)
    "cc d_head float": (lambda: ContrastiveCovariance(16.7), TypeError, r"d_head must be a positive int, got 16\.7"),
    "cc d_head str": (lambda: ContrastiveCovariance("16"), TypeError, "d_head must be a positive int"),
    "cc d_head bool": (lambda: ContrastiveCovariance(True), TypeError, "d_head must be a positive int"),
    "cc d_head None": (lambda: ContrastiveCovariance(None), TypeError, "d_head must be a positive int"),
    "cc d_head 0": (lambda: ContrastiveCovariance(0), ValueError, "must be positive, got d_head=0"),
    "cc d_head -3": (lambda: ContrastiveCovariance(-3), ValueError, "must be positive, got d_head=-3"),
    "cc d_key float": (lambda: ContrastiveCovariance(4, 2.5), TypeError, "d_key must be a positive int"),
    "cc d_key 0": (lambda: ContrastiveCovariance(4, 0), ValueError, "must be positive.*d_key=0"),
    "cc weighting unknown": (lambda: acc(weighting="mean"), ValueError, "weighting must be one of.*pair_mean"),
    "cc weighting None": (lambda: acc(weighting=None), ValueError, "weighting must be one of"),
    "cc head_shape int": (lambda: acc(head_shape=3), TypeError, "head_shape must be a tuple of positive ints"),
    "cc head_shape 0": (lambda: acc(head_shape=(0,)), TypeError, "head_shape must be a tuple of positive ints"),
    "cc head_shape float": (lambda: acc(head_shape=(2.5,)), TypeError, "head_shape must be a tuple of positive"),
    "cc head_shape str": (lambda: acc(head_shape="ab"), TypeError, "head_shape must be a tuple of positive ints"),
    # ContrastiveCovariance.add(...)
    "add q numpy": (
        lambda: acc().add(np.zeros((2, 4)), Q[:2], positive=True),
        TypeError,
        "q must be a torch.Tensor, got ndarray",
    ),
    "add k None": (lambda: acc().add(Q, None, positive=True), TypeError, "k must be a torch.Tensor, got NoneType"),
    "add q list": (lambda: acc().add([[0.0] * 4], Q[:1], positive=True), TypeError, "q must be a torch.Tensor"),
    "add q int": (lambda: acc().add(Q.long(), Q, positive=True), TypeError, "q must be a real floating-point"),
    "add q complex": (
        lambda: acc().add(Q.to(torch.complex64), Q, positive=True),
        TypeError,
        "q must be a real floating-point",
    ),
    "add k bool": (lambda: acc().add(Q, Q > 0, positive=True), TypeError, "k must be a real floating-point"),
    "add k complex": (
        lambda: acc().add(Q, Q.to(torch.complex128), positive=True),
        TypeError,
        "k must be a real floating-point",
    ),
    "add positive str": (lambda: acc().add(Q, Q, positive="no"), TypeError, "positive must be True or False"),
    "add positive None": (lambda: acc().add(Q, Q, positive=None), TypeError, "positive must be True or False"),
    "add positive int": (lambda: acc().add(Q, Q, positive=1), TypeError, "positive must be True or False"),
    "add positive tensor": (
        lambda: acc().add(Q, Q, positive=torch.tensor(True)),
        TypeError,
        "positive must be True or False",
    ),
    "add prompts float": (
        lambda: acc().add(Q, Q, positive=True, prompts=2.5),
        TypeError,
        r"prompts must be an int >= 0.*2\.5",
    ),
    "add prompts str": (lambda: acc().add(Q, Q, positive=True, prompts="3"), TypeError, "prompts must be an int"),
    "add prompts bool": (lambda: acc().add(Q, Q, positive=True, prompts=True), TypeError, "prompts must be an int"),
    "add prompts negative": (
        lambda: acc().add(Q, Q, positive=True, prompts=-1),
        ValueError,
        "prompts must be >= 0, got -1",
    ),
    "add q wrong width": (
        lambda: acc().add(torch.randn(5, 3), Q, positive=True),
        ValueError,
        r"q must have shape \(\*head_shape, n_pairs, d_query\) = \(n, 4\)",
    ),
    "add q 1-D": (lambda: acc().add(torch.randn(4), Q, positive=True), ValueError, "q must have shape"),
    "add k rows": (
        lambda: acc().add(Q, torch.randn(4, 4), positive=True),
        ValueError,
        r"k must have shape \(5, 4\) to pair row-by-row",
    ),
    "add head_shape missing": (
        lambda: acc(head_shape=(2,)).add(Q, Q, positive=True),
        ValueError,
        r"q must have shape .*\(2, n, 4\)",
    ),
    "add q nan": (
        lambda: acc().add(with_value(Q, 0, 0, math.nan), Q, positive=True),
        ValueError,
        "q and k must be finite",
    ),
    "add k inf": (
        lambda: acc().add(Q, with_value(Q, 1, 1, math.inf), positive=False),
        ValueError,
        "q and k must be finite",
    ),
    "delta without pairs": (empty_acc_delta, ValueError, "no positive pairs were added: ΔC needs at least one"),
    "prompt_sum without prompts": (
        prompt_sum_without_prompts,
        ValueError,
        r'weighting="prompt_sum" needs add\(..., prompts=n\)',
    ),
    "logit gap rectangular": (rectangular_gap, ValueError, "logit gap needs d_query == d_key"),
    "contrastive_covariance numpy": (
        lambda: contrastive_covariance(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3))),
        TypeError,
        "q must be a torch.Tensor",
    ),
    # rank rule and decomposition
    "rank energy 0": (lambda: rank_at_energy(S, 0), ValueError, r"energy must be in \(0, 1\]"),
    "rank energy 1.5": (lambda: rank_at_energy(S, 1.5), ValueError, r"energy must be in \(0, 1\].*1\.5"),
    "rank energy negative": (lambda: rank_at_energy(S, -0.5), ValueError, r"energy must be in \(0, 1\]"),
    "rank energy str": (lambda: rank_at_energy(S, "0.9"), TypeError, r"energy must be a number in \(0, 1\]"),
    "rank energy None": (lambda: rank_at_energy(S, None), TypeError, "energy must be a number"),
    "rank energy bool": (lambda: rank_at_energy(S, True), TypeError, "energy must be a number"),
    "rank energy nan": (lambda: rank_at_energy(S, math.nan), ValueError, r"energy must be in \(0, 1\]"),
    "rank energy list": (lambda: rank_at_energy(S, [0.9]), TypeError, "energy must be a number"),
    "rank 2-D": (lambda: rank_at_energy(EYE), ValueError, "singular_values must be 1-D"),
    "rank unsorted": (
        lambda: rank_at_energy(torch.tensor([1.0, 2.0])),
        ValueError,
        "singular values must be sorted in descending order",
    ),
    "rank negative": (
        lambda: rank_at_energy(torch.tensor([2.0, -1.0])),
        ValueError,
        "singular values must be finite and non-negative",
    ),
    "rank inf": (lambda: rank_at_energy(torch.tensor([math.inf, 1.0])), ValueError, "singular values must be finite"),
    "rank nan": (lambda: rank_at_energy(torch.tensor([math.nan])), ValueError, "singular values must be finite"),
    "ranks numpy": (lambda: ranks_at_energy(np.eye(3)), TypeError, "deltas must be a torch.Tensor, got ndarray"),
    "ranks None": (lambda: ranks_at_energy(None), TypeError, "deltas must be a torch.Tensor"),
    "ranks 1-D": (lambda: ranks_at_energy(S), ValueError, r"deltas must be a \(\.\.\., d_query, d_key\) stack"),
    "ranks int": (
        lambda: ranks_at_energy(torch.ones(2, 3, 3, dtype=torch.long)),
        TypeError,
        "deltas must be a real floating-point tensor",
    ),
    "ranks inf": (lambda: ranks_at_energy(with_value(EYE, 0, 1, math.inf)[None]), ValueError, "deltas must be finite"),
    "ranks nan": (lambda: ranks_at_energy(with_value(EYE, 2, 2, math.nan)), ValueError, "deltas must be finite"),
    "ranks energy": (lambda: ranks_at_energy(EYE[None], energy=2), ValueError, r"energy must be in \(0, 1\]"),
    "decompose None": (lambda: decompose(None), TypeError, "delta must be a torch.Tensor, got NoneType"),
    "decompose numpy": (lambda: decompose(np.eye(3)), TypeError, "delta must be a torch.Tensor, got ndarray"),
    "decompose 3-D": (lambda: decompose(EYE[None]), ValueError, r"delta must be a \(d_query, d_key\) matrix"),
    "decompose 1-D": (lambda: decompose(S), ValueError, r"delta must be a \(d_query, d_key\) matrix"),
    "decompose int": (
        lambda: decompose(torch.eye(3, dtype=torch.long)),
        TypeError,
        "delta must be a real floating-point",
    ),
    "decompose complex": (
        lambda: decompose(EYE.to(torch.complex128)),
        TypeError,
        "delta must be a real floating-point",
    ),
    "decompose inf": (lambda: decompose(with_value(EYE, 0, 0, math.inf)), ValueError, "delta must be finite"),
    "decompose nan": (lambda: decompose(with_value(EYE, 0, 0, math.nan)), ValueError, "delta must be finite"),
    "decompose energy str": (lambda: decompose(EYE, energy="0.9"), TypeError, "energy must be a number"),
    "decompose energy 0": (lambda: decompose(EYE, energy=0.0), ValueError, r"energy must be in \(0, 1\]"),
    "combine empty": (lambda: combine_bases([]), ValueError, r"combine_bases needs a non-empty list of \(d, r_i\)"),
    "combine tensor": (lambda: combine_bases(EYE), ValueError, "combine_bases needs a non-empty list"),
    "combine numpy": (lambda: combine_bases([np.eye(3)]), TypeError, r"bases\[0\] must be a torch.Tensor"),
    "combine None": (lambda: combine_bases([EYE, None]), TypeError, r"bases\[1\] must be a torch.Tensor"),
    "combine 1-D": (lambda: combine_bases([S]), ValueError, r"bases\[0\] must be a \(d_query, d_key\) matrix"),
    "combine mixed d": (
        lambda: combine_bases([EYE, torch.eye(3)]),
        ValueError,
        r"bases must all be \(d, r_i\) with the same d",
    ),
    "combine nan": (
        lambda: combine_bases([EYE[:, :1], with_value(EYE, 0, 1, math.nan)[:, 1:2]]),
        ValueError,
        r"bases\[1\] must be finite",
    ),
    "combine all nan": (
        lambda: combine_bases([torch.full((3, 2), math.nan)]),
        ValueError,
        r"bases\[0\] must be finite",
    ),
    "combine zero": (lambda: combine_bases([torch.zeros(3, 2)]), ValueError, "the bases span nothing"),
    "random_orthonormal r 0": (
        lambda: random_orthonormal(4, 0, torch.Generator()),
        ValueError,
        "need 0 < r <= d, got r=0",
    ),
    "random_orthonormal r > d": (
        lambda: random_orthonormal(4, 5, torch.Generator()),
        ValueError,
        "need 0 < r <= d, got r=5, d=4",
    ),
    # TaskConfig(...)
    "task r1 0": (lambda: TaskConfig(r1=0), ValueError, "r1 must be a positive integer, got 0"),
    "task r1 float": (lambda: TaskConfig(r1=1.5), ValueError, r"r1 must be a positive integer, got 1\.5"),
    "task r1 bool": (lambda: TaskConfig(r1=True), ValueError, "r1 must be a positive integer, got True"),
    "task r2 str": (lambda: TaskConfig(r2="3"), ValueError, "r2 must be a positive integer"),
    "task kind": (lambda: TaskConfig(kind="ternary"), ValueError, r"task kind must be one of \('binary'"),
    "task seed float": (lambda: TaskConfig(seed=1.5), ValueError, r"seed must be an integer, got 1\.5"),
    "task seed str": (lambda: TaskConfig(seed="1"), ValueError, "seed must be an integer, got '1'"),
    "task seed bool": (lambda: TaskConfig(seed=True), ValueError, "seed must be an integer, got True"),
    "task seed None": (lambda: TaskConfig(seed=None), ValueError, "seed must be an integer, got None"),
    "task context 0": (lambda: TaskConfig(context=0), ValueError, "context must be a positive integer"),
    "task n_payloads": (lambda: TaskConfig(n_payloads=-1), ValueError, "n_payloads must be a positive integer"),
    "task d_model float": (lambda: TaskConfig(d_model=32.0), ValueError, "d_model must be a positive integer"),
    "task too big": (lambda: TaskConfig(r1=10, r2=15), ValueError, "r1 \\+ r2 \\+ n_payloads = 35 must not exceed"),
    "task noise negative": (lambda: TaskConfig(noise_std=-1.0), ValueError, "noise_std must be finite and >= 0"),
    "task noise nan": (lambda: TaskConfig(noise_std=math.nan), ValueError, "noise_std must be finite and >= 0"),
    "task noise inf": (lambda: TaskConfig(noise_std=math.inf), ValueError, "noise_std must be finite and >= 0"),
    "task noise str": (lambda: TaskConfig(noise_std="0.1"), ValueError, "noise_std must be a finite number >= 0"),
    "task noise bool": (lambda: TaskConfig(noise_std=True), ValueError, "noise_std must be a finite number"),
    # ToyTrainConfig(...)
    "train lr 0": (lambda: ToyTrainConfig(lr=0), ValueError, "lr must be a positive number, got 0"),
    "train lr nan": (lambda: ToyTrainConfig(lr=math.nan), ValueError, "lr must be a finite number, got nan"),
    "train lr inf": (lambda: ToyTrainConfig(lr=math.inf), ValueError, "lr must be a finite number"),
    "train lr str": (lambda: ToyTrainConfig(lr="0.1"), ValueError, "lr must be a finite number, got '0.1'"),
    "train lr None": (lambda: ToyTrainConfig(lr=None), ValueError, "lr must be a finite number"),
    "train wd nan": (lambda: ToyTrainConfig(weight_decay=math.nan), ValueError, "weight_decay must be a finite"),
    "train wd negative": (lambda: ToyTrainConfig(weight_decay=-0.1), ValueError, "weight_decay must be >= 0"),
    "train wd bool": (lambda: ToyTrainConfig(weight_decay=False), ValueError, "weight_decay must be a finite"),
    "train batch float": (lambda: ToyTrainConfig(batch_size=2.5), TypeError, r"batch_size must be an int, got 2\.5"),
    "train batch 0": (lambda: ToyTrainConfig(batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    "train max_steps bool": (lambda: ToyTrainConfig(max_steps=True), TypeError, "max_steps must be an int"),
    "train max_steps 0": (lambda: ToyTrainConfig(max_steps=0), ValueError, "max_steps must be >= 1"),
    "train warmup >= max": (
        lambda: ToyTrainConfig(warmup_steps=1000),
        ValueError,
        r"warmup_steps must be in \[0, max_steps\)",
    ),
    "train warmup negative": (
        lambda: ToyTrainConfig(warmup_steps=-1),
        ValueError,
        r"warmup_steps must be in \[0, max_steps\)",
    ),
    "train warmup float": (lambda: ToyTrainConfig(warmup_steps=1.5), TypeError, "warmup_steps must be an int"),
    "train val_every 0": (lambda: ToyTrainConfig(val_every=0), ValueError, "val_every must be >= 1"),
    "train patience float": (lambda: ToyTrainConfig(patience=0.5), TypeError, "patience must be an int"),
    "train min_delta negative": (lambda: ToyTrainConfig(min_delta=-1e-3), ValueError, "min_delta must be >= 0"),
    "train min_delta nan": (lambda: ToyTrainConfig(min_delta=math.nan), ValueError, "min_delta must be a finite"),
    "train val_size 0": (lambda: ToyTrainConfig(val_size=0), ValueError, "val_size must be >= 1"),
    "train test_size str": (lambda: ToyTrainConfig(test_size="1"), TypeError, "test_size must be an int"),
}


@dataclass(frozen=True)
class Chapter:
    seed: int = 0
    energy: float = 0.99
    heads: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self):
        check_types(self)


def ns(**params):
    return {
        "In": [""],
        "Out": {},
        "get_ipython": print,
        "exit": print,
        "quit": print,
        "open": open,
        "_": "",
        "_i1": "seed = 0",
        "__name__": "__main__",
        "math": math,
        **params,
    }


PARAM_CASES = {
    "unknown name": (
        lambda: from_namespace(Chapter, ns(sed=3)),
        ValueError,
        r"unknown parameter\(s\) \['sed'\].*parameters it takes are \['energy', 'heads', 'seed'\]",
    ),
    "exit": (lambda: from_namespace(Chapter, ns(exit=5)), ValueError, "'exit' is reserved.*takes are"),
    "quit": (lambda: from_namespace(Chapter, ns(quit="x")), ValueError, "'quit' is reserved"),
    "open": (lambda: from_namespace(Chapter, ns(open=[1])), ValueError, "'open' is reserved"),
    "In": (lambda: from_namespace(Chapter, ns(In=3)), ValueError, "'In' is reserved"),
    "In list of ints": (lambda: from_namespace(Chapter, ns(In=[1, 2])), ValueError, "'In' is reserved"),
    "Out": (lambda: from_namespace(Chapter, ns(Out="x")), ValueError, "'Out' is reserved"),
    "get_ipython": (lambda: from_namespace(Chapter, ns(get_ipython=0)), ValueError, "'get_ipython' is reserved"),
    "_seed": (lambda: from_namespace(Chapter, ns(_seed=1)), ValueError, "'_seed' starts with '_'.*takes are"),
    "_private list": (lambda: from_namespace(Chapter, ns(_heads=[[0, 0]])), ValueError, "'_heads' starts with '_'"),
    "__double": (lambda: from_namespace(Chapter, ns(__x=1)), ValueError, "'__x' starts with '_'"),
    "seed float": (lambda: from_namespace(Chapter, ns(seed=1.5)), TypeError, "parameter seed=1.5 should be of type"),
    "seed bool": (lambda: from_namespace(Chapter, ns(seed=True)), TypeError, "parameter seed=True should be"),
    "seed str": (lambda: from_namespace(Chapter, ns(seed="1")), TypeError, "parameter seed='1' should be"),
    "energy str": (lambda: from_namespace(Chapter, ns(energy="0.9")), TypeError, "parameter energy='0.9' should"),
    "heads flat": (lambda: from_namespace(Chapter, ns(heads=[1, 2])), TypeError, "parameter heads=.*should be"),
    "heads str": (lambda: from_namespace(Chapter, ns(heads=[["a", 1]])), TypeError, "parameter heads=.*should be"),
    "model empty": (
        lambda: require_text("", "model", '"organism" or a hub id'),
        ValueError,
        'parameter model is empty: give "organism" or a hub id',
    ),
    "model blank": (lambda: require_text("   ", "model", "a hub id"), ValueError, "parameter model is empty"),
    "model None": (
        lambda: require_text(None, "model", "a hub id"),
        TypeError,
        "parameter model=None must be a string: a hub id",
    ),
    "model int": (lambda: require_text(5, "model", "a hub id"), TypeError, "parameter model=5 must be a string"),
    # the chapters' dataclasses (constructed only)
    "binding model empty": (lambda: BindingParams(model=""), ValueError, 'parameter model is empty: give "organism"'),
    "binding n_heads 0": (lambda: BindingParams(n_heads=0), ValueError, "n_heads must be ≥ 1, got 0"),
    "binding energy 2": (lambda: BindingParams(energy=2.0), ValueError, r"energy must be in \(0, 1\]"),
    "binding energy nan": (lambda: BindingParams(energy=math.nan), ValueError, r"energy must be in \(0, 1\]"),
    "binding key_offset": (lambda: BindingParams(key_offset=3), ValueError, r"key_offset must be in \[-4, 1\]"),
    "binding heads repeat": (lambda: BindingParams(heads=((0, 0), (0, 0))), ValueError, "heads repeat"),
    "binding heads empty": (lambda: BindingParams(heads=()), ValueError, "heads must be None .*or a non-empty"),
    "binding dtype": (lambda: BindingParams(dtype="float64"), TypeError, "parameter dtype='float64' should be"),
    "binding n_pairs": (lambda: BindingParams(n_pairs=1), ValueError, r"n_pairs must be in \[2, "),
    "binding query_object": (lambda: BindingParams(query_object="cat"), ValueError, "query_object must be one of"),
    "filter n_heads float": (lambda: FilterHeadsParams(n_heads=2.5), TypeError, "parameter n_heads=2.5 should be"),
    "filter energy 0": (lambda: FilterHeadsParams(energy=0.0), ValueError, r"energy must be in \(0, 1\]"),
    "filter categories": (
        lambda: FilterHeadsParams(categories=("animal",)),
        ValueError,
        "categories must be ≥ 2 distinct names",
    ),
    "filter weighting": (lambda: FilterHeadsParams(weighting="mean"), TypeError, "parameter weighting='mean'"),
    "filter batch_size 0": (lambda: FilterHeadsParams(batch_size=0), ValueError, "batch_size must be ≥ 1"),
    "method latent": (lambda: MethodParams(latent="uniform"), TypeError, "parameter latent='uniform' should be"),
    "method energy": (lambda: MethodParams(energy=1.01), ValueError, r"energy must be in \(0, 1\]"),
    "toy task": (lambda: ToyModelParams(task="ternary"), ValueError, "task must be one of"),
    "toy d_head 0": (lambda: ToyModelParams(d_head=0), ValueError, "d_head must be >= 1"),
    "toy r1 bool": (lambda: ToyModelParams(r1=True), TypeError, "parameter r1=True should be"),
    "rank latent_dims empty": (
        lambda: RankRecoveryParams(latent_dims=()),
        ValueError,
        "latent_dims must list at least one",
    ),
    "rank latent_dims repeat": (
        lambda: RankRecoveryParams(latent_dims=(3, 3)),
        ValueError,
        "latent_dims repeats a value",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_core_bad_input_is_a_clear_error(case):
    call, exc, match = CASES[case]
    with pytest.raises(exc, match=match):
        call()


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_chapter_parameter_bad_input_is_a_clear_error(case):
    call, exc, match = PARAM_CASES[case]
    with pytest.raises(exc, match=match):
        call()


def test_filter_chapter_rejects_an_empty_model():
    with pytest.raises(ValueError, match="parameter model is empty"):
        FilterHeadsParams(model="")
