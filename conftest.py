"""The book's notebooks under nbval in parallel (`make nbval`: pytest-xdist, `-n 2`).

nbval makes one test item per code cell, run in one kernel per notebook, so a notebook's cells must stay together
and in order on one worker. With `--nbval` the scheduler below hands out lanes (scripts/chapters.py `lane`: the pages
of one real model share a lane, so their gathers are made once and two copies of the model never sit in memory at
once; any other page is a lane of its own), and the items are ordered lane by lane, longest lanes first. (xdist's
own `--dist loadgroup` cannot carry this: with pytest 9 its group suffix no longer reaches the node ids.) Without
xdist only the order changes. The pages that read the others' results (scripts/chapters.py `LAST`) belong to a
second run after this one, as the Makefile does; a parallel run that includes them beside other pages is refused."""

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


def pytest_configure(config):
    """Refuse a parallel run that has the results pages beside the pages they read (checked on the controller,
    from the paths given, before any worker starts)."""
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
