"""Numba's on-disk cache for the kernels of a third-party package, so that a process reuses what an earlier one
compiled.

umap-learn (the lexical UMAP view of the binding-subspaces chapter, paper Figure 8) JIT-compiles about 250 numba
kernels, most of them without `cache=True`: every process that fits a UMAP spent 15–20 s compiling them again, a
third of the organism's subspaces page. Turning numba's cache on for those kernels (`Dispatcher.enable_caching`, the
same cache `cache=True` uses: files beside the package's sources, or under $NUMBA_CACHE_DIR) leaves the compiled code,
and so every number, unchanged; only the first process of an environment compiles.

    cache_numba_kernels("umap", "pynndescent")   # once, after importing them and before their first call
"""

from __future__ import annotations

import sys

_DONE: set[str] = set()


def cache_numba_kernels(*packages: str) -> int:
    """Turn on numba's disk cache for every uncached numba kernel defined at module level in the imported modules of
    `packages`; returns how many were turned on (0 on a later call for the same packages). A kernel numba cannot
    cache (no file to key it on) is left as it is."""
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    todo = [p for p in packages if p not in _DONE]
    turned_on = 0
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in todo:
            continue
        for kernel in list(vars(module).values()):
            if isinstance(kernel, Dispatcher) and isinstance(kernel._cache, NullCache):
                try:
                    kernel.enable_caching()
                except RuntimeError:  # "cannot cache function …: no locator available"
                    continue
                turned_on += 1
    _DONE.update(todo)
    return turned_on
