"""benchmarks/chapters.py reads a chapter's stated runtime and its preset parameter, and flags what issue 9 asks."""

from benchmarks.chapters import Run, has_preset, page_class, runtime_figures, stated_for, stated_runtime


def _md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": [text]}


def test_stated_runtime_in_seconds_and_minutes():
    line = '**Runtime:** about 40 s at the defaults on 2 cores; about 12 s with preset = "quick".'
    assert stated_runtime({"cells": [_md("# Title"), _md("Intro.\n\n" + line)]}) == (40.0, 12.0)
    line = '**Runtime:** about 3.5 min at the defaults on 2 cores; about 1 min with `preset = "quick"`.'
    assert stated_runtime({"cells": [_md(line)]}) == (210.0, 60.0)
    assert stated_runtime({"cells": [_md("**Runtime:** about 8 s at the defaults on 2 cores.")]}) == (8.0, None)
    assert stated_runtime({"cells": [_md("Runs in about 8 s.")]}) == (None, None)


def test_preset_is_read_from_the_parameters_cell_only():
    params = {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": ['seed = 0\npreset = "full"\n']}
    other = {"cell_type": "code", "metadata": {}, "source": ['preset = "quick"\n']}
    assert has_preset({"cells": [params]})
    assert not has_preset({"cells": [other, {**params, "source": ["seed = 0\n"]}]})


def test_flags():
    assert Run("cube", "defaults", stated=40.0, measured=50.0).flags() == []
    assert "off by more than 50%" in Run("cube", "defaults", stated=40.0, measured=100.0).flags()[0]
    assert "off by more than 50%" in Run("cube", "defaults", stated=200.0, measured=100.0).flags()[0]
    assert "not stated" in Run("cube", "defaults", stated=None, measured=10.0).flags()[0]
    over = Run("cube", "quick", stated=25.0, measured=25.0).flags()
    assert "over the 20 s target of an organism or toy page" in over[0]
    assert Run("cube", "quick", stated=18.0, measured=18.0).flags() == []
    assert "over the 60 s target" in Run("cube", "defaults", stated=70.0, measured=70.0).flags()[0]
    qwen = "binding_subspaces_qwen"
    assert Run(qwen, "quick, cold cache", stated=55.0, measured=55.0, page="real model").flags() == []
    over = Run(qwen, "quick, cold cache", stated=77.0, measured=77.0, page="real model").flags()
    assert over == [f"{qwen} (quick, cold cache): 77 s, over the 60 s target of a real model page"]
    assert Run(qwen, "defaults", stated=170.0, measured=170.0, page="real model").flags() == []
    assert "over the 180 s target" in Run(qwen, "defaults", stated=200, measured=200, page="real model").flags()[0]
    # a warm run need not be stated; when it is, it is compared like any other
    assert Run(qwen, "quick, warm cache", stated=None, measured=16.0, page="real model", must_state=False).flags() == []
    assert "off by" in Run(qwen, "quick, warm cache", stated=80.0, measured=16.0, page="real model").flags()[0]
    assert Run("cube", "quick", stated=None, measured=None, error="failed: boom").flags() == [
        "cube (quick): failed: boom"
    ]


def test_a_page_over_the_memory_target_is_flagged():
    from benchmarks.chapters import MEMORY_LIMIT_GB, Run

    assert Run("attribution_qwen", "defaults", stated=60.0, measured=60.0, peak_gb=3.4).flags() == []
    over = Run("attribution_qwen", "defaults", stated=60.0, measured=60.0, peak_gb=MEMORY_LIMIT_GB + 0.4).flags()
    assert over and "peak memory 4.40 GB, over 4.0 GB" in over[0]


QWEN_LINE = (
    "**Runtime:** about 2 min at these parameters on 2 cores with the gather cache cold (every core; on a new machine "
    "the first load adds about 40 s to assemble and dequantise the model); about 25 s with the gather cache warm; "
    'about 65 s with preset = "quick" (on every core, its gathers cold; about 25 s warm); peak memory 3.9 GB.'
)


def test_runtime_figures_are_told_apart_by_preset_and_cache_state():
    assert runtime_figures(QWEN_LINE) == {
        ("defaults", "cold"): 120.0,
        ("defaults", None): 40.0,  # in the parentheses of a defaults figure: a defaults figure naming no state
        ("defaults", "warm"): 25.0,
        ("quick", "cold"): 65.0,
        ("quick", "warm"): 25.0,  # in the parentheses after the quick figure: quick, not the defaults
    }
    smollm2 = (
        "**Runtime:** about 70 s at these parameters on 2 cores with the gather cache warm; about 3.5 min cold on a "
        'new machine; about 50 s with preset = "quick" (on every core, its gathers cold; about 25 s warm).'
    )
    assert runtime_figures(smollm2) == {
        ("defaults", "warm"): 70.0,
        ("defaults", "cold"): 210.0,
        ("quick", "cold"): 50.0,
        ("quick", "warm"): 25.0,
    }
    organism = '**Runtime:** about 35 s at the defaults on 2 cores, about 18 s with preset = "quick" (gathers cold; 20'
    assert runtime_figures(organism) == {("defaults", None): 35.0, ("quick", "cold"): 18.0}


def test_each_run_is_compared_with_the_figure_for_its_cache_state():
    nb = {"cells": [_md("# Title"), _md(QWEN_LINE + "\n\nMore.")]}
    assert stated_runtime(nb) == (120.0, 65.0)
    assert [stated_for(nb, "defaults", c) for c in (None, "cold", "warm")] == [120.0, 120.0, 25.0]
    assert [stated_for(nb, "quick", c) for c in (None, "cold", "warm")] == [65.0, 65.0, 25.0]
    plain = {"cells": [_md('**Runtime:** about 40 s at the defaults on 2 cores; about 12 s with preset = "quick".')]}
    assert [stated_for(plain, "defaults", c) for c in (None, "cold", "warm")] == [40.0, 40.0, None]
    assert stated_for({"cells": [_md("No runtime here.")]}, "quick", "cold") is None


def test_a_page_is_a_real_model_page_when_its_model_parameter_names_one():
    def params(source):
        return {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": [source]}]}

    assert page_class(params('model = "qwen2.5-coder-0.5b-instruct"\nseed = 0\n')) == "real model"
    assert page_class(params('model = "organism"   # or a .gguf file\n')) == "organism"
    assert page_class(params("seed = 0\n")) == "organism"  # the toy chapters
    assert page_class({"cells": [_md("# A page without parameters")]}) == "organism"
