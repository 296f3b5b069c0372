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


def test_a_variant_of_the_book_records_under_its_own_name(tmp_path):
    (tmp_path / "variants.yml").write_text("cube_big:\n  source: cube\n  parameters: {n: 9}\n")
    results = tmp_path / "results"
    record("cube", {"rank": 9}, Params(n=9), results)
    record("cube", {"rank": 5}, Params(n=5), results)  # not a variant: not recorded
    record("other", {"rank": 9}, Params(n=9), results)  # a variant of another chapter
    assert load_results(results) == {"cube_big": {"rank": 9}}


@dataclass(frozen=True)
class QuickParams:
    n: int = 3
    quick_values: dict | None = None


def test_a_variant_with_quick_values_records_its_full_run_only(tmp_path):
    """A variant page's parameters cell holds its `quick:` values as quick_values (scripts/make_variant.py): its
    full run records under the variant's name; its quick run (quick_values applied, then cleared) does not."""
    (tmp_path / "variants.yml").write_text("cube_big:\n  source: cube\n  quick: {n: 2}\n  parameters: {n: 9}\n")
    results = tmp_path / "results"
    record("cube", {"rank": 2}, QuickParams(n=2), results)  # the quick run
    assert load_results(results) == {}
    record("cube", {"rank": 9}, QuickParams(n=9, quick_values={"n": 2}), results)
    assert load_results(results) == {"cube_big": {"rank": 9}}
