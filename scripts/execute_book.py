"""Execute every chapter of the book in place (what `make book` does before building the HTML), `--jobs` at a time.

    .venv/bin/python scripts/execute_book.py --jobs 2        # two lanes side by side, then the results pages
    .venv/bin/python scripts/execute_book.py --jobs 1        # one page after another, in _toc.yml order
    .venv/bin/python scripts/execute_book.py --only cube filter_heads_qwen   # just these pages

A source chapter is executed with papermill in place; a variant (book/variants.yml) is made from its source by
scripts/make_variant.py. The pages run in lanes (scripts/chapters.py `lanes`: one real model's pages one after
another, so that its gathers are made once and two copies of it never sit in memory together; every other page
alone), the longest lanes first, then the pages that read the others' results (`LAST`) one by one. Each chapter runs
one torch thread, so two lanes fill two cores without changing a number. Prints each page's wall time; on a failure
no new page starts, the running ones finish, and the failed page's output is printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.chapters import LAST, chapters, lanes, variants  # noqa: E402  (the one chapter list, from _toc.yml)

_print_lock = threading.Lock()


def command(nb: Path) -> list[str]:
    """How one page is made: its variant's make_variant.py run, or papermill from the source into `running(nb)`."""
    if nb.stem in variants():
        return [sys.executable, "scripts/make_variant.py", nb.stem]
    out = running(nb)
    return [sys.executable, "-m", "papermill", "--cwd", str(nb.parent), "-k", "python3", str(nb), str(out)] + [
        "--log-level",
        "WARNING",
    ]


def running(nb: Path) -> Path:
    """Where a source chapter is executed before it replaces itself: papermill rewrites its output after every cell,
    and a variant in another lane reads the source notebook meanwhile (scripts/make_variant.py), so the source is
    replaced only once complete."""
    return nb.with_name(f".{nb.stem}.running.ipynb")


def finish(nb: Path) -> None:
    """Move a source chapter's completed run into place (its papermill metadata names the page, not the temporary
    file)."""
    tmp = running(nb)
    executed = nbformat.read(tmp, as_version=4)
    executed.metadata.get("papermill", {})["output_path"] = str(nb)
    nbformat.write(executed, tmp)
    os.replace(tmp, nb)


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def run_lane(pages: list[Path], failed: threading.Event) -> list[tuple[Path, float, bool]]:
    """The lane's pages one after another; stops early when any page of the run has failed."""
    done = []
    for nb in pages:
        if failed.is_set():
            break
        say(f"executing {nb}")
        start = time.perf_counter()
        run = subprocess.run(command(nb), cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        ok = run.returncode == 0
        if ok and nb.stem not in variants():
            finish(nb)
        running(nb).unlink(missing_ok=True)
        say(f"{'done' if ok else 'FAILED'} {nb} in {seconds:.0f} s")
        if not ok:
            failed.set()
            say(f"--- output of {nb} ---\n{(run.stdout + run.stderr)[-6000:]}")
        done.append((nb, seconds, ok))
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="lanes executed side by side (default 2)")
    parser.add_argument(
        "--only", nargs="+", metavar="PAGE", help="only these pages (names like cube, filter_heads_qwen)"
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    # every committed page is made at one torch thread (qkcore/experiments/chapter.py); the pages inherit this
    os.environ["QKCORE_THREADS"] = "1"
    failed = threading.Event()
    start = time.perf_counter()
    known = {nb.stem for nb in chapters()}
    unknown = sorted(set(args.only or ()) - known)
    if unknown:
        parser.error(f"no such page: {', '.join(unknown)} (the book's pages: {', '.join(sorted(known))})")

    def wanted(pages):
        return [nb for nb in pages if args.only is None or nb.stem in args.only]

    first = lanes() if args.jobs > 1 else [[nb] for nb in chapters() if nb.stem not in LAST]
    first = [pages for pages in map(wanted, first) if pages]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = [r for lane in pool.map(lambda pages: run_lane(pages, failed), first) for r in lane]
    if not failed.is_set():
        results += run_lane(wanted([nb for nb in chapters() if nb.stem in LAST]), failed)
    total = time.perf_counter() - start
    say(f"{sum(ok for *_, ok in results)} pages executed in {total / 60:.1f} min with {args.jobs} job(s)")
    return 1 if failed.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
