"""Chapters record their closing numbers for the results-at-a-glance page only from a run at their defaults."""

from dataclasses import dataclass

import pytest

from qkcore.experiments.results import load_results, record


@dataclass(frozen=True)
class Params:
    n: int = 3


def test_defaults_write_and_other_parameters_do_not(tmp_path):
    numbers = {"rank": 3, "angles": (1.5, 2.0), "nested": {"a": 1}}
    assert record("cube", numbers, Params(), tmp_path) is numbers
    assert load_results(tmp_path) == {"cube": {"rank": 3, "angles": [1.5, 2.0], "nested": {"a": 1}}}
    record("cube", {"rank": 99}, Params(n=4), tmp_path)
    assert load_results(tmp_path)["cube"]["rank"] == 3


def test_bad_names_and_values_are_refused(tmp_path):
    with pytest.raises(ValueError, match="plain name"):
        record("../cube", {}, Params(), tmp_path)
    with pytest.raises(TypeError, match="cannot record object"):
        record("cube", {"x": object()}, Params(), tmp_path)
