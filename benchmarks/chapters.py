"""Benchmark: every chapter of _toc.yml executed with papermill, at its defaults and with `preset = "quick"`, timed
against the runtime the chapter states. Targets (issue 17, on 2 cores): each stated figure within 50% of the measured
one; a real model's page (a `model` parameter other than "organism": the SmolLM2 and Qwen pages) under 3 minutes at
its defaults and 60 s quick, every other page (toy model, organisms) under 60 s and 20 s; the whole book at its
defaults under 15 minutes; and (issue 15) every page's peak resident memory under 4 GB (the largest of papermill's
processes, sampled every 50 ms).

The gather cache (qkcore.lm.gather_cache): `--cache cold` runs each chapter with an empty cache folder of its own,
then again with the folder it filled (`warm`), and prints both tables: the cold run is a first build on a new machine,
the warm one a re-execution (nbval after `make book`). `--cache off` runs without it; the default, `--cache book`,
uses the machine's cache as `make book` does.

    .venv/bin/python benchmarks/chapters.py                         # all chapters, defaults and quick
    .venv/bin/python benchmarks/chapters.py --only cube filter_heads --skip-quick

A chapter states its runtime on the first line of a markdown paragraph of the form
`**Runtime:** about 40 s at the defaults on 2 cores; about 12 s with preset = "quick".` (or "about 3 min"). A figure
whose words (up to the next figure) say "warm" or "cold" is the figure for that state of the gather cache; one inside
the parentheses after a quick figure is a quick figure too (`about 65 s with preset = "quick" (its gathers cold;
about 25 s warm)`). With `--cache cold` the cold run is compared with the figure stated cold (else the first one that
names no state) and the warm run with the figure stated warm (no flag when none is stated); otherwise each run with
the first figure of its kind.
Chapters run into a temporary folder (never over book/), with the cwd, threads and offline settings of `make book`.
Prints one table per run kind (chapter, stated, measured wall clock, ratio, CPU time of the kernel: on a machine
shared with other jobs the CPU time is closer to what the run would take alone) and exits non-zero when a figure is
off by more than 50%, unstated, a run exceeds its target, a chapter has no `preset` parameter, a run fails, or the
default total exceeds 15 minutes.
"""

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from scripts.chapters import chapters  # noqa: E402  (the one chapter list, from _toc.yml)

TOLERANCE = 0.5  # a stated figure may be off by this fraction of the measured one
# issue 17's targets, seconds on 2 cores: (at the defaults, quick) for a real model's page and for any other page
LIMITS_S = {"real model": (180.0, 60.0), "organism": (60.0, 20.0)}
BOOK_LIMIT_S = 900.0
MEMORY_LIMIT_GB = 4.0  # a page's peak resident memory (issue 15: a Qwen page on a laptop)
# The same environment as `make book`: one thread layout, no network.
ENVIRONMENT = {
    "OMP_NUM_THREADS": "2",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "QKCORE_PROGRESS": "0",  # as `make book`: no progress bars in the kept notebooks
}
_FIGURE = r"about\s+(\d+(?:\.\d+)?)\s*(s|sec|seconds?|min|minutes?)\b"
RUNTIME = re.compile(r"\*\*Runtime:\*\*\s*" + _FIGURE + r"(?P<rest>[^\n]*)", re.I)
QUICK = re.compile(_FIGURE + r"[^;\n]*?preset\s*=\s*[\"'`]?quick", re.I)


def _seconds(value: str, unit: str) -> float:
    return float(value) * (60.0 if unit.lower().startswith("min") else 1.0)


def _runtime_line(notebook: dict) -> str | None:
    """The first line of the chapter's **Runtime:** paragraph, from "**Runtime:**" on; None where there is none."""
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            match = RUNTIME.search("".join(cell["source"]))
            if match:
                return match.group(0)
    return None


def stated_runtime(notebook: dict) -> tuple[float | None, float | None]:
    """(seconds at the defaults, seconds with preset = "quick") from the chapter's **Runtime:** line; None where the
    line, or its quick figure, is missing."""
    line = _runtime_line(notebook)
    if line is None:
        return None, None
    match = RUNTIME.search(line)
    quick = QUICK.search(match.group("rest"))
    return (
        _seconds(match.group(1), match.group(2)),
        _seconds(quick.group(1), quick.group(2)) if quick else None,
    )


def runtime_figures(line: str) -> dict[tuple[str, str | None], float]:
    """Every "about N s" figure of a Runtime line, keyed (kind, cache): kind "defaults" or "quick" (its words up to
    the next figure name the quick preset, or it sits in the parentheses that follow a quick figure), cache "warm",
    "cold" or None (its words name neither). The first figure of each key wins."""
    found = list(re.finditer(_FIGURE, line, re.I))
    out: dict[tuple[str, str | None], float] = {}
    kind = "defaults"
    for i, m in enumerate(found):
        words = line[m.end() : found[i + 1].start() if i + 1 < len(found) else len(line)]
        depth = line[: m.start()].count("(") - line[: m.start()].count(")")
        if depth <= 0:  # a figure of its own; one in parentheses qualifies the figure before them
            kind = "quick" if re.search(r"preset|quick", words, re.I) else "defaults"
        states = [state for state in ("warm", "cold") if re.search(rf"\b{state}\b", words, re.I)]
        cache = states[0] if states else None  # words naming both (none in the book) count as warm
        out.setdefault((kind, cache), _seconds(m.group(1), m.group(2)))
    return out


def stated_for(notebook: dict, kind: str, cache: str | None) -> float | None:
    """The figure a run is compared with. cache None (the machine's gather cache, or none): the first figure of
    `kind` (stated_runtime); "cold": the figure stated cold, else the first that names no cache state; "warm": the
    figure stated warm, else None."""
    if cache is None:
        return dict(zip(("defaults", "quick"), stated_runtime(notebook), strict=True))[kind]
    line = _runtime_line(notebook)
    figures = runtime_figures(line) if line else {}
    if cache == "warm":
        return figures.get((kind, "warm"))
    return figures.get((kind, "cold"), figures.get((kind, None)))


def _parameters_source(notebook: dict) -> str | None:
    """The source of the cell tagged `parameters`; None where there is none."""
    for cell in notebook["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return "".join(cell["source"])
    return None


def page_class(notebook: dict) -> str:
    """The page's class in LIMITS_S: "real model" when its parameters cell sets `model` to anything but "organism"
    (the variant pages), else "organism" (the toy chapters have no model parameter)."""
    m = re.search(r"""^model\s*=\s*["']([^"']+)["']""", _parameters_source(notebook) or "", re.M)
    return "real model" if m and m.group(1) != "organism" else "organism"


def has_preset(notebook: dict) -> bool:
    """Whether the cell tagged `parameters` assigns `preset`."""
    return re.search(r"^preset\s*[:=]", _parameters_source(notebook) or "", re.M) is not None


@dataclass
class Run:
    chapter: str
    kind: str  # "defaults" or "quick"
    stated: float | None
    measured: float | None = None
    cpu: float | None = None
    error: str = ""
    peak_gb: float | None = None  # the largest resident memory of papermill's processes (the kernel), sampled
    page: str = "organism"  # page_class: which of LIMITS_S applies
    must_state: bool = True  # False for a warm run: a page need not state its warm time

    @property
    def limit(self) -> float:
        return LIMITS_S[self.page][1 if self.kind.startswith("quick") else 0]

    @property
    def ratio(self) -> float | None:
        return self.measured / self.stated if self.measured and self.stated else None

    def flags(self) -> list[str]:
        if self.error:
            return [f"{self.chapter} ({self.kind}): {self.error}"]
        out = []
        if self.stated is None and self.must_state:
            out.append(f"{self.chapter} ({self.kind}): runtime not stated (measured {self.measured:.0f} s)")
        elif self.stated is not None and abs(self.stated - self.measured) > TOLERANCE * self.measured:
            out.append(
                f"{self.chapter} ({self.kind}): states about {self.stated:.0f} s, measured {self.measured:.0f} s "
                f"(off by more than {TOLERANCE:.0%})"
            )
        if self.measured > self.limit:
            out.append(
                f"{self.chapter} ({self.kind}): {self.measured:.0f} s, over the {self.limit:.0f} s target of "
                f"{'a real model' if self.page == 'real model' else 'an organism or toy'} page"
            )
        if self.peak_gb is not None and self.peak_gb > MEMORY_LIMIT_GB:
            out.append(f"{self.chapter} ({self.kind}): peak memory {self.peak_gb:.2f} GB, over {MEMORY_LIMIT_GB} GB")
        return out


def execute(
    path: Path, out_dir: Path, kind: str, timeout: float, cache: str | None = None
) -> tuple[float, float, str, float]:
    """Run one chapter with papermill into out_dir; (wall seconds, CPU seconds of papermill and its kernel, error,
    peak resident memory of one of its processes in GB).
    cache: the QKCORE_GATHER_CACHE setting ("0" off, a folder, None: the machine's default)."""
    output = out_dir / f"{path.stem}-{kind}.ipynb"
    command = [
        sys.executable,
        "-m",
        "papermill",
        "--cwd",
        str(ROOT / path.parent),
        "-k",
        "python3",
        str(ROOT / path),
        str(output),
        "--log-level",
        "WARNING",
        "--no-progress-bar",
    ]
    if kind.startswith("quick"):
        command += ["-p", "preset", "quick"]
    env = {**os.environ, **{k: os.environ.get(k, v) for k, v in ENVIRONMENT.items()}}
    if cache is not None:
        env["QKCORE_GATHER_CACHE"] = cache
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = PeakMemory(process.pid)
    try:
        _, stderr = process.communicate(timeout=timeout)
        error = "" if process.returncode == 0 else "failed: " + (stderr.strip().splitlines() or ["?"])[-1]
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        error = f"timed out after {timeout:.0f} s"
    wall = time.perf_counter() - start
    peak = sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, error, peak


class PeakMemory:
    """The largest resident memory of any one process under `pid` (papermill and the kernel it starts), sampled
    every 50 ms on a background thread; stop() returns it in GB."""

    def __init__(self, pid: int, every: float = 0.05):
        import psutil  # ipykernel's dependency, so always in the book's environment

        self._root, self._every, self._peak = psutil.Process(pid), every, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._done.is_set():
            try:
                for p in [self._root, *self._root.children(recursive=True)]:
                    try:
                        self._peak = max(self._peak, p.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            self._done.wait(self._every)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        return self._peak / 1e9


def _s(value: float | None) -> str:
    return "not stated" if value is None else f"{value:.0f} s"


def table(runs: list[Run], kind: str) -> str:
    lines = [f"{kind}:", f"  {'chapter':24s} {'stated':>11s} {'measured':>9s} {'ratio':>6s} {'CPU':>7s} {'peak':>8s}"]
    for r in runs:
        measured = "failed" if r.error else _s(r.measured)
        ratio = f"{r.ratio:.2f}" if r.ratio and not r.error else "-"
        cpu = f"{r.cpu:.0f} s" if r.cpu is not None else "-"
        peak = f"{r.peak_gb:.2f} GB" if r.peak_gb is not None else "-"
        lines.append(f"  {r.chapter:24s} {_s(r.stated):>11s} {measured:>9s} {ratio:>6s} {cpu:>7s} {peak:>8s}")
    if not runs:
        lines.append("  (no run)")
        return "\n".join(lines)
    stated = [r.stated for r in runs if r.stated is not None]
    total_stated = _s(sum(stated)) + ("" if len(stated) == len(runs) else "+") if stated else "not stated"
    measured = sum(r.measured or 0 for r in runs)
    cpu = sum(r.cpu or 0 for r in runs)
    lines.append(f"  {'total':24s} {total_stated:>11s} {measured:>7.0f} s {'':>6s} {cpu:>5.0f} s")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="CHAPTER", help="chapter names (file stems) to time")
    parser.add_argument("--skip-quick", action="store_true", help="time only the runs at the defaults")
    parser.add_argument("--skip-defaults", action="store_true", help="time only the quick runs")
    parser.add_argument("--keep", type=Path, help="keep the executed notebooks in this folder (default: discard)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a chapter's run is stopped")
    parser.add_argument(
        "--cache",
        choices=("book", "cold", "off"),
        default="book",
        help="gather cache: the machine's (book), an empty one then the same warm (cold), or none (off)",
    )
    args = parser.parse_args()

    paths = chapters()
    if args.only:
        unknown = set(args.only) - {p.stem for p in paths}
        if unknown:
            parser.error(f"not chapters of _toc.yml: {sorted(unknown)}; chapters: {[p.stem for p in paths]}")
        paths = [p for p in paths if p.stem in args.only]
    kinds = [k for k, skip in (("defaults", args.skip_defaults), ("quick", args.skip_quick)) if not skip]
    if args.cache == "cold":
        kinds = [f"{k}, {c} cache" for k in kinds for c in ("cold", "warm")]
    runs: dict[str, list[Run]] = {k: [] for k in kinds}
    missing_preset = []
    with tempfile.TemporaryDirectory(prefix="qkcore-chapters-") as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in paths:
            notebook = json.loads((ROOT / path).read_text())
            page = page_class(notebook)
            for kind in kinds:
                base = kind.split(",")[0]
                if base == "quick" and not has_preset(notebook):
                    if path.stem not in missing_preset:
                        missing_preset.append(path.stem)
                    continue
                cache = {"book": None, "off": "0"}.get(args.cache) or str(Path(tmp) / f"cache-{path.stem}-{base}")
                state = kind.split(", ")[1].split()[0] if ", " in kind else None  # "cold" / "warm" with --cache cold
                stated = stated_for(notebook, base, state)
                run = Run(path.stem, kind, stated, page=page, must_state=state != "warm")
                run.measured, run.cpu, run.error, run.peak_gb = execute(path, out_dir, kind, args.timeout, cache)
                print(
                    f"{path.stem} ({kind}): {run.measured:.1f} s wall, {run.cpu:.1f} s CPU, peak {run.peak_gb:.2f} GB"
                    f"{'; ' + run.error if run.error else ''}",
                    flush=True,
                )
                runs[kind].append(run)

    print()
    for kind in kinds:
        print(table(runs[kind], kind + (" (-p preset quick)" if kind.startswith("quick") else "")))
    flags = [f for kind in kinds for r in runs[kind] for f in r.flags()]
    flags += [f"{name}: no `preset` in its parameters cell, so no quick run" for name in missing_preset]
    first = kinds[0] if kinds and kinds[0].startswith("defaults") else None
    if first and not args.only:
        total = sum(r.measured or 0 for r in runs[first])
        print(f"\nthe whole book at its defaults: {total:.0f} s (target < {BOOK_LIMIT_S:.0f} s)")
        if total > BOOK_LIMIT_S:
            flags.append(f"the whole book at its defaults takes {total:.0f} s, over {BOOK_LIMIT_S:.0f} s")
    print(
        "\nflags:"
        if flags
        else f"\nno flags: every stated figure within 50%, every quick run under its target, every page under "
        f"{MEMORY_LIMIT_GB} GB"
    )
    for f in flags:
        print(f"  {f}")
    sys.exit(1 if flags else 0)


if __name__ == "__main__":
    main()
