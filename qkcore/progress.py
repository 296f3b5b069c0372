"""Progress bars for the book's long loops (the gathers of q and k, the swaps, the binding contrasts, the toy grid's
training): on the page's stderr when a reader runs a chapter, so that a 10-minute cell on a new model shows how far
it is; off when the book executes itself, so that no committed output and no nbval comparison holds a bar.

    for idx in steps(iter_batches(n, 50), "gather q,k", total=n_batches, after=gather_cache.computed): ...
    QKCORE_PROGRESS=0 python -m papermill ...      # no bars (what `make book`, `make nbval` and the tests set)

One switch, the environment variable QKCORE_PROGRESS: unset or "1" shows bars, "0" hides them; anything else is an
error. An environment variable rather than a chapter parameter, because a bar changes no number and papermill passes
the parent's environment to the kernel. Bars are plain `tqdm.std.tqdm` on sys.stderr (tqdm.auto would need
ipywidgets in Jupyter). A loop whose work may all come from the gather cache (qkcore.lm.gather_cache) passes `after`:
its bar appears only once a gather is really computed, so a warm cache shows no bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

ENV = "QKCORE_PROGRESS"
_VALUES = {"1": True, "0": False}
T = TypeVar("T")


def enabled() -> bool:
    """Whether progress bars are shown: QKCORE_PROGRESS unset or "1" → True, "0" → False."""
    value = os.environ.get(ENV)
    if value is None:
        return True
    if value.strip() not in _VALUES:
        raise ValueError(
            f'{ENV}={value!r} is not a valid value: set it to "1" (show progress bars, the default) or "0" (no bars, '
            "as the book's own execution runs), or unset it"
        )
    return _VALUES[value.strip()]


def steps(
    iterable: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "batch",
    after: Callable[[], int] | None = None,
) -> Iterator[T]:
    """Yield the items of `iterable`, with a tqdm bar `desc` on stderr when `enabled()`. total: the number of items
    (default len(iterable) where it has one). after: a counter of real work (e.g. gather_cache.computed); the bar
    appears only once it has changed since the loop began (items done by then are counted), so a loop served from a
    cache draws nothing. The bar is closed when the loop ends or is left (break, exception)."""
    if not isinstance(desc, str) or not desc:
        raise TypeError(f"desc must be a non-empty string naming the loop, got {desc!r}")
    if not enabled():
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    start = after() if after is not None else None
    bar = None if after is not None else _bar(desc, total, unit, 0)
    done = 0
    try:
        for item in iterable:
            try:
                yield item
            except GeneratorExit:  # the loop was left after this item (break): count it
                if bar is not None:
                    bar.update(1)
                raise
            done += 1
            if bar is not None:
                bar.update(1)
            elif after() != start:  # the first item that was really computed: show the bar from here on
                bar = _bar(desc, total, unit, done)
    finally:
        if bar is not None:
            bar.close()


def _bar(desc: str, total: int | None, unit: str, initial: int):
    from tqdm.std import tqdm

    # mininterval 1 s: papermill keeps every redraw as its own stream output, so a 10-minute cell keeps ≤ 600 of them
    return tqdm(desc=desc, total=total, unit=unit, initial=initial, file=sys.stderr, mininterval=1.0)


def gathers(iterable: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """`steps` for a loop of gather_qk calls (one per batch): no bar while every gather is read from the cache."""
    from qkcore.lm import gather_cache

    return steps(iterable, desc, total, "batch", gather_cache.computed)
