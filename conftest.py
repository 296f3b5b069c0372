"""The book's notebooks under nbval in parallel (`make nbval`: pytest-xdist, `-n 2`).

nbval makes one test item per code cell, run in one kernel per notebook, so a notebook's cells must stay together
and in order on one worker. With `--nbval` the scheduler below hands out lanes (scripts/chapters.py `lane`: the pages
of one real model share a lane, so their gathers are made once and two copies of the model never sit in memory at
once; any other page is a lane of its own), and the items are ordered lane by lane, longest lanes first. (xdist's
own `--dist loadgroup` cannot carry this: with pytest 9 its group suffix no longer reaches the node ids.) Without
xdist only the order changes. The pages that read the others' results (scripts/chapters.py `LAST`) belong to a
second run after this one, as the Makefile does; a parallel run that includes them beside other pages is refused.

Before nbval compares a cell's outputs, decimals that differ only as float32 arithmetic on another CPU makes them
differ (one unit in their last printed place, or the cell's declared tolerance) are taken at their committed value
(scripts/numeric_outputs.py); the run ends with a list of every such decimal. Words, integers and larger moves fail."""

import copy
import os
from pathlib import Path

import pytest


def _page(nodeid: str) -> Path:
    """The notebook of an nbval item's node id ("book/cube.ipynb::Cell 3")."""
    return Path(nodeid.split("::", 1)[0])


def pytest_xdist_make_scheduler(config, log):
    """Under `--nbval`, schedule whole lanes: every cell of a lane's notebooks goes to one worker, in order."""
    if not config.getoption("nbval", False):
        return None  # the unit tests: xdist's default scheduling
    from xdist.scheduler import LoadScopeScheduling

    from scripts.chapters import lane

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane(_page(nodeid))

    return LaneScheduling(config, log)


def _numbers_taken_as_committed(output, committed, item, tolerance: float, moved: list) -> object:
    """`output` (re-executed) with each text that differs from `committed`'s only by decimals within the rule of
    scripts/numeric_outputs.py replaced by the committed text; what moved is appended to `moved`."""
    from scripts.numeric_outputs import numbers_within

    if output.get("output_type") != committed.get("output_type") or output.get("name") != committed.get("name"):
        return output
    output = copy.deepcopy(output)
    if output.get("output_type") == "stream":
        places = [(output, committed, "text")]
    else:
        data, committed_data = output.get("data", {}), committed.get("data", {})
        places = [(data, committed_data, mime) for mime in data if mime in committed_data]
    for mine, theirs, key in places:
        new, old = ("".join(v) if isinstance(v, list) else v for v in (mine[key], theirs[key]))
        if not isinstance(new, str) or not isinstance(old, str):
            continue
        new_text, old_text = item.sanitize(new), item.sanitize(old)
        if new_text == old_text:
            continue
        found = numbers_within(old_text, new_text, tolerance)
        if found:
            mine[key] = theirs[key]
            moved.extend(found)
    return output


def _install_numeric_rule() -> None:
    """Wrap nbval's output comparison with the rule of scripts/numeric_outputs.py (once per process)."""
    from nbval.plugin import IPyNbCell

    from scripts.numeric_outputs import cell_tolerance

    compare = IPyNbCell.compare_outputs
    if getattr(compare, "numeric_rule", False):
        return

    def compare_outputs(self, test, ref, skip_compare=None):
        tolerance = cell_tolerance(self.cell.get("metadata", {}))
        moved = []
        aligned = [_numbers_taken_as_committed(t, r, self, tolerance, moved) for t, r in zip(test, ref)]
        same = compare(self, aligned + list(test[len(ref) :]), ref, skip_compare)
        if same and moved:
            self.user_properties.append(("numbers_within_rule", [(m.committed, m.executed) for m in moved]))
        return same

    compare_outputs.numeric_rule = True
    IPyNbCell.compare_outputs = compare_outputs


def pytest_terminal_summary(terminalreporter):
    """List the decimals that passed only by the rule of scripts/numeric_outputs.py."""
    lines = []
    for report in terminalreporter.stats.get("passed", []):
        for name, pairs in getattr(report, "user_properties", []):
            if name == "numbers_within_rule":
                changes = ", ".join(f"{old} -> {new}" for old, new in pairs)
                lines.append(f"{report.nodeid}: {changes}")
    if lines:
        terminalreporter.write_sep(
            "-", f"decimals off in their last printed place or within the cell's tolerance ({len(lines)} cells)"
        )
        for line in lines:
            terminalreporter.write_line(line)


def pytest_configure(config):
    """Under `--nbval`, compare numbers by scripts/numeric_outputs.py and run the pages at one torch thread, as they
    were made (in every process). Refuse a parallel run that
    has the results pages beside the pages they read (checked on the controller, from the paths given, before any
    worker starts)."""
    if config.getoption("nbval", False):
        _install_numeric_rule()
        os.environ["QKCORE_THREADS"] = "1"  # the pages re-executed as they were made (qkcore/experiments/chapter.py)
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None) or not config.getoption("nbval"):
        return
    from scripts.chapters import LAST

    pages = {Path(arg.split("::", 1)[0]) for arg in config.args if arg.endswith(".ipynb") or ".ipynb::" in arg}
    late = sorted(str(p) for p in pages if p.stem in LAST)
    if late and len(pages) > len(late):
        raise pytest.UsageError(
            f"{', '.join(late)}: {'this page reads' if len(late) == 1 else 'these pages read'} the results the other "
            "pages record; run it after them, in a pytest run of its own (as `make nbval` does), not beside them in "
            "a parallel run"
        )


def pytest_collection_modifyitems(config, items):
    """Notebook cells lane by lane, longest lanes first (each notebook's cells keep their order)."""
    notebooks = [item for item in items if item.path.suffix == ".ipynb"]
    if not notebooks:
        return
    from scripts.chapters import lanes

    rank = {str(nb): i for i, lane_pages in enumerate(lanes()) for nb in lane_pages}
    items.sort(key=lambda item: rank.get(str(_page(item.nodeid)), len(rank)))
