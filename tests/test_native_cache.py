"""A damaged kernel cache is rebuilt, never loaded (issue 21: a truncated .so killed every later run with SIGBUS)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wavecraft.lm import native

pytestmark = pytest.mark.skipif(not native._cpu_supported(), reason="the native kernels need x86-64 with AVX2")

# A child process that builds (or finds) the kernels and runs one product through them.
_RUN = ("import torch; from wavecraft.lm import native\n"
        "assert native.available(), 'native kernels unavailable'\n"
        "x, w = torch.randn(2, 64), torch.randn(96, 64)\n"
        "torch.testing.assert_close(native.linear(x, w), x @ w.T, rtol=1e-4, atol=1e-4)\n"
        "print('ok')")


def _run(cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WAVECRAFT_CACHE": str(cache), "WAVECRAFT_NATIVE": "1"}
    return subprocess.run([sys.executable, "-c", _RUN], capture_output=True, text=True, timeout=300, env=env)


def _library(cache: Path) -> Path:
    (lib,) = [p for p in (cache / "kernels").glob("kernels-*.so")] or list(cache.rglob("kernels-*.so"))
    return lib


@pytest.mark.parametrize("keep", [0, 4096, 12000, 40000])
def test_truncated_cached_kernel_is_rebuilt(tmp_path: Path, keep: int) -> None:
    first = _run(tmp_path)
    assert first.returncode == 0 and "ok" in first.stdout, first.stderr[-2000:]
    lib = _library(tmp_path)
    size = lib.stat().st_size
    with open(lib, "r+b") as f:
        f.truncate(min(keep, size - 1))
    again = _run(tmp_path)  # before: SIGBUS (exit -7) for truncations between about 4 KB and 40 KB
    assert again.returncode == 0 and "ok" in again.stdout, (again.returncode, again.stderr[-2000:])
    assert _library(tmp_path).stat().st_size == size


def test_library_without_checksum_and_stale_build_folders(tmp_path: Path) -> None:
    assert _run(tmp_path).returncode == 0
    lib = _library(tmp_path)
    lib.with_name(lib.name + ".sha256").unlink()  # a kill between the two renames
    lib.write_bytes(b"\x7fELF" + b"\0" * 100)
    stale = lib.parent / "tmpleftover"
    stale.mkdir()
    (stale / lib.name).write_bytes(b"half a library")
    old = time.time() - 2 * native.STALE_BUILD_SECONDS
    os.utime(stale, (old, old))
    fresh = lib.parent / "tmpbuilding"  # another process's build in progress: left alone
    fresh.mkdir()
    out = _run(tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]
    assert not stale.exists() and fresh.exists()
