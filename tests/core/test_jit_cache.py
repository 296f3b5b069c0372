"""qkcore.jit_cache turns numba's disk cache on for a package's uncached kernels, and only for those it can key."""

import sys
import types

import pytest

numba = pytest.importorskip("numba")

from numba.core.caching import NullCache  # noqa: E402

from qkcore.jit_cache import cache_numba_kernels  # noqa: E402


def test_uncached_kernels_of_the_named_package_get_the_disk_cache(tmp_path, monkeypatch):
    package = tmp_path / "jitpkg_a"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import numba\n\n@numba.njit\ndef plain(x):\n    return x + 1\n\n"
        "@numba.njit(cache=True)\ndef cached(x):\n    return x + 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    import jitpkg_a

    assert isinstance(jitpkg_a.plain._cache, NullCache)
    assert cache_numba_kernels("jitpkg_a") == 1  # `cached` had it already
    assert not isinstance(jitpkg_a.plain._cache, NullCache)
    assert jitpkg_a.plain(1) == 2  # compiles and runs as before
    assert cache_numba_kernels("jitpkg_a") == 0  # once per package and process


def test_a_kernel_without_a_source_file_is_left_uncached(monkeypatch):
    module = types.ModuleType("jitpkg_b")
    exec("import numba\n\n@numba.njit\ndef made(x):\n    return x\n", module.__dict__)  # no file to key a cache on
    monkeypatch.setitem(sys.modules, "jitpkg_b", module)
    assert cache_numba_kernels("jitpkg_b") == 0
    assert isinstance(module.made._cache, NullCache)


def test_other_packages_are_not_touched(tmp_path, monkeypatch):
    package = tmp_path / "jitpkg_c"
    package.mkdir()
    (package / "__init__.py").write_text("import numba\n\n@numba.njit\ndef plain(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import jitpkg_c

    assert cache_numba_kernels("jitpkg_elsewhere") == 0
    assert isinstance(jitpkg_c.plain._cache, NullCache)
