"""Chapter parameters: unknown names, wrong types and bad values are clear errors."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from qkcore.params import check_types, from_namespace, require, with_preset


@dataclass(frozen=True)
class Example:
    seed: int = 0
    rate: float = 0.5
    heads: tuple[tuple[int, int], ...] | None = None
    name: str = "a"

    def __post_init__(self):
        check_types(self)
        require(0 < self.rate <= 1, f"rate must be in (0, 1], got {self.rate}")


def notebook(**params):
    """A namespace as a notebook has it after its parameters cell: IPython names, a module, private names."""
    import math

    return {"In": [], "Out": {}, "get_ipython": print, "_": None, "math": math, **params}


def test_from_namespace_reads_the_parameters_cell():
    p = from_namespace(Example, notebook(seed=3, rate=1, heads=[[1, 2], [3, 4]], name="b"))
    assert p == Example(seed=3, rate=1, heads=((1, 2), (3, 4)), name="b")


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['sed'\].*'seed'"):
        from_namespace(Example, notebook(sed=3))


@pytest.mark.parametrize(
    "field, value", [("seed", 1.5), ("seed", True), ("rate", "x"), ("heads", [[1, "a"]]), ("name", 3)]
)
def test_wrong_type_is_named(field, value):
    with pytest.raises(TypeError, match=field):
        from_namespace(Example, notebook(**{field: value}))


def test_bad_value_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"rate must be in \(0, 1\]"):
        Example(rate=2.0)


# hard edges (issue 11, item 7): names IPython owns, or private ones, are never silently ignored
@pytest.mark.parametrize("name", ["exit", "quit", "open", "In", "Out", "get_ipython"])
def test_parameter_named_like_an_ipython_name_is_an_error(name):
    with pytest.raises(ValueError, match=f"parameter name '{name}' is reserved.*'seed'"):
        from_namespace(Example, {**notebook(), name: 5})


def test_private_parameter_name_is_an_error_and_ipython_history_is_not():
    from qkcore.params import require_text

    with pytest.raises(ValueError, match="'_seed' starts with '_'"):
        from_namespace(Example, notebook(_seed=5))
    ns = {
        **notebook(seed=2),
        "_i1": "seed = 2",
        "_1": None,
        "__name__": "__main__",
        "_ih": [],
        "_oh": {},
        "exit": print,
        "quit": print,
        "open": open,
    }
    assert from_namespace(Example, ns).seed == 2
    with pytest.raises(ValueError, match="parameter model is empty"):
        require_text("", "model", '"organism" or a hub id / local folder')


@dataclass(frozen=True)
class QuickChapter:
    n_prompts: int = 1000
    seed: int = 0
    preset: str = "full"
    QUICK: ClassVar[dict] = {"n_prompts": 50, "seed": 1}


def test_quick_preset_replaces_defaults_but_not_values_set_by_hand():
    assert from_namespace(QuickChapter, notebook(preset="quick")) == QuickChapter(n_prompts=50, seed=1, preset="quick")
    assert from_namespace(QuickChapter, notebook(preset="quick", seed=7)).seed == 7
    assert from_namespace(QuickChapter, notebook()) == QuickChapter()
    with pytest.raises(ValueError, match=r"preset must be one of \('full', 'quick'\), got 'fast'"):
        from_namespace(QuickChapter, notebook(preset="fast"))
    with pytest.raises(ValueError, match="Example has no quick preset"):
        with_preset(_example_quick())


def _example_quick():
    @dataclass(frozen=True)
    class Example:
        preset: str = "quick"

    return Example()
