"""Module attributes imported on first use (``import wavecraft`` must not import torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(module_name: str, table: dict[str, tuple[str, str]], namespace: dict[str, Any]
                 ) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name`` to ``getattr(import_module(table[name][0]), table[name][1])``,
    cached in ``namespace`` (the module's globals) so later look-ups are plain attribute reads."""
    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        module, attr = table[name]
        value = getattr(importlib.import_module(module), attr)
        namespace[name] = value
        return value

    return __getattr__
