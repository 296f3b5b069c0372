"""The browser check of the rendered book runs only when asked: `make browser` (part of `make test`, after `make html`)
sets QKCORE_BOOK_HTML to the built HTML folder. Without it, the browser tests are skipped, so `pytest tests` before a
build neither fails on a missing `_build/html` nor checks a stale one."""

import os
from pathlib import Path

import pytest

from tests.book.rendered import chromium_path

ROOT = Path(__file__).resolve().parents[2]


def book_html() -> Path | None:
    value = os.environ.get("QKCORE_BOOK_HTML")
    return (ROOT / value).resolve() if value else None


@pytest.fixture(scope="session")
def chromium() -> str:
    if book_html() is None:
        pytest.skip("browser check: set QKCORE_BOOK_HTML=_build/html after `make html` (`make browser` does)")
    path = chromium_path()
    if path is None:
        pytest.fail("no chromium on PATH: `apt-get install -y chromium` (.ci/run installs it when missing)")
    return path
