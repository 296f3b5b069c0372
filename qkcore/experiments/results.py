"""The closing numbers of each executed chapter, written where the results-at-a-glance page reads them, so that the
page never retypes a number: a re-execution of the book updates both.

    numbers = record("cube", summary(result), P)   # writes book/results/cube.json when P holds the defaults
    print_summary(numbers)
    load_results("book/results")["cube"]["key means: edge ratio"]

Only the book's own runs write: a chapter at its default parameters (to <chapter>.json), and a variant of it listed in
variants.yml beside the results folder (book/variants.yml) with exactly that variant's parameters (to <variant>.json).
A re-run with any other parameters (a class's quick preset, a researcher's model) leaves the book's numbers alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

RESULTS_DIR = "results"  # relative to the chapter's working directory (book/, as `make book` runs it)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot record {type(value).__name__} {value!r}: give numbers, strings, lists or dicts")


def book_run_name(chapter: str, params, directory: str | Path = RESULTS_DIR) -> str | None:
    """The name the book records this run under: `chapter` at the defaults, a variant's name when `params` are that
    variant's, None for any other run."""
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"params must be the chapter's parameter dataclass, got {type(params).__name__}")
    if params == type(params)():
        return chapter
    variants_file = Path(directory).parent / "variants.yml"
    if variants_file.is_file():
        import yaml

        for name, variant in (yaml.safe_load(variants_file.read_text()) or {}).items():
            if variant.get("source") != chapter:
                continue
            given = dict(variant["parameters"])
            if variant.get("quick"):  # the page's parameters cell holds its quick values too (scripts/make_variant.py)
                given["quick_values"] = dict(variant["quick"])
            if dataclasses.replace(type(params)(), **given) == params:
                return name
    return None


def record(chapter: str, numbers: dict, params, directory: str | Path = RESULTS_DIR) -> dict:
    """Write `numbers` to directory/<name>.json when this is one of the book's own runs (see book_run_name); return
    `numbers`."""
    if not chapter.replace("_", "").isalnum():
        raise ValueError(f"chapter must be a plain name like 'filter_heads', got {chapter!r}")
    name = book_run_name(chapter, params, directory)
    if name is not None:
        path = Path(directory) / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomically (a temporary file renamed into place): make test's parallel nbval workers and make book's
        # parallel lanes re-record pages while others read the folder.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(_plain(numbers), indent=1, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return numbers


def load_results(directory: str | Path = RESULTS_DIR) -> dict[str, dict]:
    """{chapter: numbers} for every chapter that has recorded its numbers."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))}
