"""The toy chapters re-run at parameters other than their defaults (quick preset): every sentence's glued number
agrees with the run's printed summary() and verdict; every parameters cell is read by papermill as the chapter's
parameters (no parse warning, --help-notebook lists every field); the README's toy example passes validation.

    pytest -m slow tests/experiments/test_toy_chapters.py        # about 3–5 minutes on 2 cores
"""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
TOY = ("rank_recovery", "why_it_works", "cube", "causal_swaps")

# two non-default parameter sets per chapter, each with the quick preset; the first of rank_recovery is the run that
# once printed only "0/0" and NaN, the first of why_it_works the one whose text claimed "well under 1%" crosstalk
PARAMETER_SETS = {
    "rank_recovery": [
        {"preset": "quick", "d_heads": [12, 6], "latent_dims": [2, 9]},
        {"preset": "quick", "latent_dims": [4, 6], "seed": 3, "tasks": ["gaussian"]},
    ],
    "why_it_works": [
        {"preset": "quick", "r1": 4, "r2": 6, "d_head": 12, "seed": 3},
        {"preset": "quick", "task": "gaussian", "early_steps": 100},
    ],
    "cube": [
        {"preset": "quick", "r1": 4, "r2": 6},
        {"preset": "quick", "task": "gaussian", "seed": 3},
    ],
    "causal_swaps": [
        {"preset": "quick", "seed": 3, "r2": 4},
        {"preset": "quick", "task": "gaussian", "d_head": 12},
    ],
}


def _params_class(chapter: str):
    from qkcore.experiments.toy.causal_swaps import SwapParams
    from qkcore.experiments.toy.cube import CubeParams
    from qkcore.experiments.toy.rank_recovery import RankRecoveryParams
    from qkcore.experiments.toy.why_it_works import WhyItWorksParams

    return {
        "rank_recovery": RankRecoveryParams,
        "why_it_works": WhyItWorksParams,
        "cube": CubeParams,
        "causal_swaps": SwapParams,
    }[chapter]


def glued(nb: dict) -> dict[str, str]:
    """{name: text} of every value the notebook glued (myst-nb's glue, as plain text without quotes)."""
    out = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                data = o["data"]
                text = data.get("text/plain") or data.get("application/papermill.record/text/plain")
                text = "".join(text) if isinstance(text, list) else text
                out[name] = text.strip("'\"")
    return out


def printed_summary(nb: dict) -> tuple[dict[str, str], dict[str, str]]:
    """The summary cell's printed lines as {key: value}, and its verdicts as {claim: verdict} (lower case)."""
    cell = next(c for c in nb["cells"] if "record_verdicts(" in "".join(c["source"]))
    text = "".join("".join(o["text"]) for o in cell["outputs"] if o.get("output_type") == "stream")
    lines = []
    for line in text.splitlines():
        if line.startswith("    ") and lines:
            lines[-1] += " " + line.strip()  # a wrapped line
        else:
            lines.append(line)
    numbers, verdicts = {}, {}
    for line in lines:
        if line and not line.startswith(" ") and ": " in line:
            key, value = line.rsplit(": ", 1)
            if value.isupper():
                verdicts[key] = value.lower()
            else:
                numbers[key] = value
    return numbers, verdicts


def _check_rank_recovery(g: dict, numbers: dict, verdicts: dict, params: dict):
    for d in params.get("d_heads", (16, 8)):
        assert f"at d_head = {d}, {numbers[f'd_head {d}, r1 + r2 <= {d}: exact']} cells" in g["rr_exact"]
        assert "0/0" not in g["rr_exact"] and "nan" not in g["rr_exact"].lower()
    assert g["rr_untrained_exact"] == numbers["untrained control, r1 + r2 fits: exact"]
    assert g["rr_early-stopped_exact"] == numbers["early-stopped control, r1 + r2 fits: exact"]
    assert g["rr_shortfall"] == numbers["where r1 + r2 fits: largest shortfall from the reference"]
    assert g["rr_models"] == numbers["models"]
    assert list(verdicts.values()) == [g["rr_verdict"]]


def _check_why_it_works(g: dict, numbers: dict, verdicts: dict, params: dict):
    assert float(g["why_crosstalk"]) == pytest.approx(float(numbers["crosstalk of G"]), abs=1e-4)
    assert float(g["why_untrained_crosstalk"]) == pytest.approx(
        float(numbers["untrained control: crosstalk of G"]), abs=1e-3
    )
    assert float(g["why_max_angle"].rstrip("°")) == pytest.approx(
        float(numbers["largest principal angle to the analytic spans (deg)"]), abs=0.01
    )
    assert float(g["why_error"]) == max(
        float(numbers[f"relative error of ΔC vs closed form, {f}"]) for f in ("z1", "z2")
    )
    assert list(verdicts.values()) == [g["why_analytic_verdict"], g["why_verdict"]]


def _check_cube(g: dict, numbers: dict, verdicts: dict, params: dict):
    assert float(g["cube_key_edges"]) == pytest.approx(float(numbers["key means: edge ratio"]), abs=0.006)
    lo, hi = (float(x) for x in numbers["key means: corner angles (deg)"].split("–"))
    assert g["cube_key_angles"] == f"{lo:.0f}°–{hi:.0f}°"
    assert float(g["cube_min_cos"]) == float(numbers["smallest cosine(query mean, key mean) of a code"])
    ratio = numbers.get("untrained control: key means: edge ratio")
    if ratio is not None:
        assert g["cube_untrained"].startswith(f"edge ratio {float(ratio):.2f}")
    assert list(verdicts.values()) == [g["cube_verdict"]]


def _check_causal_swaps(g: dict, numbers: dict, verdicts: dict, params: dict):
    rank = int(g["cs_rank12"])
    assert float(g["cs_flip_both"]) == pytest.approx(float(numbers[f"z1+z2 (rank {rank}): flip rate"]), abs=0.006)
    assert float(g["cs_random_same"]) == pytest.approx(
        float(numbers[f"random {rank}-d (rank {rank}): flip rate"]), abs=0.006
    )
    key = next(k for k in numbers if k.startswith("untrained control: flip rate z1+z2"))  # its own rank
    flips = numbers[key].split(", ")
    assert g["cs_untrained"] == f"{float(flips[0]):.2f} (random {float(flips[1]):.2f})"
    assert list(verdicts.values()) == [g["cs_verdict"]]


CHECKS = {
    "rank_recovery": _check_rank_recovery,
    "why_it_works": _check_why_it_works,
    "cube": _check_cube,
    "causal_swaps": _check_causal_swaps,
}
CASES = [(chapter, i) for chapter in TOY for i in range(len(PARAMETER_SETS[chapter]))]


@pytest.mark.slow
@pytest.mark.parametrize("chapter,index", CASES, ids=[f"{c}-{i}" for c, i in CASES])
def test_chapter_words_follow_its_own_run(chapter, index, tmp_path):
    import papermill

    params = PARAMETER_SETS[chapter][index]
    out = tmp_path / f"{chapter}.ipynb"
    papermill.execute_notebook(
        str(BOOK / f"{chapter}.ipynb"),
        str(out),
        parameters=params,
        cwd=str(tmp_path),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = json.loads(out.read_text())
    g = glued(nb)
    # every glue role in the page's text has a value from this run
    roles = {
        m
        for c in nb["cells"]
        if c["cell_type"] == "markdown"
        for m in re.findall(r"\{glue:text\}`([^`]+)`", "".join(c["source"]))
    }
    assert roles <= set(g), f"glued names missing: {sorted(roles - set(g))}"
    numbers, verdicts = printed_summary(nb)
    assert all(
        v
        in {
            "reproduced",
            "matched by a control",
            "a control does better",
            "not reproduced",
            "not testable here",
            "undefined (floor)",
        }
        for v in verdicts.values()
    )
    CHECKS[chapter](g, numbers, verdicts, params)
    assert not (tmp_path / "results").exists()  # a re-run with other parameters records nothing


@pytest.mark.parametrize("chapter", (*TOY, "method"))
def test_papermill_reads_every_parameter(chapter):
    """papermill parses the parameters cell without a warning and lists every field of the chapter's dataclass."""
    from papermill.inspection import _infer_parameters
    from papermill.iorw import load_notebook_node

    nb = load_notebook_node(str(BOOK / f"{chapter}.ipynb"))
    with _no_warnings():
        inferred = {p.name for p in _infer_parameters(nb)}
    if chapter == "method":
        from qkcore.experiments.method import MethodParams as cls
    else:
        cls = _params_class(chapter)
    assert inferred == {f.name for f in dataclasses.fields(cls)}


class _no_warnings:
    def __enter__(self):
        import logging

        self.records = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        logging.getLogger("papermill").addHandler(self.handler)

    def __exit__(self, *exc):
        import logging

        logging.getLogger("papermill").removeHandler(self.handler)
        messages = [r.getMessage() for r in self.records if r.levelno >= logging.WARNING]
        assert not messages, messages


def test_readme_toy_example_passes_validation():
    """The README's rank-recovery re-run, its -p/-y options read as papermill reads them, builds valid parameters."""
    import yaml

    from qkcore.params import from_namespace

    readme = (ROOT / "README.md").read_text()
    command = re.search(r"book/rank_recovery\.ipynb (?:\S+) \\\n(.*)", readme).group(1)
    words = shlex.split(command)
    given = {}
    for flag, a, *rest in (words[i : i + 3] for i in range(len(words)) if words[i] in ("-p", "-y")):
        if flag == "-p":
            given[a] = yaml.safe_load(rest[0])
        else:
            given.update(yaml.safe_load(a))
    params = from_namespace(_params_class("rank_recovery"), given)
    assert params.latent_dims == (4, 6) and params.seed == 3
