"""Checks of config values read from files (config.json, xp.cfg) before anything is built from them.

Every check raises :class:`~wavecraft.errors.ConfigError` (a ``ValueError``) with a one-line message naming the
field and the value; loaders turn it into a :class:`~wavecraft.errors.CheckpointError` naming the file. Integral
floats (``1e3`` in JSON) are accepted for integer fields and returned as ``int``; NaN, infinities and
booleans-for-numbers are refused.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: Bytes per weight element of a model as built (float32).
WEIGHT_BYTES = 4


def show(value: Any, limit: int = 40) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters (values can be huge strings or lists)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def integer(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an ``int`` in ``[lo, hi]``."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {show(value)}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {show(value)}")
    return value


def real(name: str, value: Any, lo: float = -math.inf, hi: float = math.inf, open_lo: bool = False) -> float:
    """``value`` as a finite ``float`` in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be finite, got {show(value)}")
    if value < lo or value > hi or (open_lo and value == lo):
        bounds = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]"
        raise ConfigError(f"{name} must be in {bounds}, got {show(value)}")
    return value


def flag(name: str, value: Any) -> bool:
    """``value`` if it is a ``bool`` (``"false"`` or ``2`` are not)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {show(value)}")
    return value


def choice(name: str, value: Any, options: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}, got {show(value)}")
    return value


def text(name: str, value: Any, max_len: int = 4096) -> str:
    """A non-empty single-line string (a name or path)."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_len or "\n" in value or "\0" in value:
        raise ConfigError(f"{name} must be a non-empty one-line string, got {show(value)}")
    return value


def int_tuple(name: str, value: Any, lo: int, hi: int, min_len: int = 0, max_len: int = 1024) -> tuple[int, ...]:
    """A list or tuple of ``min_len..max_len`` integers, each in ``[lo, hi]``."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of integers, got {show(value)}")
    if not min_len <= len(value) <= max_len:
        raise ConfigError(f"{name} must have {min_len} to {max_len} entries, got {len(value)}")
    return tuple(integer(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value))


def real_tuple(name: str, value: Any, lo: float, hi: float, max_len: int = 1024) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list of numbers, got {show(value)}")
    if len(value) > max_len:
        raise ConfigError(f"{name} must have at most {max_len} entries, got {len(value)}")
    return tuple(real(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value))


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unixes: free physical pages
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _cgroup_available() -> int | None:
    """What a cgroup v2 memory limit leaves (containers often have less than the host's MemAvailable)."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes of memory this process can still get (``MemAvailable``, capped by a cgroup limit); ``None`` if
    unknown, in which case memory checks are skipped."""
    found = [m for m in (_meminfo_available(), _cgroup_available()) if m is not None]
    return min(found) if found else None


def gigabytes(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def ensure_memory(nbytes: int, what: str) -> None:
    """Refuse (``ValueError``) to build something needing ``nbytes`` when the machine has less available."""
    available = available_memory()
    if available is not None and nbytes > available:
        raise ConfigError(f"{what} needs about {gigabytes(nbytes)} of memory, more than the {gigabytes(available)} "
                         "available")


def check_fields(config: Any, int_ranges: dict[str, tuple[int, int]], flags: Sequence[str],
                 real_ranges: dict[str, tuple[float, float]] | None = None) -> None:
    """Check ``config``'s integer fields (``name -> (lo, hi)``), flags and real fields in place, storing the
    coerced values (``1e3`` -> ``1000``); set with ``object.__setattr__`` so frozen dataclasses work too."""
    for name, (lo, hi) in int_ranges.items():
        object.__setattr__(config, name, integer(name, getattr(config, name), lo, hi))
    for name in flags:
        flag(name, getattr(config, name))
    for name, (lo, hi) in (real_ranges or {}).items():
        object.__setattr__(config, name, real(name, getattr(config, name), lo, hi))
