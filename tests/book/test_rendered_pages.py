"""Every page of the built book, opened in headless Chromium at 1400 px, as a reader sees it: no math error, no
missing image, no broken internal link, no console error, no code or output block wider than its column, no figure
whose smallest text shows under 9 px or that is drawn wider than the column, and every figure enlargeable by a click.
Figures without font metadata (drawn before qkcore.plotting.style recorded it) are warnings until
QKCORE_STRICT_FIGURE_FONTS=1, which the lead sets once every chapter is re-executed.

    make html && make browser        # or: QKCORE_BOOK_HTML=_build/html .venv/bin/python -m pytest -s tests/book

One browser visits all pages (a session fixture), then one test per page reports that page's findings; the full
per-page report is printed and written to _build/browser-report.txt. tests/book/rendered.py says what each check
measures; tests/book/test_planted_defects.py shows each check failing on a planted defect.
"""

import pytest

from tests.book.conftest import book_html
from tests.book.rendered import check_site, format_report, site_pages

HTML = book_html()
PAGES = site_pages(HTML) if HTML is not None and HTML.is_dir() else []


@pytest.fixture(scope="session")
def site(chromium):
    if not (HTML / "index.html").exists():
        pytest.fail(f"no built book at {HTML}: run `make html` first")
    reports = check_site(HTML, executable=chromium)
    text = format_report(reports)
    print("\n" + text)
    (HTML.parent / "browser-report.txt").write_text(text + "\n")
    return reports


def test_the_book_has_pages(chromium):
    assert PAGES, f"no HTML pages under {HTML}: run `make html` first"
    assert any(p.startswith("book/") for p in PAGES), "no chapter pages were built"


@pytest.mark.parametrize("page", PAGES or ["(no build)"])
def test_page_renders_cleanly(site, page):
    report = site[page]
    if not report.ok:
        pytest.fail(report.details(), pytrace=False)
