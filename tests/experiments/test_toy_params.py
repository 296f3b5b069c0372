"""Parameters of the toy chapters: papermill-style overrides are accepted, wrong ones stop with a clear message."""

import pytest

from qkcore.experiments.toy.rank_recovery import RankRecoveryParams, ceiling_table, crosstalk
from qkcore.experiments.toy.why_it_works import WhyItWorksParams
from qkcore.params import from_namespace


def test_papermill_overrides_are_accepted():
    p = from_namespace(RankRecoveryParams, {"latent_dims": [4, 6], "seed": 3, "tasks": ["binary"]})
    assert p.latent_dims == (4, 6) and p.tasks == ("binary",)
    q = from_namespace(WhyItWorksParams, {"r1": 4, "r2": 6, "seed": 3})
    assert (q.r1, q.r2, q.seed, q.d_head) == (4, 6, 3, 16)


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(latent_dims=(0, 3)), "latent dims must be >= 1"),
        (dict(latent_dims=(3, 12)), "must fit in d_model"),
        (dict(latent_dims=()), "at least one"),
        (dict(tasks=("binary", "ternary")), "tasks must be"),
        (dict(d_heads=(16, 16)), "d_heads"),
        (dict(energy=1.5), "energy"),
        (dict(lr=-1.0), "lr"),
        (dict(seed="11"), "seed"),
    ],
)
def test_rank_recovery_rejects_bad_values(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        RankRecoveryParams(**bad)


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(r1=0), "latent dims must be >= 1"),
        (dict(task="ternary"), "task must be one of"),
        (dict(r1=7, r2=7, d_head=8), "does not fit in d_head"),
        (dict(r1=12, r2=12, d_head=32), "must fit in d_model"),
        (dict(contrast_batches=0), "contrast_batches"),
        (dict(max_steps=0), "max_steps"),
    ],
)
def test_why_it_works_rejects_bad_values(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        WhyItWorksParams(**bad)


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="unknown parameter"):
        from_namespace(WhyItWorksParams, {"r_1": 4})


def test_ceiling_table_and_crosstalk():
    import torch

    table = ceiling_table((3, 5))
    assert abs(table.loc[3, 5] - 0.97415) < 1e-5 and table.loc[3, 5] == table.loc[5, 3]
    G = torch.eye(5, dtype=torch.float64)
    assert crosstalk(G, 2) == 0.0
    G[0, 4] = 1.0
    assert abs(crosstalk(G, 2) - 1 / 6) < 1e-12


PRESET_CLASSES = [
    "method.MethodParams",
    "toy.rank_recovery.RankRecoveryParams",
    "toy.why_it_works.WhyItWorksParams",
    "toy.cube.CubeParams",
    "toy.causal_swaps.SwapParams",
]


def _params_class(path: str):
    import importlib

    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(f"qkcore.experiments.{module}"), name)


@pytest.mark.parametrize("path", PRESET_CLASSES)
def test_quick_preset_changes_only_fields_left_at_their_defaults(path):
    import dataclasses

    cls = _params_class(path)
    full, quick = cls(), from_namespace(cls, {"preset": "quick"})
    assert full.preset == "full" and quick.preset == "quick"
    changed = {f.name for f in dataclasses.fields(cls) if getattr(quick, f.name) != getattr(full, f.name)}
    assert changed == set(cls.QUICK) | {"preset"}, "QUICK must name fields it actually changes"
    field, value = next((k, v) for k, v in cls.QUICK.items() if isinstance(v, int) and not isinstance(v, bool))
    by_hand = from_namespace(cls, {"preset": "quick", field: value + 1})
    assert getattr(by_hand, field) == value + 1, "a value set by hand wins over the preset"


def test_quick_rank_recovery_grid_is_smaller():
    quick = from_namespace(RankRecoveryParams, {"preset": "quick"})
    assert len(quick.latent_dims) ** 2 < len(RankRecoveryParams().latent_dims) ** 2


def test_preset_must_be_full_or_quick():
    with pytest.raises((TypeError, ValueError), match="preset"):
        from_namespace(WhyItWorksParams, {"preset": "fast"})
