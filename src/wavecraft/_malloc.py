"""Keeping large CPU buffers in the heap while a codec runs.

glibc serves allocations above ``M_MMAP_THRESHOLD`` (at most 32 MB by default) with fresh ``mmap`` pages and
unmaps them on free, so every full-length activation of a long clip (64 channels x 10 s at 32 kHz = 82 MB) is
page-faulted and zeroed again on each layer: on a 2-core CPU that is a third of EnCodec's run time. Inside
:func:`reuse_freed_memory` large blocks come from the heap and freed ones stay there for the next layer; on exit
the defaults are restored, so the heap is trimmed back on the next free. Elsewhere (non-glibc) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_GLIBC_DEFAULT = 128 * 1024
_KEEP = 1 << 30

_lock = threading.Lock()
_depth = 0
_mallopt = None
if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
    try:
        _mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
        _mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        _mallopt = None


def _set(mmap_threshold: int, trim_threshold: int) -> None:
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
        _mallopt(_M_TRIM_THRESHOLD, trim_threshold)


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            _set(_KEEP, _KEEP)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _set(_GLIBC_DEFAULT, _GLIBC_DEFAULT)
