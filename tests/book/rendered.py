"""Open every page of a built Jupyter Book in headless Chromium and list what a reader would see broken.

    report = check_site(Path("_build/html"))       # {page: PageReport}, one browser for all pages
    print(format_report(report))                    # per page: what was checked and what was found

Per page it finds: math that MathJax rendered as an error (`merror`, "Math input error", or an undefined macro shown
in red) or left untypeset; math source holding a control character or a tab (an escape such as `\\top` that Python
or JSON ate); an image that did not load or whose file is missing; an internal link to a missing file or a missing
#anchor; console errors, uncaught exceptions and failed requests; a code or output block, table or display equation
wider than its column (scrollWidth > clientWidth + 3 px, or sticking out of the article's column). The page is laid
out at 1400 x 1000 px, as a reader's laptop shows it.

Figures (every PNG image in a chapter's column: notebook outputs and {figure}s) are measured for the size a reader
sees. qkcore.plotting.style records in each PNG the smallest font of the figure (`qkcore:min-font-pt`, points) and the
dpi it was saved at (`qkcore:dpi`). An s-point font saved at d dpi is s·d/72 px tall in the PNG, and the page shows
the PNG at (shown width / PNG width) of its size, so the reader sees it at

    shown px = s × d/72 × (shown width / natural width)      (CSS px; the check runs at device pixel ratio 1)

and the check fails below MIN_FONT_PX = 9 px (the book style's 9-pt ticks on an 8-in figure show at ~11.5 px in
the 768-px column). It also fails on a figure drawn wider than the column at its dpi (PNG width > MAX_WIDTH_IN = 8.5
in: the style's WIDTH = 8 in plus what a tight bounding box adds) and shown shrunk. A figure PNG with no font
metadata (drawn before the style recorded it, or not through the style) is a warning, and so is its width, or both
are failures with strict_fonts=True / QKCORE_STRICT_FIGURE_FONTS=1. Every figure must also carry the `qk-zoomable`
class that _static/figure-zoom.js sets (click to enlarge).

Debian's `chromium` is driven by Playwright (`executable_path`), so Playwright needs no browser download. Used by
tests/book/test_rendered_pages.py (the rendered book) and tests/book/test_planted_defects.py (a small book with each
defect planted, to show every check can fail).
"""

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT_STATIC = Path(__file__).resolve().parents[2] / "_static"  # the book's _static/ (click to enlarge)
VIEWPORT = {"width": 1400, "height": 1000}
SLACK_PX = 3  # sub-pixel rounding; a clipped character is ~8 px
MIN_FONT_PX = 9.0  # smallest font a figure may show, in CSS px at the size the page shows it
MAX_WIDTH_IN = 8.5  # widest figure PNG, in inches at its dpi: qkcore.plotting.style.WIDTH (8 in) + tight-bbox slack
FONT_KEY, DPI_KEY = "qkcore:min-font-pt", "qkcore:dpi"  # the PNG text chunks qkcore.plotting.style writes
# Pages Sphinx generates for itself, with no book content: the search page and the (empty) general index. They are
# still loaded and checked for console errors, broken links and missing images; only the overflow check skips them
# (the search page's layout holds no code, tables or outputs).
GENERATED_PAGES = {"search.html", "genindex.html"}
# Errors every Jupyter Book 1 page raises, from the toolchain rather than the book, that a reader never sees:
# - jupyter-book 1.0.4 with sphinx-thebe 0.3.1 writes thebe's inline config script twice into every page (its
#   `env-before-read-docs` hook runs twice; togglebutton's inline script is duplicated the same way), and the second
#   `const THEBE_JS_URL` throws. thebe (live code cells) is not used by this book; nothing else depends on that script.
# - pydata-sphinx-theme (under sphinx-book-theme 1.3.0) logs "Got invalid theme mode: ." on a reader's first visit
#   (empty localStorage, no `default_mode` theme option) and falls back to "auto", which is what it should do.
# Matched exactly, so any other console error or exception still fails.
TOOLCHAIN_ERRORS = {
    "Identifier 'THEBE_JS_URL' has already been declared",
    "Got invalid theme mode: . Resetting to auto.",
}

# The script run in each page once it has loaded: waits for MathJax's first typeset and for every image, then measures.
_MEASURE = r"""
async () => {
  const out = {math: [], mathCount: 0, images: [], links: [], ids: [], overflow: [], text_errors: 0};
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
    const items = Array.from(MathJax.startup.document.math);
    out.mathCount = items.length;
    for (const item of items) {
      let mml = '';
      try { mml = MathJax.startup.toMML(item.root); } catch (e) { mml = '<merror>' + e + '</merror>'; }
      const reasons = [];
      if (/<merror/.test(mml)) reasons.push('merror');
      if (/mathcolor="red"/.test(mml)) reasons.push('red text (an undefined macro)');
      if (/[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(item.math)) reasons.push('control character in the source');
      if (/\t/.test(item.math)) reasons.push('tab in the source (an eaten \\top, \\theta, \\times or \\tau?)');
      if (reasons.length) {
        const err = (item.typesetRoot && item.typesetRoot.querySelector('[data-mjx-error]'));
        out.math.push({tex: item.math, reasons: reasons, message: err ? err.getAttribute('data-mjx-error') : ''});
      }
    }
  }
  // Math MathJax never reached (it failed to load, or the element was skipped): raw \( \) left in the page.
  for (const el of document.querySelectorAll('.math')) {
    if (!el.querySelector('mjx-container')) out.math.push({tex: el.textContent.slice(0, 120), reasons: ['not typeset'],
                                                            message: ''});
  }
  out.text_errors = (document.body.innerText.match(/Math input error/g) || []).length;
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener('load', resolve); img.addEventListener('error', resolve); })));
  const column = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const figures = new Set(column.querySelectorAll('.cell_output img, figure img'));
  for (const img of document.images) {
    out.images.push({src: img.getAttribute('src'), url: img.src, naturalWidth: img.naturalWidth,
                     alt: img.getAttribute('alt') || '', figure: figures.has(img),
                     shownWidth: img.getBoundingClientRect().width, zoomable: img.classList.contains('qk-zoomable'),
                     caption: ((img.closest('figure') || {}).innerText || '').trim().slice(0, 60)});
  }
  for (const a of document.querySelectorAll('a[href]')) out.links.push({href: a.getAttribute('href'), url: a.href,
                                                                          text: a.textContent.trim().slice(0, 60)});
  out.ids = Array.from(document.querySelectorAll('[id]'), el => el.id)
    .concat(Array.from(document.querySelectorAll('a[name]'), el => el.getAttribute('name')));
  // Overflow: blocks inside the article column whose content is wider than the block, or that stick out of the column.
  const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const columnRight = article.getBoundingClientRect().right;
  const selectors = ['pre', 'div.cell_output', 'div.output', 'table', '.pst-scrollable-table-container',
                     '.table-wrapper', 'div.math', 'mjx-container[display="true"]', 'div.highlight'];
  const candidates = Array.from(article.querySelectorAll(selectors.join(',')));
  const over = candidates.filter(el => {
    if (el.clientWidth === 0) return false;  // hidden (a collapsed toggle)
    const rect = el.getBoundingClientRect();
    return el.scrollWidth > el.clientWidth + SLACK || rect.right > columnRight + SLACK;
  });
  const cells = Array.from(article.querySelectorAll('div.cell'));
  for (const el of over) {
    if (over.some(other => other !== el && el.contains(other))) continue;  // report the innermost block only
    const cell = el.closest('div.cell');
    const where = cell ? ('code cell ' + (cells.indexOf(cell) + 1) + ' of ' + cells.length +
                          (el.closest('.cell_output') ? ', output' : ', source')) : 'markdown';
    const lines = el.innerText.split('\n');
    const longest = lines.reduce((a, b) => (b.length > a.length ? b : a), '');
    out.overflow.push({tag: el.tagName.toLowerCase() + (el.className && typeof el.className === 'string' ?
                         '.' + el.className.trim().split(/\s+/)[0] : ''),
                       where: where, scrollWidth: el.scrollWidth, clientWidth: el.clientWidth,
                       sticksOut: Math.round(el.getBoundingClientRect().right - columnRight),
                       longest: longest.slice(0, 100), longestChars: longest.length});
  }
  return out;
}
""".replace("SLACK", str(SLACK_PX))


@dataclass
class PageReport:
    page: str
    math_count: int = 0
    images: int = 0
    internal_links: int = 0
    external_links: int = 0
    figures: list[str] = field(default_factory=list)  # one line per figure: its measured font size
    problems: dict[str, list[str]] = field(default_factory=dict)
    warnings: dict[str, list[str]] = field(default_factory=dict)  # reported, not failing

    def add(self, kind: str, message: str):
        self.problems.setdefault(kind, []).append(message)

    def warn(self, kind: str, message: str):
        self.warnings.setdefault(kind, []).append(message)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        found = ", ".join(f"{len(v)} {k}" for k, v in self.problems.items()) or "nothing wrong"
        warned = ", ".join(f"{len(v)} {k}" for k, v in self.warnings.items())
        return (
            f"{self.page}: {self.math_count} math, {self.images} images ({len(self.figures)} figures), "
            f"{self.internal_links} internal links ({self.external_links} external, not followed) -> {found}"
            + (f"; warnings: {warned}" if warned else "")
        )

    def details(self) -> str:
        lines = [self.summary()]
        for kind, messages in self.problems.items():
            lines += [f"    [{kind}] {m}" for m in messages]
        for kind, messages in self.warnings.items():
            lines += [f"    (warning: {kind}) {m}" for m in messages]
        lines += [f"    figure: {m}" for m in self.figures]
        return "\n".join(lines)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def site_pages(html_dir: Path) -> list[str]:
    """Every HTML page of the build, relative to it: the book's pages and Sphinx's own (index, search, genindex);
    not the copies under _static/, _sources/, _images/."""
    return sorted(
        str(p.relative_to(html_dir))
        for p in html_dir.rglob("*.html")
        if not p.relative_to(html_dir).parts[0].startswith("_")
    )


def _local_path(url: str) -> tuple[Path | None, str]:
    parts = urlsplit(url)
    if parts.scheme != "file":
        return None, ""
    return Path(unquote(parts.path)), unquote(parts.fragment)


def _static_ids(path: Path) -> set[str]:
    text = path.read_text(errors="replace")
    return set(re.findall(r'\bid="([^"]+)"', text)) | set(re.findall(r'\bname="([^"]+)"', text))


def _console(report: PageReport, kind: str, text: str):
    if text not in TOOLCHAIN_ERRORS:
        report.add(kind, text)


def _refresh_target(path: Path) -> str | None:
    match = re.search(r'<meta[^>]+http-equiv="refresh"[^>]+content="[^"]*url=([^"]+)"', path.read_text(), re.I)
    return match.group(1) if match else None


def strict_fonts_default() -> bool:
    """Whether a figure with no font metadata fails (QKCORE_STRICT_FIGURE_FONTS=1) or is only a warning (default,
    until every chapter has been re-executed with the metadata-recording style)."""
    return os.environ.get("QKCORE_STRICT_FIGURE_FONTS", "") not in ("", "0")


def png_font_metadata(file: Path) -> tuple[float | None, float | None, str | None]:
    """(smallest font pt or None, dpi or None, the font chunk as written or None) of a PNG: the dpi from
    qkcore:dpi, else from the PNG's pHYs chunk (matplotlib writes both)."""
    from PIL import Image

    with Image.open(file) as image:
        info = dict(image.info)
    raw = info.get(FONT_KEY)
    dpi = info.get(DPI_KEY)
    dpi = float(dpi) if dpi is not None else (float(info["dpi"][0]) if "dpi" in info else None)
    try:
        font = float(raw) if raw is not None else None
    except ValueError:  # "none": a figure with no text
        font = None
    return font, dpi, raw


def shown_font_px(font_pt: float, dpi: float, natural_width: float, shown_width: float) -> float:
    """The CSS px a font of font_pt points, in a PNG saved at dpi and natural_width px wide, shows at when the page
    draws the PNG shown_width px wide: pt × dpi/72 is its height in the PNG, scaled by the page."""
    return font_pt * dpi / 72.0 * shown_width / natural_width


def _check_figure(report: PageReport, img: dict, file: Path, strict_fonts: bool):
    name = f"{img['src']}" + (f" ({img['caption']!r})" if img["caption"] else "")
    if not img["zoomable"]:
        report.add("figure not enlargeable", f"{name}: no qk-zoomable class (_static/figure-zoom.js not loaded?)")
    font, dpi, raw = png_font_metadata(file)
    natural, shown = img["naturalWidth"], img["shownWidth"]
    width = f"{natural} px drawn, shown at {shown:.0f} px"
    if dpi is not None:
        width = f"{natural / dpi:.2f} in at {dpi:.0f} dpi = " + width
    if raw is None:
        guess = f"; 9-pt text would show at {shown_font_px(9, dpi, natural, shown):.1f} px" if dpi else ""
        line = f"{name}: no font metadata ({width}{guess})"
        flag = report.add if strict_fonts else report.warn
        flag("figure without font metadata", line)
        report.figures.append(line)
        if dpi is not None and natural / dpi > MAX_WIDTH_IN and shown < natural - SLACK_PX:
            flag("figure wider than the column", f"{name}: {width}; draw it at most {MAX_WIDTH_IN:g} in wide")
        return
    if font is None or dpi is None:
        report.figures.append(f"{name}: no text ({width})")
    else:
        px = shown_font_px(font, dpi, natural, shown)
        line = f"{name}: smallest font {font:g} pt -> {px:.1f} px as shown ({width})"
        report.figures.append(line)
        if px < MIN_FONT_PX - 1e-6:
            report.add("figure text too small", f"{line}; needs >= {MIN_FONT_PX:g} px")
    if dpi is not None and natural / dpi > MAX_WIDTH_IN and shown < natural - SLACK_PX:
        report.add("figure wider than the column", f"{name}: {width}; draw it at most {MAX_WIDTH_IN:g} in wide")


def check_site(
    html_dir: Path, pages: list[str] | None = None, executable: str | None = None, strict_fonts: bool | None = None
) -> dict[str, PageReport]:
    """Load each page (default: all of site_pages) in one headless Chromium and return its PageReport.
    strict_fonts: whether a figure PNG without font metadata fails (default: strict_fonts_default())."""
    from playwright.sync_api import sync_playwright

    strict_fonts = strict_fonts_default() if strict_fonts is None else strict_fonts
    html_dir = html_dir.resolve()
    pages = site_pages(html_dir) if pages is None else pages
    executable = executable or chromium_path()
    if executable is None:
        raise RuntimeError("no chromium on PATH: `apt-get install -y chromium` (Debian), or set CHROMIUM")
    reports: dict[str, PageReport] = {}
    links: dict[str, list[dict]] = {}
    ids: dict[Path, set[str]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        for page_name in pages:
            report = reports[page_name] = PageReport(page_name)
            path = html_dir / page_name
            target = _refresh_target(path)
            if target is not None:  # a redirect page (index.html -> the root chapter): only its target is checked
                links[page_name] = [{"href": target, "url": (path.parent / target).as_uri(), "text": "(redirect)"}]
                continue
            context = browser.new_context(viewport=VIEWPORT)  # a fresh profile per page: a first visit each time
            page = context.new_page()
            page.on("console", lambda m, r=report: _console(r, "console error", m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, r=report: _console(r, "uncaught exception", str(e)))
            page.on("requestfailed", lambda q, r=report: r.add("failed request", f"{q.url} ({q.failure})"))
            page.goto(path.as_uri(), wait_until="load")
            found = page.evaluate(_MEASURE)
            context.close()
            ids[path] = set(found["ids"])
            links[page_name] = found["links"]
            report.math_count = found["mathCount"]
            report.images = len(found["images"])
            for m in found["math"]:
                message = f" ({m['message']})" if m["message"] else ""
                report.add("math error", f"{', '.join(m['reasons'])}{message}: {m['tex']!r}")
            if found["text_errors"] and not found["math"]:
                report.add("math error", f"{found['text_errors']} 'Math input error' shown in the page")
            for img in found["images"]:
                file, _ = _local_path(img["url"])
                if file is not None and not file.exists():
                    report.add("missing image", f"{img['src']} (no such file)")
                elif img["naturalWidth"] == 0:
                    report.add("missing image", f"{img['src']} did not load (naturalWidth 0)")
                elif img["figure"] and file is not None and file.suffix.lower() == ".png":
                    _check_figure(report, img, file, strict_fonts)
            if Path(page_name).name not in GENERATED_PAGES:
                for o in found["overflow"]:
                    out = f", sticks out of the column by {o['sticksOut']} px" if o["sticksOut"] > SLACK_PX else ""
                    report.add(
                        "wider than its column",
                        f"{o['tag']} in {o['where']}: {o['scrollWidth']} px of content in "
                        f"{o['clientWidth']} px{out}; longest line {o['longestChars']} chars: "
                        f"{o['longest']!r}",
                    )
        browser.close()
    # Internal links, checked once every page's anchors are known (a link may point at a later page).
    for page_name, page_links in links.items():
        report = reports[page_name]
        for link in page_links:
            file, fragment = _local_path(link["url"])
            if file is None:
                report.external_links += link["url"].startswith(("http:", "https:"))
                continue
            report.internal_links += 1
            if file.is_dir():
                file = file / "index.html"
            if not file.exists():
                report.add("broken link", f"{link['href']!r} ({link['text']!r}): no file {file}")
            elif fragment and file.suffix == ".html":
                known = ids.get(file)
                if known is None:
                    known = ids[file] = _static_ids(file)
                if fragment not in known:
                    report.add("broken link", f"{link['href']!r} ({link['text']!r}): no #{fragment} in {file.name}")
    return reports


def format_report(reports: dict[str, PageReport]) -> str:
    bad = [r for r in reports.values() if not r.ok]
    lines = [r.details() for r in reports.values()]  # details: problems, warnings and each figure measured
    lines.append(f"{len(reports)} pages checked, {len(bad)} with problems")
    return "\n".join(lines)
