"""What every chapter does before its first computation, in one place: the thread policy that makes executed and
re-executed numbers agree, the warning filter for a message that is noise on a rendered page, and the check of the
progress-bar switch QKCORE_PROGRESS (qkcore.progress), so that a bad value fails before any model loads.

    from qkcore.experiments.chapter import start_chapter
    start_chapter()          # one torch thread (see below); call it in the chapter's import cell

One thread: on the shared 2-core machines this book is built on, two threads were up to 20× slower for the toy models'
small matrices, and a fixed thread count keeps float reductions in the same order on every run. A re-run on a
bigger machine may pass threads=None to keep torch's default.
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


def start_chapter(threads: int | None = 1, cache: bool | None = None) -> None:
    """Set torch's intra-op threads (None: leave them), install the chapters' warning filter, and cache what the
    chapter gathers from a model (qkcore.lm.gather_cache: each identical gather_qk call runs once per machine;
    identical numbers cold or warm). cache=None: from the environment's QKCORE_GATHER_CACHE ("0": off; a folder:
    cache there; unset or "1": the default folder, $QKCORE_CACHE/gather). Progress bars: see qkcore.progress."""
    from qkcore import progress

    progress.enabled()  # raises on a QKCORE_PROGRESS other than "0" or "1"
    if threads is not None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        torch.set_num_threads(threads)
    quiet_warnings()
    from qkcore.lm.gather_cache import enable_gather_cache

    setting = os.environ.get("QKCORE_GATHER_CACHE", "1")
    if cache is None:
        cache = setting != "0"
    enable_gather_cache((None if setting in ("", "1") else setting) if cache else False)
