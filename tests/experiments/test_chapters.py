"""Each chapter's `parameters` cell equals its parameter dataclass's defaults (the committed numbers come from the
defaults), and each chapter's summary() returns its closing numbers."""

import ast
import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = set(yaml.safe_load((ROOT / "book" / "variants.yml").read_text()))
# a variant is its source run with other parameters: its parameters are checked when it runs (from_namespace)
CHAPTERS = sorted(p for p in (ROOT / "book").glob("*.ipynb") if p.stem not in VARIANTS)


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _params_class(path: Path):
    """The dataclass that the chapter's second code cell builds with from_namespace(Class, globals())."""
    source = "".join(_code_cells(path)[1]["source"])
    cls = re.search(r"from_namespace\((\w+), globals\(\)\)", source).group(1)
    module = re.search(rf"from (qkcore\.experiments[\w.]*) import [^\n]*\b{cls}\b", source).group(1)
    return getattr(importlib.import_module(module), cls)


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_parameters_cell_equals_the_dataclass_defaults(chapter, monkeypatch):
    monkeypatch.chdir(ROOT / "book")  # where make book runs the chapters (paths such as results_dir are relative)
    cells = _code_cells(chapter)
    assert "parameters" in cells[0]["metadata"].get("tags", []), "the first code cell must be tagged parameters"
    namespace: dict = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        assert isinstance(node, ast.Assign), "the parameters cell holds plain assignments only"
        namespace[node.targets[0].id] = ast.literal_eval(node.value)
    cls = _params_class(chapter)
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    assert set(namespace) == set(defaults), f"cell names {sorted(namespace)} vs fields {sorted(defaults)}"
    built = cls(**namespace)  # lists become tuples, as papermill's values do
    assert built == cls(), "the parameters cell's values differ from the dataclass defaults"


def test_method_summary_reports_the_planted_rank():
    from qkcore.experiments.method import MethodParams, run_method, summary

    params = MethodParams(n_pairs=4000)
    numbers = summary(run_method(params), params)
    assert numbers["planted rank"] == numbers["recovered rank"] == 3
    assert numbers["largest principal angle, query side (deg)"] < 5
    assert 0 < numbers["relative error of ΔC with 4000 pairs"] < 0.2


def test_method_rank_follows_the_planted_rank():
    from qkcore.experiments.method import MethodParams, run_method

    for rank in (1, 5):
        assert run_method(MethodParams(feature_rank=rank, n_pairs=4000)).decomposition.rank == rank
