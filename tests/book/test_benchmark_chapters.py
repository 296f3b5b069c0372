"""benchmarks/chapters.py reads a chapter's stated runtime and its preset parameter, and flags what issue 9 asks."""

from benchmarks.chapters import Run, has_preset, stated_runtime


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
    assert "over the 60 s target" in Run("cube", "quick", stated=70.0, measured=70.0).flags()[0]
    assert Run("cube", "quick", stated=None, measured=None, error="failed: boom").flags() == [
        "cube (quick): failed: boom"
    ]


def test_a_page_over_the_memory_target_is_flagged():
    from benchmarks.chapters import MEMORY_LIMIT_GB, Run

    assert Run("attribution_qwen", "defaults", stated=60.0, measured=60.0, peak_gb=3.4).flags() == []
    over = Run("attribution_qwen", "defaults", stated=60.0, measured=60.0, peak_gb=MEMORY_LIMIT_GB + 0.4).flags()
    assert over and "peak memory 4.40 GB, over 4.0 GB" in over[0]
