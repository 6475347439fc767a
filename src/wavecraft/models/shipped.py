"""The small music model that ships inside the package, so generation works offline with no download.

Its weights (codec + LM + text projection, safetensors) live in ``wavecraft/assets/wavecraft-small``; its text
encoder, all-MiniLM-L6-v2, in ``wavecraft/assets/all-MiniLM-L6-v2``. The registry of shipped models is
:mod:`wavecraft.checkpoints.shipped`. How it was trained, on what, and how well it does: ``MODEL_CARD.md`` and
``recipes/shipped/``.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoints.shipped import shipped, shipped_folder

SHIPPED_NAME = "wavecraft-small"


def is_shipped_name(name: object) -> bool:
    return name is None or shipped(name) is not None


def shipped_model_dir(name: str | None = None, use: str = "music") -> Path:
    """The folder (``config.json`` + ``model.safetensors``) of shipped model ``name`` (default wavecraft-small)."""
    folder = shipped_folder(name or SHIPPED_NAME, use)
    assert folder is not None
    return folder
