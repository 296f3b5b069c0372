"""What every chapter does before its first computation, in one place: the thread policy that makes executed and
re-executed numbers agree, the warning filter for a message that is noise on a rendered page, and the check of the
progress-bar switch QKCORE_PROGRESS (qkcore.progress), so that a bad value fails before any model loads.

    from qkcore.experiments.chapter import start_chapter
    start_chapter(P)         # the chapter's parameters decide the threads (below); call it in the import cell

Threads. A chapter on a pretrained model (SmolLM2, Qwen, a user's own) uses every core this process may run on, or
QKCORE_THREADS of them when that is set: nearly all of its time is the model's forward passes, which two threads make
1.5-1.8x faster on 2 cores (Qwen2.5-Coder-0.5B 1.0 -> 0.54-0.78 s, SmolLM2-135M 0.35-0.40 -> 0.20-0.21 s per
160-token prompt). The runs that make and check the committed pages set QKCORE_THREADS=1 (scripts/execute_book.py,
and nbval through the root conftest.py): they run two pages side by side on 2 cores, and one thread per page keeps
float reductions in one order. Two threads change q and k in their last bits, but no committed number of the four
Qwen pages (README); the gather cache keys on the thread count and lets a run at several threads read a one-thread
result (qkcore.lm.gather_cache), so a re-run after `make book` reads the book's gathers. Toy and organism chapters
always run one thread: their matrices are small (two threads were up to 20x slower on the shared 2-core machines),
and their trained numbers follow the order of every sum.
"""

from __future__ import annotations

import os
import warnings

import torch


def quiet_warnings() -> None:
    """Silence tqdm's "IProgress not found" warning, raised in Jupyter when huggingface_hub imports tqdm.auto without
    ipywidgets (qkcore draws no widget bars, so on a rendered page it is noise). Any other warning still shows.
    Installed when qkcore.experiments is first imported, i.e. before a chapter's imports reach transformers."""
    warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")


THREADS_ENV = "QKCORE_THREADS"


def chapter_threads(params=None) -> int:
    """The torch threads a chapter run with these parameters uses (module docstring): on a pretrained model,
    QKCORE_THREADS when set, else every core this process may run on; one otherwise (no params, an organism, a toy
    chapter)."""
    if not hasattr(params, "model"):
        return 1
    from qkcore.lm.registry import registered

    model = params.model
    registration = registered(model)
    if model == "organism" or (registration is not None and registration.kind == "organism"):
        return 1
    setting = os.environ.get(THREADS_ENV, "").strip()
    if setting:
        if not (setting.isascii() and setting.isdigit()) or int(setting) < 1:
            raise ValueError(
                f"{THREADS_ENV}={setting!r}: a positive number of threads (1 for the committed pages), or unset"
            )
        return int(setting)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_chapter(params=None, threads: int | None | str = "auto", cache: bool | None = None) -> None:
    """Set torch's intra-op threads ("auto": `chapter_threads(params)`; None: leave them), install the chapters'
    warning filter, and cache what the chapter gathers from a model (qkcore.lm.gather_cache: each identical
    gather_qk call runs once per machine; identical numbers cold or warm). cache=None: from the environment's
    QKCORE_GATHER_CACHE ("0": off; a folder: cache there; unset or "1": the default folder, $QKCORE_CACHE/gather).
    Progress bars: see qkcore.progress."""
    import dataclasses

    from qkcore import progress

    if params is not None and not (dataclasses.is_dataclass(params) and not isinstance(params, type)):
        raise TypeError(
            f"params must be the chapter's parameters (a dataclass such as FilterHeadsParams) or None, got {params!r}; "
            "set torch's threads with threads=..."
        )
    progress.enabled()  # raises on a QKCORE_PROGRESS other than "0" or "1"
    if threads == "auto":
        threads = chapter_threads(params)
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f'threads must be a positive int, "auto" or None, got {threads!r}')
        torch.set_num_threads(threads)
    quiet_warnings()
    from qkcore.lm.gather_cache import enable_gather_cache

    setting = os.environ.get("QKCORE_GATHER_CACHE", "1")
    if cache is None:
        cache = setting != "0"
    enable_gather_cache((None if setting in ("", "1") else setting) if cache else False)
